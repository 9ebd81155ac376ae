"""MAAC (Clavera et al. 2020): pathwise model-augmented actor-critic.

    python -m experiments.maac --env=ant
    python -m experiments.maac --env=pendulum --total_steps=10000
    python -m experiments.maac --env=ant --config.mpc=True      # MAAC+MPC evaluation

Ablations (Sec. 5.3, App. A.4): --config.horizon=0, --config.steve=False,
--config.num_samples=1, --config.real_ratio=1.0, --config.use_entropy=False.
"""

from memrl.agents import maac
from memrl.training import cli

if __name__ == "__main__":
    cli.run(maac, default_env="ant")

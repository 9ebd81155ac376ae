"""MEMR (Zhang et al.): single-step model rollouts from max-entropy prioritized states.

python -m experiments.memr --env=pendulum --total_steps=10000
python -m experiments.memr --env=halfcheetah --config.priority_alpha=0.0   # ablation
"""

from memrl.agents import memr
from memrl.training import cli

if __name__ == "__main__":
    cli.run(memr, default_env="pendulum")

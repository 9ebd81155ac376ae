"""MBPO (Janner et al. 2019), MEMR's baseline.

python -m experiments.mbpo --env=pendulum --total_steps=10000
"""

from memrl.agents import mbpo
from memrl.training import cli

if __name__ == "__main__":
    cli.run(mbpo, default_env="pendulum")

"""Soft actor-critic, the baseline of every paper.

python -m experiments.sac --env=pendulum --total_steps=15000
"""

from memrl.agents import sac
from memrl.training import cli

if __name__ == "__main__":
    cli.run(sac, default_env="pendulum")

"""MEMB: model-embedding model-based RL (Tan et al., Algorithm 1).

python -m experiments.memb --env=pendulum --total_steps=10000
"""

from memrl.agents import memb
from memrl.training import cli

if __name__ == "__main__":
    cli.run(memb, default_env="pendulum")

"""Dreamer (Hafner et al. 2020), the base of MaxEnt Dreamer and its main baseline.

python -m experiments.dreamer --env=pendulum --total_steps=30000
python -m experiments.dreamer --env=halfcheetah --config.batch_size=50

``--total_steps``, ``--eval_every`` and every schedule count environment frames
(``--config.action_repeat`` frames per agent step).
"""

from memrl.agents import dreamer
from memrl.training import cli

if __name__ == "__main__":
    cli.run(dreamer, default_env="pendulum")

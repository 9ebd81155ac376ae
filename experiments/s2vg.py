"""S2VG: soft stochastic value gradient (Algorithm 1 of the paper).

python -m experiments.s2vg --env=pendulum --total_steps=10000
"""

from memrl.agents import s2vg
from memrl.training import cli

if __name__ == "__main__":
    cli.run(s2vg, default_env="pendulum")

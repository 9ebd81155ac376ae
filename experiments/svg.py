"""SVG(1) with experience replay (Heess et al. 2015), the baseline of S2VG and MEMB.

python -m experiments.svg --env=pendulum --total_steps=10000
"""

from memrl.agents import svg
from memrl.training import cli

if __name__ == "__main__":
    cli.run(svg, default_env="pendulum")

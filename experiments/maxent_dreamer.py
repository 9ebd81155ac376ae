"""MaxEnt Dreamer (paper 004) and its Fig. 3 ablations.

    python -m experiments.maxent_dreamer --env=pendulum --variant=maxent
    python -m experiments.maxent_dreamer --env=halfcheetah --obs=pixels --variant=revised

``--variant=dreamer|dreamer_explore|revised|maxent`` (see
``memrl.agents.maxent_dreamer``).
"""

from memrl.agents import maxent_dreamer
from memrl.training import cli

if __name__ == "__main__":
    cli.run(maxent_dreamer, default_env="pendulum")

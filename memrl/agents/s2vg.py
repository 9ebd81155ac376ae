"""S2VG: Soft Stochastic Value Gradient (Algorithm 1 of the paper).

Every environment step: one step of the reparameterized dynamics and reward
models on real data (eq. 6), then ``m`` actor-critic updates, each on a fresh
real batch: twin Q on value-expansion targets over an ``H``-step rollout that
starts with the real transition (eq. 7, ``H = 1`` by default, the paper's
choice; ``--config.horizon=2`` or ``5`` for its ablation, Sec. 5.3), V on
real states (eq. 8), and the policy by the soft value gradient through the
one-step model taken on the real states of the batch (eq. 10-11).

All the machinery lives in ``memrl.agents.value_gradient``; this module only
chooses the data: the policy gradient's states are real.

No ``from __future__ import annotations``: ml_collections reads Config types.
"""

import dataclasses
from typing import Any, ClassVar

import jax

from memrl.agents import sac
from memrl.agents import value_gradient as core
from memrl.types import Transition

AgentState = core.AgentState
Learner = core.Learner
act = core.act


@dataclasses.dataclass(unsafe_hash=True)
class Config(core.Config):
    """S2VG settings: ``core.Config`` with the paper's Table 2 for pendulum,
    inverted_pendulum, halfcheetah, hopper and walker2d (see the fields there).

    Attributes:
      horizon: ``H`` of the value expansion for Q (eq. 7); 1 in the paper's
        main results, 2 and 5 in its ablation (Fig. 2). With ``H >= 2`` the
        targets are soft (each imagined step's ``-alpha log pi`` included)
        unless ``soft_expansion=False`` (eq. 7 as printed).
    """

    PAPER_ENVS: ClassVar[tuple[str, ...]] = (
        "pendulum",
        "inverted_pendulum",
        "halfcheetah",
        "hopper",
        "walker2d",
    )


def init(key: jax.Array, env_spec: Any, config: Config) -> AgentState:
    example = sac.example_transition(env_spec.observation_size, env_spec.action_size)
    return core.init_state(key, env_spec, config, example)


def update(learner: Learner, batch: Transition, key: jax.Array) -> tuple[Learner, dict]:
    """One S2VG actor-critic update: eq. 7 (Q), eq. 8 (V) on ``batch`` and the
    eq. 11 policy gradient on the batch's real states."""
    return core.actor_critic_update(learner, batch, batch.obs, key)


def train_step(
    state: AgentState, transition: Transition, key: jax.Array, step: jax.Array
) -> tuple[AgentState, dict]:
    """Stores ``transition``, one model step, ``m`` updates past the warm-up."""
    return core.learn_step(state, transition, key, step, update)


update_model = core.update_model
periodic = core.periodic

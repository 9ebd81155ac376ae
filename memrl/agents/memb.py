"""MEMB: Model-Embedding Model-Based RL (Tan, Qu, Xiong, Zhang; Algorithm 1).

Every environment step: one step of the reparameterized dynamics and reward
models on real data (eq. 4), then ``m`` actor-critic updates, each on a fresh
real batch ``(s_0, a_0, r_0, s_1)``: twin Q by one-step TD on the real
transition with the target V (eq. 6), V on real states (eq. 5), and the
policy by the soft value gradient through the one-step model (eq. 8-9) on the
states of ``D_img``: a ``k``-step branched rollout of the current policy
through the model from the real ``s_0`` (Algorithm 1 step 3; Theorem 2's
"k-step branched rollout"), i.e. ``s_0, s_hat_1, ..., s_hat_{k-1}``.

``rollout_length = 1`` uses the real states only, which is what the authors'
released code does (its policy loss is evaluated on the sampled batch); the
default ``k = 2`` adds one imagined state per real one, as the paper's
Algorithm 1 describes. Ablations by flag (``memrl.agents.value_gradient``):
``horizon`` (value expansion, App. B.1 Fig. 2b-c; soft targets unless
``soft_expansion=False``), ``alpha = 0`` with
``exploration_noise`` (App. B.1 Fig. 2a), ``true_model`` (App. B.3 Fig. 4,
pendulum), ``updates_per_step`` (m, Sec. 4); the model error over training
(App. B.2) is logged by ``periodic``.

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
    """MEMB settings: ``core.Config`` with the paper's Table 2 (App. C) for
    pendulum, inverted_pendulum, halfcheetah, hopper, walker2d, swimmer and
    reacher (see the fields there).

    Attributes:
      rollout_length: ``k``, states per real start state in ``D_img`` (the
        real one and ``k - 1`` imagined); the paper leaves it open
        ("typically short"), the authors' code uses 1.
    """

    PAPER_ENVS: ClassVar[tuple[str, ...]] = core.Config.PAPER_ENVS

    rollout_length: int = 2


def init(key: jax.Array, env_spec: Any, config: Config) -> AgentState:
    if config.rollout_length < 1:
        raise ValueError(f"rollout_length must be >= 1, got {config.rollout_length}")
    example = sac.example_transition(env_spec.observation_size, env_spec.action_size)
    return core.init_state(key, env_spec, config, example)


def imagined_states(learner: Learner, obs: jax.Array, key: jax.Array) -> jax.Array:
    """``[k B, O]``: the real ``s_0`` and ``k - 1`` model states of a branched
    rollout under the current policy (no gradient flows into them)."""
    k = learner.config.rollout_length
    traj = core.imagine(learner, obs, key, k - 1)
    return traj.obs.reshape((-1, obs.shape[-1]))


def update(learner: Learner, batch: Transition, key: jax.Array) -> tuple[Learner, dict]:
    """One MEMB actor-critic update: eq. 6 (Q) and eq. 5 (V) on the real
    ``batch``, the eq. 9 policy gradient on the states of its k-step rollout."""
    k_roll, k_update = jax.random.split(key)
    states = imagined_states(learner, batch.obs, k_roll)
    return core.actor_critic_update(learner, batch, states, k_update)


def train_step(
    state: AgentState, transition: Transition, key: jax.Array, step: jax.Array
) -> tuple[AgentState, dict]:
    """Stores ``transition``, one model step, ``m`` updates past the warm-up."""
    return core.learn_step(state, transition, key, step, update)


update_model = core.update_model
periodic = core.periodic

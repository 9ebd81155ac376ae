"""Algorithm 1 of S2VG and MEMB, which share it: soft value gradients through
a one-step reparameterized model.

Both papers ("S2VG: Soft Stochastic Value Gradient", and Tan et al., "Model
Embedding Model-Based Reinforcement Learning") build the same machine. This
file is their Algorithm 1 from top to bottom; the pieces live beside it:

* ``value_gradient_config``: ``Config`` and the papers' Table 2
  (``PAPER_TABLE``);
* ``value_gradient_networks``: the five networks, the ``Learner`` (their
  parameters and Adam states), ``policy_fn``, ``value_fn``;
* ``value_gradient_model``: the reparameterized dynamics ``s' = f(s, a,
  zeta_omega)`` and reward ``r_hat(s, a, zeta_phi)`` as steps
  (``learned_step``, ``true_step`` for MEMB App. B.3), their loss (S2VG eq.
  6, MEMB eq. 4: ``model_loss``), imagined rollouts (``imagine``) and the
  model-error diagnostic (MEMB App. B.2);
* ``value_gradient_losses``: twin Q on value-expansion targets over imagined
  rollouts that start from a real transition (S2VG eq. 7; with ``H = 1`` the
  one-step TD of MEMB eq. 6: ``critic_loss``), the soft V regressed on
  ``min_i Q_i(s, a) - alpha log pi(a|s)`` on real states (S2VG eq. 8, MEMB
  eq. 5: ``value_loss``), and the policy objective whose gradient is the soft
  value gradient through the one-step model (S2VG eq. 10-11, MEMB eq. 8-9:
  ``soft_value_estimate``, ``policy_loss``).

Every name of those files that other code uses is importable from here too.

Algorithm 1, per environment step (``learn_step``):

1. train the dynamics and reward models on a real batch (``update_model``);
2. act, ``a_t ~ pi(.|s_t)`` (``act``; the runner steps the env), and store
   the transition in ``D``;
3. ``m`` (``updates_per_step``) times, once past the warm-up (the model is
   trained alone before, as in the MEMB authors' code): sample a real batch,
   and take the Q, V and policy steps of ``actor_critic_update``, then
   Polyak-average V bar.

S2VG and MEMB differ in the states the policy gradient uses (S2VG: real
states; MEMB: states of k-step model rollouts), which each agent passes to
``actor_critic_update``. ``memrl.agents.svg`` (SVG(1), the papers'
baseline) reuses the model, V and ``soft_value_estimate`` with noise
inferred from real transitions instead of sampled. ``periodic`` logs the
model's one- and k-step error on the latest real transitions (MEMB App. B.2)
through ``memrl.diagnostics.model_error``.

Facts from the MEMB authors' TF1 code (``memb.py``, ``core.py``) that the
papers omit and this module follows: fixed alpha, batch 100, Polyak 0.995 on
V, two Qs and V trained with one optimizer (the value learning rate), a
model predicting the absolute next state with log-sigma in ``[-20, 2]``, the
policy objective ``r_hat(s, pi) - alpha log pi + gamma V(f(s, pi))`` with the
online V. Differences, by choice: Q, V and pi take their gradient steps
simultaneously on the same pre-update parameters (the code chains them with
control dependencies; in the code every actor-critic step also re-runs the
model step, so its model takes ``m + 1`` steps per env step, here one); the
policy loss is averaged over the batch, not summed (Adam is invariant to the
scale of a loss up to its epsilon, so the sum only changes the effective
epsilon); the policy's log-sigma bounds are memrl's ``[-5, 2]`` (code
``[-20, 2]``); the policy objective bootstraps ``V(s')`` without a
termination mask (the code multiplies by the *real* transition's done flag,
which belongs to another action).
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from memrl import returns
from memrl.agents import sac
from memrl.agents.common import computed_when, gradient_step
from memrl.agents.value_gradient_config import PAPER_TABLE, Config
from memrl.agents.value_gradient_losses import (
    critic_loss,
    policy_loss,
    soft_value_estimate,
    value_loss,
)
from memrl.agents.value_gradient_model import (
    Trajectory,
    expanded_trajectory,
    heldout_model_error,
    imagine,
    learned_step,
    model_error_metrics,
    model_loss,
    model_outputs,
    model_step,
    true_step,
)
from memrl.agents.value_gradient_networks import (
    Learner,
    Networks,
    PolicyFn,
    PyTree,
    StepFn,
    networks,
    policy_fn,
    value_fn,
)
from memrl.diagnostics import model_error
from memrl.nets import policy as policy_lib
from memrl.replay import buffer as buffer_lib
from memrl.types import Transition

__all__ = [
    "PAPER_TABLE",
    "AgentState",
    "Config",
    "Learner",
    "Networks",
    "PolicyFn",
    "PyTree",
    "StepFn",
    "Trajectory",
    "act",
    "actor_critic_update",
    "critic_loss",
    "expanded_trajectory",
    "heldout_model_error",
    "imagine",
    "init_learner",
    "init_state",
    "learn_step",
    "learned_step",
    "model_error_metrics",
    "model_loss",
    "model_outputs",
    "model_step",
    "networks",
    "periodic",
    "policy_fn",
    "policy_loss",
    "repeated_updates",
    "soft_value_estimate",
    "true_step",
    "uniform_log_prob",
    "update_model",
    "validate",
    "value_expansion_targets",
    "value_fn",
    "value_loss",
]

# S2VG eq. 7 (one-step TD of MEMB eq. 6 with H = 1); kept here under its old
# name for the agents and tests that import it from this module.
value_expansion_targets = returns.value_expansion_targets


def validate(config: Config) -> None:
    """Raises ValueError on settings the agents cannot run."""
    if config.horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {config.horizon}")
    if config.updates_per_step < 1:
        raise ValueError(f"updates_per_step must be >= 1, got {config.updates_per_step}")
    if config.exploration_noise < 0:
        raise ValueError(f"exploration_noise must be >= 0, got {config.exploration_noise}")
    if config.true_model:
        true_step(config.env_name)  # Raises for tasks without a JAX step.


# ----------------------------------------------------------------------------
# Inputs: pi_theta, Q_phi0, Q_phi1, V_psi, V_psi_bar, f_omega, r_hat_varphi, D.


@struct.dataclass
class AgentState:
    """Learner plus the real replay buffer ``D`` (of ``Transition`` or, for
    SVG, of records that hold one)."""

    learner: Learner
    buffer: buffer_lib.BufferState


# Jitted: one compiled program, not flax's initializers compiled op by op.
@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def init_learner(
    key: jax.Array, obs_size: int, action_size: int, config: Config, with_critic: bool = True
) -> Learner:
    """Fresh parameters and Adam states (no twin Q when ``with_critic`` is False)."""
    validate(config)
    nets = networks(config, obs_size, action_size)
    k_pi, k_q, k_v, k_f, k_r = jax.random.split(key, 5)
    obs = jnp.zeros((1, obs_size))
    act = jnp.zeros((1, action_size))
    policy = nets.policy.init(k_pi, obs)
    critic = nets.critic.init(k_q, obs, act) if with_critic else None
    value = nets.value.init(k_v, obs)
    model = {
        "dynamics": nets.dynamics.init(k_f, obs, act),
        "reward": nets.reward.init(k_r, obs, act),
    }
    value_opt = optax.adam(config.value_learning_rate)
    return Learner(
        policy=policy,
        critic=critic,
        value=value,
        target_value=value,
        model=model,
        policy_opt=optax.adam(config.policy_learning_rate).init(policy),
        critic_opt=value_opt.init(critic) if with_critic else None,
        value_opt=value_opt.init(value),
        model_opt=optax.adam(config.model_learning_rate).init(model),
        config=config,
        obs_size=obs_size,
        action_size=action_size,
    )


def init_state(key: jax.Array, env_spec: Any, config: Config, example: Any, with_critic=True):
    """Learner and an empty buffer of ``config.buffer_size`` items like ``example``."""
    learner = init_learner(
        key, env_spec.observation_size, env_spec.action_size, config, with_critic
    )
    return AgentState(learner=learner, buffer=buffer_lib.init(example, config.buffer_size))


# ----------------------------------------------------------------------------
# Step 1: train the dynamics and reward models (S2VG eq. 6, MEMB eq. 4).


def update_model(learner: Learner, batch: Transition, key: jax.Array) -> tuple[Learner, dict]:
    """One Adam step on ``model_loss`` (Algorithm 1 step 1)."""
    step = gradient_step(model_loss, optax.adam(learner.config.model_learning_rate))
    model, model_opt, metrics = step(learner.model, learner.model_opt, learner, batch, key)
    return learner.replace(model=model, model_opt=model_opt), metrics


# ----------------------------------------------------------------------------
# Step 2: interact with the environment (the runner steps it; learn_step stores).


def _learner(state: AgentState | Learner) -> Learner:
    return state.learner if isinstance(state, AgentState) else state


def act(state: AgentState | Learner, obs: jax.Array, key: jax.Array, deterministic: bool = False):
    """``a ~ pi(.|s)`` plus ``exploration_noise`` (clipped to [-1, 1]), or
    ``tanh(mean)`` when ``deterministic``."""
    learner = _learner(state)
    config = learner.config
    dist = learner.nets.policy.apply(learner.policy, obs)
    if deterministic:
        return policy_lib.mode(dist)
    k_pi, k_noise = jax.random.split(key)
    action, _ = policy_lib.sample_and_log_prob(dist, k_pi)
    if config.exploration_noise > 0:
        noise = config.exploration_noise * jax.random.normal(k_noise, action.shape, action.dtype)
        action = jnp.clip(action + noise, -1.0, 1.0)
    return action


# ----------------------------------------------------------------------------
# Step 3: m actor-critic updates (S2VG eq. 7, 8, 11; MEMB eq. 6, 5, 9).


def actor_critic_update(
    learner: Learner, batch: Transition, policy_obs: jax.Array, key: jax.Array
) -> tuple[Learner, dict]:
    """One actor-critic update (Algorithm 1 step 3, one of the ``m``): the
    gradients of eq. 7 (Q, on ``batch`` and its imagined continuation), eq. 8
    (V, on ``batch.obs``) and eq. 11 (pi, on ``policy_obs``) at the current
    parameters, then all three Adam steps and the Polyak update of V bar.

    Args:
      learner: current parameters.
      batch: real transitions ``[B]``.
      policy_obs: ``[N, O]`` states of the policy gradient (S2VG: real,
        MEMB: imagined).
      key: PRNG key.
    """
    config = learner.config
    k_q, k_v, k_pi = jax.random.split(key, 3)
    value_opt = optax.adam(config.value_learning_rate)
    critic, critic_opt, q_metrics = gradient_step(critic_loss, value_opt)(
        learner.critic, learner.critic_opt, learner, batch, k_q
    )
    value, v_opt, v_metrics = gradient_step(value_loss, value_opt)(
        learner.value, learner.value_opt, learner, batch.obs, k_v
    )
    policy, policy_opt, pi_metrics = gradient_step(
        policy_loss, optax.adam(config.policy_learning_rate)
    )(learner.policy, learner.policy_opt, learner, policy_obs, k_pi)
    learner = learner.replace(
        critic=critic,
        critic_opt=critic_opt,
        value=value,
        value_opt=v_opt,
        target_value=optax.incremental_update(value, learner.target_value, config.tau),
        policy=policy,
        policy_opt=policy_opt,
    )
    return learner, {**q_metrics, **v_metrics, **pi_metrics}


UpdateFn = Callable[[Learner, Any, jax.Array], tuple[Learner, dict]]


def repeated_updates(
    learner: Learner,
    update: UpdateFn,
    sample_batch: Callable[[jax.Array], Any],
    key: jax.Array,
    num_updates: int,
    active: jax.Array,
) -> tuple[Learner, dict]:
    """``num_updates`` calls ``update(learner, sample_batch(k), k')`` when
    ``active`` (unbatched under vmap), else none; adds ``count/policy_updates``."""

    def learn(learner):
        def one(learner, k):
            k_sample, k_update = jax.random.split(k)
            return update(learner, sample_batch(k_sample), k_update)

        learner, metrics = jax.lax.scan(one, learner, jax.random.split(key, num_updates))
        return learner, jax.tree_util.tree_map(jnp.mean, metrics)

    learner, metrics = jax.lax.cond(active, learn, sac.skip_update(learn), learner)
    metrics = computed_when(active, metrics)  # the zeros of skipped steps are not averaged
    metrics["count/policy_updates"] = jnp.where(active, num_updates, 0).astype(jnp.int32)
    return learner, metrics


# ----------------------------------------------------------------------------
# One iteration of Algorithm 1, and the model error over training.


def learn_step(
    state: AgentState,
    record: Any,
    key: jax.Array,
    step: jax.Array,
    update: UpdateFn,
    transitions: Callable[[Any], Transition] = lambda r: r,
) -> tuple[AgentState, dict]:
    """Algorithm 1 for one environment step: store ``record`` (leading axis
    ``num_envs``), one model step on a real batch, then ``m`` calls of
    ``update`` on fresh real batches once ``step >= warmup_steps``. Before the
    model step, the model's error on the arriving transitions, which it has
    not been trained on, is logged (``heldout_model_error``, MEMB App. B.2).

    Args:
      state: agent state.
      record: what the buffer stores (a ``Transition`` or a record holding one).
      key: PRNG key.
      step: global env-step count (unbatched).
      update: the agent's ``update(learner, batch, key)``.
      transitions: extracts the ``Transition`` from a batch of records.
    """
    config = state.learner.config
    heldout = heldout_model_error(state.learner, transitions(record))
    buffer = buffer_lib.add(state.buffer, record)
    k_batch, k_model, k_updates = jax.random.split(key, 3)
    model_batch = transitions(buffer_lib.sample(buffer, k_batch, config.batch_size))
    learner, model_metrics = update_model(state.learner, model_batch, k_model)
    learner, metrics = repeated_updates(
        learner,
        update,
        lambda k: buffer_lib.sample(buffer, k, config.batch_size),
        k_updates,
        config.updates_per_step,
        step >= config.warmup_steps,
    )
    return AgentState(learner=learner, buffer=buffer), {**model_metrics, **heldout, **metrics}


def periodic(
    state: AgentState,
    key: jax.Array,
    step: jax.Array,
    transitions: Callable[[Any], Transition] = lambda r: r,
) -> tuple[AgentState, dict]:
    """Model error over training (MEMB App. B.2) on the last ``periodic_every``
    real transitions: one- and k-step, per pair and pooled
    (``memrl.diagnostics.model_error``). They are not held out: the model
    takes one step per env step on uniform batches, so each was seen a few
    times at most; the held-out one-step error is ``learn_step``'s
    ``model/heldout_*``."""
    del step
    config = state.learner.config
    horizon = config.model_error_horizon
    if not horizon or not config.periodic_every or config.num_envs != 1:
        return state, {}
    length = min(config.periodic_every, state.buffer.capacity)
    buffer = state.buffer._replace(data=transitions(state.buffer.data))
    window = model_error.recent(buffer, length)
    return state, model_error_metrics(state.learner, window, key, min(horizon, length))


def uniform_log_prob(action_size: int) -> float:
    """Log-density of the uniform warm-up actions on ``[-1, 1]^A``."""
    return -action_size * math.log(2.0)

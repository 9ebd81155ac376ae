"""SVG(1) with experience replay (Heess et al. 2015, "Learning Continuous
Control Policies by Stochastic Value Gradients", Sec. 4 and Algorithm
"SVG(1)-ER"), the baseline of S2VG and MEMB.

The value gradient is taken on *real* transitions only (S2VG eq. 2, MEMB
eq. 1): for a stored ``(s, a, r, s')`` the noise that explains it is inferred,

* policy: ``eta = (atanh(a) - mu_theta(s)) / sigma_theta(s)``, so that
  ``a = tanh(mu_theta(s) + sigma_theta(s) eta)`` at the current ``theta``;
* model, with additive noise (Heess et al.'s model form): the next state and
  reward are ``s'(a~) = s' + mu_f(s, a~) - mu_f(s, a)`` and
  ``r(a~) = r + mu_r(s, a~) - mu_r(s, a)``, equal to the observation at
  ``a~ = a`` and differentiable in ``a~`` through the learned model,

and the policy ascends ``w [r(a_theta) - alpha log pi(a_theta|s) + gamma d
V(s'(a_theta))]`` with the importance weight ``w = pi_theta(a|s) /
pi_behaviour(a|s)`` (truncated at ``max_importance_weight``, not
differentiated). V is learned by importance-weighted TD(0) with a target V::

    J(psi) = mean 1/2 w (V_psi(s) - [r - alpha log pi_theta(a|s) + gamma d V_psi_bar(s')])^2

No Q function.

Exploration (Heess et al.'s Algorithm "SVG(1)-ER": "apply control ``a =
pi(s, eta; theta)``, ``eta ~ rho(eta)``", with the weight ``w = p(a_k|s_k;
theta_t) / p(a_k|s_k; theta_k)``): the agent acts with its stochastic policy
itself, and the noise of that policy is what explores. By default the policy
noise is fixed, ``a = tanh(mu_theta(s) + policy_std eta)`` (the network's own
log-std output is unused): with SVG's ``alpha = 0`` a learned std has no
reason to stay wide and collapses to its floor (-5), and the agent stops
exploring. ``policy_std = 0`` uses the network's learned std instead (then
give ``alpha > 0``). ``exploration_noise`` (noise added after the tanh and
clipped, MEMB App. B.1) is refused: its density is not the policy's, and
the importance weights need the density of the action actually taken.

The behaviour density is recorded when a transition is stored: the runner
calls ``train_step`` with the parameters that chose the action, so ``log
pi_theta_k(a|s)`` of the stored action is computed there from the same
distribution ``act`` sampled (the uniform warm-up actions: ``-A log 2``).

The dynamics and reward models, V, the policy, ``soft_value_estimate`` and
the schedule (one model step, ``m`` updates per env step) are the ones of
``memrl.agents.value_gradient``. ``alpha = 0`` by default (SVG has no
entropy term); ``m = 1`` (each real transition is replayed, not imagined).

No ``from __future__ import annotations``: ml_collections reads Config types.
"""

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax

from memrl.agents import sac
from memrl.agents import value_gradient as core
from memrl.agents.common import gradient_step
from memrl.nets import policy as policy_lib
from memrl.types import Transition

AgentState = core.AgentState
Learner = core.Learner

# Actions are clipped this far inside (-1, 1) before atanh.
_ACTION_EPS = 1e-6


@dataclasses.dataclass(unsafe_hash=True)
class Config(core.Config):
    """SVG(1)-ER settings: ``core.Config`` (networks, learning rates and model
    of the S2VG/MEMB Table 2 for a fair baseline) with SVG's own defaults.

    Attributes:
      alpha: entropy temperature (0: SVG's plain objective).
      updates_per_step: policy and value updates per env step (1).
      max_importance_weight: truncation of ``pi_theta / pi_behaviour`` (our
        choice; truncation keeps replayed transitions from dominating).
      policy_std: fixed std of the pre-tanh Gaussian policy, its exploration
        noise (Heess et al. act with their stochastic policy; the value 0.3 is
        our choice); 0 = the network's learned std.
    """

    PAPER_ENVS: ClassVar[tuple[str, ...]] = core.Config.PAPER_ENVS

    alpha: float = 0.0
    updates_per_step: int = 1
    max_importance_weight: float = 5.0
    policy_std: float = 0.3

    @classmethod
    def for_env(cls, env_name: str) -> "Config":
        """The papers' Table 2 for the networks and learning rates, with SVG's
        ``alpha = 0`` and ``m = 1``."""
        config = super().for_env(env_name)
        return dataclasses.replace(config, alpha=0.0, updates_per_step=1)


class Record(NamedTuple):
    """A stored transition and the log-density of its action under the
    policy that took it.

    Attributes:
      transition: the real ``Transition``.
      log_prob: ``log pi_behaviour(a|s)``, ``[]`` per item.
    """

    transition: Transition
    log_prob: jax.Array


def validate(config: Config) -> None:
    """Raises ValueError on settings SVG cannot run (``runner.build`` calls it)."""
    core.validate(config)
    if config.policy_std < 0:
        raise ValueError(f"policy_std must be >= 0, got {config.policy_std}")
    if config.exploration_noise:
        raise ValueError(
            "svg explores with its policy noise (policy_std); exploration_noise would make "
            "the stored behaviour density differ from the actions taken"
        )


def init(key: jax.Array, env_spec: Any, config: Config) -> AgentState:
    validate(config)
    transition = sac.example_transition(env_spec.observation_size, env_spec.action_size)
    example = Record(transition=transition, log_prob=jnp.zeros(()))
    return core.init_state(key, env_spec, config, example, with_critic=False)


def policy_distribution(learner: Learner, policy: Any, obs: jax.Array) -> policy_lib.GaussianParams:
    """The pre-tanh Gaussian of SVG's policy at ``obs``: the network's mean
    and, when ``policy_std > 0``, the fixed std ``policy_std`` (else the
    network's)."""
    params = learner.nets.policy.apply(policy, obs)
    if learner.config.policy_std > 0:
        log_std = jnp.full_like(params.log_std, math.log(learner.config.policy_std))
        params = params._replace(log_std=log_std)
    return params


def policy_fn(learner: Learner) -> core.PolicyFn:
    """``(theta, s, eta) -> (a, log pi(a|s))``, ``a = tanh(mu + sigma eta)`` with
    ``policy_distribution``'s sigma."""

    def apply(policy, obs, eta):
        return policy_lib.squash_with_log_prob(policy_distribution(learner, policy, obs), eta)

    return apply


def act(state: AgentState | Learner, obs: jax.Array, key: jax.Array, deterministic: bool = False):
    """``a ~ pi_theta(.|s)`` (``policy_distribution``; its noise explores), or
    ``tanh(mean)`` when ``deterministic``."""
    learner = state.learner if isinstance(state, AgentState) else state
    params = policy_distribution(learner, learner.policy, obs)
    if deterministic:
        return policy_lib.mode(params)
    return policy_lib.sample_and_log_prob(params, key)[0]


def infer_policy_noise(params: policy_lib.GaussianParams, action: jax.Array) -> jax.Array:
    """``eta`` with ``tanh(mu + sigma eta) = action`` (action clipped inside (-1, 1))."""
    u = jnp.arctanh(jnp.clip(action, -1.0 + _ACTION_EPS, 1.0 - _ACTION_EPS))
    return (u - params.mean) * jnp.exp(-params.log_std)


def log_prob(learner: Learner, obs: jax.Array, action: jax.Array) -> jax.Array:
    """``log pi_theta(a|s)`` of given actions ``[B, A]`` under the current policy."""
    params = policy_distribution(learner, learner.policy, obs)
    return policy_lib.squash_with_log_prob(params, infer_policy_noise(params, action))[1]


def importance_weights(learner: Learner, batch: Record) -> jax.Array:
    """``min(pi_theta(a|s) / pi_behaviour(a|s), max_importance_weight)``, ``[B]``."""
    t = batch.transition
    ratio = jnp.exp(log_prob(learner, t.obs, t.action) - batch.log_prob)
    return jax.lax.stop_gradient(jnp.minimum(ratio, learner.config.max_importance_weight))


def inferred_step(learner: Learner, t: Transition) -> core.StepFn:
    """The learned model with the noise that reproduces ``t``:
    ``a~ -> (s' + mu_f(s, a~) - mu_f(s, a), r + mu_r(s, a~) - mu_r(s, a))``."""
    dyn0, rew0 = core.model_outputs(learner, t.obs, t.action)
    dyn0, rew0 = jax.lax.stop_gradient((dyn0, rew0))

    def step(obs, action):
        dyn, rew = core.model_outputs(learner, obs, action)
        next_obs = t.next_obs + dyn.mean - dyn0.mean
        reward = t.reward + (rew.mean - rew0.mean)[..., 0]
        return next_obs, reward

    return step


def value_loss(value: Any, learner: Learner, batch: Record, weights: jax.Array):
    """Importance-weighted TD(0) for V with the target V (Heess et al. SVG(1)-ER)."""
    config = learner.config
    t = batch.transition
    v_next = learner.nets.value.apply(learner.target_value, t.next_obs)
    entropy = config.alpha * log_prob(learner, t.obs, t.action)
    target = jax.lax.stop_gradient(t.reward - entropy + config.gamma * t.discount * v_next)
    v = learner.nets.value.apply(value, t.obs)
    loss = 0.5 * jnp.mean(weights * (v - target) ** 2)
    return loss, {"loss/value": loss, "v/mean": jnp.mean(v)}


def policy_loss(policy_params: Any, learner: Learner, batch: Record, weights: jax.Array):
    """``-mean w V_hat(s)``: SVG(1)'s value gradient (S2VG eq. 2, MEMB eq. 1)
    on the real transitions, noise inferred, plus ``alpha`` times entropy."""
    config = learner.config
    t = batch.transition
    params = policy_distribution(learner, learner.policy, t.obs)
    eta = jax.lax.stop_gradient(infer_policy_noise(params, t.action))
    estimate, logp = core.soft_value_estimate(
        policy_params,
        t.obs,
        eta,
        policy_fn(learner),
        inferred_step(learner, t),
        core.value_fn(learner),
        config.alpha,
        config.gamma,
        t.discount,
    )
    loss = -jnp.mean(weights * estimate)
    metrics = {
        "loss/actor": loss,
        "policy/log_prob": jnp.mean(logp),
        "policy/std": jnp.mean(jnp.exp(params.log_std)),  # pre-tanh; collapses if learned
    }
    return loss, metrics


def update(learner: Learner, batch: Record, key: jax.Array) -> tuple[Learner, dict]:
    """One SVG(1)-ER update on replayed real transitions: V and policy steps at
    the current parameters, then the Polyak update of the target V."""
    del key  # Every noise is inferred from the data.
    config = learner.config
    weights = importance_weights(learner, batch)
    value, value_opt, v_metrics = gradient_step(value_loss, optax.adam(config.value_learning_rate))(
        learner.value, learner.value_opt, learner, batch, weights
    )
    policy, policy_opt, pi_metrics = gradient_step(
        policy_loss, optax.adam(config.policy_learning_rate)
    )(learner.policy, learner.policy_opt, learner, batch, weights)
    learner = learner.replace(
        value=value,
        value_opt=value_opt,
        target_value=optax.incremental_update(value, learner.target_value, config.tau),
        policy=policy,
        policy_opt=policy_opt,
    )
    metrics = {
        **v_metrics,
        **pi_metrics,
        "importance/mean": jnp.mean(weights),
        "importance/truncated": jnp.mean(weights >= config.max_importance_weight),
    }
    return learner, metrics


def _transitions(records: Record) -> Transition:
    return records.transition


def train_step(
    state: AgentState, transition: Transition, key: jax.Array, step: jax.Array
) -> tuple[AgentState, dict]:
    """Stores ``transition`` with its behaviour log-density, one model step,
    ``m`` SVG updates past the warm-up."""
    learner = state.learner
    uniform = jnp.full(transition.reward.shape, core.uniform_log_prob(learner.action_size))
    behaviour = jnp.where(
        step < learner.config.warmup_steps,
        uniform,
        log_prob(learner, transition.obs, transition.action),
    )
    record = Record(transition=transition, log_prob=behaviour)
    return core.learn_step(state, record, key, step, update, _transitions)


def periodic(state: AgentState, key: jax.Array, step: jax.Array) -> tuple[AgentState, dict]:
    """Model error on the latest real transitions (as S2VG and MEMB)."""
    return core.periodic(state, key, step, _transitions)


update_model = core.update_model

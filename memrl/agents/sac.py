"""Soft actor-critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and
Applications"), the model-free baseline of all five papers.

The learning step ``update`` is pure and buffer-free; ``train_step`` stores a
transition, samples a batch and calls ``update`` ``updates_per_step`` times.
Losses are their own functions so model-based agents (MBPO, MEMR, MAAC) reuse
them with their own batches and weights:

* ``critic_loss``: soft Bellman residual (SAC eq. 5) with a clipped double-Q
  target (min over two target critics, Sec. 4 / App. "twin Q").
* ``actor_loss``: ``E[alpha log pi(a|s) - min_i Q_i(s, a)]`` with the
  reparameterized tanh-Gaussian (eq. 7 and 11 with eq. 21).
* ``alpha_loss``: automatic temperature ``E[-alpha (log pi + target_entropy)]``
  (eq. 18), optimized over ``log alpha``.
"""

# No `from __future__ import annotations` here: ml_collections reads Config field
# types at runtime to parse --config.<field> flags.
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from memrl.agents.common import computed_when, gradient_step
from memrl.nets import policy as policy_lib
from memrl.nets.critic import QNetwork
from memrl.replay import buffer as buffer_lib
from memrl.types import Transition

PyTree = Any


@dataclasses.dataclass(unsafe_hash=True)
class Config:
    """SAC settings; defaults from Haarnoja et al. 2018 (Table 1 of the v2 paper).

    Treat as immutable: derive variants with ``dataclasses.replace``.

    Attributes:
      hidden_sizes: policy and Q MLP widths (2 x 256, ReLU).
      activation: hidden activation.
      learning_rate: Adam step size for policy, critics and temperature.
      batch_size: minibatch size (256).
      gamma: discount (0.99).
      tau: target smoothing coefficient (0.005).
      updates_per_step: gradient updates per environment step (1).
      init_alpha: initial temperature.
      target_entropy: target entropy; ``None`` means ``-action_size`` (Sec. 5).
      buffer_size: replay capacity (10^6).
      warmup_steps: environment steps with uniform-random actions before the
        policy acts and updates start.
      num_envs: parallel environments per seed.
      periodic_every: period of ``periodic`` in env steps (0: never; SAC has
        no periodic work).
    """

    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    learning_rate: float = 3e-4
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    updates_per_step: int = 1
    init_alpha: float = 1.0
    target_entropy: float | None = None
    buffer_size: int = 1_000_000
    warmup_steps: int = 5000
    num_envs: int = 1
    periodic_every: int = 0

    @classmethod
    def for_env(cls, env_name: str) -> "Config":
        """Per-environment settings.

        Short-horizon classic-control tasks need far fewer random warm-up
        steps than the MuJoCo locomotion tasks (10^4 there, as in the SAC
        authors' softlearning runs).
        """
        if env_name in ("pendulum", "double_integrator"):
            return cls(warmup_steps=1000)
        if env_name in ("inverted_pendulum", "inverted_double_pendulum", "reacher"):
            return cls(warmup_steps=1000)
        return cls(warmup_steps=10_000)


@struct.dataclass
class Learner:
    """Everything ``update`` changes: parameters and optimizer states.

    Attributes:
      policy: tanh-Gaussian policy parameters.
      critic: twin-Q parameters (one MLP per head).
      target_critic: Polyak-averaged copy of ``critic``.
      log_alpha: log of the entropy temperature.
      policy_opt, critic_opt, alpha_opt: Adam states.
      config: the static ``Config``.
      action_size: static action dimension.
    """

    policy: PyTree
    critic: PyTree
    target_critic: PyTree
    log_alpha: jax.Array
    policy_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState
    config: Config = struct.field(pytree_node=False)
    action_size: int = struct.field(pytree_node=False)


@struct.dataclass
class AgentState:
    """Learner plus the replay buffer SAC owns."""

    learner: Learner
    buffer: buffer_lib.BufferState


def networks(config: Config, action_size: int) -> tuple[policy_lib.TanhGaussianPolicy, QNetwork]:
    """The policy and twin-Q modules for ``config``."""
    pi = policy_lib.TanhGaussianPolicy(action_size, tuple(config.hidden_sizes), config.activation)
    q = QNetwork(tuple(config.hidden_sizes), 2, config.activation)
    return pi, q


def target_entropy(config: Config, action_size: int) -> float:
    """``-action_size`` unless the config sets it."""
    if config.target_entropy is None:
        return -float(action_size)
    return float(config.target_entropy)


def optimizer(config: Config) -> optax.GradientTransformation:
    """Adam with the config's step size (one instance per parameter group)."""
    return optax.adam(config.learning_rate)


# Jitted: one compiled program, not flax's initializers compiled op by op.
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def init_learner(key: jax.Array, obs_size: int, action_size: int, config: Config) -> Learner:
    """Fresh parameters and optimizer states."""
    pi, q = networks(config, action_size)
    k_pi, k_q = jax.random.split(key)
    obs = jnp.zeros((1, obs_size))
    act = jnp.zeros((1, action_size))
    policy_params = pi.init(k_pi, obs)
    critic_params = q.init(k_q, obs, act)
    log_alpha = jnp.asarray(jnp.log(config.init_alpha), jnp.float32)
    opt = optimizer(config)
    return Learner(
        policy=policy_params,
        critic=critic_params,
        target_critic=critic_params,
        log_alpha=log_alpha,
        policy_opt=opt.init(policy_params),
        critic_opt=opt.init(critic_params),
        alpha_opt=opt.init(log_alpha),
        config=config,
        action_size=action_size,
    )


def example_transition(obs_size: int, action_size: int) -> Transition:
    """A zero transition (no batch axis) fixing the replay layout."""
    return Transition(
        obs=jnp.zeros((obs_size,)),
        action=jnp.zeros((action_size,)),
        reward=jnp.zeros(()),
        discount=jnp.zeros(()),
        next_obs=jnp.zeros((obs_size,)),
    )


def init(key: jax.Array, env_spec: Any, config: Config) -> AgentState:
    """Learner and an empty replay buffer of ``config.buffer_size`` transitions."""
    learner = init_learner(key, env_spec.observation_size, env_spec.action_size, config)
    example = example_transition(env_spec.observation_size, env_spec.action_size)
    return AgentState(learner=learner, buffer=buffer_lib.init(example, config.buffer_size))


def act(state: AgentState | Learner, obs: jax.Array, key: jax.Array, deterministic: bool = False):
    """Samples ``a ~ pi(.|obs)``, or ``tanh(mean)`` when ``deterministic``."""
    learner = state.learner if isinstance(state, AgentState) else state
    pi, _ = networks(learner.config, learner.action_size)
    dist = pi.apply(learner.policy, obs)
    if deterministic:
        return policy_lib.mode(dist)
    action, _ = policy_lib.sample_and_log_prob(dist, key)
    return action


def critic_loss(
    critic_params: PyTree,
    learner: Learner,
    batch: Transition,
    key: jax.Array,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
    """Soft Bellman residual with clipped double-Q targets (SAC eq. 5-6).

    ``y = r + gamma d (min_i Q'_i(s', a') - alpha log pi(a'|s'))``, ``a' ~ pi(.|s')``;
    ``J_Q = 1/2 mean_b w_b sum_i (Q_i(s_b, a_b) - y_b)^2``.

    Args:
      critic_params: parameters differentiated.
      learner: provides the policy, target critic, temperature and config.
      batch: transitions with leading batch axis ``B``.
      key: PRNG key for ``a'``.
      weights: optional per-sample weights ``[B]`` (importance weights of
        prioritized sampling, MEMR Algorithm 1 line 19); ones if ``None``.
    """
    config = learner.config
    pi, q = networks(config, learner.action_size)
    alpha = jnp.exp(learner.log_alpha)
    next_action, next_log_prob = policy_lib.sample_and_log_prob(
        pi.apply(learner.policy, batch.next_obs), key
    )
    next_q = jnp.min(q.apply(learner.target_critic, batch.next_obs, next_action), axis=0)
    soft_value = next_q - alpha * next_log_prob
    target = jax.lax.stop_gradient(batch.reward + config.gamma * batch.discount * soft_value)
    q_values = q.apply(critic_params, batch.obs, batch.action)
    sq = 0.5 * jnp.sum((q_values - target) ** 2, axis=0)
    if weights is None:
        loss = jnp.mean(sq)
    else:
        loss = jnp.mean(weights * sq)
    metrics = {"loss/critic": loss, "q/mean": jnp.mean(q_values), "q/target": jnp.mean(target)}
    return loss, metrics


def actor_loss(
    policy_params: PyTree, learner: Learner, obs: jax.Array, key: jax.Array
) -> tuple[jax.Array, dict]:
    """``J_pi = mean_b [alpha log pi(a_b|s_b) - min_i Q_i(s_b, a_b)]`` (SAC eq. 7/11).

    Also returns the log-probabilities so the temperature step reuses them.
    """
    pi, q = networks(learner.config, learner.action_size)
    alpha = jnp.exp(learner.log_alpha)
    action, log_prob = policy_lib.sample_and_log_prob(pi.apply(policy_params, obs), key)
    q_min = jnp.min(q.apply(learner.critic, obs, action), axis=0)
    loss = jnp.mean(alpha * log_prob - q_min)
    return loss, {"loss/actor": loss, "policy/entropy": -jnp.mean(log_prob), "log_prob": log_prob}


def alpha_loss(log_alpha: jax.Array, log_prob: jax.Array, target: float) -> tuple[jax.Array, dict]:
    """``J(alpha) = mean[-alpha (log pi + target_entropy)]`` (SAC eq. 18)."""
    alpha = jnp.exp(log_alpha)
    loss = -jnp.mean(alpha * jax.lax.stop_gradient(log_prob + target))
    return loss, {"loss/alpha": loss, "alpha": alpha}


def update_critic(
    learner: Learner, batch: Transition, key: jax.Array, weights: jax.Array | None = None
) -> tuple[Learner, dict]:
    """One Adam step on ``critic_loss`` followed by the Polyak target update."""
    step = gradient_step(critic_loss, optimizer(learner.config))
    critic, critic_opt, metrics = step(
        learner.critic, learner.critic_opt, learner, batch, key, weights
    )
    target = optax.incremental_update(critic, learner.target_critic, learner.config.tau)
    return learner.replace(critic=critic, critic_opt=critic_opt, target_critic=target), metrics


def update_actor(learner: Learner, obs: jax.Array, key: jax.Array) -> tuple[Learner, dict]:
    """One Adam step on ``actor_loss`` then one on ``alpha_loss`` (same samples)."""
    config = learner.config
    opt = optimizer(config)
    policy, policy_opt, metrics = gradient_step(actor_loss, opt)(
        learner.policy, learner.policy_opt, learner, obs, key
    )
    log_prob = metrics.pop("log_prob")
    target = target_entropy(config, learner.action_size)
    log_alpha, alpha_opt, alpha_metrics = gradient_step(alpha_loss, opt)(
        learner.log_alpha, learner.alpha_opt, log_prob, target
    )
    learner = learner.replace(
        policy=policy, policy_opt=policy_opt, log_alpha=log_alpha, alpha_opt=alpha_opt
    )
    return learner, {**metrics, **alpha_metrics}


def update(
    learner: Learner, batch: Transition, key: jax.Array, weights: jax.Array | None = None
) -> tuple[Learner, dict]:
    """One SAC update on ``batch``: critic (and target), then actor and temperature.

    Args:
      learner: current parameters and optimizer states.
      batch: transitions with leading axis ``B``.
      key: PRNG key.
      weights: optional per-sample critic-loss weights ``[B]``.

    Returns:
      The new learner and a flat dict of scalar metrics.
    """
    k_critic, k_actor = jax.random.split(key)
    learner, critic_metrics = update_critic(learner, batch, k_critic, weights)
    learner, actor_metrics = update_actor(learner, batch.obs, k_actor)
    return learner, {**critic_metrics, **actor_metrics}


def repeated_updates(
    learner: Learner,
    sample_batch: Callable[[jax.Array], tuple[Transition, jax.Array | None]],
    key: jax.Array,
    num_updates: int,
    active: jax.Array,
) -> tuple[Learner, dict]:
    """``num_updates`` calls of ``update`` on batches ``sample_batch(key) ->
    (batch, weights or None)`` when ``active``, else nothing (zero metrics,
    marked not computed: ``common.computed_when``).

    Shared by every agent that learns with SAC (SAC, MBPO, MEMR, MAAC). Adds
    ``count/policy_updates``. Keep ``active`` unbatched under ``vmap`` (a
    function of the global step) so the ``lax.cond`` stays a real branch.
    """

    def learn(learner: Learner) -> tuple[Learner, dict]:
        def one(learner, k):
            k_sample, k_update = jax.random.split(k)
            batch, weights = sample_batch(k_sample)
            return update(learner, batch, k_update, weights)

        learner, metrics = jax.lax.scan(one, learner, jax.random.split(key, num_updates))
        return learner, jax.tree_util.tree_map(jnp.mean, metrics)

    learner, metrics = jax.lax.cond(active, learn, skip_update(learn), learner)
    metrics = computed_when(active, metrics)  # the zeros of skipped steps are not averaged
    metrics["count/policy_updates"] = jnp.where(active, num_updates, 0).astype(jnp.int32)
    return learner, metrics


def train_step(
    state: AgentState, transition: Transition, key: jax.Array, step: jax.Array
) -> tuple[AgentState, dict]:
    """Stores ``transition`` (leading axis ``num_envs``) and, once past the warm-up,
    runs ``updates_per_step`` updates on uniform batches.

    Args:
      state: agent state.
      transition: the step just taken by each environment.
      key: PRNG key.
      step: global environment-step count (not per seed: a ``lax.cond`` on it
        stays a real branch under the runner's seed ``vmap``).
    """
    config = state.learner.config
    buffer = buffer_lib.add(state.buffer, transition)

    def sample_batch(k):
        return buffer_lib.sample(buffer, k, config.batch_size), None

    learner, metrics = repeated_updates(
        state.learner, sample_batch, key, config.updates_per_step, step >= config.warmup_steps
    )
    return AgentState(learner=learner, buffer=buffer), metrics


def skip_update(learn):
    """A no-op branch with the same output structure as ``learn`` (zeros for metrics)."""

    def skip(learner):
        shapes = jax.eval_shape(learn, learner)[1]
        return learner, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    return skip


def periodic(state: AgentState, key: jax.Array, step: jax.Array) -> tuple[AgentState, dict]:
    """SAC has no periodic work."""
    del key, step
    return state, {}

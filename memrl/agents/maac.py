"""Model-augmented actor-critic (Clavera, Fu and Abbeel 2020, "Model-Augmented
Actor-Critic: Backpropagating through Paths"), Algorithm 1.

* Model learning: the bootstrap ensemble of probabilistic models
  (``memrl.nets.dynamics``), retrained on ``D_env`` every ``periodic_every``
  (250) steps, followed by ``rollout_batch_size`` (10^5) ``k``-step policy
  rollouts stored in ``D_model`` -- MBPO's pieces (``mbpo.periodic``), reused.
* Policy optimization (Sec. 4.3): maximize

      J_pi = E[ sum_{t<H} gamma^t r(s_t, a_t) + gamma^H Q(s_H, a_H) ] + beta H(pi)

  by backpropagation through ``H`` reparameterized model steps
  (``dynamics.step_with``, one uniformly drawn member per path) and the
  reparameterized tanh-Gaussian policy, from start states ``s_0 ~ D``
  (``D_env`` mixed with ``D_model``), ``num_samples`` paths per start state:
  ``pathwise_return`` / ``actor_loss``.
* Q-function learning: twin Q on the same mixed batches, with STEVE targets
  (Buckman et al. 2018; ``memrl.agents.steve``) over ``steve_horizon`` model
  steps: ``steve_targets`` / ``update_critic``.
* ``updates_per_step`` (8) actor-critic updates per environment step.

Facts from the authors' TF1 code (DESIGN.md Sec. 6) followed here: 8 models
4x200, lr 1e-3, batch 256; pathwise horizon 3 (walker2d 1); terminal Q is the
min of the two Qs averaged over ``terminal_actions`` (5) sampled actions;
entropy on the first action only; target entropy ``-action_size``; STEVE with
``H = 2`` using half the ensemble (a fresh random half per update); 5000
initial random steps; CEM MPC with 1024 candidates, horizon 10, 8 iterations,
10% elites (``plan``).

Differences from the paper/authors' code, by choice:

* The reward is learned by the ensemble (``predict_reward``) on every task;
  the authors use the true reward and termination functions. Termination
  uses the known rules (``memrl.envs.termination``) as they do.
* STEVE candidates bootstrap from the min over the two Q heads, as the plain
  TD target does (so ``steve=False`` changes the expansion only; the ``M``
  members are the samples of each horizon's target), and the bootstrap
  values are soft (``Q - alpha log pi``) as in SAC; the rewards of imagined
  steps carry the entropy bonus ``-alpha log pi`` (``steve_reward_entropy``,
  default True).
* A model path that terminates (known rule) stops accumulating reward and
  drops its terminal Q.

Ablations by flag (Sec. 5.3 and App. A.4): ``horizon=0`` (no model in the
policy gradient: the SAC actor loss), ``steve=False`` (one-step clipped
double-Q TD targets), ``num_samples=1`` (single-sample pathwise estimate),
``real_ratio=1.0`` (real data only: no model rollouts), ``use_entropy=False``
(no entropy bonus, temperature fixed at 0).

``update(learner, batch, key, model)`` is the pure learning step; the model
is an input because both the actor and the critic targets differentiate or
sample through it.

No ``from __future__ import annotations``: ml_collections reads Config types.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from memrl.agents import mbpo, model_based, sac, steve
from memrl.agents.common import computed_when, gradient_step
from memrl.envs import termination
from memrl.nets import dynamics
from memrl.nets import policy as policy_lib
from memrl.planning import cem
from memrl.replay import buffer as buffer_lib
from memrl.types import Transition

PyTree = Any
AgentState = mbpo.AgentState
Learner = sac.Learner

_LOCOMOTION = ("ant", "halfcheetah", "hopper", "walker2d", "humanoid", "swimmer")
# Config fields that change evaluation only (``--eval_only`` may override them).
EVALUATION_FIELDS = ("mpc", "mpc_candidates", "mpc_horizon", "mpc_iterations", "mpc_elite_fraction")


@dataclasses.dataclass(unsafe_hash=True)
class Config(mbpo.Config):
    """MAAC settings; defaults from Clavera et al. 2020 and the authors' code
    (DESIGN.md Sec. 6). Inherits MBPO's model-data fields.

    Attributes:
      horizon: ``H``, model steps of the pathwise policy objective (3; walker 1).
      num_samples: paths sampled per start state for the pathwise gradient
        (Sec. 4.3 "several samples"; 1 is the single-sample ablation).
      terminal_actions: actions sampled at ``s_H`` whose ``min_i Q_i`` is
        averaged for the terminal value (authors' code: 5).
      steve: STEVE critic targets; ``False`` gives one-step TD targets.
      steve_horizon: model steps of the STEVE expansion (authors' code: 2).
      steve_members: ensemble members per STEVE expansion (half of 8).
      steve_reward_entropy: subtract ``alpha log pi`` from the imagined
        rewards of the STEVE candidates (the soft reading of Sec. 4.3, the
        default); the authors' code puts no entropy there (``False``). The
        bootstrap values are soft either way.
      use_entropy: maximum-entropy objective; ``False`` fixes alpha at 0.
      real_ratio: fraction of real transitions per batch (0.05-0.1).
      updates_per_step: actor-critic updates per env step (8).
      rollout_batch_size: model rollouts per model training (10^5).
      rollout_min_length, rollout_max_length: length ``k`` of the model
        rollouts that fill ``D_model`` (1: MBPO's schedule with a constant).
      model_members, model_elites: 8 and 8 (a member is drawn from all).
      mpc: at evaluation (``act(..., deterministic=True)``) plan with CEM.
      mpc_candidates, mpc_horizon, mpc_iterations, mpc_elite_fraction: CEM
        settings (1024, 10, 8, 0.1).
    """

    horizon: int = 3
    num_samples: int = 5
    terminal_actions: int = 5
    steve: bool = True
    steve_horizon: int = 2
    steve_members: int = 4
    steve_reward_entropy: bool = True
    use_entropy: bool = True
    real_ratio: float = 0.05
    updates_per_step: int = 8
    rollout_batch_size: int = 100_000
    rollout_min_length: int = 1
    rollout_max_length: int = 1
    warmup_steps: int = 5000
    model_members: int = 8
    model_elites: int = 8
    model_hidden_sizes: tuple[int, ...] = (200, 200, 200, 200)
    model_learning_rate: float = 1e-3
    model_batch_size: int = 256
    mpc: bool = False
    mpc_candidates: int = 1024
    mpc_horizon: int = 10
    mpc_iterations: int = 8
    mpc_elite_fraction: float = 0.1

    @classmethod
    def for_env(cls, env_name: str) -> "Config":
        """The authors' settings for the MuJoCo tasks (walker2d: ``H = 1``);
        small-scale settings for classic control (not in the paper)."""
        if env_name in _LOCOMOTION:
            return cls(env_name=env_name, horizon=1 if env_name == "walker2d" else 3)
        # Sized so that a CPU run of 10^4 pendulum steps takes minutes.
        return cls(
            env_name=env_name,
            hidden_sizes=(64, 64),
            warmup_steps=1000,
            updates_per_step=4,
            real_ratio=0.1,
            buffer_size=100_000,
            rollout_batch_size=5000,
            num_samples=2,
            terminal_actions=1,
            steve_members=2,
            model_members=4,
            model_elites=4,
            model_hidden_sizes=(128, 128),
            model_max_epochs=20,
            mpc_candidates=256,
        )


def validate(config: Config) -> None:
    """Raises ``ValueError`` on settings the agent cannot run."""
    if config.horizon < 0 or config.steve_horizon < 0:
        raise ValueError("horizon and steve_horizon must be non-negative")
    if config.num_samples < 1 or config.terminal_actions < 1:
        raise ValueError("num_samples and terminal_actions must be positive")
    if not 1 <= config.steve_members <= config.model_elites:
        raise ValueError(
            f"steve_members must be in [1, model_elites={config.model_elites}], "
            f"got {config.steve_members}"
        )
    if not 0.0 < config.real_ratio <= 1.0:
        raise ValueError(f"real_ratio must be in (0, 1], got {config.real_ratio}")


def init(key: jax.Array, env_spec: Any, config: Config) -> AgentState:
    """SAC learner, the ensemble, ``D_env`` and ``D_model`` (MBPO's layout)."""
    validate(config)
    return mbpo.init(key, env_spec, config)


def temperature(learner: Learner) -> jax.Array:
    """``alpha = exp(log_alpha)``, or 0 when ``use_entropy`` is off."""
    if not learner.config.use_entropy:
        return jnp.zeros((), jnp.float32)
    return jnp.exp(learner.log_alpha)


# --------------------------------------------------------------------------
# Pathwise policy objective (Sec. 4.1 and 4.3).

# (obs [..., O], eps [..., A]) -> (action [..., A], log pi [...]).
PolicyFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
# (obs [N, O], action [N, A], noise_t) -> (next_obs [N, O], reward [N]).
StepFn = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, jax.Array]]
# (obs [T, N, O], action [T, N, A]) -> value [T, N].
ValueFn = Callable[[jax.Array, jax.Array], jax.Array]


class PathReturn(NamedTuple):
    """Outcome of ``pathwise_return``, every field ``[N]``.

    Attributes:
      value: ``sum_{t<H} gamma^t r_t + gamma^H Q(s_H, a_H)`` (masked after a
        termination).
      model_return: the reward part ``sum_{t<H} gamma^t r_t``.
      terminal_value: ``Q(s_H, a_H)`` averaged over the terminal actions.
      log_prob0: ``log pi(a_0|s_0)`` of the first action.
    """

    value: jax.Array
    model_return: jax.Array
    terminal_value: jax.Array
    log_prob0: jax.Array


def pathwise_return(
    obs: jax.Array,
    policy_fn: PolicyFn,
    step_fn: StepFn,
    value_fn: ValueFn,
    action_noise: jax.Array,
    step_noise: PyTree,
    terminal_noise: jax.Array,
    gamma: float,
    done_fn: Callable[[jax.Array], jax.Array] = termination.never,
) -> PathReturn:
    """The ``H``-step model-augmented return of each row, differentiable in
    every input (MAAC eq. of Sec. 4.1, one sample per row).

    ``a_t = policy_fn(s_t, action_noise[t])``,
    ``(s_{t+1}, r_t) = step_fn(s_t, a_t, step_noise[t])`` for ``t < H``;
    ``a_H^k = policy_fn(s_H, terminal_noise[k])``;
    ``value = sum_{t<H} gamma^t c_t r_t + gamma^H c_H mean_k value_fn(s_H, a_H^k)``
    with ``c_t = prod_{j<=t} (1 - done(s_j))`` (``c_0 = 1``). With ``H = 0`` the
    first terminal action is ``a_0``.

    Args:
      obs: ``[N, O]`` start states.
      policy_fn, step_fn, value_fn: see the type aliases above.
      action_noise: ``[H, N, A]`` standard normal policy noise.
      step_noise: pytree with leading axis ``H`` passed to ``step_fn``.
      terminal_noise: ``[T, N, A]`` policy noise of the terminal actions.
      gamma: discount.
      done_fn: known termination rule on predicted states.

    Returns:
      A ``PathReturn``.
    """
    chex.assert_rank([obs, action_noise, terminal_noise], [2, 3, 3])
    horizon = action_noise.shape[0]
    n = obs.shape[0]

    def body(carry, xs):
        s, cont, ret, disc = carry
        eps_a, eps_m = xs
        a, logp = policy_fn(s, eps_a)
        s_next, r = step_fn(s, a, eps_m)
        ret = ret + disc * cont * r
        cont = cont * (1.0 - done_fn(s_next).astype(s.dtype))
        return (s_next, cont, ret, disc * gamma), logp

    zeros = jnp.zeros((n,), obs.dtype)
    carry = (obs, jnp.ones((n,), obs.dtype), zeros, jnp.ones((), obs.dtype))
    (s_h, cont, ret, disc), log_probs = jax.lax.scan(
        body, carry, (action_noise, step_noise), length=horizon
    )
    num_terminal = terminal_noise.shape[0]
    a_h, logp_h = policy_fn(jnp.broadcast_to(s_h, (num_terminal,) + s_h.shape), terminal_noise)
    q_h = jnp.mean(value_fn(jnp.broadcast_to(s_h, (num_terminal,) + s_h.shape), a_h), axis=0)
    log_prob0 = log_probs[0] if horizon > 0 else logp_h[0]
    value = ret + disc * cont * q_h
    return PathReturn(value=value, model_return=ret, terminal_value=q_h, log_prob0=log_prob0)


class PathNoise(NamedTuple):
    """All the randomness of one pathwise objective evaluation (``N = B * num_samples``).

    Attributes:
      action: ``[H, N, A]`` policy noise for ``a_0 .. a_{H-1}``.
      model: ``[H, N, D]`` model noise (``D`` the model's target size).
      member: ``[N]`` ensemble member of each path (fixed along the path).
      terminal: ``[T, N, A]`` policy noise for the terminal actions.
    """

    action: jax.Array
    model: jax.Array
    member: jax.Array
    terminal: jax.Array


def sample_noise(
    key: jax.Array, model: dynamics.ModelState, config: Config, batch_size: int, action_size: int
) -> PathNoise:
    """Fresh ``PathNoise`` for ``batch_size`` start states.

    Members: when the number of elites ``K`` divides ``N``, path ``i`` uses
    elite ``i mod K`` (a stratified draw: start states are random, and the
    ``num_samples`` paths of one start state get different members), which
    lets ``actor_loss`` evaluate each member on its own ``N / K`` rows only
    (``step_interleaved``); otherwise a uniform draw per path.
    """
    n = batch_size * config.num_samples
    h = config.horizon
    k_a, k_m, k_u, k_t = jax.random.split(key, 4)
    k = model.config.num_elites
    if n % k == 0:
        member = model.elites[jnp.arange(n) % k]
    else:
        member = dynamics.sample_elites(model, k_u, n)
    return PathNoise(
        action=jax.random.normal(k_a, (h, n, action_size)),
        model=jax.random.normal(k_m, (h, n, model.target_size)),
        member=member,
        terminal=jax.random.normal(k_t, (config.terminal_actions, n, action_size)),
    )


def step_interleaved(
    model: dynamics.ModelState, obs: jax.Array, action: jax.Array, eps: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``dynamics.step_with`` with ``member[i] = elites[i mod K]``, evaluating
    each elite on its own ``N / K`` rows (``K`` must divide ``N``): ``K`` times
    cheaper than ``step_with``, which runs every member on every row."""
    k, n = model.config.num_elites, obs.shape[0]
    sub = model.replace(params=jax.tree_util.tree_map(lambda p: p[model.elites], model.params))

    def fold(x):
        return jnp.swapaxes(x.reshape((n // k, k) + x.shape[1:]), 0, 1)

    def unfold(x):
        return jnp.swapaxes(x, 0, 1).reshape((n,) + x.shape[2:])

    next_obs, reward = dynamics.step_all(sub, fold(obs), fold(action), fold(eps))
    return unfold(next_obs), unfold(reward)


def actor_loss(
    policy_params: PyTree,
    learner: Learner,
    model: dynamics.ModelState,
    obs: jax.Array,
    noise: PathNoise,
) -> tuple[jax.Array, dict]:
    """Negative MAAC objective (Sec. 4.3), ``-J_pi``, on start states ``obs``:

    ``mean_{b, k} [alpha log pi(a_0|s_0) - (sum_{t<H} gamma^t r_t
    + gamma^H mean_j min_i Q_i(s_H, a_H^j))]`` over ``num_samples`` paths ``k``
    per start state ``s_0 = obs[b]`` through ``dynamics.step_with`` (one
    member per path). The entropy bonus is on the first action only (authors'
    code). With ``H = 0`` and one terminal action this is ``sac.actor_loss``.

    Args:
      policy_params: differentiated.
      learner: critic, temperature and config.
      model: the ensemble (reparameterized, differentiable).
      obs: ``[B, O]`` start states.
      noise: ``PathNoise`` for ``N = B * num_samples`` paths; path ``b *
        num_samples + k`` starts at ``obs[b]``.
    """
    config = learner.config
    pi, q = sac.networks(config, learner.action_size)
    alpha = temperature(learner)
    start = jnp.repeat(obs, config.num_samples, axis=0)

    def policy_fn(s, eps):
        return policy_lib.squash_with_log_prob(pi.apply(policy_params, s), eps)

    def step_fn(s, a, eps):
        if start.shape[0] % model.config.num_elites == 0:
            return step_interleaved(model, s, a, eps)  # Same members as noise.member.
        return dynamics.step_with(model, s, a, noise.member, eps)

    def value_fn(s, a):
        return jnp.min(q.apply(learner.critic, s, a), axis=0)

    out = pathwise_return(
        start,
        policy_fn,
        step_fn,
        value_fn,
        noise.action,
        noise.model,
        noise.terminal,
        config.gamma,
        termination.for_env(config.env_name),
    )
    loss = jnp.mean(alpha * out.log_prob0 - out.value)
    metrics = {
        "loss/actor": loss,
        "policy/entropy": -jnp.mean(out.log_prob0),
        "actor/model_return": jnp.mean(out.model_return),
        "actor/terminal_q": jnp.mean(out.terminal_value),
        "log_prob": out.log_prob0,
    }
    return loss, metrics


def update_actor(
    learner: Learner, model: dynamics.ModelState, obs: jax.Array, key: jax.Array
) -> tuple[Learner, dict]:
    """One Adam step on ``actor_loss``, then one on SAC's temperature loss
    (eq. 18 of SAC) with the first actions' log-probabilities."""
    config = learner.config
    opt = sac.optimizer(config)
    noise = sample_noise(key, model, config, obs.shape[0], learner.action_size)
    policy, policy_opt, metrics = gradient_step(actor_loss, opt)(
        learner.policy, learner.policy_opt, learner, model, obs, noise
    )
    log_prob = metrics.pop("log_prob")
    learner = learner.replace(policy=policy, policy_opt=policy_opt)
    if config.use_entropy:
        target = sac.target_entropy(config, learner.action_size)
        log_alpha, alpha_opt, alpha_metrics = gradient_step(sac.alpha_loss, opt)(
            learner.log_alpha, learner.alpha_opt, log_prob, target
        )
        learner = learner.replace(log_alpha=log_alpha, alpha_opt=alpha_opt)
    else:
        alpha_metrics = {"loss/alpha": jnp.zeros(()), "alpha": jnp.zeros(())}
    return learner, {**metrics, **alpha_metrics}


# --------------------------------------------------------------------------
# Q-function learning (Sec. 4.3) with STEVE targets.


def td_targets(learner: Learner, batch: Transition, key: jax.Array) -> tuple[jax.Array, dict]:
    """One-step clipped double-Q soft targets (the ``-STEVE`` ablation):
    ``y = r + gamma d (min_i Q'_i(s', a') - alpha log pi(a'|s'))``."""
    config = learner.config
    pi, q = sac.networks(config, learner.action_size)
    a, logp = policy_lib.sample_and_log_prob(pi.apply(learner.policy, batch.next_obs), key)
    v = jnp.min(q.apply(learner.target_critic, batch.next_obs, a), axis=0)
    v = v - temperature(learner) * logp
    return batch.reward + config.gamma * batch.discount * v, {}


def steve_targets(
    learner: Learner, model: dynamics.ModelState, batch: Transition, key: jax.Array
) -> tuple[jax.Array, dict]:
    """STEVE targets (Buckman et al. 2018, eq. 2-3) for a batch of transitions.

    From each ``s' = batch.next_obs``, ``M = steve_members`` randomly chosen
    elites each imagine ``H = steve_horizon`` steps under the policy
    (``dynamics.step_all``, one path per member). For member ``m`` the
    candidates are (``steve.candidate_targets``)

        T_i = r + sum_{j=1}^{i} gamma^j D_j (r_j - alpha log pi_j)
                + gamma^{i+1} D_{i+1} (min_n Q'_n(s_{i+1}, a_{i+1}) - alpha log pi_{i+1}),

    ``i = 0..H``, with ``s_1 = s'``, ``D_1 = d`` (real) and ``D_j`` the
    product of the continuation flags of the imagined states; without
    ``steve_reward_entropy`` the imagined rewards carry no ``- alpha log
    pi_j``. Each candidate takes the min over the target Q heads, as the
    one-step TD target does (and the authors' STEVE), so ``steve=False``
    changes only the expansion. The target is the inverse-variance
    combination over the ``M`` member samples (``steve.combine``).

    Returns:
      ``([B] targets, metrics)``; ``steve/mean_horizon`` is the average of
      ``sum_i i w_i``.
    """
    config = learner.config
    pi, q = sac.networks(config, learner.action_size)
    alpha = temperature(learner)
    done_fn = termination.for_env(config.env_name)
    h, m = config.steve_horizon, config.steve_members
    b = batch.reward.shape[0]
    k_members, k_path = jax.random.split(key)
    members = jax.random.permutation(k_members, model.elites)[:m]
    sub = model.replace(params=jax.tree_util.tree_map(lambda p: p[members], model.params))

    x = jnp.broadcast_to(batch.next_obs, (m,) + batch.next_obs.shape)
    rewards = [jnp.broadcast_to(batch.reward, (m, b))]
    discounts = [jnp.broadcast_to(config.gamma * batch.discount, (m, b))]
    values = []
    for j, k in enumerate(jax.random.split(k_path, h + 1)):
        k_act, k_model = jax.random.split(k)
        a, logp = policy_lib.sample_and_log_prob(pi.apply(learner.policy, x), k_act)
        q_min = jnp.min(q.apply(learner.target_critic, x, a), axis=0)  # [M, B]
        values.append(q_min - alpha * logp)
        if j < h:
            eps = jax.random.normal(k_model, (m, b, model.target_size))
            x, r = dynamics.step_all(sub, x, a, eps)
            rewards.append(r - alpha * logp if config.steve_reward_entropy else r)
            discounts.append(config.gamma * (1.0 - done_fn(x).astype(r.dtype)))
    flat = lambda x: jnp.stack(x).reshape(h + 1, -1)  # noqa: E731
    candidates = jax.vmap(steve.candidate_targets, in_axes=1, out_axes=1)(
        flat(rewards), flat(discounts), flat(values)
    )
    candidates = jnp.transpose(candidates.reshape(h + 1, m, b), (2, 0, 1))
    target = steve.combine_batch(candidates)
    weights = jax.vmap(steve.horizon_weights)(candidates)
    mean_horizon = jnp.mean(weights @ jnp.arange(h + 1, dtype=weights.dtype))
    return target, {"steve/mean_horizon": mean_horizon}


def critic_loss(
    critic_params: PyTree, learner: Learner, batch: Transition, target: jax.Array
) -> tuple[jax.Array, dict]:
    """``J_Q = 1/2 mean_b sum_i (Q_i(s_b, a_b) - y_b)^2`` for given targets ``y``."""
    _, q = sac.networks(learner.config, learner.action_size)
    q_values = q.apply(critic_params, batch.obs, batch.action)
    loss = jnp.mean(0.5 * jnp.sum((q_values - target) ** 2, axis=0))
    return loss, {"loss/critic": loss, "q/mean": jnp.mean(q_values), "q/target": jnp.mean(target)}


def update_critic(
    learner: Learner, model: dynamics.ModelState, batch: Transition, key: jax.Array
) -> tuple[Learner, dict]:
    """One Adam step on ``critic_loss`` with STEVE (or TD) targets, then Polyak."""
    config = learner.config
    if config.steve:
        target, target_metrics = steve_targets(learner, model, batch, key)
    else:
        target, target_metrics = td_targets(learner, batch, key)
    target = jax.lax.stop_gradient(target)
    critic, critic_opt, metrics = gradient_step(critic_loss, sac.optimizer(config))(
        learner.critic, learner.critic_opt, learner, batch, target
    )
    target_critic = optax.incremental_update(critic, learner.target_critic, config.tau)
    learner = learner.replace(critic=critic, critic_opt=critic_opt, target_critic=target_critic)
    return learner, {**metrics, **target_metrics}


def update(
    learner: Learner, batch: Transition, key: jax.Array, model: dynamics.ModelState
) -> tuple[Learner, dict]:
    """One MAAC update (Algorithm 1 lines 10-11) on ``batch``: the twin Q with
    STEVE targets, then the policy by the pathwise objective from ``batch.obs``,
    then the temperature.

    Args:
      learner: SAC-layout parameters and optimizer states.
      batch: transitions ``[B]`` (real and model data mixed).
      key: PRNG key.
      model: the trained ensemble (not updated here).
    """
    k_critic, k_actor = jax.random.split(key)
    learner, critic_metrics = update_critic(learner, model, batch, k_critic)
    learner, actor_metrics = update_actor(learner, model, batch.obs, k_actor)
    return learner, {**critic_metrics, **actor_metrics}


def sample_batch(state: AgentState, key: jax.Array) -> Transition:
    """``real_ratio`` of the batch from ``D_env``, the rest from ``D_model``."""
    config = state.learner.config
    if int(round(config.batch_size * config.real_ratio)) >= config.batch_size:
        return buffer_lib.sample(state.env_buffer, key, config.batch_size)
    return mbpo.sample_batch(state, key)


def repeated_updates(
    state: AgentState, key: jax.Array, num_updates: int, active: jax.Array
) -> tuple[Learner, dict]:
    """``num_updates`` calls of ``update`` on fresh mixed batches when ``active``
    (unbatched), else nothing; adds ``count/policy_updates``."""

    def learn(learner: Learner) -> tuple[Learner, dict]:
        def one(learner, k):
            k_sample, k_update = jax.random.split(k)
            return update(learner, sample_batch(state, k_sample), k_update, state.model)

        learner, metrics = jax.lax.scan(one, learner, jax.random.split(key, num_updates))
        return learner, jax.tree_util.tree_map(jnp.mean, metrics)

    learner, metrics = jax.lax.cond(active, learn, sac.skip_update(learn), state.learner)
    metrics = computed_when(active, metrics)  # the zeros of skipped steps are not averaged
    metrics["count/policy_updates"] = jnp.where(active, num_updates, 0).astype(jnp.int32)
    return learner, metrics


def train_step(
    state: AgentState, transition: Transition, key: jax.Array, step: jax.Array
) -> tuple[AgentState, dict]:
    """Stores the real transition; past the warm-up, ``updates_per_step``
    MAAC updates on mixed real/model batches."""
    config = state.learner.config
    state = state.replace(env_buffer=buffer_lib.add(state.env_buffer, transition))
    learner, metrics = repeated_updates(
        state, key, config.updates_per_step, step >= config.warmup_steps
    )
    return state.replace(learner=learner), metrics


def periodic(state: AgentState, key: jax.Array, step: jax.Array) -> tuple[AgentState, dict]:
    """Algorithm 1 lines 4-7: fit the ensemble on ``D_env`` and fill ``D_model``
    with ``k``-step policy rollouts (MBPO's ``periodic``). With
    ``real_ratio = 1`` (real-data ablation) only the model is fitted."""
    config = state.learner.config
    if config.real_ratio < 1.0:
        return mbpo.periodic(state, key, step)
    model, metrics = model_based.train_model(state.model, state.env_buffer, key, config)
    metrics = {
        **metrics,
        "rollout/length": jnp.zeros((), jnp.float32),
        "count/model_rollouts": jnp.zeros((), jnp.int32),
    }
    return state.replace(model=model), metrics


# --------------------------------------------------------------------------
# Model-predictive control at test time (Sec. 5.4).


def cem_config(config: Config) -> cem.CEMConfig:
    return cem.CEMConfig(
        num_iterations=config.mpc_iterations, elite_fraction=config.mpc_elite_fraction
    )


def plan(learner: Learner, model: dynamics.ModelState, obs: jax.Array, key: jax.Array):
    """CEM over ``mpc_horizon``-step action sequences from one state ``obs [O]``.

    Objective of a sequence ``a_0..a_{T-1}``: ``sum_{t<T} gamma^t r_t +
    gamma^T min_i Q_i(s_T, tanh(mu(s_T)))`` through the model (a random elite
    per candidate and step, as ``dynamics.step``). The first population is
    ``mpc_candidates`` sequences sampled by rolling the policy through the
    model (the policy as the initial distribution). Returns the first action
    of the final CEM mean, ``[A]``.
    """
    config = learner.config
    pi, q = sac.networks(config, learner.action_size)
    n, horizon = config.mpc_candidates, config.mpc_horizon
    done_fn = termination.for_env(config.env_name)
    start = jnp.broadcast_to(obs, (n,) + obs.shape)

    def policy_rollout(key):
        def body(s, k):
            k_act, k_model = jax.random.split(k)
            a = sac.act(learner, s, k_act)
            s_next, _ = dynamics.step(model, s, a, k_model)
            return s_next, a

        _, actions = jax.lax.scan(body, start, jax.random.split(key, horizon))
        return jnp.swapaxes(actions, 0, 1)  # [N, T, A]

    def objective(actions, key):
        def body(carry, xs):
            s, cont, ret, disc = carry
            a, k = xs
            s_next, r = dynamics.step(model, s, a, k)
            ret = ret + disc * cont * r
            cont = cont * (1.0 - done_fn(s_next).astype(r.dtype))
            return (s_next, cont, ret, disc * config.gamma), None

        zeros = jnp.zeros((n,), start.dtype)
        carry = (start, jnp.ones_like(zeros), zeros, jnp.ones((), start.dtype))
        xs = (jnp.swapaxes(actions, 0, 1), jax.random.split(key, horizon))
        (s, cont, ret, disc), _ = jax.lax.scan(body, carry, xs)
        a_term = policy_lib.mode(pi.apply(learner.policy, s))
        return ret + disc * cont * jnp.min(q.apply(learner.critic, s, a_term), axis=0)

    k_init, k_cem = jax.random.split(key)
    result = cem.optimize(objective, policy_rollout(k_init), k_cem, cem_config(config))
    return result.mean[0]


def act(state: AgentState, obs: jax.Array, key: jax.Array, deterministic: bool = False):
    """``a ~ pi(.|obs)``; when ``deterministic``, ``tanh(mean)``, or the CEM
    plan (``plan``) when ``config.mpc``. ``obs`` is ``[O]`` or ``[B, O]``."""
    learner = state.learner
    if not (deterministic and learner.config.mpc):
        return sac.act(learner, obs, key, deterministic)
    if obs.ndim == 1:
        return plan(learner, state.model, obs, key)
    keys = jax.random.split(key, obs.shape[0])
    return jax.vmap(lambda o, k: plan(learner, state.model, o, k))(obs, keys)

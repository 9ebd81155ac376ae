"""The core S2VG and MEMB share: soft value gradients through a one-step
reparameterized model.

Both papers ("S2VG: Soft Stochastic Value Gradient", and Tan et al., "Model
Embedding Model-Based Reinforcement Learning") build the same machine:

* a reparameterized dynamics model ``s' = f(s, a, zeta_omega)`` and reward
  model ``r_hat(s, a, zeta_phi)``, trained on real data by the MSE of a sample
  (S2VG eq. 6, MEMB eq. 4): ``model_loss``, ``update_model``;
* twin soft Q functions trained on value-expansion targets over imagined
  rollouts that start from a real transition (S2VG eq. 7; with ``H = 1`` the
  one-step TD of MEMB eq. 6): ``value_expansion_targets``, ``critic_loss``;
* a soft V with a Polyak-averaged target, regressed on
  ``min_i Q_i(s, a) - alpha log pi(a|s)`` on real states (S2VG eq. 8, MEMB
  eq. 5): ``value_loss``;
* a policy gradient taken through the one-step model (S2VG eq. 10-11, MEMB
  eq. 8-9): the gradient of ``soft_value_estimate``, wrapped by ``policy_loss``.

They differ in the states the policy gradient uses (S2VG: real states; MEMB:
states of k-step model rollouts), which each agent passes to
``actor_critic_update``. ``memrl.agents.svg`` (SVG(1), the papers' baseline)
reuses the model, V and ``soft_value_estimate`` with noise inferred from real
transitions instead of sampled.

The per-step schedule (Algorithm 1 of both papers) is ``learn_step``: store
the transition, one model step on a real batch, then ``updates_per_step``
(``m``) actor-critic updates once past the warm-up (the model is trained
alone before, as in the MEMB authors' code). ``periodic`` logs the model's
one- and k-step error on the latest real transitions (MEMB App. B.2) through
``memrl.diagnostics.model_error``.

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

No ``from __future__ import annotations`` here: ml_collections reads Config
field types at runtime.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from memrl import returns
from memrl.agents import sac
from memrl.agents.common import gradient_step
from memrl.diagnostics import model_error
from memrl.envs import pendulum
from memrl.nets import policy as policy_lib
from memrl.nets import reparam_model
from memrl.nets.critic import QNetwork, VNetwork
from memrl.replay import buffer as buffer_lib
from memrl.types import Transition

PyTree = Any
# (obs [..., O], action [..., A]) -> (next_obs [..., O], reward [...]).
StepFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
# (policy params, obs [..., O], eta [..., A]) -> (action [..., A], log pi [...]).
PolicyFn = Callable[[PyTree, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

# S2VG Table 2 and MEMB Table 2 (App. C); the two tables agree on the five
# tasks they share, MEMB adds swimmer and reacher. Policy learning rate 3e-4
# and (256, 256) policy/value networks everywhere. The text extraction of the
# tables is garbled; merged cells read as spanning to the next filled cell.
PAPER_TABLE: dict[str, dict[str, Any]] = {
    "pendulum": dict(
        epochs=50,
        value_learning_rate=3e-4,
        model_learning_rate=3e-4,
        alpha=0.2,
        model_hidden_sizes=(32, 16),
        updates_per_step=5,
    ),
    "inverted_pendulum": dict(
        epochs=40,
        value_learning_rate=3e-4,
        model_learning_rate=3e-4,
        alpha=0.1,
        model_hidden_sizes=(32, 16),
        updates_per_step=1,
    ),
    "halfcheetah": dict(
        epochs=200,
        value_learning_rate=1e-3,
        model_learning_rate=3e-4,
        alpha=0.4,
        model_hidden_sizes=(256, 128),
        updates_per_step=5,
    ),
    "hopper": dict(
        epochs=200,
        value_learning_rate=1e-3,
        model_learning_rate=1e-4,
        alpha=0.4,
        model_hidden_sizes=(256, 128),
        updates_per_step=5,
    ),
    "walker2d": dict(
        epochs=300,
        value_learning_rate=3e-4,
        model_learning_rate=1e-4,
        alpha=0.4,
        model_hidden_sizes=(256, 256),
        updates_per_step=3,
    ),
    "swimmer": dict(
        epochs=180,
        value_learning_rate=3e-4,
        model_learning_rate=1e-4,
        alpha=0.2,
        model_hidden_sizes=(256, 128),
        updates_per_step=5,
    ),
    "reacher": dict(
        epochs=50,
        epoch_length=50,
        value_learning_rate=3e-4,
        model_learning_rate=1e-4,
        alpha=0.2,
        model_hidden_sizes=(256, 128),
        updates_per_step=5,
    ),
}

# Uniform-random steps during which the model trains alone (MEMB code:
# start_steps 1000, actor-critic from epoch train_model_epoch + 1).
_WARMUP = {"pendulum": 1000, "inverted_pendulum": 1000, "reacher": 500}


@dataclasses.dataclass(unsafe_hash=True)
class Config:
    """Settings shared by S2VG, MEMB and SVG; defaults are the MEMB authors' code
    (HalfCheetah), ``for_env`` gives the papers' Table 2.

    Treat as immutable: derive variants with ``dataclasses.replace``.

    Attributes:
      hidden_sizes: policy, Q and V MLP widths ((256, 256), Table 2).
      activation: hidden activation of every network (ReLU, Table 2).
      model_hidden_sizes: widths of the dynamics and of the reward network
        (Table 2 "Model network architecture").
      model_predicts_delta: the dynamics network predicts ``s' - s`` instead of
        the absolute ``s'`` (not in the papers; the authors predict ``s'``).
      policy_learning_rate: Adam step size of the policy (3e-4).
      value_learning_rate: Adam step size of Q and V (Table 2 "Value").
      model_learning_rate: Adam step size of both models (Table 2 "Model").
      alpha: fixed entropy temperature (Table 2 "Alpha"); 0 removes the entropy
        term (MEMB App. B.1, then use ``exploration_noise``).
      gamma: discount.
      tau: Polyak coefficient of the target V (code: polyak 0.995).
      batch_size: minibatch size of every update (code: 100).
      buffer_size: real replay capacity.
      updates_per_step: ``m``, actor-critic updates per environment step
        (Algorithm 1 step 3, Table 2 "Train actor-critic times").
      horizon: ``H`` of the value expansion for Q (S2VG eq. 7; 1 = real
        one-step TD, the papers' choice; 2 and 5 are their ablations).
      exploration_noise: std of Gaussian noise added to sampled actions in
        ``act`` (MEMB App. B.1: with ``alpha = 0`` "we add the noise in policy
        for the exploration"); 0 = none.
      true_model: use the environment's own differentiable step instead of the
        learned model for imagined transitions and the policy gradient (MEMB
        App. B.3, Fig. 4). Pendulum only (see ``true_step``); the learned
        model is still trained so that its error stays comparable.
      env_name: the task (set by ``for_env``; needed by ``true_model``).
      epochs: training epochs of Table 2 (informational: total steps are
        ``epochs * epoch_length``; the runner's ``--total_steps`` decides).
      epoch_length: environment steps per epoch (Table 2: 1000; reacher 50).
      model_error_horizon: ``k`` of the k-step model error logged by
        ``periodic`` (MEMB App. B.2); 0 turns ``periodic`` off.
      warmup_steps: uniform-random steps at the start; the model trains alone
        during them, actor-critic updates start after.
      num_envs: parallel environments per seed.
      periodic_every: period of the model-error measurement (one epoch).
    """

    PAPER_ENVS: ClassVar[tuple[str, ...]] = tuple(PAPER_TABLE)

    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    model_hidden_sizes: tuple[int, ...] = (256, 128)
    model_predicts_delta: bool = False
    policy_learning_rate: float = 3e-4
    value_learning_rate: float = 1e-3
    model_learning_rate: float = 3e-4
    alpha: float = 0.4
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 100
    buffer_size: int = 1_000_000
    updates_per_step: int = 5
    horizon: int = 1
    exploration_noise: float = 0.0
    true_model: bool = False
    env_name: str = ""
    epochs: int = 200
    epoch_length: int = 1000
    model_error_horizon: int = 5
    warmup_steps: int = 5000
    num_envs: int = 1
    periodic_every: int = 1000

    def run_length(self) -> int | None:
        """Table 2's run, ``epochs * epoch_length`` environment steps, for the
        paper's tasks (``PAPER_ENVS``); None elsewhere."""
        if self.env_name in self.PAPER_ENVS:
            return self.epochs * self.epoch_length
        return None

    @classmethod
    def for_env(cls, env_name: str) -> "Config":
        """Table 2 of the paper for the tasks in ``PAPER_ENVS``; the defaults
        (HalfCheetah's settings) elsewhere."""
        settings: dict[str, Any] = dict(env_name=env_name)
        settings["warmup_steps"] = _WARMUP.get(env_name, 5000)
        if env_name in cls.PAPER_ENVS:
            settings.update(PAPER_TABLE[env_name])
            settings["periodic_every"] = settings.get("epoch_length", 1000)
        return cls(**settings)


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


class Networks(NamedTuple):
    """The five flax modules."""

    policy: policy_lib.TanhGaussianPolicy
    critic: QNetwork
    value: VNetwork
    dynamics: reparam_model.ReparamModel
    reward: reparam_model.ReparamModel


def networks(config: Config, obs_size: int, action_size: int) -> Networks:
    hidden, act = tuple(config.hidden_sizes), config.activation
    model_hidden = tuple(config.model_hidden_sizes)
    return Networks(
        policy=policy_lib.TanhGaussianPolicy(action_size, hidden, act),
        critic=QNetwork(hidden, 2, act),
        value=VNetwork(hidden, act),
        dynamics=reparam_model.ReparamModel(obs_size, model_hidden, act),
        reward=reparam_model.ReparamModel(1, model_hidden, act),
    )


@struct.dataclass
class Learner:
    """Everything the updates change.

    Attributes:
      policy: tanh-Gaussian policy parameters (theta).
      critic: twin-Q parameters (phi_0, phi_1), stacked; ``None`` for SVG.
      value: V parameters (psi).
      target_value: Polyak-averaged V (psi bar).
      model: ``{'dynamics': omega, 'reward': varphi}``.
      policy_opt, critic_opt, value_opt, model_opt: Adam states.
      config: the static ``Config``.
      obs_size, action_size: static sizes.
    """

    policy: PyTree
    critic: PyTree
    value: PyTree
    target_value: PyTree
    model: PyTree
    policy_opt: optax.OptState
    critic_opt: optax.OptState
    value_opt: optax.OptState
    model_opt: optax.OptState
    config: Config = struct.field(pytree_node=False)
    obs_size: int = struct.field(pytree_node=False)
    action_size: int = struct.field(pytree_node=False)

    @property
    def nets(self) -> Networks:
        return networks(self.config, self.obs_size, self.action_size)


@struct.dataclass
class AgentState:
    """Learner plus the real replay buffer ``D`` (of ``Transition`` or, for
    SVG, of records that hold one)."""

    learner: Learner
    buffer: buffer_lib.BufferState


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


def policy_fn(learner: Learner) -> PolicyFn:
    """``(theta, s, eta) -> (a, log pi(a|s))`` with ``a = tanh(mu + sigma eta)``."""
    pi = learner.nets.policy

    def apply(params, obs, eta):
        return policy_lib.squash_with_log_prob(pi.apply(params, obs), eta)

    return apply


def value_fn(learner: Learner, params: PyTree | None = None) -> Callable[[jax.Array], jax.Array]:
    """``s -> V_psi(s)`` (the online V unless ``params`` is given)."""
    v = learner.nets.value
    params = learner.value if params is None else params
    return lambda obs: v.apply(params, obs)


# ----------------------------------------------------------------------------
# Models: learned (eq. 6 / eq. 4) and true (MEMB App. B.3).


def true_step(env_name: str) -> StepFn:
    """The environment's own step as a differentiable ``StepFn`` (MEMB Fig. 4).

    Pendulum: ``th = atan2(sin, cos)``, torque ``u = max_torque * a`` (the
    ``RescaleAction`` of ``memrl.envs.make``), then ``pendulum.dynamics`` and
    ``pendulum.reward`` (the reward of the pre-step state, as gymnasium).
    The MJX tasks are not supported: their observations leave out positions,
    so a state cannot be rebuilt from an observation, and differentiating an
    MJX step for every imagined row is far too slow on CPU.

    Raises:
      ValueError: for any task but pendulum.
    """
    if env_name != "pendulum":
        raise ValueError(
            f"true_model is implemented for pendulum only (a differentiable JAX step "
            f"that an observation determines), got env {env_name!r}"
        )
    params = pendulum.DEFAULT_PARAMS

    def step(obs, action):
        x = jnp.stack([jnp.arctan2(obs[..., 1], obs[..., 0]), obs[..., 2]], axis=-1)
        u = params.max_torque * action
        reward = pendulum.reward(x, u, params)
        return pendulum.observation(pendulum.dynamics(x, u, params)), reward

    return step


def model_outputs(
    learner: Learner, obs: jax.Array, action: jax.Array, model: PyTree | None = None
) -> tuple[reparam_model.GaussianOutput, reparam_model.GaussianOutput]:
    """The Gaussians of the dynamics and reward models at ``(s, a)``."""
    model = learner.model if model is None else model
    nets = learner.nets
    return (
        nets.dynamics.apply(model["dynamics"], obs, action),
        nets.reward.apply(model["reward"], obs, action),
    )


def learned_step(learner: Learner, key: jax.Array) -> StepFn:
    """``(s, a) -> (f(s, a, zeta_omega), r_hat(s, a, zeta_phi))`` with noise drawn
    from ``key`` (the same noise for every call with equal shapes)."""
    delta = learner.config.model_predicts_delta

    def step(obs, action):
        k_f, k_r = jax.random.split(key)
        dyn, rew = model_outputs(learner, obs, action)
        next_obs = reparam_model.sample(dyn, jax.random.normal(k_f, dyn.mean.shape))
        if delta:
            next_obs = next_obs + obs
        reward = reparam_model.sample(rew, jax.random.normal(k_r, rew.mean.shape))
        return next_obs, reward[..., 0]

    return step


def model_step(learner: Learner, key: jax.Array) -> StepFn:
    """The step used for imagination and the policy gradient: the true one
    when ``config.true_model``, else ``learned_step``."""
    if learner.config.true_model:
        return true_step(learner.config.env_name)
    return learned_step(learner, key)


def model_loss(
    model: PyTree, learner: Learner, batch: Transition, key: jax.Array
) -> tuple[jax.Array, dict]:
    """``J(omega) + J(varphi)`` (S2VG eq. 6, MEMB eq. 4)::

    J(omega)  = 1/2 E_D ||f(s, a, zeta_omega) - s'||^2
    J(varphi) = 1/2 E_D (r_hat(s, a, zeta_phi) - r)^2
    """
    nets = learner.nets
    k_f, k_r = jax.random.split(key)
    target = batch.next_obs
    if learner.config.model_predicts_delta:
        target = target - batch.obs
    loss_f, dyn = reparam_model.mse_loss(
        nets.dynamics,
        model["dynamics"],
        batch.obs,
        batch.action,
        target,
        jax.random.normal(k_f, target.shape),
    )
    reward = batch.reward[:, None]
    loss_r, _ = reparam_model.mse_loss(
        nets.reward,
        model["reward"],
        batch.obs,
        batch.action,
        reward,
        jax.random.normal(k_r, reward.shape),
    )
    metrics = {
        "loss/model_dynamics": loss_f,
        "loss/model_reward": loss_r,
        "model/dynamics_std": jnp.mean(jnp.exp(dyn.log_std)),
    }
    return loss_f + loss_r, metrics


def update_model(learner: Learner, batch: Transition, key: jax.Array) -> tuple[Learner, dict]:
    """One Adam step on ``model_loss`` (Algorithm 1 step 1)."""
    step = gradient_step(model_loss, optax.adam(learner.config.model_learning_rate))
    model, model_opt, metrics = step(learner.model, learner.model_opt, learner, batch, key)
    return learner.replace(model=model, model_opt=model_opt), metrics


# ----------------------------------------------------------------------------
# Imagination and value expansion (S2VG eq. 7).


class Trajectory(NamedTuple):
    """A batch of trajectories, time-major.

    Attributes:
      obs: ``[L + 1, B, O]`` states ``s_0 .. s_L``.
      action: ``[L, B, A]``.
      reward: ``[L, B]``.
      discount: ``[L, B]`` (0 after a terminal transition).
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    discount: jax.Array


def imagine(learner: Learner, obs: jax.Array, key: jax.Array, length: int) -> Trajectory:
    """``length`` steps of ``a_k ~ pi(.|s_k)``, ``(s_{k+1}, r_k) = model(s_k, a_k)``
    from ``obs [B, O]`` (Algorithm 1, "imaginary rollout"); no gradients flow.

    The learned model has no termination, so every discount is 1 (MEMB makes
    no assumption on the terminal condition).
    """
    b = obs.shape[0]
    if length == 0:
        return Trajectory(
            obs=obs[None],
            action=jnp.zeros((0, b, learner.action_size), obs.dtype),
            reward=jnp.zeros((0, b), obs.dtype),
            discount=jnp.zeros((0, b), obs.dtype),
        )
    pi = learner.nets.policy

    def body(s, k):
        k_pi, k_model = jax.random.split(k)
        a, _ = policy_lib.sample_and_log_prob(pi.apply(learner.policy, s), k_pi)
        s_next, r = model_step(learner, k_model)(s, a)
        return s_next, (s, a, r)

    last, (states, actions, rewards) = jax.lax.scan(body, obs, jax.random.split(key, length))
    traj = Trajectory(
        obs=jnp.concatenate([states, last[None]], axis=0),
        action=actions,
        reward=rewards,
        discount=jnp.ones_like(rewards),
    )
    return jax.tree_util.tree_map(jax.lax.stop_gradient, traj)


# S2VG eq. 7 (one-step TD of MEMB eq. 6 with H = 1); kept here under its old
# name for the agents and tests that import it from this module.
value_expansion_targets = returns.value_expansion_targets


def expanded_trajectory(learner: Learner, batch: Transition, key: jax.Array) -> Trajectory:
    """The real tuple ``tau_0 = (s_0, a_0, r_0, s_1)`` followed by ``H - 1``
    imagined steps from the real ``s_1`` (S2VG eq. 7: "only the initial tuple
    is sampled from D")."""
    cont = imagine(learner, batch.next_obs, key, learner.config.horizon - 1)
    return Trajectory(
        obs=jnp.concatenate([batch.obs[None], cont.obs], axis=0),
        action=jnp.concatenate([batch.action[None], cont.action], axis=0),
        reward=jnp.concatenate([batch.reward[None], cont.reward], axis=0),
        discount=jnp.concatenate([batch.discount[None], cont.discount], axis=0),
    )


def critic_loss(
    critic: PyTree, learner: Learner, batch: Transition, key: jax.Array
) -> tuple[jax.Array, dict]:
    """Twin-Q loss on value-expansion targets with the target V (S2VG eq. 7)::

        J(phi_i) = mean_b 1/H sum_{t<H} w_t 1/2 (Q_i(s_t, a_t) - G_t)^2

    ``w_t = prod_{k<t} d_k`` drops the imagined steps after a real terminal
    transition. With ``H = 1`` this is MEMB eq. 6 with ``V_psi_bar``.
    """
    config = learner.config
    nets = learner.nets
    traj = expanded_trajectory(learner, batch, key)
    v_last = nets.value.apply(learner.target_value, traj.obs[-1])
    targets = jax.vmap(value_expansion_targets, in_axes=(1, 1, 0, None), out_axes=1)(
        traj.reward, traj.discount, v_last, config.gamma
    )
    targets = jax.lax.stop_gradient(targets)
    alive = jnp.cumprod(
        jnp.concatenate([jnp.ones_like(traj.discount[:1]), traj.discount[:-1]], axis=0), axis=0
    )
    q = nets.critic.apply(critic, traj.obs[:-1], traj.action)  # [2, H, B]
    sq = 0.5 * jnp.sum((q - targets) ** 2, axis=0)
    loss = jnp.mean(jnp.mean(alive * sq, axis=0))
    return loss, {"loss/critic": loss, "q/mean": jnp.mean(q[:, 0]), "q/target": jnp.mean(targets)}


def value_loss(
    value: PyTree, learner: Learner, obs: jax.Array, key: jax.Array
) -> tuple[jax.Array, dict]:
    """``J(psi) = mean_s 1/2 (V_psi(s) - [min_i Q_i(s, a) - alpha log pi(a|s)])^2``,
    ``a ~ pi(.|s)``, on real states (S2VG eq. 8, MEMB eq. 5)."""
    config = learner.config
    nets = learner.nets
    action, log_prob = policy_lib.sample_and_log_prob(nets.policy.apply(learner.policy, obs), key)
    q_min = jnp.min(nets.critic.apply(learner.critic, obs, action), axis=0)
    target = jax.lax.stop_gradient(q_min - config.alpha * log_prob)
    v = nets.value.apply(value, obs)
    loss = 0.5 * jnp.mean((v - target) ** 2)
    return loss, {"loss/value": loss, "v/mean": jnp.mean(v)}


# ----------------------------------------------------------------------------
# The policy gradient through the model (S2VG eq. 10-11, MEMB eq. 8-9).


def soft_value_estimate(
    policy_params: PyTree,
    obs: jax.Array,
    eta: jax.Array,
    policy: PolicyFn,
    step: StepFn,
    value: Callable[[jax.Array], jax.Array],
    alpha: float,
    gamma: float,
    discount: jax.Array | float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """One-step soft Bellman estimate of ``V(s)`` through the model (S2VG eq.
    10, MEMB eq. 8), pathwise in the policy parameters::

        a = kappa(s, eta; theta),   (s', r) = step(s, a)   [noise zeta inside]
        V(s) = r_hat(s, a, zeta_phi) - alpha log pi(a|s) + gamma d V'(f(s, a, zeta_omega))

    Its gradient in ``theta`` is eq. 11 / eq. 9: the reward path
    ``dr/da da/dtheta``, the entropy term ``-alpha dlog pi/dtheta`` (total
    derivative, ``eta`` fixed) and ``gamma dV'/ds' df/da da/dtheta``.

    Args:
      policy_params: ``theta`` (differentiated).
      obs: ``[B, O]`` states ``s``.
      eta: ``[B, A]`` policy noise.
      policy: ``(theta, s, eta) -> (a, log pi(a|s))``.
      step: ``(s, a) -> (s', r)``, the model with its noise fixed.
      value: ``s' -> V'(s')``.
      alpha: entropy temperature.
      gamma: discount.
      discount: ``d``, scalar or ``[B]`` (1 for the learned model).

    Returns:
      ``[B]`` estimates and ``[B]`` log-probabilities.
    """
    action, log_prob = policy(policy_params, obs, eta)
    next_obs, reward = step(obs, action)
    return reward - alpha * log_prob + gamma * discount * value(next_obs), log_prob


def policy_loss(
    policy_params: PyTree, learner: Learner, obs: jax.Array, key: jax.Array
) -> tuple[jax.Array, dict]:
    """``-mean_s soft_value_estimate(s)`` with fresh noise ``eta, zeta`` and the
    online V: ascending it follows eq. 11 / eq. 9 on the states ``obs``."""
    config = learner.config
    k_eta, k_model = jax.random.split(key)
    eta = jax.random.normal(k_eta, obs.shape[:-1] + (learner.action_size,))
    estimate, log_prob = soft_value_estimate(
        policy_params,
        obs,
        eta,
        policy_fn(learner),
        model_step(learner, k_model),
        value_fn(learner),
        config.alpha,
        config.gamma,
    )
    loss = -jnp.mean(estimate)
    return loss, {"loss/actor": loss, "policy/entropy": -jnp.mean(log_prob)}


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


# ----------------------------------------------------------------------------
# Algorithm 1: the per-step schedule.

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
    metrics["count/policy_updates"] = jnp.where(active, num_updates, 0).astype(jnp.int32)
    return learner, metrics


def init_state(key: jax.Array, env_spec: Any, config: Config, example: Any, with_critic=True):
    """Learner and an empty buffer of ``config.buffer_size`` items like ``example``."""
    learner = init_learner(
        key, env_spec.observation_size, env_spec.action_size, config, with_critic
    )
    return AgentState(learner=learner, buffer=buffer_lib.init(example, config.buffer_size))


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
    ``update`` on fresh real batches once ``step >= warmup_steps``.

    Args:
      state: agent state.
      record: what the buffer stores (a ``Transition`` or a record holding one).
      key: PRNG key.
      step: global env-step count (unbatched).
      update: the agent's ``update(learner, batch, key)``.
      transitions: extracts the ``Transition`` from a batch of records.
    """
    config = state.learner.config
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
    return AgentState(learner=learner, buffer=buffer), {**model_metrics, **metrics}


def model_error_metrics(
    learner: Learner, window: Transition, key: jax.Array, horizon: int
) -> dict[str, jax.Array]:
    """One- and ``horizon``-step error of the learned model (its sampled
    prediction) on consecutive real transitions, and its reward MSE (MEMB
    App. B.2)."""
    k_err, k_r = jax.random.split(key)

    def step_fn(obs, action, k):
        return learned_step(learner, k)(obs, action)[0]

    metrics = model_error.prediction_error(step_fn, window, k_err, horizon)
    reward = learned_step(learner, k_r)(window.obs, window.action)[1]
    metrics["model/reward_mse"] = jnp.mean((reward - window.reward) ** 2)
    return metrics


def periodic(
    state: AgentState,
    key: jax.Array,
    step: jax.Array,
    transitions: Callable[[Any], Transition] = lambda r: r,
) -> tuple[AgentState, dict]:
    """Model error over training (MEMB App. B.2) on the last ``periodic_every``
    real transitions. They are not held out: the model takes one step per
    env step on uniform batches, so each was seen a few times at most."""
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

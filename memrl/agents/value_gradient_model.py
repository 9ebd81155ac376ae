"""The model of S2VG, MEMB and SVG(1): the reparameterized dynamics and reward
models as steps ``(s, a) -> (s', r)`` (learned, S2VG eq. 6 / MEMB eq. 4, or
the environment's own, MEMB App. B.3), their loss, imagined rollouts under
the policy (Algorithm 1, "imaginary rollout"), the trajectory that value
expansion uses (S2VG eq. 7) and the model-error diagnostic (MEMB App. B.2).

Part of the value-gradient family (file map in ``memrl.agents.value_gradient``).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from memrl.agents.value_gradient_networks import Learner, PyTree, StepFn
from memrl.diagnostics import model_error
from memrl.envs import pendulum
from memrl.nets import policy as policy_lib
from memrl.nets import reparam_model
from memrl.types import Transition

# Tasks whose step an observation determines and JAX can differentiate.
TRUE_STEPS: dict[str, StepFn] = {"pendulum": pendulum.observation_step}


def true_step(env_name: str) -> StepFn:
    """The environment's own step as a differentiable ``StepFn`` (MEMB App.
    B.3, Fig. 4): ``memrl.envs.pendulum.observation_step`` for pendulum.

    The MJX tasks are not supported: their observations leave out positions,
    so a state cannot be rebuilt from an observation, and differentiating an
    MJX step for every imagined row is far too slow on CPU.

    Raises:
      ValueError: for any task but pendulum.
    """
    if env_name not in TRUE_STEPS:
        raise ValueError(
            f"true_model is implemented for pendulum only (a differentiable JAX step "
            f"that an observation determines), got env {env_name!r}"
        )
    return TRUE_STEPS[env_name]


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


# ----------------------------------------------------------------------------
# Imagination and value expansion (S2VG eq. 7).


class Trajectory(NamedTuple):
    """A batch of trajectories, time-major.

    Attributes:
      obs: ``[L + 1, B, O]`` states ``s_0 .. s_L``.
      action: ``[L, B, A]``.
      reward: ``[L, B]``.
      discount: ``[L, B]`` (0 after a terminal transition).
      log_prob: ``[L, B]`` ``log pi(a_k|s_k)`` of the policy's actions (0 for
        the real first action of ``expanded_trajectory``, whose entropy no
        target uses).
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    discount: jax.Array
    log_prob: jax.Array


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
            log_prob=jnp.zeros((0, b), obs.dtype),
        )
    pi = learner.nets.policy

    def body(s, k):
        k_pi, k_model = jax.random.split(k)
        a, log_prob = policy_lib.sample_and_log_prob(pi.apply(learner.policy, s), k_pi)
        s_next, r = model_step(learner, k_model)(s, a)
        return s_next, (s, a, r, log_prob)

    last, (states, actions, rewards, log_probs) = jax.lax.scan(
        body, obs, jax.random.split(key, length)
    )
    traj = Trajectory(
        obs=jnp.concatenate([states, last[None]], axis=0),
        action=actions,
        reward=rewards,
        discount=jnp.ones_like(rewards),
        log_prob=log_probs,
    )
    return jax.tree_util.tree_map(jax.lax.stop_gradient, traj)


# S2VG eq. 7 (one-step TD of MEMB eq. 6 with H = 1); kept here under its old
# name for the agents and tests that import it from this module.
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
        log_prob=jnp.concatenate([jnp.zeros_like(batch.reward)[None], cont.log_prob], axis=0),
    )


def heldout_model_error(learner: Learner, batch: Transition) -> dict[str, jax.Array]:
    """MEMB App. B.2's model error on transitions the model was not trained on:
    ``E |s_hat' - s'|`` and ``E |r_hat - r|`` per pair (and per dimension).

    For a deterministic environment (pendulum, the MuJoCo tasks) this is the
    Wasserstein-1 distance between the true ``p(s'|s, a)``, a point mass at
    the observed ``s'``, and the model's ``N(mu, sigma^2)``, computed exactly
    (``model_error.gaussian_w1_to_point``), not sampled. ``learn_step`` calls
    it on each arriving transition with the parameters before the model step
    that could first train on it, so every evaluated pair is held out.

    Args:
      learner: the model's parameters.
      batch: transitions, leaves ``[N, ...]``.

    Returns:
      ``model/heldout_pair_w1`` and ``model/heldout_reward_w1`` (means).
    """
    dyn, rew = model_outputs(learner, batch.obs, batch.action)
    mean = dyn.mean + batch.obs if learner.config.model_predicts_delta else dyn.mean
    w1 = model_error.gaussian_w1_to_point(mean, jnp.exp(dyn.log_std), batch.next_obs)
    reward_w1 = model_error.gaussian_w1_to_point(
        rew.mean[..., 0], jnp.exp(rew.log_std[..., 0]), batch.reward
    )
    return {"model/heldout_pair_w1": jnp.mean(w1), "model/heldout_reward_w1": jnp.mean(reward_w1)}


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

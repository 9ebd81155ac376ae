"""Actor-critic losses of S2VG and MEMB: twin Q on value-expansion targets
(S2VG eq. 7, MEMB eq. 6), the soft V (S2VG eq. 8, MEMB eq. 5), and the policy
objective whose gradient is the soft value gradient through the one-step
model (S2VG eq. 10-11, MEMB eq. 8-9; SVG(1) reuses ``soft_value_estimate``).

Part of the value-gradient family (file map in ``memrl.agents.value_gradient``).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from memrl import returns
from memrl.agents.value_gradient_model import expanded_trajectory, model_step
from memrl.agents.value_gradient_networks import (
    Learner,
    PolicyFn,
    PyTree,
    StepFn,
    policy_fn,
    value_fn,
)
from memrl.nets import policy as policy_lib
from memrl.types import Transition


def critic_loss(
    critic: PyTree, learner: Learner, batch: Transition, key: jax.Array
) -> tuple[jax.Array, dict]:
    """Twin-Q loss on value-expansion targets with the target V (S2VG eq. 7)::

        J(phi_i) = mean_b 1/H sum_{t<H} w_t 1/2 (Q_i(s_t, a_t) - G_t)^2

    ``w_t = prod_{k<t} d_k`` drops the imagined steps after a real terminal
    transition. With ``H = 1`` this is MEMB eq. 6 with ``V_psi_bar``.

    Targets (``memrl.returns.value_expansion_targets``): with
    ``config.soft_expansion`` (default) the soft ones,

        G_t = r_t + sum_{k=t+1}^{H-1} gamma^{k-t} (r_k - alpha log pi(a_k|s_k))
              + gamma^{H-t} V_psi_bar(s_H),

    which unroll the soft Bellman equations (eq. 4-5) that ``V_psi_bar`` and
    the V target (eq. 8) follow; without it, eq. 7 as printed (no entropy
    terms), whose targets then sit about ``alpha sum_{k>t} gamma^{k-t}
    H(pi(.|s_k))`` below the soft Q for ``H >= 2``. Both are one-step TD for
    ``H = 1``.
    """
    config = learner.config
    nets = learner.nets
    traj = expanded_trajectory(learner, batch, key)
    v_last = nets.value.apply(learner.target_value, traj.obs[-1])
    entropy = -config.alpha * traj.log_prob if config.soft_expansion else None

    def targets_fn(r_t, discount_t, v_h, entropy_t):
        return returns.value_expansion_targets(r_t, discount_t, v_h, config.gamma, entropy_t)

    targets = jax.vmap(targets_fn, in_axes=(1, 1, 0, 1), out_axes=1)(
        traj.reward, traj.discount, v_last, entropy
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

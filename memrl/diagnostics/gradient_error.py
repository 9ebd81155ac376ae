"""Policy-gradient error of the MAAC objective on the double integrator
(Clavera et al. 2020, Sec. 5.2 and Fig. 3).

For a linear Gaussian policy ``a = K s + sigma eps`` on the linear-quadratic
double integrator (``memrl.envs.double_integrator``) everything is exact. The
MAAC objective with horizon ``H`` (Sec. 4.1),

    J_H(K) = E_{s_0 ~ p_0, eps} [ sum_{t<H} gamma^t r(s_t, a_t) + gamma^H Q(s_H, a_H) ],

with the true dynamics and the policy's exact action value ``Q = Q^pi`` held
fixed (its gradient does not flow through ``Q``'s dependence on ``K``, as in
MAAC), is the "true objective" of Lemma 4.1; its gradient ``g*_H = dJ_H/dK``
is analytic (``analytic_gradient``: state moments propagated exactly, ``Q``
quadratic). The estimators differentiate the same objective by the pathwise
Monte-Carlo estimate (``pathwise_gradient``, built on
``memrl.agents.maac.pathwise_return``) with a learned Q and the learned or the
true dynamics; the error is ``||g_H - g*_H||_1`` (Fig. 3).

The exact action value is ``Q(s, a) = r(s, a) + gamma V(A s + B a)`` with
``V(s) = s^T P s + c`` (``exact_value``, ``exact_q``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from memrl.agents import maac
from memrl.envs import double_integrator as di


class LinearPolicy(NamedTuple):
    """``a = K s + exp(log_std) eps``.

    Attributes:
      K: ``[1, 2]`` gain.
      log_std: scalar log standard deviation (held fixed).
    """

    K: jax.Array
    log_std: jax.Array

    def act(self, s: jax.Array, eps: jax.Array) -> jax.Array:
        return s @ self.K.T + jnp.exp(self.log_std) * eps


class QuadraticValue(NamedTuple):
    """``V(s) = s^T P s + c`` of a linear policy (exact: the problem is LQ)."""

    P: jax.Array
    c: jax.Array


def exact_value(
    policy: LinearPolicy, gamma: float, horizon: int, params: di.LQParams | None = None
) -> QuadraticValue:
    """The policy's ``horizon``-step value as a quadratic form. ``V`` is
    quadratic in the start state, so its Hessian and value at 0 determine it."""

    def value(s):
        return di.expected_return(
            policy.K, policy.log_std, horizon, s, jnp.zeros((2, 2)), gamma, params
        )

    zero = jnp.zeros(2)
    return QuadraticValue(P=0.5 * jax.hessian(value)(zero), c=value(zero))


def exact_q(
    value: QuadraticValue, gamma: float, params: di.LQParams | None = None
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``Q(s, a) = r(s, a) + gamma V(A s + B a)`` over ``[..., 2]`` / ``[..., 1]``."""

    def q(s, a):
        s_next = di.dynamics(s, a, params)
        v = jnp.einsum("...i,ij,...j->...", s_next, value.P, s_next) + value.c
        return di.reward(s, a, params) + gamma * v

    return q


def analytic_gradient(
    policy: LinearPolicy,
    value: QuadraticValue,
    horizon: int,
    gamma: float,
    params: di.LQParams | None = None,
) -> jax.Array:
    """``[1, 2]`` exact ``dJ_H/dK`` at ``policy.K`` with the terminal
    ``Q(s, a) = r(s, a) + gamma V(A s + B a)`` held fixed, from ``s_0 ~ U[-2, 2]^2``.

    ``J_H(K) = sum_{t<=H} gamma^t E[r(s_t, a_t)] + gamma^{H+1} E[V(s_{H+1})]``
    (the terminal Q expanded one step), where ``E[V(s)] = tr(P S) + mu^T P mu + c``
    for the state mean ``mu`` and covariance ``S`` after ``H + 1`` steps:
    ``mu' = (A + B K) mu``, ``S' = (A + B K) S (A + B K)^T + B D B^T``.
    """
    p = di.make_params() if params is None else params
    mean0, cov0 = di.init_moments()

    def objective(K):
        rewards = di.expected_return(K, policy.log_std, horizon + 1, mean0, cov0, gamma, p)
        closed = p.A + p.B @ K
        noise = p.B @ jnp.diag(jnp.exp(2.0 * jnp.reshape(policy.log_std, (1,)))) @ p.B.T
        mu, cov = mean0, cov0
        for _ in range(horizon + 1):
            mu, cov = closed @ mu, closed @ cov @ closed.T + noise
        terminal = jnp.trace(value.P @ cov) + mu @ value.P @ mu + value.c
        return rewards + gamma ** (horizon + 1) * terminal

    return jax.grad(objective)(policy.K)


class EstimatorNoise(NamedTuple):
    """Start states and noise shared by every estimator (common random numbers).

    Attributes:
      start: ``[N, 2]`` start states ``U[-2, 2]^2``.
      action: ``[Hmax, N, 1]`` policy noise.
      model: ``[Hmax, N, D]`` model noise.
      member: ``[N]`` ensemble member of each path.
      terminal: ``[1, N, 1]`` policy noise of the terminal action.
    """

    start: jax.Array
    action: jax.Array
    model: jax.Array
    member: jax.Array
    terminal: jax.Array


def sample_noise(
    key: jax.Array, num_starts: int, max_horizon: int, target_size: int, num_members: int
) -> EstimatorNoise:
    k_s, k_a, k_m, k_u, k_t = jax.random.split(key, 5)
    r = di.INIT_RANGE
    return EstimatorNoise(
        start=jax.random.uniform(k_s, (num_starts, 2), minval=-r, maxval=r),
        action=jax.random.normal(k_a, (max_horizon, num_starts, 1)),
        model=jax.random.normal(k_m, (max_horizon, num_starts, target_size)),
        member=jax.random.randint(k_u, (num_starts,), 0, num_members),
        terminal=jax.random.normal(k_t, (1, num_starts, 1)),
    )


# (s [N, 2], a [N, 1], member [N], eps [N, D]) -> s' [N, 2].
DynamicsFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def pathwise_gradient(
    policy: LinearPolicy,
    dynamics_fn: DynamicsFn,
    q_fn: Callable[[jax.Array, jax.Array], jax.Array],
    noise: EstimatorNoise,
    horizon: int,
    gamma: float,
    params: di.LQParams | None = None,
) -> jax.Array:
    """``[1, 2]`` gradient of the MAAC objective ``J_H(K)`` (Sec. 4.1) with the
    true reward, ``dynamics_fn`` for ``horizon`` steps and ``q_fn`` at ``s_H``."""

    def objective(K):
        pol = policy._replace(K=K)

        def policy_fn(s, eps):
            return pol.act(s, eps), jnp.zeros(s.shape[:-1])

        def step_fn(s, a, eps):
            return dynamics_fn(s, a, noise.member, eps), di.reward(s, a, params)

        out = maac.pathwise_return(
            noise.start,
            policy_fn,
            step_fn,
            q_fn,
            noise.action[:horizon],
            noise.model[:horizon],
            noise.terminal,
            gamma,
        )
        return jnp.mean(out.value)

    return jax.grad(objective)(policy.K)


def l1_error(estimate: jax.Array, reference: jax.Array) -> jax.Array:
    """``||estimate - reference||_1``."""
    return jnp.sum(jnp.abs(estimate - reference))

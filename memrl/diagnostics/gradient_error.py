"""Policy-gradient error of the MAAC objective on the double integrator
(Clavera et al. 2020, Sec. 5.2 and Fig. 3).

For a linear Gaussian policy ``a = K s + sigma eps`` on the linear-quadratic
double integrator (``memrl.envs.double_integrator``) everything is exact. The
reference is the analytic gradient of the expected return (Sec. 5.2: "we can
obtain the analytic gradient of the expected return"),

    g* = dJ/dK,   J(K) = E_{s_0 ~ U[-2, 2]^2} [ sum_t gamma^t r(s_t, a_t) ],

``policy_gradient``: ``jax.grad`` of ``double_integrator.expected_return``
(state moments propagated exactly). The estimators are the pathwise gradient
(``pathwise_gradient``, built on ``memrl.agents.maac.pathwise_return``) of the
MAAC objective with horizon ``H`` (Sec. 4.1),

    J_H(K) = E_{s_0, eps} [ sum_{t<H} gamma^t r(s_t, a_t) + gamma^H Q(s_H, a_H) ],

with the true reward, learned or true dynamics and a terminal ``Q``; the
error is ``||g_H - g*||_1`` (Fig. 3), reported beside its relative value
``||g_H - g*||_1 / ||g*||_1``.

Which ``Q`` matters. With the policy's own exact action value ``Q^{pi_K}``
(``exact_q_of_policy``: ``Q`` rebuilt from the ``K`` being differentiated),
``J_H(K) = J(K)`` for every ``K`` (the Bellman equation), so its pathwise
gradient is an unbiased estimate of ``g*`` at every ``H`` (Lemma 4.1's "true
objective"): the Monte-Carlo floor. A critic is a separate function of
``(s, a)``: MAAC holds it fixed while differentiating the policy, and even
the exact ``Q^{pi_K}`` held fixed (``held_fixed``) gives the expectation
``surrogate_gradient``, which keeps only the first ``H + 1`` terms of the
deterministic-policy-gradient sum over time, ``sum_{t<=H} gamma^t
E[dQ/da(s_t, a_t) da_t/dK]``, from the start distribution. At the defaults
(``K = [-0.5, -1]``, ``sigma = 0.3``, ``gamma = 0.99``) ``||g*||_1 = 24.8``
while the surrogate's gradient has L1 norm 1.6 at ``H = 0`` and 13.5 at
``H = 10``: that truncation, not the critic's fit, dominates the error of a
fixed critic from ``s_0 ~ p_0``.

The exact action value is ``Q(s, a) = r(s, a) + gamma V(A s + B a)`` with the
infinite-horizon ``V(s) = s^T P s + c`` from the discrete Lyapunov equation
(``exact_value``, ``exact_q``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from memrl.agents import maac
from memrl.envs import double_integrator as di

# (s [..., 2], a [..., 1]) -> Q [...].
QFn = Callable[[jax.Array, jax.Array], jax.Array]


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
    policy: LinearPolicy, gamma: float, params: di.LQParams | None = None
) -> QuadraticValue:
    """The policy's infinite-horizon discounted value ``V(s) = s^T P s + c``.

    With ``M = A + B K`` and ``D = sigma^2 I``, ``E[r(s, a)] = -s^T (Q + K^T R K) s
    - tr(R D)`` and ``E[V(s')] = s^T M^T P M s + tr(P B D B^T) + c``, so the
    Bellman equation ``V(s) = E[r] + gamma E[V(s')]`` gives the discrete
    Lyapunov equation and the constant

        P = -(Q + K^T R K) + gamma M^T P M,
        c = (-tr(R D) + gamma tr(P B D B^T)) / (1 - gamma),

    solved as the 4x4 linear system ``(I - gamma M^T (x) M^T) vec(P) =
    -vec(Q + K^T R K)`` (row-major ``vec``). Differentiable in ``K``; needs
    ``gamma |eig(M)|^2 < 1``.
    """
    p = di.make_params() if params is None else params
    K = policy.K
    closed = p.A + p.B @ K
    noise = jnp.diag(jnp.broadcast_to(jnp.exp(2.0 * policy.log_std), (p.B.shape[1],)))
    cost = p.Q + K.T @ p.R @ K
    n = closed.shape[0]
    lhs = jnp.eye(n * n, dtype=closed.dtype) - gamma * jnp.kron(closed.T, closed.T)
    P = -jnp.linalg.solve(lhs, cost.reshape(-1)).reshape(n, n)
    c = (-jnp.trace(p.R @ noise) + gamma * jnp.trace(P @ p.B @ noise @ p.B.T)) / (1.0 - gamma)
    return QuadraticValue(P=P, c=c)


def exact_q(value: QuadraticValue, gamma: float, params: di.LQParams | None = None) -> QFn:
    """``Q(s, a) = r(s, a) + gamma V(A s + B a)`` over ``[..., 2]`` / ``[..., 1]``."""

    def q(s, a):
        s_next = di.dynamics(s, a, params)
        v = jnp.einsum("...i,ij,...j->...", s_next, value.P, s_next) + value.c
        return di.reward(s, a, params) + gamma * v

    return q


# The terminal Q as a function of the policy being differentiated.
CriticFn = Callable[[LinearPolicy], QFn]


def exact_q_of_policy(gamma: float, params: di.LQParams | None = None) -> CriticFn:
    """``policy -> Q^{pi}``: the exact Q moves with the differentiated ``K``,
    so ``J_H(K) = J(K)`` and the pathwise gradient estimates ``dJ/dK``."""
    return lambda policy: exact_q(exact_value(policy, gamma, params), gamma, params)


def held_fixed(q: QFn) -> CriticFn:
    """A critic that does not depend on ``K`` (MAAC's learned Q)."""
    return lambda policy: q


def policy_gradient(
    policy: LinearPolicy,
    gamma: float,
    horizon: int,
    params: di.LQParams | None = None,
    init_range: float = di.INIT_RANGE,
) -> jax.Array:
    """``[1, 2]`` analytic ``dJ/dK`` (MAAC Sec. 5.2's reference): ``jax.grad``
    of ``double_integrator.expected_return`` over ``horizon`` steps from
    ``s_0 ~ U[-init_range, init_range]^2`` (``gamma^horizon`` truncation:
    about 2e-9 at ``gamma = 0.99``, ``horizon = 2000``)."""
    mean0, cov0 = di.init_moments(init_range)

    def objective(K):
        return di.expected_return(K, policy.log_std, horizon, mean0, cov0, gamma, params)

    return jax.grad(objective)(policy.K)


def surrogate_gradient(
    policy: LinearPolicy,
    value: QuadraticValue,
    horizon: int,
    gamma: float,
    params: di.LQParams | None = None,
) -> jax.Array:
    """``[1, 2]`` exact ``dJ_H/dK`` at ``policy.K`` with the terminal
    ``Q(s, a) = r(s, a) + gamma V(A s + B a)`` held fixed, from ``s_0 ~ U[-2, 2]^2``:
    the expectation of the pathwise gradient with a fixed critic (not ``dJ/dK``).

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
    critic_fn: CriticFn,
    noise: EstimatorNoise,
    horizon: int,
    gamma: float,
    params: di.LQParams | None = None,
) -> jax.Array:
    """``[1, 2]`` gradient of the MAAC objective ``J_H(K)`` (Sec. 4.1) with the
    true reward, ``dynamics_fn`` for ``horizon`` steps and the terminal
    ``critic_fn(policy)`` at ``s_H`` (``held_fixed(q)`` for a critic that does
    not move with ``K``, ``exact_q_of_policy`` for ``Q^{pi_K}``)."""

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
            critic_fn(pol),
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


def relative_l1_error(estimate: jax.Array, reference: jax.Array) -> jax.Array:
    """``||estimate - reference||_1 / ||reference||_1``."""
    return l1_error(estimate, reference) / jnp.sum(jnp.abs(reference))

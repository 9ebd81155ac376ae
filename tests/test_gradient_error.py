"""MAAC Sec. 5.2 gradient-error pieces against the double integrator's exact
moments: the Lyapunov value against ``expected_return``, and the pathwise
gradient with the true dynamics and the exact Q against the analytic gradient
of the expected return."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memrl.diagnostics import gradient_error as ge
from memrl.envs import double_integrator as di

GAMMA = 0.99
K0 = [[-0.5, -1.0]]
SIGMA = 0.3


def _policy():
    return ge.LinearPolicy(K=jnp.array(K0, jnp.float64), log_std=jnp.log(jnp.float64(SIGMA)))


def _moment_matched(num_starts, horizon, seed=0):
    """Noise whose sample mean and covariance are exactly those of the joint
    ``(s_0 ~ U[-2, 2]^2, eps_0..eps_{H-1}, eps_H ~ N(0, 1))``: the MAAC
    objective on an LQ problem is a quadratic polynomial in that vector (for
    any fixed ``K``), and so is its ``K``-gradient, so the sample mean over
    these points is the exact expectation (a quadrature, not an estimate)."""
    d = 2 + horizon + 1
    x = np.random.default_rng(seed).standard_normal((num_starts, d))
    x -= x.mean(0)
    chol = np.linalg.cholesky(x.T @ x / num_starts)
    x = x @ np.linalg.inv(chol).T  # Sample covariance exactly I.
    x[:, :2] *= di.INIT_RANGE / np.sqrt(3.0)  # Var of U[-r, r] is r^2 / 3.
    return ge.EstimatorNoise(
        start=jnp.asarray(x[:, :2]),
        action=jnp.asarray(x[:, 2 : 2 + horizon].T[..., None]),
        model=jnp.zeros((horizon, num_starts, 2)),
        member=jnp.zeros((num_starts,), jnp.int32),
        terminal=jnp.asarray(x[:, 2 + horizon :].T[..., None]),
    )


@functools.cache
def _reference(x64):
    """``dJ/dK`` from ``expected_return`` (3000 steps: ``gamma^3000 = 8e-14``),
    computed once per dtype."""
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        policy = ge.LinearPolicy(K=jnp.array(K0, dtype), log_std=jnp.log(dtype(SIGMA)))
        return np.asarray(jax.jit(ge.policy_gradient, static_argnums=(1, 2))(policy, GAMMA, 3000))


def _true_step(s, a, member, eps):
    return di.dynamics(s, a)


def test_exact_value_solves_the_bellman_equation_of_expected_return():
    """The Lyapunov ``V = s^T P s + c`` against moment propagation: half the
    Hessian and the value at 0 of a 3000-step ``expected_return``."""
    with jax.enable_x64(True):
        policy = _policy()
        value = jax.jit(ge.exact_value, static_argnums=1)(policy, GAMMA)

        @jax.jit
        def moments(s):
            def ret(s):
                return di.expected_return(
                    policy.K, policy.log_std, 3000, s, jnp.zeros((2, 2)), GAMMA
                )

            return ret(s), jax.hessian(ret)(s)

        value0, hessian = moments(jnp.zeros(2, jnp.float64))
        np.testing.assert_allclose(value.P, 0.5 * hessian, rtol=1e-9)
        np.testing.assert_allclose(value.c, value0, rtol=1e-9)


@pytest.mark.parametrize("horizon", [0, 1, 2, 3])
def test_pathwise_gradient_with_true_dynamics_and_exact_q_is_the_analytic_gradient(horizon):
    """MAAC Sec. 5.2 / Lemma 4.1: with the true dynamics and the policy's own
    exact Q, ``J_H(K) = J(K)``, so the pathwise gradient is ``dJ/dK`` at every
    ``H``; with the exact Q held fixed (MAAC's critic is not differentiated
    through the policy) it is the surrogate's gradient, more than 10x smaller
    at the defaults."""
    with jax.enable_x64(True):
        policy = _policy()
        noise = _moment_matched(64, horizon)
        reference = _reference(True)
        grad = jax.jit(ge.pathwise_gradient, static_argnums=(1, 2, 4, 5))

        total = grad(policy, _true_step, ge.exact_q_of_policy(GAMMA), noise, horizon, GAMMA)
        np.testing.assert_allclose(np.asarray(total), reference, rtol=1e-7)

        value = ge.exact_value(policy, GAMMA)
        critic = ge.held_fixed(ge.exact_q(value, GAMMA))
        fixed = grad(policy, _true_step, critic, noise, horizon, GAMMA)
        surrogate = ge.surrogate_gradient(policy, value, horizon, GAMMA)
        np.testing.assert_allclose(np.asarray(fixed), np.asarray(surrogate), rtol=1e-7)
        if horizon == 0:
            assert np.sum(np.abs(reference)) > 10 * float(jnp.sum(jnp.abs(fixed)))


def test_pathwise_gradient_from_uniform_start_states_is_within_monte_carlo_error():
    """The script's estimator as it runs (random ``U[-2, 2]^2`` starts, float32):
    the relative L1 error against ``dJ/dK`` is a few percent at 16384 starts
    (0.12% at 400k; Monte-Carlo error falls as ``N^{-1/2}``)."""
    policy = ge.LinearPolicy(K=jnp.array(K0), log_std=jnp.log(jnp.float32(SIGMA)))
    noise = ge.sample_noise(jax.random.PRNGKey(0), 16384, 2, 2, 1)
    reference = _reference(False)
    got = jax.jit(ge.pathwise_gradient, static_argnums=(1, 2, 4, 5))(
        policy, _true_step, ge.exact_q_of_policy(GAMMA), noise, 2, GAMMA
    )
    err = float(ge.relative_l1_error(got, reference))
    assert err < 0.04, err

"""memrl.returns against hand computations and NumPy oracles (explicit loops
and sums written from the equations, never the code's own output)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memrl import returns

# A fixed 4-step example. Worked by hand with lambda = 0.5 and c_t = 0.5:
#   G_3 = 4 + 0.5 * 8                         = 8
#   G_2 = 3 + 0.5 * (0.5 * 6 + 0.5 * 8)       = 6.5
#   G_1 = 2 + 0.5 * (0.5 * 4 + 0.5 * 6.5)     = 4.625
#   G_0 = 1 + 0.5 * (0.5 * 2 + 0.5 * 4.625)   = 2.65625
# and by eq. 5 of paper 004 (gamma lambda = 0.25):
#   1.5 + 0.25 * 3 + 0.0625 * 4.5 + 0.015625 * 6 + 0.5^4 0.5^4 8 = 2.65625.
R = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
C = np.full(4, 0.5, np.float32)
V = np.array([2.0, 4.0, 6.0, 8.0], np.float32)
HAND = [2.65625, 4.625, 6.5, 8.0]


def np_lambda_returns(r, c, v, lam):
    """Backward loop of G_t = r_t + c_t ((1 - lam_t) v_t + lam_t G_{t+1}), G_T = v_{T-1}."""
    lam = np.broadcast_to(np.asarray(lam, np.float64), np.shape(r))
    out = np.zeros(len(r))
    g = v[-1]
    for t in reversed(range(len(r))):
        g = r[t] + c[t] * ((1 - lam[t]) * v[t] + lam[t] * g)
        out[t] = g
    return out


def np_n_step(r, c, v, n):
    """Forward sums: G_t = sum_{k=t}^{m-1} (prod_{j=t}^{k-1} c_j) r_k + (prod_{j<m} c_j) v_{m-1}."""
    horizon = len(r)
    out = []
    for t in range(horizon):
        m = min(t + n, horizon)
        g, disc = 0.0, 1.0
        for k in range(t, m):
            g += disc * r[k]
            disc *= c[k]
        out.append(g + disc * v[m - 1])
    return np.array(out)


def _random(horizon, seed, terminal_at=None):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=horizon).astype(np.float32)
    c = rng.uniform(0.8, 1.0, size=horizon).astype(np.float32)
    if terminal_at is not None:
        c[terminal_at] = 0.0
    v = rng.normal(size=horizon).astype(np.float32)
    return r, c, v


def test_lambda_returns_hand_example():
    got = returns.lambda_returns(jnp.asarray(R), jnp.asarray(C), jnp.asarray(V), 0.5)
    np.testing.assert_allclose(np.asarray(got), HAND, rtol=1e-6)
    np.testing.assert_allclose(np_lambda_returns(R, C, V, 0.5), HAND, rtol=1e-12)


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.95, 1.0])
@pytest.mark.parametrize("terminal_at", [None, 1])
def test_lambda_returns_match_numpy_loop(lam, terminal_at):
    r, c, v = _random(4, 0, terminal_at)
    got = returns.lambda_returns(jnp.asarray(r), jnp.asarray(c), jnp.asarray(v), lam)
    np.testing.assert_allclose(np.asarray(got), np_lambda_returns(r, c, v, lam), rtol=1e-5)


def test_lambda_returns_per_step_lambda():
    r, c, v = _random(4, 1)
    lam = np.array([0.2, 0.9, 0.0, 0.5], np.float32)
    got = returns.lambda_returns(jnp.asarray(r), jnp.asarray(c), jnp.asarray(v), jnp.asarray(lam))
    np.testing.assert_allclose(np.asarray(got), np_lambda_returns(r, c, v, lam), rtol=1e-5)


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.9, 1.0])
def test_lambda_return_is_eq5_and_the_n_step_mixture(lam):
    # Constant gamma, value[0..T] of s_0..s_T, v_t = value[1:].
    horizon, gamma = 5, 0.9
    rng = np.random.default_rng(2)
    r = rng.normal(size=horizon)
    value = rng.normal(size=horizon + 1)
    got = returns.lambda_returns(
        jnp.asarray(r, jnp.float32),
        jnp.full(horizon, gamma, jnp.float32),
        jnp.asarray(value[1:], jnp.float32),
        lam,
    )
    # Paper 004 eq. 5.
    eq5 = lam**horizon * gamma**horizon * value[horizon] + sum(
        gamma**t * lam**t * (r[t] + gamma * (1 - lam) * value[t + 1]) for t in range(horizon)
    )
    # (1 - lam) sum_{n=1}^{T-1} lam^{n-1} G^(n) + lam^{T-1} G^(T).
    g_n = [sum(gamma**i * r[i] for i in range(n)) + gamma**n * value[n] for n in range(1, 6)]
    mixture = (1 - lam) * sum(lam ** (n - 1) * g_n[n - 1] for n in range(1, horizon)) + lam ** (
        horizon - 1
    ) * g_n[horizon - 1]
    np.testing.assert_allclose(eq5, mixture, rtol=1e-12)
    np.testing.assert_allclose(float(got[0]), eq5, rtol=1e-5)


def test_lambda_returns_match_dreamer_v1():
    # danijar/dreamer tools.lambda_return(reward[:-1], value[:-1], pcont[:-1],
    # bootstrap=value[-1], lambda_) transcribed to NumPy.
    horizon, lam = 6, 0.95
    rng = np.random.default_rng(3)
    reward = rng.normal(size=horizon + 1)
    value = rng.normal(size=horizon + 1)
    pcont = rng.uniform(0.9, 1.0, size=horizon + 1)
    rew, val, pc, bootstrap = reward[:-1], value[:-1], pcont[:-1], value[-1]
    next_values = np.concatenate([val[1:], [bootstrap]])
    inputs = rew + pc * next_values * (1 - lam)
    want, agg = np.zeros(horizon), bootstrap
    for t in reversed(range(horizon)):
        agg = inputs[t] + pc[t] * lam * agg
        want[t] = agg
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    got = returns.lambda_returns(f32(reward[:-1]), f32(pcont[:-1]), f32(value[1:]), lam)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_lambda_one_is_discounted_rewards_plus_bootstrap():
    r, c, v = _random(4, 4)
    # G_t = sum_{k>=t} (prod_{t<=j<k} c_j) r_k + (prod_{j>=t} c_j) V(s_4).
    want = [
        sum(np.prod(c[t:k]) * r[k] for k in range(t, 4)) + np.prod(c[t:]) * v[-1] for t in range(4)
    ]
    f = lambda x: jnp.asarray(x)
    np.testing.assert_allclose(returns.lambda_returns(f(r), f(c), f(v), 1.0), want, rtol=1e-5)
    np.testing.assert_allclose(
        returns.discounted_returns(f(r), f(c), jnp.asarray(v[-1])), want, rtol=1e-5
    )
    # Monte-Carlo returns: no bootstrap.
    mc = [sum(np.prod(c[t:k]) * r[k] for k in range(t, 4)) for t in range(4)]
    np.testing.assert_allclose(returns.discounted_returns(f(r), f(c), jnp.zeros(())), mc, rtol=1e-5)


def test_lambda_zero_is_one_step_td():
    r, c, v = _random(4, 5, terminal_at=2)
    got = returns.lambda_returns(jnp.asarray(r), jnp.asarray(c), jnp.asarray(v), 0.0)
    np.testing.assert_allclose(np.asarray(got), r + c * v, rtol=1e-6)


def test_terminal_discount_cuts_the_bootstrap():
    r, c, v = R, np.array([0.5, 0.0, 0.5, 0.5], np.float32), V
    got = returns.lambda_returns(jnp.asarray(r), jnp.asarray(c), jnp.asarray(v), 0.5)
    # G_1 = r_1 (terminal), G_0 = 1 + 0.5 (0.5 * 2 + 0.5 * 2) = 2.
    np.testing.assert_allclose(np.asarray(got[:2]), [2.0, 2.0], rtol=1e-6)
    # Nothing after the terminal step reaches G_0, G_1.
    v2 = v.copy()
    v2[1:] += 100.0
    r2 = r.copy()
    r2[2:] += 100.0
    got2 = returns.lambda_returns(jnp.asarray(r2), jnp.asarray(c), jnp.asarray(v2), 0.5)
    np.testing.assert_allclose(np.asarray(got2[:2]), [2.0, 2.0], rtol=1e-6)
    ve = returns.value_expansion_targets(jnp.asarray(r), jnp.asarray([1.0, 0, 1, 1]), 50.0, 0.5)
    assert float(ve[1]) == 2.0


def _analytic_jacobians(c, lam, horizon):
    """dG_s/dr_t = prod_{k=s}^{t-1} lam c_k; dG_s/dv_t = that * c_t * (1 - lam), but
    c_t (not c_t (1 - lam)) at t = T-1, for t >= s; 0 for t < s."""
    d_r = np.zeros((horizon, horizon))
    d_v = np.zeros((horizon, horizon))
    for s in range(horizon):
        for t in range(s, horizon):
            path = np.prod([lam * c[k] for k in range(s, t)])
            d_r[s, t] = path
            d_v[s, t] = path * c[t] * (1.0 if t == horizon - 1 else 1 - lam)
    return d_r, d_v


@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_lambda_returns_gradients(lam):
    r, c, v = _random(4, 6, terminal_at=None)
    f = lambda r_, v_: returns.lambda_returns(r_, jnp.asarray(c), v_, lam)
    jac_r, jac_v = jax.jacrev(f, argnums=(0, 1))(jnp.asarray(r), jnp.asarray(v))
    want_r, want_v = _analytic_jacobians(c, lam, 4)
    np.testing.assert_allclose(np.asarray(jac_r), want_r, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(jac_v), want_v, rtol=1e-5, atol=1e-7)
    # Central finite differences of a scalar loss in v (G is linear in v, so
    # only rounding separates them).
    w = np.array([0.3, -1.0, 2.0, 0.5], np.float32)
    loss = lambda v_: jnp.dot(jnp.asarray(w), f(jnp.asarray(r), v_))
    grad = np.asarray(jax.grad(loss)(jnp.asarray(v)))
    eps = 1e-2
    for t in range(4):
        e = np.zeros(4, np.float32)
        e[t] = eps
        fd = (float(loss(jnp.asarray(v + e))) - float(loss(jnp.asarray(v - e)))) / (2 * eps)
        np.testing.assert_allclose(grad[t], fd, rtol=1e-3, atol=1e-4)
    stopped = lambda v_: jnp.sum(
        returns.lambda_returns(jnp.asarray(r), jnp.asarray(c), v_, lam, stop_target_gradients=True)
    )
    np.testing.assert_array_equal(np.asarray(jax.grad(stopped)(jnp.asarray(v))), 0.0)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("terminal_at", [None, 2])
def test_n_step_returns_match_numpy(n, terminal_at):
    r, c, v = _random(4, 7, terminal_at)
    got = returns.n_step_returns(jnp.asarray(r), jnp.asarray(c), jnp.asarray(v), n)
    np.testing.assert_allclose(np.asarray(got), np_n_step(r, c, v, n), rtol=1e-5, atol=1e-6)


def test_n_step_one_is_td_and_long_is_discounted_return():
    r, c, v = R, C, V
    one = returns.n_step_returns(jnp.asarray(r), jnp.asarray(c), jnp.asarray(v), 1)
    np.testing.assert_allclose(np.asarray(one), [2.0, 4.0, 6.0, 8.0], rtol=1e-6)  # r + 0.5 v
    full = returns.n_step_returns(jnp.asarray(r), jnp.asarray(c), jnp.asarray(v), 4)
    # G_3 = 4 + 0.5*8 = 8, G_2 = 3 + 0.5*8 = 7, G_1 = 2 + 0.5*7 = 5.5, G_0 = 1 + 0.5*5.5.
    np.testing.assert_allclose(np.asarray(full), [3.75, 5.5, 7.0, 8.0], rtol=1e-6)
    with pytest.raises(ValueError):
        returns.n_step_returns(jnp.asarray(r), jnp.asarray(c), jnp.asarray(v), 0)


@pytest.mark.parametrize("horizon", [1, 3, 5])
def test_value_expansion_targets_match_numpy(horizon):
    rng = np.random.default_rng(horizon)
    r = rng.normal(size=horizon).astype(np.float32)
    d = np.ones(horizon, np.float32)
    if horizon > 2:
        d[1] = 0.0
    v_h, gamma = 1.7, 0.95
    want = []
    for t in range(horizon):
        g, disc = 0.0, 1.0
        for k in range(t, horizon):
            g += disc * r[k]
            disc *= gamma * d[k]
        want.append(g + disc * v_h)
    got = returns.value_expansion_targets(jnp.asarray(r), jnp.asarray(d), jnp.asarray(v_h), gamma)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


@pytest.mark.parametrize("horizon", [1, 2, 5])
def test_soft_value_expansion_targets_match_numpy(horizon):
    """G_t = r_t + sum_{k=t+1}^{H-1} gamma^{k-t} (r_k + e_k) + gamma^{H-t} V(s_H),
    every term after step t cut by a terminal d; e_t of the first step left out."""
    rng = np.random.default_rng(10 + horizon)
    r = rng.normal(size=horizon).astype(np.float32)
    e = rng.normal(size=horizon).astype(np.float32) + 3.0  # -alpha log pi, large
    d = np.ones(horizon, np.float32)
    if horizon == 5:
        d[2] = 0.0
    v_h, gamma = -0.8, 0.9
    want = []
    for t in range(horizon):
        g, disc = r[t], gamma * d[t]
        for k in range(t + 1, horizon):
            g += disc * (r[k] + e[k])
            disc *= gamma * d[k]
        want.append(g + disc * v_h)
    got = returns.value_expansion_targets(
        jnp.asarray(r), jnp.asarray(d), jnp.asarray(v_h), gamma, jnp.asarray(e)
    )
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    plain = returns.value_expansion_targets(jnp.asarray(r), jnp.asarray(d), jnp.asarray(v_h), gamma)
    if horizon == 1:  # nothing imagined after the real step: soft = plain
        np.testing.assert_allclose(np.asarray(got), np.asarray(plain), rtol=1e-6)
    else:  # G_{H-2} differs by gamma e_{H-1} (d_{H-2} = 1 in every case here)
        np.testing.assert_allclose(float(got[-2] - plain[-2]), gamma * e[-1], rtol=1e-5)


def test_value_expansion_candidates_match_numpy():
    horizon = 4
    r, c, v = _random(horizon + 1, 8, terminal_at=3)
    want = []
    for i in range(horizon + 1):
        g = sum(np.prod(c[:j]) * r[j] for j in range(i + 1))
        want.append(g + np.prod(c[: i + 1]) * v[i])
    got = returns.value_expansion_candidates(jnp.asarray(r), jnp.asarray(c), jnp.asarray(v))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    # Cross-check with the rlax-backed n-step returns: T_i = G_0 with n = i + 1.
    for i in range(horizon + 1):
        n_step = returns.n_step_returns(jnp.asarray(r), jnp.asarray(c), jnp.asarray(v), i + 1)
        np.testing.assert_allclose(float(got[i]), float(n_step[0]), rtol=1e-5, atol=1e-6)


def test_vmap_and_jit_agree_with_the_loop():
    b, horizon, lam = 3, 4, 0.8
    rng = np.random.default_rng(9)
    r = rng.normal(size=(b, horizon)).astype(np.float32)
    c = rng.uniform(0.0, 1.0, size=(b, horizon)).astype(np.float32)
    v = rng.normal(size=(b, horizon)).astype(np.float32)
    batched = jax.jit(jax.vmap(returns.lambda_returns, in_axes=(0, 0, 0, None)))
    got = np.asarray(batched(r, c, v, lam))
    for i in range(b):
        np.testing.assert_allclose(got[i], np_lambda_returns(r[i], c[i], v[i], lam), rtol=1e-5)


def test_shape_checks():
    with pytest.raises(AssertionError):
        returns.lambda_returns(jnp.zeros(3), jnp.zeros(4), jnp.zeros(3), 0.5)
    with pytest.raises(AssertionError):
        returns.value_expansion_targets(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), 0.9)

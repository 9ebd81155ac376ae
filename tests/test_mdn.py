"""The mixture density network and MaxEnt Dreamer's discounted-state-distribution
estimator (paper 004 eq. 6-10) against NumPy/SciPy references and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from memrl import state_distribution as sd
from memrl.nets import mdn as mdn_lib


def _numpy_mixture_log_prob(logits, mean, std, x):
    """log sum_k softmax(logits)_k prod_d N(x_d; mean_kd, std_kd), by SciPy."""
    log_w = logits - scipy.special.logsumexp(logits)
    comps = [scipy.stats.norm.logpdf(x, mean[k], std[k]).sum() for k in range(len(logits))]
    return scipy.special.logsumexp(log_w + np.array(comps))


@pytest.fixture(scope="module")
def mixture():
    rng = np.random.default_rng(0)
    t, n, k, d, j = 3, 2, 4, 5, 6
    params = mdn_lib.MixtureParams(
        logits=rng.normal(size=(t, n, k)).astype(np.float32),
        mean=rng.normal(size=(t, n, k, d)).astype(np.float32),
        std=rng.uniform(0.3, 2.0, size=(t, n, k, d)).astype(np.float32),
    )
    x = rng.normal(size=(j, n, d)).astype(np.float32) * 2.0
    return params, x


def test_pairwise_log_prob_matches_numpy_mixture_density(mixture):
    params, x = mixture
    got = np.asarray(mdn_lib.pairwise_log_prob(params, jnp.asarray(x)))
    t, j, n = got.shape
    for ti in range(t):
        for ji in range(j):
            for ni in range(n):
                want = _numpy_mixture_log_prob(
                    params.logits[ti, ni], params.mean[ti, ni], params.std[ti, ni], x[ji, ni]
                )
                np.testing.assert_allclose(got[ti, ji, ni], want, rtol=1e-4, atol=1e-3)
    # distrax's MixtureSameFamily agrees on the diagonal pairs too.
    dist = mdn_lib.distribution(jax.tree.map(lambda a: a[0], params))
    np.testing.assert_allclose(dist.log_prob(x[0]), got[0, 0], rtol=1e-4, atol=1e-3)


def test_mdn_module_outputs_a_valid_mixture():
    net = mdn_lib.MDN(output_size=3, components=8, hidden_sizes=(16,), min_std=0.01)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 7)))
    out = net.apply(params, jax.random.normal(jax.random.PRNGKey(1), (4, 5, 7)))
    assert out.logits.shape == (4, 5, 8) and out.mean.shape == out.std.shape == (4, 5, 8, 3)
    assert float(out.std.min()) >= 0.01


def test_samples_follow_the_mixture_and_are_reparameterized():
    logits = jnp.log(jnp.array([[0.2, 0.8]]))
    mean = jnp.array([[[-3.0, 0.0], [2.0, 1.0]]])
    std = jnp.array([[[0.5, 0.5], [1.0, 0.2]]])
    params = mdn_lib.MixtureParams(logits, mean, std)
    x = np.asarray(mdn_lib.sample(params, jax.random.PRNGKey(0), 200_000))[:, 0]
    # Mixture mean and per-dimension variance (law of total variance).
    w = np.array([0.2, 0.8])
    mu = (w[:, None] * np.asarray(mean[0])).sum(0)
    var = (w[:, None] * (np.asarray(std[0]) ** 2 + np.asarray(mean[0]) ** 2)).sum(0) - mu**2
    np.testing.assert_allclose(x.mean(0), mu, atol=0.02)
    np.testing.assert_allclose(x.var(0), var, rtol=0.02)

    # d sample / d mean_k is the indicator of component k (summed over samples).
    def total(m):
        return mdn_lib.sample(params._replace(mean=m), jax.random.PRNGKey(1), 1000).sum()

    grad = jax.grad(total)(mean)
    np.testing.assert_allclose(grad.sum(), 1000 * 2, rtol=1e-6)
    assert 0.1 < float(grad[0, 0, 0]) / 1000 < 0.3  # about the weight of component 0


@pytest.mark.parametrize("n,gamma", [(1, 0.9), (15, 0.9), (7, 0.5)])
def test_eq10_weights_and_bootstrap_sum_to_one(n, gamma):
    w, boot = sd.discounted_weights(n, gamma)
    np.testing.assert_allclose(float(w.sum() + boot), 1.0, rtol=1e-6)
    np.testing.assert_allclose(w, [(1 - gamma) * gamma**i for i in range(n)], rtol=1e-6)
    # Every start of a trajectory of n states: row t covers s_{t+1}..s_n.
    wm, bm = sd.trajectory_weights(n, gamma)
    np.testing.assert_allclose(wm.sum(1) + bm, np.ones(n), rtol=1e-6)
    for t in range(n):
        row, rboot = sd.discounted_weights(n - t, gamma)
        np.testing.assert_allclose(wm[t, t:], row, rtol=1e-6)
        np.testing.assert_allclose(wm[t, :t], 0.0)
        np.testing.assert_allclose(bm[t], rboot, rtol=1e-6)


def test_monte_carlo_entropy_matches_single_gaussian_closed_form():
    """With one component and every imagined state (and the bootstrap
    samples) drawn from that same Gaussian, -E_q log P is its entropy
    sum_d 1/2 log(2 pi e sigma_d^2)."""
    d, n, horizon, starts = 4, 4000, 6, 3
    rng = np.random.default_rng(1)
    mu, sigma = rng.normal(size=d), rng.uniform(0.2, 2.0, size=d)
    params = mdn_lib.MixtureParams(
        logits=jnp.zeros((starts, n, 1)),
        mean=jnp.broadcast_to(jnp.asarray(mu, jnp.float32), (starts, n, 1, d)),
        std=jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (starts, n, 1, d)),
    )
    states = jnp.asarray(mu + sigma * rng.normal(size=(horizon, n, d)), jnp.float32)
    single = jax.tree.map(lambda a: a[0], params)
    boot = mdn_lib.sample(single, jax.random.PRNGKey(0), 2)
    entropy = -sd.expected_log_prob(
        mdn_lib.pairwise_log_prob(params, states), mdn_lib.pairwise_log_prob(params, boot), 0.9
    )
    closed = float(np.sum(0.5 * np.log(2 * np.pi * np.e * sigma**2)))
    np.testing.assert_allclose(np.asarray(entropy).mean(1), closed, rtol=0.02)

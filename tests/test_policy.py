"""Tanh-Gaussian policy: exact log-density against a numerical change of variables."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from memrl.nets import policy


def test_log_prob_matches_numerical_density_of_tanh_gaussian():
    mean = jnp.array([[0.3, -1.2], [2.0, 0.0]])
    log_std = jnp.array([[-0.5, 0.4], [0.1, -2.0]])
    params = policy.GaussianParams(mean, log_std)
    eps = jax.random.normal(jax.random.PRNGKey(3), mean.shape)
    action, log_prob = policy.squash_with_log_prob(params, eps)

    # Independent reference: P(a_i <= x) = Phi((atanh(x) - mu) / sigma); the
    # density is its derivative in x, taken by central differences in float64.
    a = np.asarray(action, np.float64)
    mu, sigma = np.asarray(mean, np.float64), np.exp(np.asarray(log_std, np.float64))
    h = 1e-6 * (1 - np.abs(a))

    def cdf(x):
        return stats.norm.cdf((np.arctanh(x) - mu) / sigma)

    density = (cdf(a + h) - cdf(a - h)) / (2 * h)
    expected = np.sum(np.log(density), axis=-1)
    np.testing.assert_allclose(np.asarray(log_prob), expected, rtol=1e-4, atol=1e-3)

    # distrax's own log_prob of the sampled action agrees away from saturation.
    np.testing.assert_allclose(
        policy.distribution(params).log_prob(action)[0], log_prob[0], rtol=1e-4
    )


def test_density_integrates_to_one():
    params = policy.GaussianParams(jnp.array([0.7]), jnp.array([-0.3]))
    eps = jnp.linspace(-8.0, 8.0, 20001)[:, None]
    action, log_prob = jax.vmap(lambda e: policy.squash_with_log_prob(params, e))(eps)
    a = np.asarray(action[:, 0], np.float64)
    integral = np.trapezoid(np.exp(np.asarray(log_prob, np.float64)), a)
    assert abs(integral - 1.0) < 2e-3


def test_sample_is_reparameterized_and_mode_is_tanh_mean():
    net = policy.TanhGaussianPolicy(action_size=3, hidden_sizes=(16,))
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    obs = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
    dist = net.apply(params, obs)
    assert dist.mean.shape == (5, 3)
    assert np.all(np.asarray(dist.log_std) >= -5) and np.all(np.asarray(dist.log_std) <= 2)
    np.testing.assert_allclose(policy.mode(dist), np.tanh(np.asarray(dist.mean)), rtol=1e-6)

    def first(p):
        action, _ = policy.sample_and_log_prob(net.apply(p, obs), jax.random.PRNGKey(2))
        return jnp.sum(action)

    grads = jax.grad(first)(params)
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree_util.tree_leaves(grads))


def test_gaussian_log_prob_matches_scipy():
    rng = np.random.default_rng(4)
    mean, log_std, x = rng.normal(size=(3, 5, 2))
    got = policy.gaussian_log_prob(
        policy.GaussianParams(jnp.asarray(mean), jnp.asarray(log_std)), jnp.asarray(x)
    )
    want = stats.norm.logpdf(x, mean, np.exp(log_std)).sum(-1)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_sample_mode_is_the_most_likely_candidate():
    """Dreamer's sample-based mode: the candidate with the highest tanh-Gaussian
    log-density, checked by brute force with the change-of-variables formula."""
    params = policy.GaussianParams(
        jnp.array([[0.3, -1.0], [2.0, 0.0]]), jnp.log(jnp.array([[0.5, 2.0], [0.1, 1.0]]))
    )
    key = jax.random.PRNGKey(3)
    mode = policy.sample_mode(params, key, num_samples=50)
    eps = np.asarray(jax.random.normal(key, (50, 2, 2)), np.float64)
    mean, std = np.asarray(params.mean, np.float64), np.exp(np.asarray(params.log_std, np.float64))
    u = mean + std * eps
    log_p = (stats.norm.logpdf(u, mean, std) - np.log(1 - np.tanh(u) ** 2)).sum(-1)
    best = np.tanh(u[np.argmax(log_p, axis=0), np.arange(2)])
    np.testing.assert_allclose(mode, best, rtol=1e-5, atol=1e-6)

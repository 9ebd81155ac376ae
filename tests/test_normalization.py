"""Tests for memrl.envs.normalization against numpy over the concatenated data."""

import jax.numpy as jnp
import numpy as np
import pytest

from memrl.envs import normalization


@pytest.mark.parametrize("obs_size", [1, 5])
def test_update_matches_numpy_over_random_chunks(obs_size):
    rng = np.random.default_rng(obs_size)
    # Offset and spread differ per feature; one feature is constant.
    data = rng.normal(size=(1000, obs_size)) * rng.uniform(0.1, 5, obs_size) + 50.0
    data[:, 0] = 3.0
    data = data.astype(np.float32)
    cuts = np.sort(rng.choice(np.arange(1, len(data)), size=5, replace=False))
    stats = normalization.init(obs_size)
    seen = 0
    for chunk in np.split(data, cuts):
        stats = normalization.update(stats, chunk)
        seen += len(chunk)
        np.testing.assert_allclose(stats.mean, data[:seen].mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stats.var, data[:seen].var(0), rtol=1e-4, atol=1e-4)
        assert int(stats.count) == seen
    assert stats.count.dtype == jnp.int32 and stats.mean.dtype == jnp.float32


def test_update_single_rows_and_time_batch_axes():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(4, 6, 3)).astype(np.float32)  # [T, B, obs]
    stats = normalization.update(normalization.init(3), data)
    np.testing.assert_allclose(stats.mean, data.reshape(-1, 3).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.var, data.reshape(-1, 3).var(0), rtol=1e-5)
    one_by_one = normalization.init(3)
    for row in data.reshape(-1, 3):
        one_by_one = normalization.update(one_by_one, row[None])
    np.testing.assert_allclose(one_by_one.mean, stats.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one_by_one.var, stats.var, rtol=1e-4)
    # An empty batch changes nothing.
    same = normalization.update(stats, np.zeros((0, 3), np.float32))
    assert all(np.array_equal(a, b) for a, b in zip(same, stats, strict=True))


def test_normalize_denormalize():
    stats = normalization.init(2)
    x = jnp.array([[1.5, -2.0]])
    np.testing.assert_allclose(normalization.normalize(stats, x), x, rtol=1e-6)
    data = jnp.array([[0.0, 10.0], [2.0, 14.0], [4.0, 18.0]])
    stats = normalization.update(stats, data)
    z = normalization.normalize(stats, data)
    np.testing.assert_allclose(z.mean(0), [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(z.std(0), [1.0, 1.0], rtol=1e-5)
    np.testing.assert_allclose(normalization.denormalize(stats, z), data, rtol=1e-5)
    far = normalization.normalize(stats, jnp.array([100.0, -100.0]), clip=5.0)
    np.testing.assert_allclose(far, [5.0, -5.0])

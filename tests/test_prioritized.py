"""Prioritized replay: max priority for new items, eq. 3 frequencies, eq. 5 weights."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from memrl.replay import prioritized


def _items(n, start=0):
    return {"x": jnp.arange(start, start + n, dtype=jnp.float32), "i": jnp.arange(start, start + n)}


def _example():
    return {"x": jnp.zeros((), jnp.float32), "i": jnp.zeros((), jnp.int32)}


def _leaves(state):
    return np.asarray(state.tree.levels[0][: state.tree.capacity])


def test_new_items_get_the_max_priority_seen_so_far():
    alpha = 0.6
    state = prioritized.init(_example(), 16)
    state = prioritized.add(state, _items(2), alpha=alpha)  # nothing seen yet: 1
    np.testing.assert_allclose(_leaves(state)[:2], [1.0, 1.0])
    state = prioritized.update_priorities(
        state, jnp.asarray([0, 1]), jnp.asarray([4.0, 0.5]), alpha
    )
    state = prioritized.add(state, _items(1, 2), alpha=alpha)
    np.testing.assert_allclose(_leaves(state)[:3], np.asarray([4.0, 0.5, 4.0]) ** alpha, rtol=1e-6)
    # Lower priorities do not lower the maximum; explicit priorities count.
    state = prioritized.update_priorities(state, jnp.asarray([0]), jnp.asarray([0.1]), alpha)
    state = prioritized.add(state, _items(1, 3), jnp.asarray([9.0]), alpha)
    state = prioritized.add(state, _items(1, 4), alpha=alpha)
    np.testing.assert_allclose(_leaves(state)[3:5], [9.0**alpha] * 2, rtol=1e-6)
    assert float(state.max_priority) == 9.0
    assert not _leaves(state)[5:].any()  # unwritten slots hold nothing


def test_probabilities_and_is_weights_match_hand_computation():
    alpha, beta = 0.6, 0.4
    p = np.asarray([1.0, 2.0, 4.0, 0.5, 3.0])
    state = prioritized.init(_example(), 16)
    state = prioritized.add(state, _items(5), jnp.asarray(p), alpha)
    drawn = prioritized.sample(state, jax.random.PRNGKey(0), 32, beta)
    idx = np.asarray(drawn.indices)
    assert set(idx.tolist()) <= set(range(5))
    powered = p**alpha
    want_p = powered / powered.sum()  # eq. 3
    np.testing.assert_allclose(np.asarray(drawn.probabilities), want_p[idx], rtol=1e-5)
    n = 5  # items stored
    w = (n * want_p[idx]) ** -beta  # eq. 5
    np.testing.assert_allclose(np.asarray(drawn.weights), w / w.max(), rtol=1e-5)
    assert float(jnp.max(drawn.weights)) == 1.0
    np.testing.assert_array_equal(np.asarray(drawn.items["i"]), idx)
    np.testing.assert_array_equal(np.asarray(drawn.items["x"]), idx.astype(np.float32))


def test_frequencies_follow_eq3():
    alpha = 0.6
    rng = np.random.default_rng(0)
    p = rng.uniform(0.1, 5.0, 300)
    p[rng.random(300) < 0.3] = 0.0  # never sampled
    state = prioritized.init(_example(), 500)  # 200 slots unwritten
    state = prioritized.add(state, _items(300), jnp.asarray(p), alpha)

    @functools.partial(jax.jit, static_argnums=2)
    def draw(state, keys, b):
        return jax.vmap(lambda k: prioritized.sample(state, k, b, 1.0).indices)(keys)

    idx = np.asarray(draw(state, jax.random.split(jax.random.PRNGKey(1), 100), 500)).ravel()
    assert (p[idx] > 0).all() and idx.max() < 300
    counts = np.bincount(idx, minlength=300)
    expected = p**alpha / (p**alpha).sum() * idx.size
    keep = expected > 0
    assert stats.chisquare(counts[keep], expected[keep]).pvalue > 1e-4


def test_alpha_zero_is_uniform_and_beta_zero_gives_unit_weights():
    state = prioritized.init(_example(), 16)
    state = prioritized.add(state, _items(4), jnp.asarray([1.0, 100.0, 0.0, 3.0]), 0.0)
    drawn = prioritized.sample(state, jax.random.PRNGKey(2), 32, 0.0)
    np.testing.assert_allclose(np.asarray(drawn.probabilities), 0.25, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(drawn.weights), 1.0)
    np.testing.assert_array_equal(np.bincount(np.asarray(drawn.indices)), [8] * 4)


def test_zero_priority_items_are_never_sampled_and_duplicates_last_win():
    state = prioritized.init(_example(), 16)
    state = prioritized.add(state, _items(6), alpha=1.0)
    state = prioritized.update_priorities(
        state, jnp.asarray([1, 1, 3, 3, 4]), jnp.asarray([5.0, 0.0, 0.0, 2.0, 0.0]), 1.0
    )
    np.testing.assert_array_equal(_leaves(state)[:6], [1, 0, 1, 2, 0, 1])
    for i in range(10):
        idx = np.asarray(prioritized.sample(state, jax.random.PRNGKey(i), 32, 1.0).indices)
        assert not np.isin(idx, [1, 4]).any()


def test_overwritten_items_get_the_max_priority():
    state = prioritized.init(_example(), 8)
    state = prioritized.add(state, _items(8), jnp.arange(1.0, 9.0), 1.0)
    state = prioritized.add(state, _items(3, 8), alpha=1.0)  # wraps onto slots 0-2
    np.testing.assert_array_equal(_leaves(state), [8, 8, 8, 4, 5, 6, 7, 8])
    np.testing.assert_array_equal(np.asarray(state.buffer.data["i"][:3]), [8, 9, 10])
    drawn = prioritized.sample(state, jax.random.PRNGKey(0), 32, 1.0)
    n = 8
    want = (n * np.asarray(drawn.probabilities, np.float64)) ** -1.0
    np.testing.assert_allclose(np.asarray(drawn.weights), want / want.max(), rtol=1e-5)


def test_runs_inside_jit_and_scan_with_traced_alpha_and_beta():
    def step(state, key):
        k_p, k_s = jax.random.split(key)
        state = prioritized.add(state, _items(4), alpha=jnp.float32(0.6))
        drawn = prioritized.sample(state, k_s, 8, jnp.float32(0.7))
        p = jax.random.uniform(k_p, (8,)) + 0.1
        state = prioritized.update_priorities(state, drawn.indices, p, jnp.float32(0.6))
        return state, drawn.weights

    state = prioritized.init(_example(), 64)
    state, weights = jax.jit(lambda s, k: jax.lax.scan(step, s, jax.random.split(k, 20)))(
        state, jax.random.PRNGKey(0)
    )
    assert int(state.buffer.size) == 64
    w = np.asarray(weights)
    assert np.isfinite(w).all() and (w > 0).all() and (w <= 1).all()
    np.testing.assert_allclose(w.max(axis=1), 1.0)

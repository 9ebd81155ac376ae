"""Prioritized and segmented replay: IS weights by hand, frequencies, segments
never mix."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from memrl.replay import prioritized, segmented


def test_probabilities_and_is_weights_match_hand_computation():
    state = prioritized.init(jnp.zeros(()), 8)
    p = jnp.asarray([1.0, 2.0, 4.0, 0.5])
    state = prioritized.add(state, jnp.arange(4.0), p, alpha=0.6)
    drawn = prioritized.sample(state, jax.random.PRNGKey(0), 64, beta=0.4)
    powered = np.asarray(p) ** 0.6
    want_p = powered / powered.sum()
    idx = np.asarray(drawn.indices)
    assert set(idx.tolist()) <= {0, 1, 2, 3}
    np.testing.assert_allclose(np.asarray(drawn.probabilities), want_p[idx], rtol=1e-5)
    w = (4 * want_p[idx]) ** -0.4
    np.testing.assert_allclose(np.asarray(drawn.weights), w / w.max(), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(drawn.items), idx.astype(np.float32))


def test_new_items_get_max_priority_and_updates_change_frequencies():
    state = prioritized.init(jnp.zeros(()), 16)
    state = prioritized.add(state, jnp.arange(4.0), jnp.asarray([1.0, 1.0, 9.0, 1.0]))
    state = prioritized.add(state, jnp.arange(4.0, 6.0))  # max priority seen: 9
    np.testing.assert_allclose(np.asarray(state.tree.levels[0][:6]), [1, 1, 9, 1, 9, 9])
    state = prioritized.update_priorities(state, jnp.asarray([2, 4, 5]), jnp.asarray([1e-4] * 3))
    counts = np.zeros(16)
    for i in range(20):
        drawn = prioritized.sample(state, jax.random.PRNGKey(i), 200, beta=1.0)
        counts += np.bincount(np.asarray(drawn.indices), minlength=16)
    expected = np.array([1, 1, 1e-4, 1, 1e-4, 1e-4] + [0] * 10)
    expected = expected / expected.sum() * counts.sum()
    keep = expected > 5
    chi2 = stats.chisquare(counts[keep], expected[keep] * counts[keep].sum() / expected[keep].sum())
    assert chi2.pvalue > 1e-3
    assert counts[6:].sum() == 0  # unwritten slots never sampled


def test_segments_never_mix_and_carry_their_weights():
    state = segmented.init({"seg": jnp.zeros((), jnp.int32)}, num_segments=3, segment_size=5)
    for s in range(5):  # wraps: segments hold rounds 3, 4, 2
        batch = {"seg": jnp.full((5,), s, jnp.int32)}
        state = segmented.add(state, batch, jnp.full((5,), 0.1 * (s + 1)))
    seen = set()
    for i in range(50):
        items, weights = segmented.sample(state, jax.random.PRNGKey(i), 8)
        rounds = np.unique(np.asarray(items["seg"]))
        assert rounds.size == 1  # one segment per batch
        seen.add(int(rounds[0]))
        np.testing.assert_allclose(np.asarray(weights), 0.1 * (rounds[0] + 1), rtol=1e-6)
    assert seen == {2, 3, 4}


def test_only_filled_segments_are_sampled():
    state = segmented.init(jnp.zeros(()), num_segments=10, segment_size=4)
    state = segmented.add(state, jnp.ones(4), jnp.ones(4))
    for i in range(20):
        items, _ = segmented.sample(state, jax.random.PRNGKey(i), 4)
        np.testing.assert_array_equal(np.asarray(items), 1.0)

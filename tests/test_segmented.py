"""Segmented replay: one segment per add, batches never mix segments, weights kept."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from memrl.replay import segmented

M = 6  # items per segment


def _round(r):
    """Round r's items: tagged with the round; each item has its own weight."""
    items = {"round": jnp.full((M,), r, jnp.int32), "pos": jnp.arange(M, dtype=jnp.int32)}
    weights = 1.0 / (r + 1) + 0.01 * jnp.arange(M, dtype=jnp.float32)
    return items, weights


def _example():
    return {"round": jnp.zeros((), jnp.int32), "pos": jnp.zeros((), jnp.int32)}


@jax.jit
def _draws(state, key):
    return jax.vmap(lambda k: segmented.sample(state, k, 16))(jax.random.split(key, 400))


def test_segments_never_mix_and_weights_belong_to_their_items():
    state = segmented.init(_example(), num_segments=4, segment_size=M)
    for r in range(6):  # wraps: segments hold rounds 4, 5, 2, 3
        state = segmented.add(state, *_round(r))
    items, weights = _draws(state, jax.random.PRNGKey(0))
    rounds, pos, w = (np.asarray(x) for x in (items["round"], items["pos"], weights))
    assert (rounds == rounds[:, :1]).all()  # one segment per batch
    assert set(np.unique(rounds).tolist()) == {2, 3, 4, 5}
    np.testing.assert_allclose(w, 1.0 / (rounds + 1) + 0.01 * pos, rtol=1e-6)


def test_segment_then_items_are_uniform():
    state = segmented.init(_example(), num_segments=10, segment_size=M)
    for r in range(3):  # 3 of 10 segments filled
        state = segmented.add(state, *_round(r))
    items, _ = _draws(state, jax.random.PRNGKey(1))
    per_batch = np.asarray(items["round"])[:, 0]
    assert set(per_batch.tolist()) <= {0, 1, 2}  # never an empty segment
    assert stats.chisquare(np.bincount(per_batch, minlength=3)).pvalue > 1e-3
    pos = np.asarray(items["pos"]).ravel()
    assert stats.chisquare(np.bincount(pos, minlength=M)).pvalue > 1e-3


def test_default_weights_and_shape_checks():
    state = segmented.init(_example(), num_segments=2, segment_size=M)
    state = segmented.add(state, _round(0)[0])
    _, weights = segmented.sample(state, jax.random.PRNGKey(0), 5)
    np.testing.assert_array_equal(np.asarray(weights), 1.0)
    with pytest.raises(ValueError):
        segmented.add(
            state, {"round": jnp.zeros(M + 1, jnp.int32), "pos": jnp.zeros(M + 1, jnp.int32)}
        )
    with pytest.raises(ValueError):
        segmented.add(state, _round(0)[0], jnp.ones(M - 1))
    with pytest.raises(ValueError):
        segmented.init(_example(), num_segments=0, segment_size=M)


def test_add_and_sample_inside_scan():
    def step(state, r):
        items, weights = _round(r)
        state = segmented.add(state, items, weights)
        batch, w = segmented.sample(state, jax.random.PRNGKey(0) + r.astype(jnp.uint32), 8)
        return state, (batch["round"], w)

    state = segmented.init(_example(), num_segments=3, segment_size=M)
    state, (rounds, w) = jax.jit(lambda s: jax.lax.scan(step, s, jnp.arange(7)))(state)
    rounds = np.asarray(rounds)
    assert (rounds == rounds[:, :1]).all()
    # At step r the buffer holds rounds max(0, r-2)..r.
    for r in range(7):
        assert max(0, r - 2) <= rounds[r, 0] <= r
    assert state.num_segments == 3 and state.segment_size == M
    assert int(state.segments.size) == 3

"""Uniform circular buffer: wrap-around, sampling support, in-place writes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memrl.replay import buffer


def _item(i):
    return {"x": jnp.full((2,), i, jnp.float32), "n": jnp.asarray(i, jnp.int32)}


def _batch(start, size):
    ids = np.arange(start, start + size)
    return {"x": jnp.asarray(np.repeat(ids[:, None], 2, 1), jnp.float32), "n": jnp.asarray(ids)}


@pytest.mark.parametrize("capacity,batch", [(8, 4), (7, 3), (5, 5), (10, 1)])
def test_wraparound_matches_python_ring(capacity, batch):
    state = buffer.init(_item(0), capacity)
    ring = [None] * capacity
    cursor, size, next_id = 0, 0, 0
    add = jax.jit(buffer.add)
    for _ in range(7):
        state = add(state, _batch(next_id, batch))
        for i in range(batch):
            ring[cursor] = next_id + i
            cursor = (cursor + 1) % capacity
        size = min(size + batch, capacity)
        next_id += batch
        assert int(state.cursor) == cursor
        assert int(state.size) == size
        stored = np.asarray(state.data["n"])[:size]
        np.testing.assert_array_equal(stored, np.asarray(ring[:size]))
        np.testing.assert_array_equal(np.asarray(state.data["x"])[:size, 0], stored)


def test_sample_only_written_slots():
    state = buffer.init(_item(0), 100)
    state = buffer.add(state, _batch(1, 7))  # ids 1..7 in slots 0..6
    batch = buffer.sample(state, jax.random.PRNGKey(0), 5000)
    ids = np.asarray(batch["n"])
    assert set(ids.tolist()) == set(range(1, 8))  # every written slot, nothing else
    counts = np.bincount(ids, minlength=8)[1:]
    assert counts.min() > 5000 / 7 * 0.8  # roughly uniform


def test_add_keeps_dtypes_and_rejects_oversized_batch():
    state = buffer.init(_item(0), 4)
    state = buffer.add(state, _batch(0, 3))
    assert state.data["n"].dtype == jnp.int32 and state.data["x"].dtype == jnp.float32
    with pytest.raises(ValueError, match="does not fit"):
        buffer.add(state, _batch(0, 5))
    with pytest.raises(ValueError, match="positive"):
        buffer.init(_item(0), 0)


def test_add_donated_updates_in_place_without_retrace():
    traces = []

    def add(state, batch):
        traces.append(1)
        return buffer.add(state, batch)

    add = jax.jit(add, donate_argnums=0)
    state = buffer.init(_item(0), 16)
    for i in range(6):
        state = add(state, _batch(4 * i, 4))
    assert len(traces) == 1
    # 24 items in 16 slots: ids 16..23 overwrote slots 0..7; slots 8..15 keep 8..15.
    expected = np.concatenate([np.arange(16, 24), np.arange(8, 16)])
    np.testing.assert_array_equal(np.asarray(state.data["n"]), expected)

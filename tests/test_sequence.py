"""Sequence replay against a NumPy oracle: content, windows, uniformity, dtypes, donation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from memrl.replay import sequence
from memrl.types import SequenceStep

# (num_streams, capacity, length)
SIZES = [(1, 4, 1), (1, 5, 5), (3, 7, 3), (4, 16, 5), (2, 9, 4)]


def _example():
    return SequenceStep(
        obs=np.zeros((8, 8, 3), np.uint8),
        action=np.zeros((2,), np.float32),
        reward=np.zeros((), np.float32),
        discount=np.zeros((), np.float32),
        is_first=np.zeros((), bool),
    )


def _rows(ids, is_first):
    """Rows whose every field is a function of a unique id (reward == id exactly)."""
    ids = np.asarray(ids)
    return SequenceStep(
        obs=np.broadcast_to((ids % 251).astype(np.uint8)[:, None, None, None], (len(ids), 8, 8, 3)),
        action=np.stack([ids, -ids], -1).astype(np.float32),
        reward=ids.astype(np.float32),
        discount=(ids % 3 != 0).astype(np.float32),
        is_first=np.asarray(is_first, bool),
    )


class Oracle:
    """Per-stream Python lists of row ids, appended where valid, keeping the newest capacity."""

    def __init__(self, num_streams, capacity):
        self.capacity = capacity
        self.streams = [[] for _ in range(num_streams)]
        self.is_first = {}
        self.next_id = 1  # ids are unique over the oracle's life

    def add(self, ids, is_first, valid):
        for i, (row_id, first, ok) in enumerate(zip(ids, is_first, valid, strict=True)):
            self.is_first[int(row_id)] = bool(first)
            if ok:
                self.streams[i] = (self.streams[i] + [int(row_id)])[-self.capacity :]

    def windows(self, length):
        """All valid windows as (stream, offset) pairs, in flat order."""
        return [(i, u) for i, s in enumerate(self.streams) for u in range(len(s) - length + 1)]


def _fill(num_streams, capacity, num_adds, seed, state=None, oracle=None, add=None):
    """Random adds with random valid masks (p varies per add; some adds pass valid=None)."""
    rng = np.random.default_rng(seed)
    state = sequence.init(_example(), num_streams, capacity) if state is None else state
    oracle = Oracle(num_streams, capacity) if oracle is None else oracle
    add = jax.jit(sequence.add) if add is None else add
    for step in range(num_adds):
        ids = np.arange(oracle.next_id, oracle.next_id + num_streams)
        oracle.next_id += num_streams
        is_first = rng.random(num_streams) < 0.2
        if step % 5 == 0:
            valid = np.ones(num_streams, bool)
            state = add(state, _rows(ids, is_first))
        else:
            valid = rng.random(num_streams) < rng.uniform(0.2, 0.9)
            state = add(state, _rows(ids, is_first), jnp.asarray(valid))
        oracle.add(ids, is_first, valid)
    return state, oracle


def _chronological(state, stream):
    count, cursor = int(state.count[stream]), int(state.cursor[stream])
    slots = (cursor - count + np.arange(count)) % state.capacity
    return np.asarray(state.data.reward[stream])[slots].astype(np.int64).tolist()


@pytest.mark.parametrize("num_streams,capacity,length", SIZES)
def test_content_matches_oracle(num_streams, capacity, length):
    del length
    state = sequence.init(_example(), num_streams, capacity)
    oracle = Oracle(num_streams, capacity)
    add = jax.jit(sequence.add)
    for chunk in range(6):  # about 4 * capacity adds per stream in all: several wraps
        state, oracle = _fill(num_streams, capacity, capacity, chunk, state, oracle, add)
        counts = [len(s) for s in oracle.streams]
        np.testing.assert_array_equal(np.asarray(state.count), counts)
        for i in range(num_streams):
            assert _chronological(state, i) == oracle.streams[i]
    assert min(counts) == capacity  # every stream has wrapped
    if num_streams > 1:
        # Unequal totals: the cursors differ between streams.
        assert len(set(np.asarray(state.cursor).tolist())) > 1


def test_invalid_row_keeps_oldest_row_of_full_stream():
    state = sequence.init(_example(), 2, 3)
    for k in range(3):
        state = sequence.add(state, _rows([10 + k, 20 + k], [False, False]))
    # Both full, cursors at slot 0, which holds the oldest row (10, 20).
    state = sequence.add(state, _rows([99, 23], [True, False]), jnp.array([False, True]))
    assert _chronological(state, 0) == [10, 11, 12]
    assert _chronological(state, 1) == [21, 22, 23]
    assert not bool(state.data.is_first[0, 0])


def _check_windows(state, oracle, stream, rows, batch, length):
    stream, rows = np.asarray(stream), np.asarray(rows)
    reward = np.asarray(batch.reward).astype(np.int64)
    wraps = 0
    for b in range(len(stream)):
        s = oracle.streams[stream[b]]
        assert len(s) >= length
        u = s.index(reward[b, 0])
        expected = s[u : u + length]
        assert reward[b].tolist() == expected  # consecutive, never past the newest row
        assert np.asarray(batch.is_first)[b].tolist() == [oracle.is_first[i] for i in expected]
        want = _rows(expected, [oracle.is_first[i] for i in expected])
        for got_leaf, want_leaf in zip(batch, want, strict=True):
            np.testing.assert_array_equal(np.asarray(got_leaf)[b], want_leaf)
        wraps += int(np.any(np.diff(rows[b]) < 0))
    return wraps


@pytest.mark.parametrize("num_streams,capacity,length", SIZES)
def test_windows_are_consecutive_oracle_rows(num_streams, capacity, length):
    add = jax.jit(sequence.add)
    sample_indices = jax.jit(sequence.sample_indices, static_argnums=(2, 3))
    sample = jax.jit(sequence.sample, static_argnums=(2, 3))
    state, oracle = sequence.init(_example(), num_streams, capacity), None
    wraps, key = 0, jax.random.PRNGKey(0)
    for chunk in range(5):
        state, oracle = _fill(num_streams, capacity, capacity - 1, 100 + chunk, state, oracle, add)
        assert bool(sequence.can_sample(state, length)) == bool(oracle.windows(length))
        if not oracle.windows(length):
            continue
        key, sub = jax.random.split(key)
        stream, rows = sample_indices(state, sub, 64, length)
        batch = sample(state, sub, 64, length)
        assert batch.obs.shape == (64, length, 8, 8, 3) and batch.reward.shape == (64, length)
        wraps += _check_windows(state, oracle, stream, rows, batch, length)
    if length > 1:
        assert wraps > 0  # some windows crossed the physical end of the ring


@pytest.mark.parametrize("num_streams,capacity,length", SIZES)
def test_windows_uniform_over_all_streams(num_streams, capacity, length):
    # Stop mid-way so counts are unequal and (for some sizes) a stream has no window.
    state, oracle = _fill(num_streams, capacity, capacity + capacity // 2, 7)
    while not oracle.windows(length):
        state, oracle = _fill(num_streams, capacity, 1, 8, state, oracle)
    windows = oracle.windows(length)
    m = np.array([max(len(s) - length + 1, 0) for s in oracle.streams])
    draws = 4000 * len(windows)
    stream, rows = jax.jit(sequence.sample_indices, static_argnums=(2, 3))(
        state, jax.random.PRNGKey(123), draws, length
    )
    stream, start = np.asarray(stream), np.asarray(rows)[:, 0]
    oldest = (np.asarray(state.cursor) - np.asarray(state.count)) % capacity
    offset = (start - oldest[stream]) % capacity
    assert np.all(offset < m[stream])  # only valid windows
    flat = (np.cumsum(m) - m)[stream] + offset  # the oracle's flat window order
    counts = np.bincount(flat, minlength=len(windows))
    assert len(counts) == len(windows)
    if len(windows) == 1:
        assert counts[0] == draws
        return
    _, p = scipy.stats.chisquare(counts)
    assert p > 1e-3, (counts, p)


def test_chi_square_detects_bias():
    # The test above has power: picking a stream first, then a window in it, is
    # biased when streams hold different numbers of windows (here 1 and 6).
    rng = np.random.default_rng(0)
    stream = rng.integers(0, 2, 20_000)
    flat = np.where(stream == 0, 0, 1 + rng.integers(0, 6, 20_000))
    assert scipy.stats.chisquare(np.bincount(flat, minlength=7))[1] < 1e-6


def test_dtypes_structure_and_no_weak_types():
    state = sequence.init(_example(), 3, 5)
    assert state.data.obs.shape == (3, 5, 8, 8, 3) and state.data.obs.dtype == jnp.uint8
    assert state.data.is_first.dtype == jnp.bool_ and state.cursor.dtype == jnp.int32
    assert state.capacity == 5 and len(jax.tree_util.tree_leaves(state)) == 7  # capacity static
    new = jax.jit(sequence.add)(state, _rows([1, 2, 3], [True] * 3), jnp.array([1, 0, 1], bool))
    new = sequence.add(new, _rows([4, 5, 6], [False] * 3))  # eager path too
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(state)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(new), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype and not b.weak_type
    batch = sequence.sample(new, jax.random.PRNGKey(0), 4, 2)
    assert batch.obs.dtype == jnp.uint8 and batch.reward.dtype == jnp.float32
    with pytest.raises(ValueError, match="length"):
        sequence.sample(new, jax.random.PRNGKey(0), 4, 6)
    with pytest.raises(ValueError, match="positive"):
        sequence.init(_example(), 2, 0)


def test_add_donated_in_place_without_retrace():
    traces = []

    def add(state, rows, valid):
        traces.append(1)
        return sequence.add(state, rows, valid)

    add = jax.jit(add, donate_argnums=0)
    state = sequence.init(_example(), 2, 4)
    oracle = Oracle(2, 4)
    rng = np.random.default_rng(3)
    for k in range(11):
        ids, valid = [2 * k + 1, 2 * k + 2], rng.random(2) < 0.7
        state = add(state, _rows(ids, [k % 4 == 0] * 2), jnp.asarray(valid))
        oracle.add(ids, [k % 4 == 0] * 2, valid)
    assert len(traces) == 1
    for i in range(2):
        assert _chronological(state, i) == oracle.streams[i]
    assert not bool(sequence.can_sample(sequence.init(_example(), 2, 4), 1))

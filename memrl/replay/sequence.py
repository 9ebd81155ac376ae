"""Device-resident sequence replay for Dreamer-style world models.

Layout: ``num_streams`` parallel environment streams, each a ring of
``capacity`` rows. Every leaf of ``SequenceBufferState.data`` has shape
``[num_streams, capacity, *row_shape]``; ``cursor[i]`` is the next slot of
stream ``i`` to write and ``count[i]`` the number of valid rows (at most
``capacity``). The rows of stream ``i`` in write order are the slots
``(oldest_i + k) mod capacity`` for ``k in [0, count_i)``, with
``oldest_i = (cursor_i - count_i) mod capacity``.

A row is one time step in Dreamer's layout (``memrl.types.SequenceStep``):
the observation ``o_t`` with the action, reward and continuation flag of the
step that led to it, and ``is_first``. Each observation is therefore stored
once: there is no ``next_obs`` copy, because ``o_{t+1}`` is the next row of
the same stream. With pixel observations (64x64x3 uint8 is 12 KB, the rest of
a row a few bytes) this halves the memory a transition buffer would need.
Episode boundaries are not treated specially: windows may span them, and the
consumer resets its recurrent state where ``is_first`` is set.

``add`` appends one row per stream (where ``valid``) with
``lax.dynamic_update_slice`` at the stream's cursor, never ``jnp.roll``; the
runner donates the state (``donate_argnums``) so the large arrays are updated
in place. Streams may hold different counts: an agent may call ``add`` twice
in one env step (Dreamer writes the first observation of a new episode as an
extra row) for some streams only.

``sample`` draws ``batch_size`` windows of ``length`` consecutive rows,
uniformly over all valid windows of all streams. A window never crosses the
write head (the newest row followed by the oldest once a stream has wrapped)
and wraps around the physical end of the ring correctly.

Memory: the buffer holds ``num_streams * capacity * row_bytes`` bytes, all
allocated by ``init`` (``capacity`` is per stream). For example 16 streams x
62,500 rows x (12,288 B image + ~30 B of action, reward, flags) is about
12.3 GB; a donated ``add`` needs no second copy.

Example::

    state = sequence.init(example_step, num_streams=16, capacity=62_500)
    state = sequence.add(state, steps)                  # leaves [16, ...]
    state = sequence.add(state, first_steps, valid=is_new_episode)
    batch = sequence.sample(state, key, batch_size=16, length=64)  # [16, 64, ...]
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

PyTree = Any


@struct.dataclass
class SequenceBufferState:
    """State of a sequence buffer.

    Attributes:
      data: pytree whose leaves have shape ``[num_streams, capacity, *row_shape]``,
        with the dtypes of the example row (uint8 images stay uint8).
      cursor: ``[num_streams]`` int32, the next slot of each stream to write.
      count: ``[num_streams]`` int32, the valid rows of each stream (at most
        ``capacity``).
      capacity: rows per stream (static, not a pytree leaf).
    """

    data: PyTree
    cursor: jax.Array
    count: jax.Array
    capacity: int = struct.field(pytree_node=False)

    @property
    def num_streams(self) -> int:
        return self.cursor.shape[0]


def init(example_row: PyTree, num_streams: int, capacity: int) -> SequenceBufferState:
    """Returns an empty buffer of ``num_streams`` rings of ``capacity`` rows each.

    Args:
      example_row: one row (no leading axis); only shapes and dtypes are used.
      num_streams: number of parallel environment streams.
      capacity: rows kept per stream; the oldest are overwritten first. The
        buffer allocates ``num_streams * capacity * row_bytes`` bytes.
    """
    if capacity <= 0:
        raise ValueError(f"capacity must be positive, got {capacity}")
    if num_streams <= 0:
        raise ValueError(f"num_streams must be positive, got {num_streams}")
    data = jax.tree_util.tree_map(
        lambda x: jnp.zeros((num_streams, capacity) + jnp.shape(x), jnp.asarray(x).dtype),
        example_row,
    )
    # Two distinct arrays: a donated state must not alias one buffer twice.
    return SequenceBufferState(
        data=data,
        cursor=jnp.zeros((num_streams,), jnp.int32),
        count=jnp.zeros((num_streams,), jnp.int32),
        capacity=capacity,
    )


def add(
    state: SequenceBufferState, rows: PyTree, valid: jax.Array | None = None
) -> SequenceBufferState:
    """Appends one row to each stream where ``valid``.

    Args:
      state: the buffer.
      rows: pytree like the example row with leaves ``[num_streams, *row_shape]``;
        cast to the stored dtypes.
      valid: ``[num_streams]`` bool, the streams that receive their row; None
        means all. Other streams are left unchanged.

    Returns:
      The new state, with the same structure, shapes and dtypes.
    """
    chex.assert_trees_all_equal_structs(rows, state.data)
    n = state.num_streams
    if valid is None:
        valid = jnp.ones((n,), bool)
    chex.assert_shape(valid, (n,))
    valid = valid.astype(bool)

    def write(buf: jax.Array, row: jax.Array, cursor: jax.Array, ok: jax.Array) -> jax.Array:
        # buf [capacity, *row_shape], row [*row_shape]. An invalid stream rewrites
        # the slot's current content: when the stream is full that slot holds the
        # oldest valid row, which must survive.
        starts = (cursor,) + (0,) * (buf.ndim - 1)
        old = jax.lax.dynamic_slice(buf, starts, (1,) + buf.shape[1:])
        new = jnp.where(ok, row.astype(buf.dtype)[None], old)
        return jax.lax.dynamic_update_slice(buf, new, starts)

    data = jax.tree_util.tree_map(
        lambda buf, row: jax.vmap(write)(buf, row, state.cursor, valid), state.data, rows
    )
    step = valid.astype(jnp.int32)
    cursor = ((state.cursor + step) % state.capacity).astype(jnp.int32)
    count = jnp.minimum(state.count + step, state.capacity).astype(jnp.int32)
    return state.replace(data=data, cursor=cursor, count=count)


def can_sample(state: SequenceBufferState, length: int) -> jax.Array:
    """Scalar bool: some stream holds at least ``length`` rows."""
    return jnp.any(state.count >= length)


def num_windows(state: SequenceBufferState, length: int) -> jax.Array:
    """``[num_streams]`` int32: valid windows per stream, ``max(count - length + 1, 0)``."""
    return jnp.maximum(state.count - length + 1, 0).astype(jnp.int32)


def sample_indices(
    state: SequenceBufferState, key: jax.Array, batch_size: int, length: int
) -> tuple[jax.Array, jax.Array]:
    """Draws windows uniformly over all valid windows of all streams.

    A flat index ``j`` is drawn uniformly in ``[0, sum_i m_i)`` with
    ``m_i = max(count_i - length + 1, 0)``; it names stream ``i`` (the first
    with ``cumsum(m)_i > j``) and offset ``u = j - (cumsum(m)_i - m_i)`` in
    ``[0, m_i)``. The window is the slots ``(oldest_i + u + t) mod capacity``
    for ``t in [0, length)``, ``oldest_i = (cursor_i - count_i) mod capacity``,
    so it wraps around the physical end of the ring but never past the newest
    row. Until ``can_sample(state, length)`` holds the result is meaningless
    (stream 0's first slots).

    Args:
      state: the buffer.
      key: PRNG key.
      batch_size: number of windows ``B`` (static).
      length: rows per window ``T`` (static), at most ``capacity``.

    Returns:
      ``(stream, rows)``: int32 ``[B]`` stream indices and int32 ``[B, T]`` slots.
    """
    if length <= 0 or length > state.capacity:
        raise ValueError(f"length must be in [1, capacity={state.capacity}], got {length}")
    m = num_windows(state, length)
    ends = jnp.cumsum(m)
    total = ends[-1]
    flat = jax.random.randint(key, (batch_size,), 0, jnp.maximum(total, 1), dtype=jnp.int32)
    stream = jnp.searchsorted(ends, flat, side="right").astype(jnp.int32)
    stream = jnp.minimum(stream, state.num_streams - 1)  # only reachable when total == 0
    u = flat - (ends[stream] - m[stream])
    oldest = (state.cursor - state.count) % state.capacity
    start = oldest[stream] + u
    rows = (start[:, None] + jnp.arange(length, dtype=jnp.int32)[None, :]) % state.capacity
    return stream, rows.astype(jnp.int32)


def gather(state: SequenceBufferState, stream: jax.Array, rows: jax.Array) -> PyTree:
    """Returns ``data[stream[b], rows[b, t]]``: leaves ``[B, T, *row_shape]``."""
    return jax.tree_util.tree_map(lambda buf: buf[stream[:, None], rows], state.data)


def sample(state: SequenceBufferState, key: jax.Array, batch_size: int, length: int) -> PyTree:
    """Draws ``batch_size`` windows of ``length`` consecutive rows (with replacement).

    Returns:
      A pytree like the example row with leaves ``[batch_size, length, *row_shape]``.
    """
    stream, rows = sample_indices(state, key, batch_size, length)
    return gather(state, stream, rows)

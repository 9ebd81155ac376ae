"""Uniform circular replay over any pytree of transitions.

The buffer is a pytree (``BufferState``) whose leaves carry a leading
``capacity`` axis. ``add`` writes a batch in place at a cursor with
``lax.dynamic_update_slice`` (no ``jnp.roll``), so under ``jit`` with the
state donated the large arrays are updated without a copy. ``sample`` draws
indices uniformly among the slots written so far.

Example::

    state = buffer.init(example_transition, capacity=100_000)
    state = buffer.add(state, batch_of_transitions)      # leading axis B
    batch = buffer.sample(state, key, batch_size=256)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

PyTree = Any


class BufferState(NamedTuple):
    """State of a uniform circular buffer.

    Attributes:
      data: pytree whose leaves have shape ``[capacity, ...]``.
      cursor: int32 scalar, the next slot to write.
      size: int32 scalar, the number of slots written (at most capacity).
    """

    data: PyTree
    cursor: jax.Array
    size: jax.Array

    @property
    def capacity(self) -> int:
        return jax.tree_util.tree_leaves(self.data)[0].shape[0]


def init(example: PyTree, capacity: int) -> BufferState:
    """Returns an empty buffer able to hold ``capacity`` items like ``example``.

    Args:
      example: one item (no leading batch axis); only shapes and dtypes are used.
      capacity: number of items kept; older ones are overwritten first.
    """
    if capacity <= 0:
        raise ValueError(f"capacity must be positive, got {capacity}")
    data = jax.tree_util.tree_map(
        lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype), example
    )
    # Two distinct arrays: a donated state must not alias one buffer twice.
    return BufferState(data=data, cursor=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def write_indices(state: BufferState, batch_size: int) -> jax.Array:
    """The slots that the next ``add`` of ``batch_size`` items writes, in order."""
    return (state.cursor + jnp.arange(batch_size, dtype=jnp.int32)) % state.capacity


def add(state: BufferState, batch: PyTree) -> BufferState:
    """Writes ``batch`` (leaves ``[B, ...]``) at the cursor, wrapping around.

    When the batch does not fit before the end of the storage it is written in
    two contiguous pieces; ``B`` must not exceed the capacity.
    """
    leaves = jax.tree_util.tree_leaves(batch)
    b = leaves[0].shape[0]
    capacity = state.capacity
    if b > capacity:
        raise ValueError(f"batch of {b} items does not fit a buffer of capacity {capacity}")
    chex.assert_trees_all_equal_structs(batch, state.data)
    if b == 0:
        return state
    if capacity % b == 0:
        # The cursor only ever takes multiples of b, so a batch never straddles
        # the end: one contiguous write.
        data = jax.tree_util.tree_map(
            lambda buf, x: _write(buf, x.astype(buf.dtype), state.cursor), state.data, batch
        )
    else:
        # Scatter at modular indices: correct for any cursor position.
        idx = write_indices(state, b)
        data = jax.tree_util.tree_map(
            lambda buf, x: buf.at[idx].set(x.astype(buf.dtype), unique_indices=True),
            state.data,
            batch,
        )
    cursor = (state.cursor + b) % capacity
    size = jnp.minimum(state.size + b, capacity)
    return BufferState(data=data, cursor=cursor.astype(jnp.int32), size=size.astype(jnp.int32))


def _write(buf: jax.Array, x: jax.Array, start: jax.Array) -> jax.Array:
    starts = (start,) + (0,) * (buf.ndim - 1)
    return jax.lax.dynamic_update_slice(buf, x, starts)


def gather(state: BufferState, indices: jax.Array) -> PyTree:
    """Returns the items stored at ``indices`` (any integer array shape)."""
    return jax.tree_util.tree_map(lambda buf: buf[indices], state.data)


def sample_indices(state: BufferState, key: jax.Array, batch_size: int) -> jax.Array:
    """Uniform indices in ``[0, size)``; returns zeros while the buffer is empty."""
    return jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1))


def sample(state: BufferState, key: jax.Array, batch_size: int) -> PyTree:
    """Draws ``batch_size`` items uniformly (with replacement) from written slots."""
    return gather(state, sample_indices(state, key, batch_size))

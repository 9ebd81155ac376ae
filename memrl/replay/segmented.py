"""MEMR's segmented replay buffer (Sec. 3.2, Fig. 1; Algorithm 1 lines 14, 18).

Every ``add`` of ``M`` items (one round of model rollouts, all drawn from the
same prioritized distribution) fills one segment, with the importance weight
stored beside each item. ``sample`` picks one filled segment uniformly, then a
batch uniformly (with replacement) inside it, so the weights of a batch all
come from one sampling distribution and stay correct.

Storage is ``[num_segments, segment_size, ...]`` per leaf, written in place at
a segment cursor (oldest segment first when full).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any


class SegmentedState(NamedTuple):
    """Attributes:
    data: pytree with leaves ``[num_segments, segment_size, ...]``.
    weights: ``[num_segments, segment_size]`` float32 importance weights.
    cursor: int32, the next segment to write.
    filled: int32, the number of segments written (at most ``num_segments``).
    """

    data: PyTree
    weights: jax.Array
    cursor: jax.Array
    filled: jax.Array


def init(example: PyTree, num_segments: int, segment_size: int) -> SegmentedState:
    """An empty buffer of ``num_segments`` segments of ``segment_size`` items."""
    if num_segments <= 0 or segment_size <= 0:
        raise ValueError(
            f"num_segments and segment_size must be positive, got {num_segments}, {segment_size}"
        )
    shape = (num_segments, segment_size)
    data = jax.tree_util.tree_map(
        lambda x: jnp.zeros(shape + jnp.shape(x), jnp.asarray(x).dtype), example
    )
    return SegmentedState(
        data=data,
        weights=jnp.zeros(shape, jnp.float32),
        cursor=jnp.zeros((), jnp.int32),
        filled=jnp.zeros((), jnp.int32),
    )


def add(state: SegmentedState, batch: PyTree, weights: jax.Array) -> SegmentedState:
    """Writes one segment: ``batch`` leaves ``[segment_size, ...]``, ``weights [segment_size]``."""
    num_segments, segment_size = state.weights.shape
    if weights.shape != (segment_size,):
        raise ValueError(f"a segment holds {segment_size} items, got weights {weights.shape}")

    def write(buf, x):
        starts = (state.cursor,) + (0,) * (buf.ndim - 1)
        return jax.lax.dynamic_update_slice(buf, x[None].astype(buf.dtype), starts)

    return SegmentedState(
        data=jax.tree_util.tree_map(write, state.data, batch),
        weights=write(state.weights, weights),
        cursor=(state.cursor + 1) % num_segments,
        filled=jnp.minimum(state.filled + 1, num_segments),
    )


def sample(state: SegmentedState, key: jax.Array, batch_size: int) -> tuple[PyTree, jax.Array]:
    """A batch from one uniformly chosen filled segment, and the items' weights.

    Returns:
      ``(items, weights)`` with leading axis ``batch_size``.
    """
    segment_size = state.weights.shape[1]
    k_seg, k_items = jax.random.split(key)
    segment = jax.random.randint(k_seg, (), 0, jnp.maximum(state.filled, 1))
    rows = jax.random.randint(k_items, (batch_size,), 0, segment_size)
    items = jax.tree_util.tree_map(lambda x: x[segment, rows], state.data)
    return items, state.weights[segment, rows]

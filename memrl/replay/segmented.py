"""MEMR's segmented replay buffer (Sec. 3.2, Fig. 1; Algorithm 1 lines 14 and 18).

Every ``M`` model rollouts of MEMR are generated from states drawn with one
prioritized distribution (eq. 3), and each carries the importance weight of
its state (eq. 5). The priorities change after every round (line 16), so
weights from different rounds do not mix: each ``add`` of ``M`` items fills
one *segment*, with the weight stored beside each item, and ``sample`` picks a
filled segment uniformly, then a batch uniformly (with replacement) inside it
(line 18). Every batch thus comes from a single segment.

The segments are the items of a uniform circular buffer
(:mod:`memrl.replay.buffer`) of capacity ``num_segments``: storage is
``[num_segments, segment_size, ...]`` per leaf, each segment written in place
at the cursor, the oldest overwritten first.

Example::

    state = segmented.init(example_transition, num_segments=100, segment_size=400)
    state = segmented.add(state, rollouts, drawn.weights)    # leaves [400, ...]
    batch, weights = segmented.sample(state, key, 256)
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from memrl.replay import buffer as buffer_lib

PyTree = Any


class Segment(NamedTuple):
    """One segment: ``segment_size`` items and their importance weights.

    Attributes:
      items: pytree with leaves ``[segment_size, ...]``.
      weights: ``float32[segment_size]``.
    """

    items: PyTree
    weights: jax.Array


class SegmentedState(NamedTuple):
    """State of a segmented buffer.

    Attributes:
      segments: a uniform buffer whose items are ``Segment`` s: leaves
        ``[num_segments, segment_size, ...]``; its ``size`` is the number of
        filled segments and its ``cursor`` the next segment to write.
    """

    segments: buffer_lib.BufferState

    @property
    def num_segments(self) -> int:
        return self.segments.capacity

    @property
    def segment_size(self) -> int:
        return self.segments.data.weights.shape[1]


def init(example: PyTree, num_segments: int, segment_size: int) -> SegmentedState:
    """Returns an empty buffer of ``num_segments`` segments of ``segment_size`` items.

    Args:
      example: one item (no batch axis); only shapes and dtypes are used.
      num_segments: segments kept; the oldest is overwritten first.
      segment_size: items per segment (MEMR's ``M``).
    """
    if num_segments <= 0 or segment_size <= 0:
        raise ValueError(
            f"num_segments and segment_size must be positive, got {num_segments}, {segment_size}"
        )
    one_segment = Segment(
        items=jax.tree_util.tree_map(
            lambda x: jnp.zeros((segment_size,) + jnp.shape(x), jnp.asarray(x).dtype), example
        ),
        weights=jnp.zeros((segment_size,), jnp.float32),
    )
    return SegmentedState(segments=buffer_lib.init(one_segment, num_segments))


@jax.jit
def add(state: SegmentedState, batch: PyTree, weights: jax.Array | None = None) -> SegmentedState:
    """Writes one segment (Algorithm 1, line 14).

    Args:
      state: the buffer.
      batch: items with leaves ``[segment_size, ...]``.
      weights: ``[segment_size]`` importance weights stored with the items
        (eq. 5), or ``None`` for ones.

    Raises:
      ValueError: if ``batch`` or ``weights`` does not hold exactly one
        segment.
    """
    m = state.segment_size
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree_util.tree_leaves(batch)}
    if weights is None:
        weights = jnp.ones((m,), jnp.float32)
    if sizes != {m} or jnp.shape(weights) != (m,):
        raise ValueError(
            f"a segment holds {m} items; got leading sizes {sorted(sizes, key=str)} "
            f"and weights of shape {jnp.shape(weights)}"
        )
    segment = Segment(items=batch, weights=jnp.asarray(weights, jnp.float32))
    one = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], segment)
    return SegmentedState(segments=buffer_lib.add(state.segments, one))


@functools.partial(jax.jit, static_argnames="batch_size")
def sample(state: SegmentedState, key: jax.Array, batch_size: int) -> tuple[PyTree, jax.Array]:
    """A batch from one filled segment chosen uniformly, and its items' weights (line 18).

    Items are drawn uniformly with replacement inside the segment. While no
    segment is filled, the (zero) first segment is returned.

    Args:
      state: the buffer.
      key: PRNG key.
      batch_size: number of items (static).

    Returns:
      ``(items, weights)``: leaves ``[batch_size, ...]`` and ``float32[batch_size]``.
    """
    k_segment, k_items = jax.random.split(key)
    segment = buffer_lib.sample_indices(state.segments, k_segment, 1)[0]
    rows = jax.random.randint(k_items, (batch_size,), 0, state.segment_size)
    chosen = jax.tree_util.tree_map(lambda x: x[segment, rows], state.segments.data)
    return chosen.items, chosen.weights

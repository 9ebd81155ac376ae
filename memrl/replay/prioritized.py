"""Prioritized replay (Schaul et al., 2016) over any pytree, on the sum tree.

MEMR (Sec. 3.2, Algorithm 1 lines 8-16) samples environment states with

    P(i) = p_i^alpha / sum_k p_k^alpha                      (MEMR eq. 3)

and corrects the bias with importance-sampling weights

    w_j = (N P(j))^-beta / max_i w_i                        (MEMR eq. 5)

where ``p_i`` is the priority of item ``i`` (MEMR eq. 4 computes it; this
module takes it as given) and ``N`` the number of items stored. Items live in
a uniform circular buffer (:mod:`memrl.replay.buffer`); slot ``i`` of the
buffer is leaf ``i`` of a sum tree (:mod:`memrl.replay.sum_tree`) that stores
``p_i^alpha``, so overwriting an item also overwrites its priority, and
sampling never returns an unwritten slot or one of priority 0.

``alpha`` is applied where priorities are written (``add`` and
``update_priorities``: pass the same value to both) and ``beta`` where the
weights are formed (``sample``); annealing ``beta`` (MEMR: 0.4 to 1.0) is the
caller's schedule. ``max_i w_i`` is the largest weight in the sampled batch
(Algorithm 1 line 11 computes it over the drawn ``j``), so weights lie in
``(0, 1]`` and only scale updates down; with this normalization ``N`` cancels.
Items added without a priority get the largest priority seen so far (1 before
any), so each is likely to be replayed before its priority is known.

Example::

    state = prioritized.init(example_transition, capacity=1_000_000)
    state = prioritized.add(state, transitions, alpha=0.6)   # max priority
    drawn = prioritized.sample(state, key, 400, beta=beta_t)
    state = prioritized.update_priorities(state, drawn.indices, p, alpha=0.6)
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from memrl.replay import buffer as buffer_lib
from memrl.replay import sum_tree

PyTree = Any


class PrioritizedState(NamedTuple):
    """Items, their ``p^alpha`` in a sum tree, and the largest raw priority seen.

    Attributes:
      buffer: the uniform circular buffer holding the items.
      tree: sum tree over the buffer's slots; leaf ``i`` holds ``p_i^alpha``.
      max_priority: float32 scalar, the largest priority (before the exponent)
        seen so far, initially 1; items added without a priority get it.
    """

    buffer: buffer_lib.BufferState
    tree: sum_tree.SumTree
    max_priority: jax.Array


class Sample(NamedTuple):
    """A prioritized batch.

    Attributes:
      items: the sampled items (leaves ``[B, ...]``).
      indices: ``int32[B]`` buffer slots, to pass to ``update_priorities``.
      probabilities: ``float32[B]``, ``P(j)`` of MEMR eq. 3.
      weights: ``float32[B]`` importance weights of MEMR eq. 5, divided by
        their maximum over the batch.
    """

    items: PyTree
    indices: jax.Array
    probabilities: jax.Array
    weights: jax.Array


def init(example: PyTree, capacity: int) -> PrioritizedState:
    """Returns an empty prioritized buffer for ``capacity`` items like ``example``.

    Args:
      example: one item (no batch axis); only shapes and dtypes are used.
      capacity: number of items kept; the oldest are overwritten first.
    """
    return PrioritizedState(
        buffer=buffer_lib.init(example, capacity),
        tree=sum_tree.init(capacity, jnp.float32),
        max_priority=jnp.ones((), jnp.float32),
    )


@jax.jit
def add(
    state: PrioritizedState,
    batch: PyTree,
    priorities: jax.Array | None = None,
    alpha: float | jax.Array = 1.0,
) -> PrioritizedState:
    """Stores ``batch`` (leaves ``[B, ...]``, ``B <= capacity``) at the buffer's cursor.

    Args:
      state: the buffer.
      batch: items with a leading batch axis.
      priorities: ``[B]`` priorities ``p`` (before the exponent; MEMR Algorithm
        1 line 8 computes them with eq. 4), or ``None`` for the largest
        priority seen so far.
      alpha: exponent of eq. 3 (0: uniform, 1: proportional to ``p``).

    Returns:
      The new state; ``max_priority`` also counts the given priorities.
    """
    b = jax.tree_util.tree_leaves(batch)[0].shape[0]
    slots = buffer_lib.write_indices(state.buffer, b)
    if priorities is None:
        priorities = jnp.broadcast_to(state.max_priority, (b,))
    return PrioritizedState(
        buffer=buffer_lib.add(state.buffer, batch),
        tree=sum_tree.update(state.tree, slots, _powered(priorities, alpha)),
        max_priority=_max_seen(state.max_priority, priorities),
    )


@jax.jit
def update_priorities(
    state: PrioritizedState,
    indices: jax.Array,
    priorities: jax.Array,
    alpha: float | jax.Array = 1.0,
) -> PrioritizedState:
    """Sets the priorities of the items at ``indices`` (MEMR Algorithm 1, line 16).

    With duplicate indices the last occurrence wins. Priorities should be
    finite and non-negative; an item of priority 0 is never sampled while
    ``alpha > 0`` (negative or NaN priorities are stored as 0).

    Args:
      state: the buffer.
      indices: slots, e.g. ``Sample.indices``.
      priorities: new priorities ``p`` (before the exponent), shaped like
        ``indices``.
      alpha: exponent of eq. 3; the same as given to ``add``.
    """
    return state._replace(
        tree=sum_tree.update(state.tree, indices, _powered(priorities, alpha)),
        max_priority=_max_seen(state.max_priority, priorities),
    )


@jax.jit
def importance_weights(
    probabilities: jax.Array, size: jax.Array, beta: float | jax.Array
) -> jax.Array:
    """MEMR eq. 5: ``(N P(j))^-beta`` divided by the largest of them in the batch.

    Args:
      probabilities: ``[B]`` sampling probabilities ``P(j)`` (positive).
      size: ``N``, the number of items the batch was drawn from.
      beta: IS exponent (0: all weights 1; 1: full correction).
    """
    n = jnp.asarray(size).astype(jnp.float32)
    w = jnp.power(n * probabilities.astype(jnp.float32), -jnp.asarray(beta, jnp.float32))
    return w / jnp.max(w)


@functools.partial(jax.jit, static_argnames="batch_size")
def sample(
    state: PrioritizedState, key: jax.Array, batch_size: int, beta: float | jax.Array
) -> Sample:
    """Draws ``batch_size`` items with ``P(j)`` of eq. 3 and their weights of eq. 5.

    Sampling is stratified over the priority mass (``sum_tree.sample``): the
    ``b``-th item comes from the ``b``-th of ``batch_size`` equal slices of
    it, so the batch is ordered by slot, not shuffled. The buffer must hold an
    item of positive priority (otherwise every index is 0 and the
    probabilities are NaN).

    Args:
      state: the buffer.
      key: PRNG key.
      batch_size: number of items (static).
      beta: IS exponent of eq. 5.
    """
    indices = sum_tree.sample(state.tree, key, batch_size)
    probabilities = sum_tree.get(state.tree, indices) / sum_tree.total(state.tree)
    return Sample(
        items=buffer_lib.gather(state.buffer, indices),
        indices=indices,
        probabilities=probabilities,
        weights=importance_weights(probabilities, state.buffer.size, beta),
    )


def _powered(priorities: jax.Array, alpha: float | jax.Array) -> jax.Array:
    # jnp.power gives 0^alpha = 0 for alpha > 0 and 1 for alpha = 0 (uniform).
    p = jnp.asarray(priorities, jnp.float32)
    return jnp.power(p, jnp.asarray(alpha, jnp.float32))


def _max_seen(current: jax.Array, priorities: jax.Array) -> jax.Array:
    # NaN and negative priorities are stored as 0 and do not count.
    p = jnp.asarray(priorities, jnp.float32)
    return jnp.maximum(current, jnp.max(jnp.where(p > 0, p, 0.0), initial=0.0))

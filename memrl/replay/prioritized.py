"""Prioritized replay (Schaul et al. 2016) over any pytree, on the sum tree.

MEMR (Sec. 3.2, Algorithm 1 lines 8-16) samples environment states with

    P(i) = p_i^alpha / sum_k p_k^alpha                      (MEMR eq. 3)

and corrects the bias with importance-sampling weights

    w_j = (N P(j))^-beta / max_i w_i                        (MEMR eq. 5)

The sum tree stores ``p_i^alpha``, so ``alpha`` is applied where priorities are
written (``add``, ``update_priorities``) and ``beta`` where weights are formed
(``sample``). ``max_i w_i`` is the largest weight in the sampled batch (as in
Schaul et al.'s reference implementation): weights lie in ``(0, 1]``.

Items are stored in a uniform circular buffer (``memrl.replay.buffer``); slot
``i`` of the buffer is leaf ``i`` of the tree, so overwriting an item also
overwrites its priority.
"""

from __future__ import annotations

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
      tree: sum tree over the buffer's slots of ``p_i^alpha``.
      max_priority: largest priority (before the exponent) seen so far; new
        items without an explicit priority get it.
    """

    buffer: buffer_lib.BufferState
    tree: sum_tree.SumTree
    max_priority: jax.Array


class Sample(NamedTuple):
    """A prioritized batch.

    Attributes:
      items: the sampled items (leaves ``[B, ...]``).
      indices: ``[B]`` int32 slots, for ``update_priorities``.
      probabilities: ``[B]`` ``P(j)`` of eq. 3.
      weights: ``[B]`` importance weights of eq. 5, normalized by their max.
    """

    items: PyTree
    indices: jax.Array
    probabilities: jax.Array
    weights: jax.Array


def init(example: PyTree, capacity: int) -> PrioritizedState:
    """An empty prioritized buffer for ``capacity`` items like ``example``."""
    return PrioritizedState(
        buffer=buffer_lib.init(example, capacity),
        tree=sum_tree.init(capacity),
        max_priority=jnp.ones((), jnp.float32),
    )


def _powered(priorities: jax.Array, alpha: float) -> jax.Array:
    return jnp.power(priorities.astype(jnp.float32), alpha)


def add(
    state: PrioritizedState,
    batch: PyTree,
    priorities: jax.Array | None = None,
    alpha: float = 1.0,
) -> PrioritizedState:
    """Stores ``batch`` (leaves ``[B, ...]``) with the given priorities ``[B]``, or
    with the maximum priority seen so far when ``priorities`` is ``None``."""
    b = jax.tree_util.tree_leaves(batch)[0].shape[0]
    slots = buffer_lib.write_indices(state.buffer, b)
    if priorities is None:
        priorities = jnp.full((b,), state.max_priority)
    tree = sum_tree.update(state.tree, slots, _powered(priorities, alpha))
    return PrioritizedState(
        buffer=buffer_lib.add(state.buffer, batch),
        tree=tree,
        max_priority=jnp.maximum(state.max_priority, jnp.max(priorities)),
    )


def importance_weights(
    probabilities: jax.Array, size: jax.Array, beta: float | jax.Array
) -> jax.Array:
    """``(N P(j))^-beta`` divided by the largest of them in the batch (eq. 5)."""
    w = jnp.power(size.astype(jnp.float32) * probabilities, -beta)
    return w / jnp.max(w)


def sample(
    state: PrioritizedState, key: jax.Array, batch_size: int, beta: float | jax.Array
) -> Sample:
    """Draws ``batch_size`` items with ``P(i) = p_i^alpha / sum_k p_k^alpha``
    (stratified over the mass) and their IS weights with exponent ``beta``."""
    indices = sum_tree.sample(state.tree, key, batch_size)
    probabilities = sum_tree.get(state.tree, indices) / sum_tree.total(state.tree)
    return Sample(
        items=buffer_lib.gather(state.buffer, indices),
        indices=indices,
        probabilities=probabilities,
        weights=importance_weights(probabilities, state.buffer.size, beta),
    )


def update_priorities(
    state: PrioritizedState, indices: jax.Array, priorities: jax.Array, alpha: float = 1.0
) -> PrioritizedState:
    """Sets the priorities of the items at ``indices`` (last wins on duplicates)."""
    return state._replace(
        tree=sum_tree.update(state.tree, indices, _powered(priorities, alpha)),
        max_priority=jnp.maximum(state.max_priority, jnp.max(priorities)),
    )

"""A wide, shallow sum tree that lives on the accelerator and never samples a zero leaf.

This is the sampling engine of MEMR's prioritized replay: item ``i`` is drawn
with probability ``p_i^alpha / sum_k p_k^alpha`` (MEMR eq. 3), where the tree
stores ``p_i^alpha`` (see :mod:`memrl.replay.prioritized`). The tree itself
only knows non-negative leaf values; ``sample`` draws leaf ``i`` with
probability ``value_i / total``.

API (pure functions over the ``SumTree`` pytree; all jit-able)::

    tree = sum_tree.init(capacity)                       # all leaves zero
    tree = sum_tree.update(tree, indices, values)        # batched, last wins
    idx = sum_tree.sample(tree, key, batch_size)         # stratified
    sum_tree.total(tree), sum_tree.get(tree, idx)

Design
------
*Wide and shallow.* At the sizes replay uses (2^14 to 2^22 leaves) a sum tree
round costs the number of dependent XLA operations, not the bytes it touches:
a binary tree walks 20 levels one after the other at 2^20 leaves. This tree
has 16 children per node: levels are flat arrays stored leaves-first, each
zero-padded to a multiple of 16; node ``n`` of level ``l`` owns entries
``[16 n, 16 n + 16)`` of level ``l - 1``, and the top level (at most 64 wide)
holds the root's children. 2^20 leaves have 4 levels above them (2^16, 2^12,
256, 16), 2^22 leaves 4 as well (2^18, 2^14, 1024, 64), so both an update and a
draw take 5 steps instead of 20-22. Each step is a handful of fused XLA
kernels whatever its width.

*Update* writes the leaves, then, level by level, recomputes only the parents
of the touched entries: gather their 16 children, add them, scatter the sums.
Every internal entry is therefore a float sum of its own current children,
never an incrementally patched value (``+= delta`` updates drift, and can
leave a positive parent over all-zero children). Duplicate leaf indices are
resolved first: one sort of packed ``index * B + position`` keys (a single
``uint32`` key sorts several times faster on XLA:CPU than a stable or
multi-operand sort) finds the last occurrence of each index; the others are
routed to distinct out-of-range slots and dropped, so the leaf scatter has
unique indices and the same result on every backend, whatever order XLA
applies scatter updates in. A parent touched several times receives, from
every copy, the same sum computed by the same code from the same children, so
its write order does not matter either.

*Sample* is stratified (Schaul et al., 2016): stratum ``b < B`` is
``[edge_b, edge_{b+1})`` with float32 edges ``b * total / B`` (the last edge
the total itself, so the strata tile the mass exactly), and its target is
``t_b = edge_b + U_b * width_b``. Each step gathers the 16 children of the
current node for every target, forms their prefix sums with one small matmul
against a triangular matrix of ones, and picks

    the first child ``k`` with ``prefix_k > t`` and ``child_k > 0``; if none
    (``t`` at or past the node's own sum, by rounding), the last child with
    ``child_k > 0``,

then moves ``t`` to the chosen child's frame (subtracts the prefix before it)
and descends. Targets are carried as unevaluated sums ``hi + lo`` of two
float32 numbers (TwoSum), so the comparisons and subtractions are exact: a
single float32 target would resolve a leaf that holds 2^-20 of the mass to
a few dozen representable numbers near the total, and skew its probability by
several percent (measured: 3.5% rms per leaf at 2^20 leaves, 12% at 2^22;
with ``hi + lo``, 0.06% and 0.14%, the resolution of the 24 random bits of
``U_b``). What remains is the rounding of the float32 sums themselves: a
boundary between two siblings under a node of mass ``M`` may sit up to
``ulp(M) / 2`` off, which moves that much mass between the two leaves that
touch it. The jitter ``U_b`` is Threefry-2x32 (the hash behind
``jax.random``) of the key and ``b``, written out as plain integer ops: on
CPU ``jax.random`` lowers Threefry to a 5-iteration while loop, whose
per-iteration overhead costs more than the hash.

Why a zero leaf can never be returned, in float32 at any size
-------------------------------------------------------------
1. Stored values are non-negative and normal: ``update`` stores values below
   the smallest normal float (negatives, NaN, zeros and subnormals, which
   flush-to-zero arithmetic would treat as zero anyway) as exactly ``0``.
2. A float sum of non-negative numbers, in any order and with any rounding, is
   zero exactly when all its terms are: rounding is monotone, so each partial
   sum is at least its largest term. Every internal entry is such a sum of its
   current children, so *an entry is positive iff one of its children is*.
3. The descent only ever moves to a child that it has just read to be
   positive: both branches of the rule above require ``child_k > 0``. The
   root's children sum to ``total``, so if ``total > 0`` one is positive; a
   positive node has a positive child by (2); by induction every draw ends on a
   positive leaf. Rounding in the prefix sums, in ``total`` or in the target
   (even a NaN or infinite one) only decides *which* positive child is taken.
4. Padding leaves and indices ``>= capacity`` are never written (``update``
   drops such indices), so they stay zero and, by (3), are never returned.

A descent that trusts float32 prefix sums alone breaks (3): a target rounded
onto a boundary, or a parent that drifted above the sum of its children,
walks into a zero leaf or an empty subtree. With ``total == 0`` there is
nothing to draw and ``sample`` returns index 0.

Speed, rounds/s of one round = update 400 random leaves + draw 400 stratified
samples (MEMR's M), ``python -m benchmarks.sum_tree_speed --trials=20`` on a
2-core CPU shared with other jobs (load average 13-15), jax 0.10.2, flashbax
0.1.3 with its better setter (``set_batch_scan`` except where noted). "best":
the best of 20 interleaved trials of each; "median": the median over trials
of memrl / flashbax in the same trial. Load from other jobs moves the
absolute numbers by 2x from run to run (an earlier run at load 10, before the
``hi + lo`` targets, which cost nothing measurable, had best ratios of 2.08 per
call and 2.26 in a scan at 2^20)::

    leaves  way       memrl best  flashbax best  ratio best  ratio median
    2^14    per call        7902          12049        0.66          0.90
    2^14    scan            7255    8786 (bin.)        0.83          0.67
    2^17    per call        9368           5817        1.61          1.17
    2^17    scan            9099           7623        1.19          1.15
    2^20    per call        6226           3577        1.74          1.55
    2^20    scan            6838           3370        2.03          1.82
    2^22    per call        4120           1893        2.18          2.07
    2^22    scan            4550           2383        1.91          1.68

At 2^14 flashbax's tree fits in 128 KB and each step of its loops is a tiny
single-threaded kernel, cheaper than this tree's fixed cost per level. From
2^17 on, an operation inside its loops touches an array large enough that
XLA:CPU splits it across threads, and pays that hand-off at every step of
every loop; this tree has 3 or 4 such split operations per round, each run
once.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

__all__ = ["SumTree", "init", "update", "sample", "total", "get"]

# Children per node. Measured per round (update 400 + sample 400) on a 2-core
# CPU from 2^14 to 2^22 leaves, 16 beat 8, 32 and 64: a level costs about the
# same handful of XLA operations whatever its width, but the per-query prefix
# sums grow with K^2.
_BRANCHING = 16
# The top level (the root's children) may be this wide; below it every level
# is padded to a multiple of _BRANCHING.
_MAX_TOP = 64


@struct.dataclass
class SumTree:
    """Sum tree state.

    Attributes:
      levels: tuple of 1-D arrays, leaves first. ``levels[0]`` holds the leaf
        values (zero-padded to a multiple of ``branching``); entry ``n`` of
        ``levels[l]`` is the sum of entries ``[n*K, (n+1)*K)`` of
        ``levels[l-1]``. ``levels[-1]`` holds the root's children.
      capacity: number of usable leaves (static).
      branching: ``K``, the number of children per node (static).
    """

    levels: tuple[jax.Array, ...]
    capacity: int = struct.field(pytree_node=False)
    branching: int = struct.field(pytree_node=False)


def _level_sizes(capacity: int, branching: int) -> list[int]:
    sizes = [math.ceil(capacity / branching) * branching]
    while sizes[-1] > max(_MAX_TOP, branching):
        parents = sizes[-1] // branching
        sizes.append(math.ceil(parents / branching) * branching)
    return sizes


def init(capacity: int, dtype=jnp.float32) -> SumTree:
    """Returns a sum tree with ``capacity`` leaves, all zero.

    Args:
      capacity: number of leaves; any positive integer.
      dtype: floating dtype of the stored values.
    """
    capacity = int(capacity)
    if capacity <= 0:
        raise ValueError(f"capacity must be positive, got {capacity}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be floating, got {dtype}")
    levels = tuple(jnp.zeros((n,), dtype) for n in _level_sizes(capacity, _BRANCHING))
    return SumTree(levels=levels, capacity=capacity, branching=_BRANCHING)


@jax.jit
def total(tree: SumTree) -> jax.Array:
    """Returns the sum of all leaves (a scalar of the tree's dtype)."""
    return jnp.sum(tree.levels[-1])


@jax.jit
def get(tree: SumTree, indices: jax.Array) -> jax.Array:
    """Returns the leaf values at ``indices`` (any shape); 0 outside ``[0, capacity)``."""
    indices = jnp.asarray(indices)
    valid = (indices >= 0) & (indices < tree.capacity)
    vals = tree.levels[0].at[jnp.where(valid, indices, 0)].get(mode="promise_in_bounds")
    return jnp.where(valid, vals, jnp.zeros((), vals.dtype))


def _last_occurrence(indices: jax.Array, capacity: int):
    """Sorts ``indices`` and marks the last occurrence (in batch order) of each.

    Returns ``(sorted_indices, positions, is_last)``; ``positions[i]`` is where
    ``sorted_indices[i]`` was in the batch. Indices outside ``[0, capacity)``
    are mapped to ``capacity`` and never marked.
    """
    b = indices.shape[0]
    valid = (indices >= 0) & (indices < capacity)
    idx = jnp.where(valid, indices, capacity).astype(jnp.uint32)
    pos = jnp.arange(b, dtype=jnp.uint32)
    if (capacity + 1) * b <= 2**32:
        # One single-key sort of packed keys (distinct, so stability is moot):
        # on XLA:CPU several times faster than a stable or multi-operand sort.
        keys = jax.lax.sort(idx * jnp.uint32(b) + pos, is_stable=False)
        sorted_idx = keys // jnp.uint32(b)
        sorted_pos = keys % jnp.uint32(b)
    else:
        sorted_idx, sorted_pos = jax.lax.sort((idx, pos), num_keys=2)
    sorted_idx = sorted_idx.astype(jnp.int32)
    is_last = jnp.concatenate([sorted_idx[1:] != sorted_idx[:-1], jnp.ones((1,), bool)])
    is_last = is_last & (sorted_idx < capacity)
    return sorted_idx, sorted_pos.astype(jnp.int32), is_last


@jax.jit
def update(tree: SumTree, indices: jax.Array, values: jax.Array) -> SumTree:
    """Sets ``leaf[indices[i]] = values[i]`` and recomputes the sums above them.

    Only the ancestors of the written leaves are recomputed, each from its own
    children. With duplicate indices the last occurrence in the batch wins, on
    every backend. Indices outside ``[0, capacity)`` are ignored. Values should be
    finite and non-negative; negatives, NaN and values below the smallest
    normal float are stored as 0 (never sampled).

    Args:
      tree: the tree.
      indices: integer array of leaf indices (any shape; flattened).
      values: values of the same shape as ``indices`` (or broadcastable to it).

    Returns:
      The updated tree. Under ``jit`` with the tree donated, the levels are
      updated in place.
    """
    k = tree.branching
    dtype = tree.levels[0].dtype
    indices = jnp.asarray(indices)
    values = jnp.broadcast_to(jnp.asarray(values, dtype), indices.shape).reshape(-1)
    indices = indices.reshape(-1)
    b = indices.shape[0]
    if b == 0:
        return tree
    sorted_idx, sorted_pos, is_last = _last_occurrence(indices, tree.capacity)
    vals = values[sorted_pos]
    vals = jnp.where(vals >= jnp.finfo(dtype).tiny, vals, jnp.zeros((), dtype))
    # Losing duplicates and invalid indices go to distinct out-of-range slots
    # and are dropped, so the leaf scatter has unique indices: deterministic,
    # and no atomics on GPU.
    n0 = tree.levels[0].shape[0]
    spare = n0 + jnp.arange(b, dtype=jnp.int32)
    leaves = (
        tree.levels[0]
        .at[jnp.where(is_last, sorted_idx, spare)]
        .set(vals, mode="drop", unique_indices=True)
    )
    new_levels = [leaves]
    # (Invalid indices recompute the last leaves' parents, which is a no-op.)
    node = jnp.minimum(sorted_idx, n0 - 1)
    for level in tree.levels[1:]:
        node = node // k
        sums = _row_sums(new_levels[-1].reshape(-1, k)[node])
        # A parent touched several times gets the same sum, computed by the
        # same code from the same children, from every copy: any write order
        # gives the same bits.
        new_levels.append(level.at[node].set(sums, mode="promise_in_bounds"))
    return tree.replace(levels=tuple(new_levels))


def _row_sums(rows: jax.Array) -> jax.Array:
    # Written as a chain of column adds (left to right) rather than jnp.sum:
    # XLA:CPU then fuses the gather of the rows and the sum into one loop
    # instead of a gather followed by a separate reduction kernel.
    total = rows[:, 0]
    for c in range(1, rows.shape[1]):
        total = total + rows[:, c]
    return total


def _triangular(n: int, dtype) -> jax.Array:
    # upper[i, j] = 1 for i <= j: x @ upper is the inclusive prefix sum of x.
    return jnp.asarray(np.triu(np.ones((n, n))), dtype)


def _prefix_sums(rows: jax.Array) -> jax.Array:
    # HIGHEST: float32 precision on GPUs and TPUs too, whose default rounds
    # matmul inputs to TF32 or bfloat16.
    n = rows.shape[-1]
    return jnp.matmul(rows, _triangular(n, rows.dtype), precision=jax.lax.Precision.HIGHEST)


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``s = fl(a + b)`` and the exact rounding error ``e``: ``s + e == a + b``.

    Knuth's TwoSum; exact in round-to-nearest binary floating point, in any
    dtype, as long as the compiler does not reassociate (XLA does not).
    """
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _choose_child(children: jax.Array, prefix: jax.Array, hi: jax.Array, lo: jax.Array):
    """Picks a positive child for each target ``t = hi + lo``; returns it and ``t`` in it.

    The chosen child is the first positive one whose inclusive prefix sum
    exceeds ``t``, else the last positive one: only children read as positive
    are ever chosen (the guarantee in the module docstring rests on this).

    Targets are unevaluated sums ``hi + lo`` with ``hi == fl(hi + lo)``, so
    ``prefix > t`` is decided exactly by ``prefix > hi or (prefix == hi and lo
    < 0)``, and ``t - (prefix before the child)`` is carried exactly by TwoSum.

    Args:
      children: ``[B or 1, K]`` child values.
      prefix: ``[B or 1, K]`` inclusive prefix sums of ``children``.
      hi: ``[B]`` leading parts of the targets.
      lo: ``[B]`` trailing parts, ``|lo| <= ulp(hi) / 2``.

    Returns:
      ``(child, hi, lo)``: ``int32[B]`` child positions and the targets
      relative to the start of the chosen child, normalized the same way.
    """
    k = children.shape[-1]
    ar = jnp.arange(k, dtype=jnp.int32)
    positive = children > 0
    exceeds = (prefix > hi[:, None]) | ((prefix == hi[:, None]) & (lo[:, None] < 0))
    hit = positive & exceeds
    # One min-reduction does both rules: hits rank first (by position), then
    # positive non-hits in reverse order, then zero children.
    rank = jnp.where(hit, ar, jnp.where(positive, 2 * k - 1 - ar, 3 * k))
    best = jnp.min(rank, axis=-1)
    child = jnp.where(best < k, best, jnp.maximum(2 * k - 1 - best, 0))
    # The child's interval starts at the previous inclusive prefix: the same
    # number the comparison above used as the boundary.
    before = jnp.pad(prefix[:, :-1], ((0, 0), (1, 0)))
    before = jnp.broadcast_to(before, (hi.shape[0], k))
    start = jnp.take_along_axis(before, child[:, None], axis=1)[:, 0]
    s, e = _two_sum(hi, -start)
    hi, lo = _two_sum(s, e + lo)
    return child, hi, lo


def _descend(tree: SumTree, u: jax.Array) -> jax.Array:
    """Leaf index for each target ``u`` (e.g. in ``[0, total)``; see module docstring)."""
    top = tree.levels[-1][None, :]
    return _walk(tree, top, _prefix_sums(top), u, jnp.zeros_like(u))


def _walk(tree: SumTree, top, top_prefix, hi: jax.Array, lo: jax.Array) -> jax.Array:
    k = tree.branching
    node, hi, lo = _choose_child(top, top_prefix, hi, lo)
    for level in tree.levels[-2::-1]:
        children = level.reshape(-1, k)[node]
        child, hi, lo = _choose_child(children, _prefix_sums(children), hi, lo)
        node = node * k + child
    return node


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotl(x: jax.Array, r: int) -> jax.Array:
    return (x << jnp.uint32(r)) | (x >> jnp.uint32(32 - r))


def _threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 with 20 rounds (Salmon et al., 2011), fully unrolled."""
    ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(0x1BD11BDA))
    x0 = x0 + ks[0]
    x1 = x1 + ks[1]
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = _rotl(x1, r) ^ x0
        x0 = x0 + ks[(block + 1) % 3]
        x1 = x1 + ks[(block + 2) % 3] + jnp.uint32(block + 1)
    return x0, x1


def _key_words(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    words = jnp.asarray(key).astype(jnp.uint32).reshape(-1)
    k0, k1 = words[0], words[1] if words.shape[0] > 1 else jnp.uint32(0)
    for i in range(2, words.shape[0]):  # fold wider keys (e.g. 'rbg') in
        if i % 2 == 0:
            k0 = k0 ^ words[i]
        else:
            k1 = k1 ^ words[i]
    return k0, k1


def _uniform(key: jax.Array, n: int, dtype) -> jax.Array:
    """``n`` uniforms on the grid ``i / 2^24`` in ``[0, 1)`` from ``key`` (fused)."""
    k0, k1 = _key_words(key)
    count = jnp.arange(n, dtype=jnp.uint32)
    bits, _ = _threefry2x32(k0, k1, count, jnp.zeros_like(count))
    # 24 random bits: exact in float32, scaled by a power of two.
    return ((bits >> jnp.uint32(8)).astype(jnp.float32) * 2.0**-24).astype(dtype)


@functools.partial(jax.jit, static_argnames="batch_size")
def sample(tree: SumTree, key: jax.Array, batch_size: int) -> jax.Array:
    """Draws ``batch_size`` leaf indices, leaf ``i`` with probability ``value_i / total``.

    Stratified (Schaul et al., 2016): ``[0, total)`` is cut into
    ``batch_size`` equal slices and one target is drawn uniformly inside each,
    so the ``b``-th index comes from the ``b``-th slice of mass and the batch
    is ordered by leaf, not shuffled. Over the batch, leaf ``i`` appears
    ``batch_size * value_i / total`` times in expectation, with less variance
    than independent draws.

    Never returns a leaf whose value is zero, nor an index outside
    ``[0, capacity)``, whatever the rounding (see the module docstring); if
    ``total == 0`` every index is 0.

    Args:
      tree: the tree.
      key: a PRNG key (raw ``uint32[2]`` or typed).
      batch_size: number of indices (static).

    Returns:
      ``int32[batch_size]`` leaf indices.
    """
    dtype = tree.levels[0].dtype
    top = tree.levels[-1][None, :]
    top_prefix = _prefix_sums(top)
    mass = top_prefix[0, -1]  # the total as the descent sees it
    # Stratum b is [edge_b, edge_{b+1}): float32 edges, the last one the mass
    # itself, so the strata tile [0, mass) exactly and each width is an exact
    # difference (Sterbenz). The target is edge_b + U_b * width_b, kept as an
    # unevaluated sum: a single float32 target would resolve a leaf holding
    # 2^-22 of the mass to a handful of representable points.
    step = mass / batch_size
    edges = jnp.arange(batch_size + 1, dtype=dtype) * step
    edges = edges.at[-1].set(mass)
    width = edges[1:] - edges[:-1]
    offset = _uniform(key, batch_size, dtype) * width
    hi, lo = _two_sum(edges[:-1], offset)
    return _walk(tree, top, top_prefix, hi, lo)

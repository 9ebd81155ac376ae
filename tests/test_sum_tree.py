"""Sum tree: NumPy brute-force oracle, duplicates, exactness, never a zero leaf."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from memrl.replay import sum_tree

CAPACITIES = [1, 7, 100, 1024, 4099]


def _leaves(tree):
    return np.asarray(tree.levels[0][: tree.capacity])


def _random_values(rng, n, zero_fraction=0.5):
    values = rng.uniform(0.5, 2.0, n).astype(np.float32)
    values[rng.random(n) < zero_fraction] = 0.0
    return values


def _filled(values):
    tree = sum_tree.init(values.shape[0])
    return sum_tree.update(tree, jnp.arange(values.shape[0]), jnp.asarray(values))


def _oracle_probabilities(values):
    """Brute force: P(i) = v_i / sum(v), in float64."""
    v = np.asarray(values, np.float64)
    return v / v.sum()


def _oracle_stratified(values, u):
    """Brute-force NumPy inverse CDF in float64: first i with cumsum_i > u."""
    cdf = np.cumsum(np.asarray(values, np.float64))
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _check_invariant(tree):
    """Each internal entry is the sum of its children; positive iff a child is."""
    k = tree.branching
    for lower, upper in zip(tree.levels[:-1], tree.levels[1:], strict=True):
        children = np.asarray(lower, np.float64).reshape(-1, k)
        parents = np.asarray(upper, np.float64)[: children.shape[0]]
        np.testing.assert_allclose(parents, children.sum(1), rtol=1e-6)
        np.testing.assert_array_equal(parents > 0, (children > 0).any(1))
        assert not np.asarray(upper)[children.shape[0] :].any()


@functools.partial(jax.jit, static_argnames=("batches", "batch_size"))
def _draw(tree, key, batches, batch_size):
    keys = jax.random.split(key, batches)
    return jax.vmap(lambda k: sum_tree.sample(tree, k, batch_size))(keys)


@pytest.mark.parametrize("capacity", [1, 16, 2**14 + 3])
def test_init_is_zero_and_padded(capacity):
    tree = sum_tree.init(capacity)
    assert tree.capacity == capacity
    assert tree.levels[0].shape[0] >= capacity
    assert tree.levels[0].shape[0] % tree.branching == 0
    assert float(sum_tree.total(tree)) == 0.0
    assert not np.asarray(sum_tree.get(tree, jnp.arange(capacity))).any()
    assert tree.levels[0].dtype == jnp.float32


def test_init_rejects_bad_arguments():
    for capacity in (0, -3):
        with pytest.raises(ValueError):
            sum_tree.init(capacity)
    with pytest.raises(ValueError):
        sum_tree.init(8, jnp.int32)


@pytest.mark.parametrize("capacity", CAPACITIES)
def test_update_get_total_match_numpy(capacity):
    rng = np.random.default_rng(capacity)
    tree = sum_tree.init(capacity)
    want = np.zeros(capacity, np.float32)
    for _ in range(20):
        idx = rng.integers(0, capacity, 37)
        vals = _random_values(rng, 37, 0.3)
        tree = sum_tree.update(tree, jnp.asarray(idx), jnp.asarray(vals))
        for i, v in zip(idx, vals, strict=True):  # sequential: the last one wins
            want[i] = v
    np.testing.assert_array_equal(_leaves(tree), want)
    np.testing.assert_array_equal(np.asarray(sum_tree.get(tree, jnp.arange(capacity))), want)
    np.testing.assert_allclose(
        float(sum_tree.total(tree)), want.astype(np.float64).sum(), rtol=1e-6
    )
    _check_invariant(tree)


def test_duplicate_indices_last_occurrence_wins():
    tree = sum_tree.init(10)
    idx = jnp.asarray([3, 5, 3, 3, 5, 7, 3])
    vals = jnp.asarray([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.5])
    tree = sum_tree.update(tree, idx, vals)
    np.testing.assert_array_equal(_leaves(tree), [0, 0, 0, 0.5, 0, 5, 0, 6, 0, 0])
    assert float(sum_tree.total(tree)) == 11.5
    # Setting a leaf to zero through a duplicate empties it.
    tree = sum_tree.update(tree, jnp.asarray([7, 7]), jnp.asarray([9.0, 0.0]))
    assert float(sum_tree.get(tree, 7)) == 0.0
    _check_invariant(tree)


def test_duplicates_with_the_wide_sort():
    # (capacity + 1) * batch >= 2^32 takes the two-key sort instead of packed keys.
    capacity, batch = 2**22, 1100
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 50, batch)  # many duplicates
    vals = rng.uniform(1.0, 2.0, batch).astype(np.float32)
    tree = sum_tree.update(sum_tree.init(capacity), jnp.asarray(idx), jnp.asarray(vals))
    want = np.zeros(50, np.float32)
    for i, v in zip(idx, vals, strict=True):
        want[i] = v
    np.testing.assert_array_equal(np.asarray(tree.levels[0][:50]), want)
    assert not np.asarray(tree.levels[0][50:]).any()
    _check_invariant(tree)


def test_update_ignores_bad_indices_and_zeroes_bad_values():
    tree = sum_tree.init(20)
    idx = jnp.asarray([-1, 20, 25, 2, 3, 4, 5, 6])
    vals = jnp.asarray([9.0, 9.0, 9.0, -1.0, jnp.nan, 1e-40, 1.0, 2.0], jnp.float32)
    tree = sum_tree.update(tree, idx, vals)
    np.testing.assert_array_equal(_leaves(tree)[:8], [0, 0, 0, 0, 0, 1, 2, 0])
    assert not np.asarray(tree.levels[0][20:]).any()  # padding untouched
    assert float(sum_tree.total(tree)) == 3.0
    np.testing.assert_array_equal(
        np.asarray(sum_tree.get(tree, jnp.asarray([-1, 20, 6]))), [0, 0, 2]
    )
    # A scalar value is broadcast to all indices; indices of any shape.
    tree = sum_tree.update(tree, jnp.asarray([0, 1]), 0.25)
    np.testing.assert_array_equal(_leaves(tree)[:2], [0.25, 0.25])
    tree = sum_tree.update(tree, jnp.asarray([[10, 11], [12, 10]]), jnp.asarray([[1.0, 2], [3, 4]]))
    np.testing.assert_array_equal(_leaves(tree)[10:13], [4, 2, 3])


@pytest.mark.parametrize("capacity", CAPACITIES)
def test_sampled_frequencies_match_bruteforce_oracle(capacity):
    rng = np.random.default_rng(capacity + 1)
    values = _random_values(rng, capacity)
    values[rng.integers(capacity)] = 1.0  # at least one positive leaf
    tree = _filled(values)
    idx = np.asarray(_draw(tree, jax.random.PRNGKey(capacity), 50, 1000)).ravel()
    assert idx.min() >= 0 and idx.max() < capacity
    assert (values[idx] > 0).all()
    counts = np.bincount(idx, minlength=capacity)
    expected = _oracle_probabilities(values) * idx.size
    # The oracle's own stratified sampler, as a check on the oracle.
    strata = (np.arange(1000) + rng.random((50, 1000))) / 1000 * values.astype(np.float64).sum()
    oracle_counts = np.bincount(_oracle_stratified(values, strata.ravel()), minlength=capacity)
    for observed in (counts, oracle_counts):
        big = expected >= 5
        obs = np.append(observed[big], observed[~big].sum())
        exp = np.append(expected[big], expected[~big].sum())
        keep = exp > 0
        if keep.sum() > 1:
            assert stats.chisquare(obs[keep], exp[keep]).pvalue > 1e-4
        else:  # a single positive leaf: every draw is it
            assert (observed[~(expected > 0)] == 0).all()


def test_descent_agrees_with_float64_bruteforce():
    rng = np.random.default_rng(3)
    values = _random_values(rng, 5003)
    values *= 10.0 ** rng.uniform(-3, 3, values.shape).astype(np.float32)
    tree = _filled(values)
    total = float(sum_tree.total(tree))
    u = (rng.random(200_000) * total).astype(np.float32)
    ours = np.asarray(jax.jit(sum_tree._descend)(tree, jnp.asarray(u)))
    oracle = _oracle_stratified(values, u.astype(np.float64))
    disagree = ours != oracle
    assert disagree.mean() < 1e-3
    # Disagreements are rounding at a boundary between two leaves.
    cdf = np.cumsum(values.astype(np.float64))
    nearest = np.abs(cdf[np.minimum(ours, oracle)[disagree]] - u[disagree])
    assert (nearest <= 1e-5 * total).all()


def test_targets_keep_precision_below_float32_resolution():
    # A leaf of 2^-18 of the mass spans only ~32 float32 numbers near the
    # total: a single float32 target would resolve its probability to ~3%.
    capacity, b, grid = 2**18 + 5, 399, 2**20
    values = np.random.default_rng(11).uniform(0.5, 1.5, capacity).astype(np.float32)
    tree = _filled(values)
    top = tree.levels[-1][None, :]
    prefix = sum_tree._prefix_sums(top)
    mass = prefix[0, -1]
    edges = jnp.arange(401, dtype=jnp.float32) * (mass / 400)
    edges = edges.at[-1].set(mass)
    u = jnp.arange(grid, dtype=jnp.float32) / grid  # every target of stratum b
    hi, lo = sum_tree._two_sum(jnp.full((grid,), edges[b]), u * (edges[b + 1] - edges[b]))
    idx = np.asarray(jax.jit(sum_tree._walk)(tree, top, prefix, hi, lo))
    assert (values[idx] > 0).all()
    cdf = np.cumsum(values.astype(np.float64)) * (float(mass) / values.astype(np.float64).sum())
    start, stop = float(edges[b]), float(edges[b + 1])
    inside = (cdf - values >= start) & (cdf <= stop)
    expected = values[inside] / (stop - start) * grid
    counts = np.bincount(idx, minlength=capacity)[inside]
    assert np.sqrt(np.mean((counts / expected - 1) ** 2)) < 3e-3


def _adversarial_targets(values):
    v = np.asarray(values, np.float64)
    cdf64 = np.cumsum(v)
    cdf32 = np.cumsum(np.asarray(values, np.float32))
    edges = np.concatenate([cdf64, cdf32, [0.0, v.sum(), 2 * v.sum(), -1.0]]).astype(np.float32)
    targets = np.concatenate(
        [
            edges,
            np.nextafter(edges, np.float32(np.inf)),
            np.nextafter(edges, np.float32(-np.inf)),
            np.asarray([np.inf, -np.inf, np.nan, 3e38], np.float32),
        ]
    )
    return jnp.asarray(targets)


@pytest.mark.parametrize("capacity", [1, 17, 4099])
def test_never_samples_a_zero_or_unwritten_leaf(capacity):
    rng = np.random.default_rng(capacity + 2)
    values = _random_values(rng, capacity, zero_fraction=0.8)
    # Wide dynamic range and lone positive leaves next to zeros.
    values *= (10.0 ** rng.uniform(-20, 20, capacity)).astype(np.float32)
    values[-1] = 1e-30
    tree = _filled(values)
    written = np.flatnonzero(_leaves(tree) > 0)
    assert written.size > 0
    idx = np.concatenate(
        [
            np.asarray(_draw(tree, jax.random.PRNGKey(0), 50, 256)).ravel(),
            np.asarray(jax.jit(sum_tree._descend)(tree, _adversarial_targets(_leaves(tree)))),
        ]
    )
    assert idx.min() >= 0 and idx.max() < capacity
    assert (_leaves(tree)[idx] > 0).all()


def test_empty_tree_samples_index_zero():
    idx = sum_tree.sample(sum_tree.init(100), jax.random.PRNGKey(0), 8)
    np.testing.assert_array_equal(np.asarray(idx), np.zeros(8))


def test_sample_is_stratified():
    rng = np.random.default_rng(5)
    values = _random_values(rng, 3000)
    tree = _filled(values)
    b = 64
    idx = np.asarray(sum_tree.sample(tree, jax.random.PRNGKey(1), b))
    cdf = np.cumsum(values.astype(np.float64))
    total = cdf[-1]
    lo, hi = cdf[idx] - values[idx], cdf[idx]
    slack = 1e-5 * total
    # Sample b's leaf overlaps [b, b + 1) * total / B.
    assert (lo <= (np.arange(b) + 1) * total / b + slack).all()
    assert (hi >= np.arange(b) * total / b - slack).all()


def test_total_exact_after_1e5_updates():
    capacity, batch, rounds = 3001, 400, 250  # 10^5 updates
    rng = np.random.default_rng(7)
    idx = rng.integers(0, capacity, (rounds, batch))
    vals = rng.uniform(0, 1, (rounds, batch)) * 10.0 ** rng.uniform(-4, 4, (rounds, batch))
    vals = vals.astype(np.float32)
    vals[rng.random((rounds, batch)) < 0.2] = 0.0

    @jax.jit
    def run(tree, idx, vals):
        def body(tree, x):
            tree = sum_tree.update(tree, *x)
            return tree, sum_tree.total(tree)

        return jax.lax.scan(body, tree, (idx, vals))

    tree, totals = run(sum_tree.init(capacity), jnp.asarray(idx), jnp.asarray(vals))
    want = np.zeros(capacity, np.float32)
    for r in range(rounds):
        want[idx[r]] = vals[r]  # NumPy fancy assignment: the last one wins
    np.testing.assert_array_equal(_leaves(tree), want)
    exact = want.astype(np.float64).sum()
    assert abs(float(totals[-1]) - exact) <= 1e-5 * exact
    _check_invariant(tree)


def _stress(log2_capacity, rounds, batch, seed):
    """Random batched updates (wide range, many zeros) then draws, all in one scan.

    Returns the tree and, per round, the number of sampled or adversarially
    targeted indices that hit a zero leaf or fall out of range.
    """
    capacity = 2**log2_capacity

    @jax.jit
    def run(tree, key):
        def body(tree, key):
            k_idx, k_val, k_zero, k_sample, k_u = jax.random.split(key, 5)
            idx = jax.random.randint(k_idx, (batch,), 0, capacity)
            vals = 10.0 ** jax.random.uniform(k_val, (batch,), minval=-8.0, maxval=8.0)
            vals = jnp.where(jax.random.uniform(k_zero, (batch,)) < 0.4, 0.0, vals)
            tree = sum_tree.update(tree, idx, vals)
            total = sum_tree.total(tree)
            u = jnp.concatenate(
                [
                    jax.random.uniform(k_u, (batch,)) * total,
                    jnp.asarray([0.0, jnp.inf, -1.0]),
                    total * jnp.asarray([1.0, 1.0 + 1e-7, 1.0 - 1e-7]),
                ]
            )
            drawn = jnp.concatenate(
                [sum_tree.sample(tree, k_sample, batch), sum_tree._descend(tree, u)]
            )
            bad = (drawn < 0) | (drawn >= capacity) | (sum_tree.get(tree, drawn) <= 0)
            return tree, jnp.sum(bad)

        return jax.lax.scan(body, tree, jax.random.split(key, rounds))

    return run(sum_tree.init(capacity), jax.random.PRNGKey(seed))


def _check_stress(tree, bad):
    assert int(bad.sum()) == 0
    leaves = np.asarray(tree.levels[0], np.float64)
    exact = leaves.sum()
    assert abs(float(sum_tree.total(tree)) - exact) <= 1e-5 * exact
    _check_invariant(tree)


def test_float32_2pow22_leaves_never_a_zero_leaf():
    _check_stress(*_stress(22, rounds=150, batch=400, seed=0))  # 6 x 10^4 updates


@pytest.mark.slow
def test_float32_2pow22_leaves_millions_of_updates():
    _check_stress(*_stress(22, rounds=5000, batch=1000, seed=1))  # 5 x 10^6 updates


def test_uniforms_are_threefry():
    key = jax.random.PRNGKey(42)
    count = jnp.arange(8, dtype=jnp.uint32)
    ours = sum_tree._threefry2x32(key[0], key[1], count, jnp.zeros_like(count))
    ref = jax.extend.random.threefry_2x32(key, jnp.concatenate([count, jnp.zeros_like(count)]))
    np.testing.assert_array_equal(np.asarray(ours[0]), np.asarray(ref[:8]))
    np.testing.assert_array_equal(np.asarray(ours[1]), np.asarray(ref[8:]))
    u = np.asarray(sum_tree._uniform(jax.random.key(3), 100_000, jnp.float32))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def test_typed_and_raw_keys_and_static_shapes():
    tree = _filled(np.ones(50, np.float32))
    a = sum_tree.sample(tree, jax.random.key(0), 5)
    b = sum_tree.sample(tree, jax.random.PRNGKey(0), 5)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.dtype == jnp.int32 and a.shape == (5,)
    traces = []

    @functools.partial(jax.jit, donate_argnums=0)
    def step(tree, idx, vals, key):
        traces.append(None)
        tree = sum_tree.update(tree, idx, vals)
        return tree, sum_tree.sample(tree, key, 4)

    for i in range(3):
        tree, _ = step(tree, jnp.asarray([i, i + 1]), jnp.asarray([2.0, 3.0]), jax.random.key(i))
    assert len(traces) == 1  # structure and dtypes stable: no retrace

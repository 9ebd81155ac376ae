"""State coverage (memrl/diagnostics/coverage.py and its runner columns): the
histogram against np.histogram2d, the entropy against scipy, the coordinates
against the env's own angle, and tiny runs whose logged coverage equals a NumPy
histogram of the states in SAC's replay buffer (the reached states), also
after a resume."""

import csv
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from memrl import envs
from memrl.agents import sac
from memrl.diagnostics import coverage
from memrl.training import checkpoint, loop, runner

# test_runner.py's run, so that the persistent XLA cache shares its programs.
CONFIG = sac.Config(hidden_sizes=(16, 16), batch_size=16, buffer_size=1000, warmup_steps=100)


def _numpy_histogram(coords: np.ndarray, spec: coverage.Grid) -> np.ndarray:
    """np.histogram2d of ``coords [N, 2]`` after clipping into the grid's range."""
    coords = np.asarray(coords, np.float64).reshape(-1, 2)
    low, high = np.asarray(spec.low), np.asarray(spec.high)
    clipped = np.clip(coords, low, high)
    hist, _, _ = np.histogram2d(
        clipped[:, 0], clipped[:, 1], bins=spec.bins, range=list(zip(low, high, strict=True))
    )
    return hist.astype(np.int64)


def _numpy_entropy(hist: np.ndarray) -> float:
    hist = np.asarray(hist, np.float64).ravel()
    return 0.0 if hist.sum() == 0 else float(scipy.stats.entropy(hist))


def _away_from_edges(rng, spec: coverage.Grid, shape) -> np.ndarray:
    """Points at least 5% of a bin width inside their bin (float32 and float64
    binning agree there)."""
    low, high = np.asarray(spec.low), np.asarray(spec.high)
    n = np.asarray(spec.bins)
    cell = rng.integers(0, n, size=shape + (2,))
    frac = rng.uniform(0.05, 0.95, size=shape + (2,))
    return (low + (cell + frac) * (high - low) / n).astype(np.float32)


@pytest.mark.parametrize("name", ["pendulum", "mountain_car"])
@pytest.mark.parametrize("batch", [(), (1,), (4,), (3, 5)])
def test_add_matches_numpy_histogram2d(name, batch):
    spec = coverage.grid(name)
    rng = np.random.default_rng(len(batch) + 7 * sum(batch))
    hist = coverage.init(spec)
    assert hist.shape == (32, 32) and hist.dtype == jnp.int32
    seen = []
    for _ in range(6):
        coords = _away_from_edges(rng, spec, batch)
        seen.append(coords.reshape(-1, 2))
        hist = jax.jit(coverage.add, static_argnums=2)(hist, jnp.asarray(coords), spec)
    # Repeats of one cell must all count (scatter-add, not scatter-set).
    twice = np.repeat(seen[-1][:1], 3, axis=0)
    hist = coverage.add(hist, jnp.asarray(twice), spec)
    seen.append(twice)
    expected = _numpy_histogram(np.concatenate(seen), spec)
    np.testing.assert_array_equal(np.asarray(hist), expected)


@pytest.mark.parametrize("name", ["pendulum", "mountain_car"])
def test_edges_and_out_of_range_values_go_to_the_edge_bins(name):
    spec = coverage.grid(name)
    (lo0, lo1), (hi0, hi1) = spec.low, spec.high
    coords = np.array(
        [
            [lo0, lo1],  # the lower edges: first bins
            [hi0, hi1],  # the upper edges: last bins (as np.histogram2d)
            [lo0 - 5.0, hi1 + 1.0],  # outside: clipped into the edge bins
            [hi0 + 1e9, lo1 - 1e9],  # far outside (no int32 overflow)
        ],
        np.float32,
    )
    hist = np.asarray(coverage.add(coverage.init(spec), jnp.asarray(coords), spec))
    np.testing.assert_array_equal(hist, _numpy_histogram(coords, spec))
    assert hist[0, 0] == 1 and hist[31, 31] == 1 and hist[0, 31] == 1 and hist[31, 0] == 1


def test_entropy_and_cells_match_numpy():
    rng = np.random.default_rng(0)
    for trial in range(5):
        hist = rng.integers(0, 50, size=(32, 32)) * (rng.uniform(size=(32, 32)) < 0.3 * trial)
        h = jnp.asarray(hist, jnp.int32)
        np.testing.assert_allclose(float(coverage.entropy(h)), _numpy_entropy(hist), rtol=1e-5)
        assert int(coverage.cells(h)) == np.count_nonzero(hist)
    empty = jnp.zeros((32, 32), jnp.int32)
    assert float(coverage.entropy(empty)) == 0.0 and int(coverage.cells(empty)) == 0
    one = empty.at[3, 4].set(17)
    assert float(coverage.entropy(one)) == 0.0 and int(coverage.cells(one)) == 1
    # k equally visited cells: log k, the maximum for k cells.
    uniform = jnp.zeros((32, 32), jnp.int32).at[:, :8].set(5)
    # float32 sums over 1024 cells: XLA's -O3 and -O0 builds round them apart by ~1e-6.
    np.testing.assert_allclose(float(coverage.entropy(uniform)), math.log(256), rtol=1e-5)
    summary = coverage.summary(uniform)
    assert set(summary) == {"coverage/entropy", "coverage/cells"}
    assert summary["coverage/cells"].dtype == jnp.int32


def test_pendulum_coordinates_wrap_the_angle():
    th = np.array([0.0, 0.5, -2.0, 3.0, 1.5 * np.pi, -1.5 * np.pi, 7.0, -20.0, 100.0])
    thdot = np.linspace(-8.0, 8.0, th.size)
    obs = np.stack([np.cos(th), np.sin(th), thdot], axis=-1).astype(np.float32)
    wrapped = (th + np.pi) % (2 * np.pi) - np.pi
    out = np.asarray(coverage.coordinates("pendulum", jnp.asarray(obs)))
    assert out.shape == (th.size, 2)
    np.testing.assert_allclose(out[:, 0], wrapped, atol=1e-5)
    np.testing.assert_array_equal(out[:, 1], obs[:, 2])
    # A leading env axis, and the env's own state: angle_normalize(th), thdot.
    env = envs.make("pendulum")
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(1), 6))
    for _ in range(30):
        state = jax.vmap(env.step)(state, jnp.ones((6, 1)))
    x = np.asarray(state.pipeline_state, np.float64)
    out = np.asarray(coverage.coordinates("pendulum", state.obs[None]))[0]
    np.testing.assert_allclose(out[:, 0], (x[:, 0] + np.pi) % (2 * np.pi) - np.pi, atol=1e-5)
    np.testing.assert_allclose(out[:, 1], x[:, 1], atol=1e-6)


def test_mountain_car_coordinates_and_grids():
    obs = jnp.asarray([[[-1.2, 0.0], [0.5, -0.07]], [[-0.5, 0.03], [0.6, 0.07]]])
    np.testing.assert_array_equal(coverage.coordinates("mountain_car", obs), obs)
    assert coverage.grid("pendulum").low == (-math.pi, -8.0)
    assert coverage.grid("pendulum").high == (math.pi, 8.0)
    assert coverage.grid("mountain_car").low == (-1.2, -0.07)
    assert coverage.grid("mountain_car").high == (0.6, 0.07)
    for name in ("double_integrator", "ant", "dmc_cartpole_swingup"):
        assert coverage.grid(name) is None
    with pytest.raises(KeyError):
        coverage.coordinates("double_integrator", obs)


class _ZeroAgent:
    """Zero actions, no learning: the env alone decides the visited states."""

    @staticmethod
    def init(key, env_spec, config):
        return {"seen": jnp.zeros((), jnp.int32)}

    @staticmethod
    def act(state, obs, key, deterministic=False):
        return jnp.zeros((obs.shape[0], 1))

    @staticmethod
    def train_step(state, transition, key, step):
        return {"seen": state["seen"] + 1}, {}

    @staticmethod
    def periodic(state, key, step):
        return state, {}


class _ZeroConfig:
    num_envs = 2
    warmup_steps = 0
    periodic_every = 0


def _chunk_state(render, grid, length=150):
    spec = envs.spec("pendulum")
    train_env = envs.wrap_for_training(envs.make("pendulum"), 200, 2, render=render)
    key = jax.random.PRNGKey(5)
    state = loop.init_state(_ZeroAgent, _ZeroConfig, spec, train_env, key, grid)
    chunk = loop.make_chunk(_ZeroAgent, _ZeroConfig, train_env, 1, length, grid)
    return chunk, state


def test_pixels_count_the_true_state_and_no_grid_adds_nothing():
    grid = coverage.grid("pendulum")
    # 150 steps, no episode ends: state and pixel runs visit the same states.
    chunk, state = _chunk_state(None, grid)
    state, metrics = jax.jit(chunk)(state, jnp.int32(0))
    pix_chunk, pix_state = _chunk_state(envs.pixels.wrapper("pendulum", 8), grid)
    pix_state, pix_metrics = jax.jit(pix_chunk)(pix_state, jnp.int32(0))
    assert pix_state.env.obs.shape == (2, 8, 8, 3)
    assert int(np.sum(state.coverage)) == 300
    np.testing.assert_array_equal(pix_state.coverage, state.coverage)
    np.testing.assert_allclose(
        metrics.coverage["coverage/entropy"], _numpy_entropy(np.asarray(state.coverage)), rtol=1e-5
    )
    assert int(metrics.coverage["coverage/cells"]) == np.count_nonzero(state.coverage)
    # Without a grid: no histogram in the state, no summary, no scatter in the program.
    plain, plain_state = _chunk_state(None, None)
    assert plain_state.coverage == ()
    jaxpr = str(jax.make_jaxpr(plain)(plain_state, jnp.int32(0)))
    assert "scatter-add" not in jaxpr
    assert "scatter-add" in str(jax.make_jaxpr(chunk)(state, jnp.int32(0)))
    _, plain_metrics = jax.jit(plain)(plain_state, jnp.int32(0))
    assert plain_metrics.coverage == {}


def _run_config(env, logdir, total=400, resume=False):
    return runner.RunConfig(
        env=env,
        seed=3,
        total_steps=total,
        eval_every=200,
        eval_episodes=2,
        max_chunk=200,
        logdir=str(logdir),
        resume=resume,
        progress=False,
    )


def _read(logdir):
    with open(os.path.join(logdir, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _restore(run):
    """The runner state of ``run``'s newest checkpoint."""
    trainer = runner.build(sac, CONFIG, run)
    abstract = jax.eval_shape(trainer.init, trainer.keys)
    abstract = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=trainer.sharding), abstract
    )
    ckpt = checkpoint.Checkpointer(os.path.join(run.logdir, "checkpoints"))
    try:
        state, step, _ = ckpt.restore(abstract)
    finally:
        ckpt.close()
    return state, step


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory):
    run = _run_config("pendulum", tmp_path_factory.mktemp("coverage_full"))
    runner.train(sac, CONFIG, run)
    return run


def test_logged_coverage_equals_numpy_histogram_of_visited_states(pendulum_run):
    rows = _read(pendulum_run.logdir)
    assert [int(r["env_steps"]) for r in rows] == [200, 400]
    state, step = _restore(pendulum_run)
    assert step == 400
    # SAC stored every transition: next_obs (the reached states) in step order.
    buffer = state.agent.buffer
    assert int(buffer.size[0]) == 400
    next_obs = np.asarray(buffer.data.next_obs[0, :400], np.float64)
    spec = coverage.grid("pendulum")
    coords = np.stack([np.arctan2(next_obs[:, 1], next_obs[:, 0]), next_obs[:, 2]], -1)
    for row, n in zip(rows, (200, 400), strict=True):
        hist = _numpy_histogram(coords[:n], spec)
        assert int(row["coverage/cells"]) == np.count_nonzero(hist)
        np.testing.assert_allclose(float(row["coverage/entropy"]), _numpy_entropy(hist), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(state.coverage[0]), _numpy_histogram(coords, spec))
    # Consistency of the cumulative columns.
    cells = [int(r["coverage/cells"]) for r in rows]
    entropies = [float(r["coverage/entropy"]) for r in rows]
    assert 1 <= cells[0] <= cells[1] <= 32 * 32
    for c, h in zip(cells, entropies, strict=True):
        assert 0.0 < h <= math.log(c) + 1e-6


def test_resume_keeps_coverage_equal_to_uninterrupted(pendulum_run, tmp_path):
    runner.train(sac, CONFIG, _run_config("pendulum", tmp_path, total=200))
    resumed = _run_config("pendulum", tmp_path, total=400, resume=True)
    runner.train(sac, CONFIG, resumed)
    columns = ("env_steps", "coverage/entropy", "coverage/cells")
    got = [{k: r[k] for k in columns} for r in _read(tmp_path)]
    want = [{k: r[k] for k in columns} for r in _read(pendulum_run.logdir)]
    assert got == want
    state, _ = _restore(resumed)
    full, _ = _restore(pendulum_run)
    np.testing.assert_array_equal(np.asarray(state.coverage), np.asarray(full.coverage))


def test_env_without_grid_logs_no_coverage(tmp_path):
    run = runner.RunConfig(
        env="double_integrator",
        total_steps=100,
        eval_every=100,
        eval_episodes=1,
        max_chunk=100,
        logdir=str(tmp_path),
        progress=False,
    )
    rows = runner.train(sac, CONFIG, run)
    header = list(_read(tmp_path)[0])
    assert "eval_return" in header
    assert not [c for c in header if c.startswith("coverage/")]
    assert not [k for k in rows[0] if k.startswith("coverage/")]

"""The jitted runner: determinism, resume equals an uninterrupted run, no retrace,
NaN handling, metrics.csv contents. Tiny SAC on pendulum."""

import csv
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memrl.agents import sac
from memrl.training import runner

CONFIG = sac.Config(hidden_sizes=(16, 16), batch_size=16, buffer_size=1000, warmup_steps=100)
VOLATILE = ("wall_time", "sps")


def _run(logdir, total=400, resume=False, config=CONFIG):
    run = runner.RunConfig(
        env="pendulum",
        seed=3,
        total_steps=total,
        eval_every=200,
        eval_episodes=2,
        max_chunk=200,
        logdir=str(logdir),
        resume=resume,
        progress=False,
    )
    return runner.train(sac, config, run)


def _read(logdir):
    with open(os.path.join(logdir, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _stable(rows):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("full")
    _run(logdir)
    return logdir


def test_metrics_csv_has_contract_columns(full_run):
    rows = _read(full_run)
    assert [int(r["env_steps"]) for r in rows] == [200, 400]
    for column in ("env_steps", "seed", "eval_return", "wall_time", "sps", "loss/critic"):
        assert column in rows[0]
    assert rows[0]["seed"] == "3"
    assert np.isfinite(float(rows[1]["loss/critic"])) and float(rows[1]["sps"]) > 0
    # 200 pendulum steps: one training episode ended in each window.
    assert np.isfinite(float(rows[0]["train_return"]))
    assert os.path.exists(os.path.join(full_run, "config.json"))


def test_same_seed_same_numbers(full_run, tmp_path):
    _run(tmp_path)
    assert _stable(_read(tmp_path)) == _stable(_read(full_run))


def test_resume_equals_uninterrupted(full_run, tmp_path):
    _run(tmp_path, total=200)
    assert len(_read(tmp_path)) == 1
    _run(tmp_path, total=400, resume=True)
    assert _stable(_read(tmp_path)) == _stable(_read(full_run))


def test_existing_run_needs_resume_and_changed_settings_refused(full_run):
    with pytest.raises(runner.UserError, match="--resume"):
        _run(full_run)
    with pytest.raises(runner.UserError, match="batch_size"):
        _run(full_run, resume=True, config=dataclasses.replace(CONFIG, batch_size=8))


def test_corrupt_checkpoint_is_one_clear_error(full_run, tmp_path):
    import shutil

    shutil.copytree(full_run, tmp_path, dirs_exist_ok=True)
    ckpt_dir = os.path.join(tmp_path, "checkpoints")
    for root, _, files in os.walk(ckpt_dir):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    before = _read(tmp_path)
    with pytest.raises(runner.UserError, match="cannot read the checkpoint"):
        _run(tmp_path, total=600, resume=True)
    assert _read(tmp_path) == before  # nothing already saved is lost


def test_second_chunk_does_not_retrace():
    run = runner.RunConfig(env="pendulum", total_steps=100, eval_every=50, max_chunk=50)
    trainer = runner.build(sac, CONFIG, run)
    state = trainer.init(trainer.keys)
    state, _ = trainer.chunk(state, jnp.int32(0))
    state, _ = trainer.chunk(state, jnp.int32(50))
    assert trainer.chunk._cache_size() == 1
    # Keep the learner's leaves free of weak types (they would retrace later).
    weak = [x for x in jax.tree_util.tree_leaves(state) if getattr(x, "weak_type", False)]
    assert not weak


def test_nan_in_training_is_reported_and_last_checkpoint_kept(tmp_path):
    # A learning rate of inf turns the parameters to NaN at the first update.
    bad = dataclasses.replace(CONFIG, learning_rate=float("inf"))
    with pytest.raises(runner.UserError, match="non-finite values .* env step 200"):
        _run(tmp_path, config=bad)
    assert not os.path.exists(os.path.join(tmp_path, "metrics.csv")) or not _read(tmp_path)


def test_chunk_steps_divides_log_points():
    run = runner.RunConfig(env="pendulum", total_steps=15000, eval_every=1000, max_chunk=1000)
    assert runner.chunk_steps(run, 1) == 1000
    run = dataclasses.replace(run, total_steps=2500, max_chunk=1000)
    assert runner.chunk_steps(run, 1) == 500
    assert runner.chunk_steps(dataclasses.replace(run, total_steps=1001), 1) == 1


@pytest.mark.parametrize("num_seeds", [1, 3])
def test_per_seed_maps_one_seed_function(num_seeds):
    """One seed per device (unbatched call) and several (vmap) both apply the
    one-seed function row by row, with shared arguments broadcast and a
    lax.cond on a shared scalar kept."""

    def fn(x, c):
        y = jax.lax.cond(c > 0, lambda v: v * c, lambda v: -v, x)
        return {"y": y, "total": jnp.sum(x) + c}

    mesh = runner.seed_mesh(num_seeds)
    mapped = jax.jit(runner.per_seed(fn, mesh, num_seeds, (0, None)))
    x = np.arange(num_seeds * 4, dtype=np.float32).reshape(num_seeds, 4) + 1.0
    for c in (2.0, -1.0):
        out = mapped(jnp.asarray(x), jnp.float32(c))
        expected_y = x * c if c > 0 else -x
        np.testing.assert_allclose(out["y"], expected_y)
        np.testing.assert_allclose(out["total"], x.sum(1) + c)
        assert out["total"].shape == (num_seeds,)


class _CountingAgent:
    """A recurrent agent whose carry counts its policy steps since the carry was
    (re)initialized, and whose state counts the ``is_first`` flags it was given."""

    @staticmethod
    def init(key, env_spec, config):
        return {"firsts": jnp.zeros((), jnp.int32), "seen": jnp.zeros((), jnp.int32)}

    @staticmethod
    def init_carry(state, batch_size):
        return jnp.zeros((batch_size,), jnp.int32)

    @staticmethod
    def act(state, obs, key, deterministic=False, carry=None):
        return jnp.zeros((obs.shape[0], 1)), carry + 1

    @staticmethod
    def train_step(state, transition, key, step, is_first):
        firsts = state["firsts"] + jnp.sum(is_first).astype(jnp.int32)
        return {"firsts": firsts, "seen": state["seen"] + 1}, {}

    @staticmethod
    def periodic(state, key, step):
        return state, {}


@dataclasses.dataclass(frozen=True)
class _CountingConfig:
    num_envs: int = 2
    warmup_steps: int = 0
    action_repeat: int = 2
    periodic_every: int = 0


@pytest.mark.parametrize("warmup", [0, 20])
def test_recurrent_carry_resets_where_episodes_start(warmup):
    """Pendulum episodes of 200 frames are 100 agent steps at action repeat 2.
    After 250 iterations the carry of each env equals the env's own count of
    agent steps since its episode began (``info['steps']``): it was reset at
    each episode start. ``is_first`` marked 3 starts per env (t = 0, 100, 200).
    With a warm-up of 20 frames (5 iterations of 2 envs x 2 frames) the carry
    stays initial for 5 iterations, and episodes still reset it."""
    from memrl import envs
    from memrl.training import loop

    agent, config = _CountingAgent, _CountingConfig(warmup_steps=warmup)
    spec = envs.spec("pendulum")
    train_env = envs.wrap_for_training(envs.make("pendulum"), 200, 2, action_repeat=2)
    state = loop.init_state(agent, config, spec, train_env, jax.random.PRNGKey(0))
    chunk = jax.jit(loop.make_chunk(agent, config, train_env, 1, 250))
    state, metrics = chunk(state, jnp.int32(0))
    np.testing.assert_array_equal(state.carry, state.env.info["steps"])
    np.testing.assert_array_equal(state.carry, [50, 50])
    assert int(state.agent["firsts"]) == 6 and int(state.agent["seen"]) == 250
    assert int(metrics.episodes) == 4  # two ends per env, at t = 99 and 199
    # Mid-episode warm-up end: the carry lags the episode by the warm-up iterations.
    state = loop.init_state(agent, config, spec, train_env, jax.random.PRNGKey(0))
    short = jax.jit(loop.make_chunk(agent, config, train_env, 1, 60))
    state, _ = short(state, jnp.int32(0))
    np.testing.assert_array_equal(state.carry, [60 - warmup // 4] * 2)


class _EveryKAgent:
    """A toy agent whose ``train_step`` metric ``toy/every_k`` is computed on
    steps that are multiples of ``K`` only (NaN placeholder elsewhere, marked
    not computed), ``toy/every`` on every step, and ``toy/never`` on none.
    With ``nan_at``, the computed value at that step is NaN (a divergence)."""

    K = 3
    nan_at = -1

    @staticmethod
    def value(step):
        return jnp.sin(0.1 * step.astype(jnp.float32)) + 2.0

    @classmethod
    def init(cls, key, env_spec, config):
        return {"seen": jnp.zeros((), jnp.int32)}

    @staticmethod
    def act(state, obs, key, deterministic=False):
        return jnp.zeros((obs.shape[0], 1))

    @classmethod
    def train_step(cls, state, transition, key, step):
        from memrl.agents.common import computed_when

        due = step % cls.K == 0
        value = jnp.where(step == cls.nan_at, jnp.nan, cls.value(step))
        rare = jax.lax.cond(due, lambda: value, lambda: jnp.float32(jnp.nan))
        metrics = {
            **computed_when(due, {"toy/every_k": rare}),
            **computed_when(jnp.bool_(False), {"toy/never": jnp.float32(0.0)}),
            "toy/every": cls.value(step),
            "count/calls": jnp.int32(1),
        }
        return {"seen": state["seen"] + 1}, metrics

    @staticmethod
    def periodic(state, key, step):
        return state, {}


@dataclasses.dataclass(frozen=True)
class _ToyConfig:
    num_envs: int = 1
    warmup_steps: int = 10
    periodic_every: int = 0


def _toy_run(logdir, agent):
    run = runner.RunConfig(
        env="pendulum",
        total_steps=60,
        eval_every=30,
        eval_episodes=1,
        max_chunk=10,  # three chunks per log window: the host combines them
        logdir=str(logdir),
        progress=False,
    )
    return runner.train(agent, _ToyConfig(), run)


def test_metric_computed_every_kth_step_is_averaged_over_those_steps(tmp_path):
    """Under the ``computed/`` contract a metric is averaged over the steps past
    the warm-up that computed it, across chunks; the skipped steps' placeholders
    (NaN here) neither enter the mean nor trip the non-finite check; a metric
    no step computed is an empty cell; companions are not logged."""
    _toy_run(tmp_path, _EveryKAgent)
    rows = _read(tmp_path)
    assert [int(r["env_steps"]) for r in rows] == [30, 60]
    value = lambda s: np.sin(0.1 * np.float32(s)) + 2.0  # noqa: E731
    for row, (lo, hi) in zip(rows, [(10, 30), (30, 60)], strict=True):
        steps = np.arange(lo, hi)  # past the warm-up (10) within the window
        every_k = steps[steps % _EveryKAgent.K == 0]
        np.testing.assert_allclose(float(row["toy/every_k"]), np.mean(value(every_k)), rtol=1e-6)
        np.testing.assert_allclose(float(row["toy/every"]), np.mean(value(steps)), rtol=1e-6)
        assert row["toy/never"] == ""
    assert int(rows[-1]["calls"]) == 60
    assert not any(k.startswith("computed/") for k in rows[0])


def test_nan_in_a_computed_metric_is_still_reported(tmp_path):
    class Diverging(_EveryKAgent):
        nan_at = 42  # a multiple of K past the first log point

    with pytest.raises(runner.UserError, match=r"non-finite values .* env step 60 \(toy/every_k\)"):
        _toy_run(tmp_path, Diverging)
    assert [int(r["env_steps"]) for r in _read(tmp_path)] == [30]


def test_masked_means_per_metric_counts():
    """``loop.masked_means`` against NumPy on random values and masks."""
    from memrl.training import loop

    rng = np.random.default_rng(0)
    v, u = rng.normal(size=(2, 50)).astype(np.float32)
    mask = rng.random(50) < 0.3
    learned = np.arange(50) >= 7
    metrics = {"a": jnp.asarray(v), "computed/a": jnp.asarray(mask), "b": jnp.asarray(u)}
    means, steps = jax.jit(loop.masked_means)(metrics, jnp.asarray(learned))
    assert set(means) == {"a", "b"}
    np.testing.assert_allclose(means["a"], v[mask & learned].mean(), rtol=1e-5)
    np.testing.assert_allclose(means["b"], u[learned].mean(), rtol=1e-5)
    assert int(steps["a"]) == np.sum(mask & learned) and int(steps["b"]) == 43
    means, steps = loop.masked_means(metrics, jnp.zeros(50, bool))
    assert np.isnan(means["a"]) and int(steps["a"]) == 0

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

"""Experiment scripts from the command line: error paths and an end-to-end run
with several seeds sharded over (fake) devices."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import scripts
from conftest import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(module, *args, env=None):
    return scripts.run(module, *args, env=env)


def test_the_fork_server_launches_as_python_dash_m_does(tmp_path):
    """The tests launch scripts through ``tests/scripts.py``'s fork server; a
    real ``python -m`` gives the same exit status and output."""
    args = ["--config.batch_size=abc", f"--logdir={tmp_path}"]
    real = subprocess.run(
        [sys.executable, "-m", "experiments.sac", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    forked = _script("experiments.sac", *args)
    assert real.returncode == forked.returncode == 2
    assert real.stdout == forked.stdout == ""
    assert real.stderr == forked.stderr
    assert forked.stderr.startswith("error: ") and "--config.batch_size=abc" in forked.stderr


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--env=nope"], "unknown env 'nope'; valid envs: ant, halfcheetah"),
        (["--total_steps=-5"], "--total_steps must be a positive integer, got -5"),
        (["--config.no_such_field=1"], "unknown config field 'no_such_field' for sac"),
        (["--config.batch_size=abc"], "--config.batch_size=abc"),
        (["--num_seeds=0"], "--num_seeds must be a positive integer"),
        (["--mpc"], "--mpc: sac has no model-predictive control"),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path, args, expected):
    result = _script("experiments.sac", *args, f"--logdir={tmp_path}")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert not os.listdir(tmp_path)  # nothing written


def test_sac_script_three_seeds_on_four_devices(tmp_path):
    logdir = tmp_path / "run"
    result = _script(
        "experiments.sac",
        "--env=pendulum",
        "--num_seeds=3",
        "--total_steps=300",
        "--eval_every=150",
        "--eval_episodes=2",
        "--config.hidden_sizes=(16,16)",
        "--config.batch_size=16",
        "--config.warmup_steps=100",
        f"--logdir={logdir}",
        "--noprogress",
        env={"XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=4")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(logdir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["env_steps"], r["seed"]) for r in rows] == [
        (s, k) for s in ("150", "300") for k in ("0", "1", "2")
    ]
    final = [float(r["eval_return"]) for r in rows[3:]]
    assert len(set(final)) == 3  # seeds differ
    assert (logdir / "config.json").exists()

    plot = _script("experiments.plot", f"--logdir={logdir}", f"--out={tmp_path / 'c.png'}")
    assert plot.returncode == 0, plot.stderr
    with open(tmp_path / "c.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


TINY_MODEL = [
    "--env=pendulum",
    "--total_steps=300",
    "--eval_every=150",
    "--eval_episodes=2",
    "--config.hidden_sizes=(16,16)",
    "--config.batch_size=16",
    "--config.warmup_steps=100",
    "--config.periodic_every=50",
    "--config.updates_per_step=2",
    "--config.model_members=2",
    "--config.model_elites=1",
    "--config.model_hidden_sizes=(16,)",
    "--config.model_max_epochs=2",
    "--config.model_error_horizon=3",
    "--noprogress",
]


@pytest.mark.parametrize(
    "module,extra,rollouts",
    [
        ("experiments.mbpo", ["--config.rollout_batch_size=20"], 20 * 5),  # 5 fits x 20
        ("experiments.memr", ["--config.rollouts_per_step=8"], 8 * 200),  # 200 steps x 8
    ],
)
def test_model_based_scripts_end_to_end(tmp_path, module, extra, rollouts):
    result = _script(module, *TINY_MODEL, *extra, f"--logdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    last = rows[-1]
    assert int(last["env_steps"]) == 300
    assert int(last["policy_updates"]) == 2 * 200  # G x steps past the warm-up
    assert int(last["model_rollouts"]) == rollouts
    for column in ("model/val_mse", "model/mse_1", "model/marginal_w1_k", "loss/critic"):
        assert float(last[column]) >= 0.0


def test_default_run_lengths_are_the_papers():
    """Without --total_steps a run lasts as long as the paper's: MEMR Table 1,
    MBPO Fig. 2, S2VG/MEMB Table 2 (epochs x epoch length); None where the
    paper has no run on that env (the CLI's per-env default applies)."""
    from memrl.agents import mbpo, memb, memr, s2vg

    assert memr.Config.for_env("hopper").run_length() == 125_000
    assert memr.Config.for_env("halfcheetah").run_length() == 400_000
    assert memr.Config.for_env("pendulum").run_length() is None
    assert mbpo.Config.for_env("hopper").run_length() == 125_000
    assert mbpo.Config.for_env("ant").run_length() == 300_000
    assert s2vg.Config.for_env("walker2d").run_length() == 300 * 1000
    assert s2vg.Config.for_env("pendulum").run_length() == 50 * 1000
    assert memb.Config.for_env("reacher").run_length() == 50 * 50
    assert memb.Config.for_env("ant").run_length() is None


# --eval_only: evaluates the newest checkpoint, writes eval.csv, touches nothing else.

SAC_TINY = [
    "--env=pendulum",
    "--seed=5",
    "--total_steps=200",
    "--eval_every=100",
    "--eval_episodes=2",
    "--config.hidden_sizes=(16,16)",
    "--config.batch_size=16",
    "--config.warmup_steps=100",
    "--noprogress",
]

MAAC_TINY = [
    "--env=pendulum",
    "--seed=2",
    "--total_steps=100",
    "--eval_every=100",
    "--eval_episodes=2",
    "--noprogress",
    "--config.hidden_sizes=(8,)",
    "--config.batch_size=8",
    "--config.warmup_steps=50",
    "--config.periodic_every=50",
    "--config.updates_per_step=1",
    "--config.rollout_batch_size=16",
    "--config.model_members=2",
    "--config.model_elites=2",
    "--config.steve_members=2",
    "--config.model_hidden_sizes=(8,)",
    "--config.model_max_epochs=2",
    "--config.buffer_size=400",
    "--config.mpc_candidates=8",
    "--config.mpc_horizon=2",
    "--config.mpc_iterations=2",
]


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _snapshot(logdir):
    """Every file under ``logdir`` with its bytes' hash."""
    import hashlib

    out = {}
    for root, _, files in os.walk(logdir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, logdir)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _one_line_error(result, expected):
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def _restored_return(agent, config, logdir, seed, episodes, step):
    """Mean deterministic return of the checkpoint at ``step``, computed apart
    from the runner's evaluation: the arrays restored by orbax, the raw pendulum
    stepped in a Python loop (no wrappers, no scan), and the keys that
    ``evaluate_checkpoint`` documents (``fold_in(PRNGKey(seed), step)``, split
    into reset and per-step action keys)."""
    import jax

    from memrl import envs
    from memrl.training import checkpoint, runner

    run = runner.RunConfig(
        env="pendulum", seed=seed, total_steps=step, eval_every=step, eval_episodes=episodes
    )
    trainer = runner.build(agent, config, run)
    abstract = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=trainer.sharding),
        jax.eval_shape(trainer.init, trainer.keys),
    )
    ckpt = checkpoint.Checkpointer(os.path.join(logdir, "checkpoints"))
    state, saved_step, _ = ckpt.restore(abstract)
    ckpt.close()
    assert saved_step == step
    agent_state = jax.tree_util.tree_map(lambda x: x[0], state.agent)  # the one seed
    env = envs.make("pendulum")
    k_reset, k_act = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), step))
    env_state = jax.vmap(env.reset)(jax.random.split(k_reset, episodes))
    act = jax.jit(lambda s, o, k: agent.act(s, o, k, deterministic=True))
    env_step = jax.jit(jax.vmap(env.step))
    total = np.zeros(episodes)
    for k in jax.random.split(k_act, envs.spec("pendulum").episode_length):
        env_state = env_step(env_state, act(agent_state, env_state.obs, k))
        total += np.asarray(env_state.reward, np.float64)
    return float(np.mean(total))


# Opt-in (-m slow) to keep the default suite under 15 min on 2 cores:
# test_eval_only_mpc_gives_both_rows_of_maac_table_1 runs --eval_only end to end (its policy row
# equals metrics.csv).
@pytest.mark.slow
def test_eval_only_evaluates_the_newest_checkpoint(tmp_path):
    from memrl.agents import sac
    from memrl.training import cli

    logdir = tmp_path / "run"
    trained = _script("experiments.sac", *SAC_TINY, f"--logdir={logdir}")
    assert trained.returncode == 0, trained.stderr[-2000:]
    before = _snapshot(logdir)
    # The saved config is read back: no --config flags needed, other
    # eval_episodes than in training.
    result = _script(
        "experiments.sac", "--eval_only", "--eval_episodes=3", f"--logdir={logdir}", "--noprogress"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "policy eval_return" in result.stdout
    after = _snapshot(logdir)
    assert after.pop("eval.csv") and after == before  # metrics.csv, checkpoints untouched
    rows = _read_csv(logdir / "eval.csv")
    assert [(r["env_steps"], r["seed"], r["controller"], r["eval_episodes"]) for r in rows] == [
        ("200", "5", "policy", "3")
    ]
    config = cli.saved_config(
        sac, "pendulum", "state", cli.logging_utils.read_settings(logdir)["config"]
    )
    assert config.hidden_sizes == (16, 16) and config.batch_size == 16
    expected = _restored_return(sac, config, logdir, seed=5, episodes=3, step=200)
    np.testing.assert_allclose(float(rows[0]["eval_return"]), expected, rtol=1e-4)
    # By default with the run's eval_episodes: it reproduces metrics.csv's evaluation.
    again = _script("experiments.sac", "--eval_only", f"--logdir={logdir}")
    assert again.returncode == 0, again.stderr[-2000:]
    rows = _read_csv(logdir / "eval.csv")
    assert len(rows) == 2  # appended
    final = _read_csv(logdir / "metrics.csv")[-1]
    np.testing.assert_allclose(
        float(rows[1]["eval_return"]), float(final["eval_return"]), rtol=1e-6
    )

    # Errors: one line, nothing written.
    _one_line_error(
        _script("experiments.sac", "--eval_only", f"--logdir={tmp_path / 'none'}"),
        f"no run to evaluate in {tmp_path / 'none'}",
    )
    assert not (tmp_path / "none").exists()
    _one_line_error(
        _script("experiments.sac", "--eval_only", f"--logdir={logdir}", "--config.batch_size=8"),
        "--config.batch_size would change it",
    )
    _one_line_error(
        _script("experiments.sac", "--eval_only", f"--logdir={logdir}", "--mpc"),
        "--mpc: sac has no model-predictive control",
    )
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(logdir, broken)
    shutil.rmtree(broken / "checkpoints")
    _one_line_error(
        _script("experiments.sac", "--eval_only", f"--logdir={broken}"),
        "no checkpoint to evaluate",
    )
    assert not (broken / "checkpoints").exists()
    shutil.copytree(logdir / "checkpoints", broken / "checkpoints")
    for root, _, files in os.walk(broken / "checkpoints"):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    damaged = _snapshot(broken)
    _one_line_error(
        _script("experiments.sac", "--eval_only", f"--logdir={broken}"),
        "cannot read the checkpoint",
    )
    assert _snapshot(broken) == damaged  # eval.csv not touched, nothing new


def test_eval_only_mpc_gives_both_rows_of_maac_table_1(tmp_path):
    """``--eval_only --mpc`` writes, per seed, the deterministic policy's return
    and CEM MPC's, from one checkpoint and the same initial states."""
    import dataclasses

    from memrl.agents import maac
    from memrl.training import cli

    trained = _script("experiments.maac", *MAAC_TINY, f"--logdir={tmp_path}")
    assert trained.returncode == 0, trained.stderr[-2000:]
    result = _script("experiments.maac", "--eval_only", "--mpc", f"--logdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = _read_csv(tmp_path / "eval.csv")
    assert [(r["env_steps"], r["seed"], r["controller"]) for r in rows] == [
        ("100", "2", "policy"),
        ("100", "2", "mpc"),
    ]
    final = _read_csv(tmp_path / "metrics.csv")[-1]
    np.testing.assert_allclose(
        float(rows[0]["eval_return"]), float(final["eval_return"]), rtol=1e-6
    )
    saved = cli.saved_config(
        maac, "pendulum", "state", cli.logging_utils.read_settings(tmp_path)["config"]
    )
    assert not saved.mpc and saved.mpc_candidates == 8
    planned = _restored_return(
        maac, dataclasses.replace(saved, mpc=True), tmp_path, seed=2, episodes=2, step=100
    )
    np.testing.assert_allclose(float(rows[1]["eval_return"]), planned, rtol=1e-4)
    assert float(rows[1]["eval_return"]) != float(rows[0]["eval_return"])

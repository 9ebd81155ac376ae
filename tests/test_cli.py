"""Experiment scripts from the command line: error paths and an end-to-end run
with several seeds sharded over (fake) devices."""

import csv
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(module, *args, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=600,
    )


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
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
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

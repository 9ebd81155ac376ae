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

"""experiments.reproduce: each paper's grid against the paper's text (run
names, lengths, seeds, ablation flags, every flag a real setting), and a tiny
grid end to end: a partial run resumed, a failing run reported while the
others go on, a finished grid skipped, figures with the expected panels and
the results table against the runs' metrics.csv."""

import csv
import dataclasses
import importlib
import os
import subprocess

import numpy as np
import pytest
import scripts

from memrl import envs
from memrl.reproduce import driver, figures, grid
from memrl.training import cli

RUN_FLAGS = {"variant", "obs", "eval_episodes", "num_starts"}


def _by_name(paper, scale):
    runs = driver.load(paper).runs(scale)
    names = [r.name for r in runs]
    assert len(names) == len(set(names)), "run names must be unique (one directory each)"
    return {r.name: r for r in runs}


@pytest.mark.parametrize("paper", driver.PAPERS)
@pytest.mark.parametrize("scale", grid.SCALES)
def test_every_run_resolves_to_a_config(paper, scale):
    """Every --config.* flag is a field of the agent's Config and parses as its
    type, and the env exists: a typo would fail hours into a grid."""
    for run in driver.load(paper).runs(scale):
        if run.script is not None:
            continue
        assert run.env in envs.NAMES, run.name
        agent = importlib.import_module(f"memrl.agents.{run.algo}")
        overrides, variant = {}, None
        for key, value in run.flags:
            if key == "variant":
                assert value in agent.VARIANTS
                variant = value
            elif key.startswith("config."):
                field = key[len("config.") :]
                default = getattr(agent.Config(), field)  # AttributeError: not a field
                if isinstance(default, bool):
                    assert value in ("True", "False"), (run.name, key, value)
                    overrides[field] = value == "True"
                else:
                    overrides[field] = type(default)(value)
            else:
                assert key in RUN_FLAGS, (run.name, key)
        obs = dict(run.flags).get("obs", "state")
        config = cli.resolve_config(agent, run.env, overrides, obs, variant)
        for field, value in overrides.items():
            assert getattr(config, field) == value
        assert run.total_steps % run.eval_every == 0 and run.num_seeds >= 1


def test_memr_grid_follows_the_paper():
    runs = _by_name("memr", "paper")
    # Fig. 2: MEMR, MBPO, SAC on the four tasks, Table 1's run lengths, five trials.
    lengths = {"halfcheetah": 400_000, "walker2d": 300_000, "ant": 300_000, "hopper": 125_000}
    for env, steps in lengths.items():
        for algo in ("memr", "mbpo", "sac"):
            run = runs[f"{algo}/{env}"]
            assert (run.algo, run.total_steps, run.num_seeds, run.flags) == (algo, steps, 5, ())
    # Fig. 3: alpha, G and D_model sweeps of MEMR.
    assert dict(runs["memr_alpha0/hopper"].flags) == {"config.priority_alpha": "0.0"}
    assert dict(runs["memr_g20/ant"].flags) == {"config.updates_per_step": "20"}
    sizes = {
        int(dict(r.flags)["config.model_dataset_size"])
        for n, r in runs.items()
        if n.startswith("memr_d") and r.env == "ant"
    }
    assert sizes == {1_000_000, 3_000_000}  # Table 1's 6e6 is memr/ant itself
    cpu = _by_name("memr", "cpu")
    assert {r.label for r in cpu.values()} >= {"memr", "mbpo", "sac"}
    assert sum(r.minutes for r in cpu.values()) <= 120


def test_maac_grid_follows_the_paper():
    runs = _by_name("maac", "paper")
    for env in ("ant", "halfcheetah", "hopper", "walker2d"):
        for label in ("maac", "sac", "mbpo", "svg", "steve"):
            assert f"{label}/{env}" in runs
        # Table 1: the converged MAAC policy with and without MPC, from its checkpoint.
        assert any("--mpc" in a and "--eval_only" in a for a in runs[f"maac/{env}"].after)
    steve = dict(runs["steve/ant"].flags)
    assert steve["config.horizon"] == "0" and steve["config.real_ratio"] == "1.0"
    # Fig. 4: H = 0, no STEVE targets, a single pathwise sample; Fig. 5: real data only,
    # no entropy, a single sample with 5x the batch.
    assert dict(runs["maac_h0/ant"].flags) == {"config.horizon": "0"}
    assert dict(runs["maac_nosteve/ant"].flags) == {"config.steve": "False"}
    assert dict(runs["maac_single/ant"].flags) == {"config.num_samples": "1"}
    assert dict(runs["maac_realdata/ant"].flags) == {"config.real_ratio": "1.0"}
    assert dict(runs["maac_noentropy/ant"].flags) == {"config.use_entropy": "False"}
    big = dict(runs["maac_bigbatch/ant"].flags)
    assert big == {"config.num_samples": "1", "config.batch_size": "1280"}
    fig3 = runs["fig3_gradient_error/double_integrator"]
    assert fig3.script == "maac_gradient_error" and fig3.output == "gradient_error.png"
    table1 = {(r.env, r.label): r.value for r in driver.load("maac").reported}
    assert table1[("ant", "maac")] == "policy 3.06e3 ± 1.45e3; mpc 3.97e3 ± 1.48e3"


def test_value_gradient_grids_follow_the_papers():
    s2vg = _by_name("s2vg", "paper")
    lengths = {"inverted_pendulum": 40_000, "halfcheetah": 200_000, "walker2d": 300_000}
    for env, steps in lengths.items():  # Table 2's epochs x 1000 steps
        assert s2vg[f"s2vg/{env}"].total_steps == steps
    assert dict(s2vg["s2vg_h5/pendulum"].flags) == {"config.horizon": "5"}  # Fig. 2a
    printed = dict(s2vg["s2vg_h2_printed/pendulum"].flags)
    assert printed == {"config.horizon": "2", "config.soft_expansion": "False"}
    memb = _by_name("memb", "paper")
    assert dict(memb["memb_true/pendulum"].flags) == {"config.true_model": "True"}  # Fig. 4
    assert dict(memb["memb_alpha0/halfcheetah"].flags)["config.alpha"] == "0.0"  # Fig. 2a
    assert memb["memb_2m/hopper"].total_steps == 2_000_000  # App. B.4
    assert all(r.num_seeds == 5 for r in memb.values())  # "five different random seeds"


def test_maxent_dreamer_grid_has_the_four_variants():
    runs = _by_name("maxent_dreamer", "paper")
    for env in ("walker2d", "hopper", "ant", "halfcheetah"):
        for variant in ("dreamer", "dreamer_explore", "revised", "maxent"):
            flags = dict(runs[f"{variant}/{env}"].flags)
            assert flags == {"variant": variant, "obs": "pixels"}  # 64x64 images


def test_dry_run_lists_status_commands_and_cost(tmp_path):
    paper = driver.load("memr")
    runs = paper.runs("cpu")
    text = driver.plan(paper, runs, str(tmp_path), "cpu")
    assert text.count("[new    ]") == len(runs)
    assert "--config.priority_alpha=0.0" in text
    total = sum(r.minutes for r in runs)
    assert f"~{total:g} min" in text


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _through_the_fork_server(command, stdout=None, stderr=None):
    """``subprocess.call`` for ``[python, -m, module, ...]``, launched by
    ``tests/scripts.py`` (output appended to ``stdout``, as the driver asks)."""
    assert command[1] == "-m", command
    result = scripts.run(command[2], *command[3:])
    if stdout is not None and stdout != subprocess.DEVNULL:
        stdout.write(result.stdout + result.stderr)
    return result.returncode


def test_tiny_grid_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(subprocess, "call", _through_the_fork_server)
    root = str(tmp_path)
    small = (
        ("config.warmup_steps", "100"),
        ("config.hidden_sizes", "(32,32)"),
        ("eval_episodes", "2"),
    )
    good = grid.Run("sac", "sac", "pendulum", 400, 200, 2, small)
    bad = grid.Run("sac_typo", "sac", "pendulum", 400, 200, 1, (("config.no_such_field", "1"),))
    paper = grid.Paper(
        "tiny",
        "tiny",
        lambda scale: [good, bad],
        figures=(
            grid.Figure(
                "fig",
                "a tiny figure",
                (
                    grid.Row((("SAC", "sac"), ("typo", "sac_typo"))),
                    grid.Row((("SAC", "sac"),), x="policy_updates"),
                ),
            ),
        ),
        reported=(grid.Reported("Table 9", "pendulum", "sac", -150.0),),
    )
    # An interrupted run: its first 200 steps exist, with a checkpoint.
    first = dataclasses.replace(good, total_steps=200)
    assert subprocess.call(first.command(root), stdout=subprocess.DEVNULL) == 0
    before = _rows(os.path.join(good.logdir(root), "metrics.csv"))
    assert grid.status(good, root) == "partial" and grid.status(bad, root) == "new"

    failures = driver.run_grid([good, bad], root, ())
    assert len(failures) == 1 and failures[0].startswith("sac_typo/pendulum: error: unknown")
    log = open(os.path.join(good.logdir(root), "reproduce.log")).read()
    assert "--resume" in log
    rows = _rows(os.path.join(good.logdir(root), "metrics.csv"))
    assert [r["env_steps"] for r in rows] == ["200", "200", "400", "400"]
    assert rows[:2] == before  # resumed, not restarted
    assert grid.status(good, root) == "done"

    mtime = os.path.getmtime(os.path.join(good.logdir(root), "metrics.csv"))
    capsys.readouterr()
    assert driver.run_grid([good], root, ()) == []
    assert "done, skipped" in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(good.logdir(root), "metrics.csv")) == mtime

    drawing = figures.draw(paper.figures[0], [good, bad], root, os.path.join(root, "f"), "tiny")
    assert drawing.panels == [
        ("pendulum", "env_steps", "eval_return", ["SAC"]),  # the failed run has no curve
        ("pendulum", "policy_updates", "eval_return", ["SAC"]),
    ]
    assert open(drawing.path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    written = driver.report(paper, [good, bad], root, "cpu")
    table = open(written[-1]).read()
    final = [float(r["eval_return"]) for r in rows if r["env_steps"] == "400"]
    expected = f"{np.mean(final):.1f} ± {np.std(final):.1f}"
    assert f"| sac | pendulum | 400 | 2 | {expected} | -150.0 | Table 9 | " in table
    assert "| sac_typo | pendulum | 400 | 1 | not run yet |" in table
    assert "![fig.png](fig.png)" in table

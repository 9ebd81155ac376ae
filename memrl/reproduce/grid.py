"""A paper's experiment grid: runs, figures, reported numbers, and run status.

A ``Run`` is one invocation of an experiment script (seeds vmapped inside it)
in its own directory ``<root>/<label>/<env>``. ``status`` reads that directory:
``done`` (``metrics.csv`` holds every seed's row at ``total_steps``, or the
script's output file exists), ``partial`` (a checkpoint to ``--resume``
from) or ``new``. A ``Figure`` is rows of panels, one panel per environment of
the scale, each panel a set of curves named by run label, as the papers draw
them (environments across, what varies down).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
from collections.abc import Callable

SCALES = ("cpu", "paper")


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of the grid.

    Attributes:
      label: what the run is (``memr``, ``memr_alpha0``); with ``env`` its
        directory ``<label>/<env>``, and the name figures refer to it by.
      algo: the experiment module (``experiments.<algo>``).
      env: the environment.
      total_steps, eval_every, num_seeds: the run's length, evaluation period
        and vmapped seeds.
      flags: further flags (``('config.priority_alpha', '0.0')``,
        ``('variant', 'maxent')``), as ``--key=value``.
      minutes: estimated wall minutes on the 2-core reference CPU (None:
        not measured at this scale).
      script: a script that is not a training run (``maac_gradient_error``);
        done when its ``output`` file exists.
      output: that file, relative to the run directory.
      after: commands run on the finished run's directory, each a tuple of
        flags (MAAC Table 1: ``('--eval_only', '--mpc')``); done when
        ``eval.csv`` holds the final step.
    """

    label: str
    algo: str
    env: str
    total_steps: int
    eval_every: int
    num_seeds: int
    flags: tuple[tuple[str, str], ...] = ()
    minutes: float | None = None
    script: str | None = None
    output: str | None = None
    after: tuple[tuple[str, ...], ...] = ()

    @property
    def name(self) -> str:
        return f"{self.label}/{self.env}"

    def logdir(self, root: str) -> str:
        return os.path.join(root, self.label, self.env)

    def command(self, root: str, resume: bool = False, extra: tuple[str, ...] = ()) -> list[str]:
        """The command line of the run (``extra``: flags every run of the grid gets)."""
        module = f"experiments.{self.script or self.algo}"
        argv = [sys.executable, "-m", module, f"--logdir={self.logdir(root)}"]
        if self.script is None:
            argv += [
                f"--env={self.env}",
                f"--num_seeds={self.num_seeds}",
                f"--total_steps={self.total_steps}",
                f"--eval_every={self.eval_every}",
                "--noprogress",
                *(["--resume"] if resume else []),
                *extra,
            ]
        else:
            argv.append(f"--num_seeds={self.num_seeds}")
        return argv + [f"--{k}={v}" for k, v in self.flags]

    def after_commands(self, root: str) -> list[list[str]]:
        return [
            [sys.executable, "-m", f"experiments.{self.algo}", f"--logdir={self.logdir(root)}", *a]
            for a in self.after
        ]


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of panels: the same curves in every environment's panel."""

    curves: tuple[tuple[str, str], ...]  # (legend, run label)
    x: str = "env_steps"
    y: str = "eval_return"
    title: str = ""


@dataclasses.dataclass(frozen=True)
class Figure:
    file: str
    title: str
    rows: tuple[Row, ...]


@dataclasses.dataclass(frozen=True)
class Reported:
    """A number the paper states, to stand beside ours."""

    source: str  # "Table 1", "Sec. 5.4"
    env: str
    label: str  # the run label it compares with
    value: float | str
    steps: int | None = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Paper:
    key: str
    title: str
    runs: Callable[[str], list[Run]]  # scale -> runs
    figures: tuple[Figure, ...]
    reported: tuple[Reported, ...] = ()
    notes: str = ""


def final_rows(logdir: str) -> tuple[int, list[dict]]:
    """``(last env_steps, its rows)`` of ``metrics.csv`` (``(0, [])`` if none)."""
    path = os.path.join(logdir, "metrics.csv")
    if not os.path.exists(path):
        return 0, []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return 0, []
    last = max(int(r["env_steps"]) for r in rows)
    return last, [r for r in rows if int(r["env_steps"]) == last]


def _after_done(run: Run, root: str) -> bool:
    path = os.path.join(run.logdir(root), "eval.csv")
    if not run.after:
        return True
    if not os.path.exists(path):
        return False
    with open(path, newline="") as f:
        return any(int(r["env_steps"]) >= run.total_steps for r in csv.DictReader(f))


def status(run: Run, root: str) -> str:
    """``'done'``, ``'trained'`` (only its ``after`` commands left),
    ``'partial'`` (resume from a checkpoint) or ``'new'``."""
    logdir = run.logdir(root)
    if run.script is not None:
        return "done" if os.path.exists(os.path.join(logdir, run.output or "")) else "new"
    last, rows = final_rows(logdir)
    if last >= run.total_steps and len(rows) >= run.num_seeds:
        return "done" if _after_done(run, root) else "trained"
    checkpoints = os.path.join(logdir, "checkpoints")
    if os.path.isdir(checkpoints) and any(name.isdigit() for name in os.listdir(checkpoints)):
        return "partial"
    return "new"


def seed_steps(run: Run) -> int:
    return run.total_steps * run.num_seeds

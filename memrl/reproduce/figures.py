"""A paper's figures and results table from its runs' ``metrics.csv`` files.

Curves are the mean over seeds with a +-1 std band, grouped by
``env_steps`` (the evaluation points): an x axis other than ``env_steps``
(``policy_updates``, ``model_rollouts``: cumulative counts) is the seeds' mean
of that column at each evaluation point.
"""

from __future__ import annotations

import csv
import os
import textwrap
from collections import defaultdict
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from memrl.reproduce import grid  # noqa: E402


def load_curve(logdir: str, x: str, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, mean, std)`` over seeds from ``logdir/metrics.csv``.

    Raises:
      ValueError: no ``metrics.csv``, or no column ``x`` / ``y`` in it.
    """
    path = os.path.join(logdir, "metrics.csv")
    if not os.path.exists(path):
        raise ValueError(f"no metrics.csv in {logdir}")
    xs: dict[int, list[float]] = defaultdict(list)
    ys: dict[int, list[float]] = defaultdict(list)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        if y not in columns or x not in columns:
            raise ValueError(f"{path} has no column {y!r} or {x!r}; columns: {', '.join(columns)}")
        for row in reader:
            if row[y] == "" or row[x] == "":
                continue
            step = int(row["env_steps"])
            xs[step].append(float(row[x]))
            ys[step].append(float(row[y]))
    steps = sorted(ys)
    return (
        np.array([np.mean(xs[s]) for s in steps]),
        np.array([np.mean(ys[s]) for s in steps]),
        np.array([np.std(ys[s]) for s in steps]),
    )


def draw_curves(ax, curves: list[tuple[str, str]], x: str, y: str) -> int:
    """Draws each ``(legend, logdir)`` that has data on ``ax``; returns how many."""
    drawn = 0
    for legend, logdir in curves:
        try:
            xs, mean, std = load_curve(logdir, x, y)
        except ValueError:
            continue
        if not len(xs):
            continue
        (line,) = ax.plot(xs, mean, label=legend)
        ax.fill_between(xs, mean - std, mean + std, alpha=0.2, color=line.get_color())
        drawn += 1
    return drawn


def figure_envs(runs: list[grid.Run], figure: grid.Figure) -> list[str]:
    """The environments of the scale that a figure's runs cover, in grid order."""
    labels = {label for row in figure.rows for _, label in row.curves}
    envs: list[str] = []
    for run in runs:
        if run.label in labels and run.env not in envs:
            envs.append(run.env)
    return envs


class Drawing(NamedTuple):
    """A drawn figure: its file and, per panel with runs, ``(title, x, y,
    legends of the curves drawn)``."""

    path: str
    panels: list[tuple[str, str, str, list[str]]]


def draw(figure: grid.Figure, runs: list[grid.Run], root: str, out_dir: str, note: str) -> Drawing:
    """Draws ``figure`` (rows x environments) into ``out_dir/<file>.png``.

    Panels without a finished evaluation say so instead of a curve; panels
    whose runs are not in this grid are left blank; ``note`` (the scale) goes
    under the title.
    """
    envs = figure_envs(runs, figure) or ["(no runs)"]
    names = {run.name for run in runs}
    panels = []
    # Environments across, what varies down; one environment: side by side.
    across = len(envs) == 1
    nrows, ncols = (1, len(figure.rows)) if across else (len(figure.rows), len(envs))
    size = (max(4.2 * ncols, 7.0), 3.2 * nrows + 0.9)
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False)
    for i, row in enumerate(figure.rows):
        for j, env in enumerate(envs):
            ax = axes[0][i] if across else axes[i][j]
            curves = [
                (legend, os.path.join(root, label, env))
                for legend, label in row.curves
                if f"{label}/{env}" in names
            ]
            if not curves:  # none of this row's runs is in this environment's grid
                ax.axis("off")
                continue
            if not draw_curves(ax, curves, row.x, row.y):
                ax.text(0.5, 0.5, "not run yet", ha="center", va="center", transform=ax.transAxes)
            title = env if not row.title else f"{env}: {row.title}"
            panels.append((title, row.x, row.y, [line.get_label() for line in ax.lines]))
            ax.set_title(title, fontsize="medium")
            ax.set_xlabel(row.x)
            ax.set_ylabel(row.y)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize="x-small")
    title = "\n".join(textwrap.wrap(figure.title, width=int(16 * max(ncols, 2))))
    fig.suptitle(f"{title}\n{note}", fontsize="medium")
    fig.tight_layout()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{figure.file}.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Drawing(path, panels)


def _fmt(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 1e5 else f"{value:.3g}"


def final_return(run: grid.Run, root: str) -> str:
    """``mean ± std`` over seeds of the last evaluation (``''`` if none), and
    the step if the run has not reached ``total_steps``."""
    last, rows = grid.final_rows(run.logdir(root))
    values = [float(r["eval_return"]) for r in rows if r.get("eval_return", "") != ""]
    if not values:
        return ""
    text = f"{_fmt(float(np.mean(values)))} ± {_fmt(float(np.std(values)))}"
    return text if last >= run.total_steps else f"{text} (at {last})"


def wall_minutes(run: grid.Run, root: str) -> str:
    """Training wall time to the last evaluation (compilation excluded)."""
    _, rows = grid.final_rows(run.logdir(root))
    return f"{float(rows[0]['wall_time']) / 60:.1f} min" if rows else ""


def eval_rows(run: grid.Run, root: str) -> dict[str, str]:
    """``{controller: mean ± std}`` of the final step's rows in ``eval.csv``."""
    path = os.path.join(run.logdir(root), "eval.csv")
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    last = max(int(r["env_steps"]) for r in rows)
    by: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if int(r["env_steps"]) == last:
            by[r["controller"]].append(float(r["eval_return"]))
    return {k: f"{_fmt(float(np.mean(v)))} ± {_fmt(float(np.std(v)))}" for k, v in by.items()}


def table(paper: grid.Paper, runs: list[grid.Run], root: str, scale: str) -> str:
    """A markdown table: each run's final evaluation return beside the number
    the paper reports for that algorithm and environment, where it reports one."""
    reported = {(r.label, r.env): r for r in paper.reported}
    lines = [
        f"### {paper.title}: results at `--scale={scale}`",
        "",
        "| run | env | steps | seeds | ours: final eval_return (mean ± std over seeds) "
        "| paper | paper's source | training wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        if run.script is not None:
            continue
        ours = final_return(run, root) or "not run yet"
        extra = eval_rows(run, root)
        if extra:
            ours += "; " + "; ".join(f"{k}: {v}" for k, v in sorted(extra.items()))
        rep = reported.pop((run.label, run.env), None)
        paper_value = "" if rep is None else _reported_value(rep)
        source = "" if rep is None else rep.source
        lines.append(
            f"| {run.label} | {run.env} | {run.total_steps} | {run.num_seeds} | {ours} "
            f"| {paper_value} | {source} | {wall_minutes(run, root)} |"
        )
    for rep in reported.values():  # the paper's settings not in this scale's grid
        lines.append(
            f"| {rep.label} | {rep.env} | {rep.steps or ''} | | (not in this grid) "
            f"| {_reported_value(rep)} | {rep.source} | |"
        )
    return "\n".join(lines) + "\n"


def _reported_value(rep: grid.Reported) -> str:
    value = rep.value if isinstance(rep.value, str) else _fmt(float(rep.value))
    return f"{value} ({rep.note})" if rep.note else value

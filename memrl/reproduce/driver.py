"""Running a paper's grid: what ``experiments/reproduce.py`` does, as functions.

``run_grid`` starts each run that is not done as a subprocess (its output
appended to ``<run>/reproduce.log``), resuming a partial one; ``report``
draws the figures and writes ``results.md``; ``plan`` is the ``--dry_run``
listing.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import time

from memrl.reproduce import figures, grid

PAPERS = ("memr", "maac", "s2vg", "memb", "maxent_dreamer")


def load(paper: str) -> grid.Paper:
    return importlib.import_module(f"memrl.reproduce.papers.{paper}").PAPER


def _minutes(run: grid.Run) -> str:
    return "?" if run.minutes is None else f"{run.minutes:g}"


def plan(paper: grid.Paper, runs: list[grid.Run], root: str, scale: str) -> str:
    """The ``--dry_run`` listing: each run, its status, command and cost."""
    lines = [f"{paper.title}: {len(runs)} runs at --scale={scale} in {root}"]
    for run in runs:
        lines.append(
            f"  [{grid.status(run, root):7s}] {run.name:40s} {run.num_seeds} seed(s) x "
            f"{run.total_steps} steps, ~{_minutes(run)} min"
        )
        lines.append("            " + " ".join(run.command(root)[1:]))
        for command in run.after_commands(root):
            lines.append("            then: " + " ".join(command[1:]))
    known = [r.minutes for r in runs if r.minutes is not None]
    total = f"~{sum(known):g} min on the 2-core reference CPU" if known else "not measured"
    if known and len(known) < len(runs):
        total += f" for {len(known)} of {len(runs)} runs"
    steps = sum(grid.seed_steps(r) for r in runs)
    lines.append(f"estimated cost: {total}; {steps:,} seed-steps in all")
    return "\n".join(lines)


def execute(command: list[str], log_path: str) -> int:
    """Runs ``command`` with its output appended to ``log_path``; its exit status."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        return subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)


def _last_line(path: str) -> str:
    try:
        with open(path) as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [""])[-1]


def run_grid(runs: list[grid.Run], root: str, extra: tuple[str, ...]) -> list[str]:
    """Runs what is not done; returns one line per failed run."""
    failures = []
    for i, run in enumerate(runs, 1):
        state = grid.status(run, root)
        prefix = f"[{i}/{len(runs)}] {run.name}"
        if state == "done":
            print(f"{prefix}: done, skipped", flush=True)
            continue
        log_path = os.path.join(run.logdir(root), "reproduce.log")
        started = time.perf_counter()
        if state in ("new", "partial"):
            print(f"{prefix}: {'resuming' if state == 'partial' else 'starting'}", flush=True)
            command = run.command(root, resume=state == "partial", extra=extra)
            if execute(command, log_path) != 0:
                failures.append(f"{run.name}: {_last_line(log_path)} (log: {log_path})")
                print(f"{prefix}: failed: {failures[-1]}", flush=True)
                continue
        for command in run.after_commands(root):
            if execute(command, log_path) != 0:
                failures.append(f"{run.name} ({' '.join(command[3:])}): {_last_line(log_path)}")
                print(f"{prefix}: failed: {failures[-1]}", flush=True)
                break
        print(f"{prefix}: finished in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return failures


def report(
    paper: grid.Paper, runs: list[grid.Run], root: str, scale: str, out_dir: str | None = None
) -> list[str]:
    """Draws every figure and writes ``results.md`` (the table, then the
    figures) into ``out_dir`` (default ``<root>/figures``); returns the files."""
    out_dir = out_dir or os.path.join(root, "figures")
    seeds = sorted({r.num_seeds for r in runs})
    note = f"memrl --scale={scale}, {'/'.join(map(str, seeds))} seeds per run, mean ± std"
    written = [figures.draw(figure, runs, root, out_dir, note).path for figure in paper.figures]
    for run in runs:  # figures a script draws itself (MAAC Fig. 3)
        if run.script is not None and run.output and run.output.endswith(".png"):
            source = os.path.join(run.logdir(root), run.output)
            if os.path.exists(source):
                target = os.path.join(out_dir, f"{run.label}.png")
                shutil.copyfile(source, target)
                written.append(target)
    text = figures.table(paper, runs, root, scale)
    if paper.notes:
        text += "\n" + paper.notes.strip() + "\n"
    text += "\n" + "".join(f"![{os.path.basename(p)}]({os.path.basename(p)})\n" for p in written)
    path = os.path.join(out_dir, "results.md")
    with open(path, "w") as f:
        f.write(text)
    written.append(path)
    return written

"""One command per paper: run its experiment grid, draw its figures, write its table.

    python -m experiments.reproduce --paper=memr --scale=cpu [--logdir=D] [--dry_run]

``--scale=paper`` is the papers' environments, run lengths and seeds (GPUs,
multi-host); ``--scale=cpu`` a reduced grid sized for a 2-core CPU (its
estimated minutes are listed by ``--dry_run``). Each run is a subprocess of
the paper's experiment script in ``<logdir>/<label>/<env>`` (seeds vmapped
inside it; its output in ``reproduce.log`` there). A finished run is skipped
and an interrupted one resumed from its newest checkpoint, so the command can
be repeated until everything is done. A run that fails is reported and the
others go on; the command then exits with status 1.

It ends with the figures in ``<logdir>/figures/*.png`` (drawn from whatever
runs have data; ``--figures_dir`` puts them elsewhere, e.g. ``docs/results/<paper>``)
and ``results.md`` beside them: each run's final evaluation
return beside the paper's reported number where the paper states one.
``--figures_only`` redraws them without running anything. Every run also
writes TensorBoard event files (``tensorboard --logdir=<logdir>``) and, with
``--wandb``, logs to Weights & Biases.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from memrl.reproduce import grid
from memrl.reproduce.driver import PAPERS, load, plan, report, run_grid

flags.DEFINE_enum("paper", None, list(PAPERS), "Which paper's grid to run.")
flags.DEFINE_enum("scale", "cpu", list(grid.SCALES), "cpu: reduced grid; paper: the paper's.")
flags.DEFINE_string("logdir", None, "Root of the grid (default: runs/reproduce/<paper>/<scale>).")
flags.DEFINE_bool("dry_run", False, "List the runs, their status and estimated cost; run nothing.")
flags.DEFINE_bool("figures_only", False, "Redraw the figures and the table; run nothing.")
flags.DEFINE_string(
    "figures_dir", None, "Where the figures and results.md go (default: <logdir>/figures)."
)
flags.DEFINE_list("only", [], "Run only the runs whose name (<label>/<env>) contains one of these.")
flags.DEFINE_bool("wandb", False, "Each run logs to Weights & Biases as well.")
flags.DEFINE_string("wandb_mode", None, "W&B mode for every run (online, offline, disabled).")
flags.DEFINE_bool("compilation_cache", True, "Use the persistent compilation cache.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments {' '.join(argv[1:])}", file=sys.stderr)
        sys.exit(2)
    if FLAGS.paper is None:
        print(f"error: --paper is required: one of {', '.join(PAPERS)}", file=sys.stderr)
        sys.exit(2)
    paper = load(FLAGS.paper)
    runs = paper.runs(FLAGS.scale)
    if FLAGS.only:
        runs = [r for r in runs if any(part in r.name for part in FLAGS.only)]
        if not runs:
            print(f"error: --only={','.join(FLAGS.only)} matches no run", file=sys.stderr)
            sys.exit(2)
    root = FLAGS.logdir or os.path.join("runs", "reproduce", FLAGS.paper, FLAGS.scale)
    if FLAGS.dry_run:
        print(plan(paper, runs, root, FLAGS.scale))
        return
    extra = tuple(
        (["--wandb"] if FLAGS.wandb else [])
        + ([f"--wandb_mode={FLAGS.wandb_mode}"] if FLAGS.wandb_mode else [])
        + ([] if FLAGS.compilation_cache else ["--nocompilation_cache"])
    )
    failures = [] if FLAGS.figures_only else run_grid(runs, root, extra)
    for path in report(paper, runs, root, FLAGS.scale, FLAGS.figures_dir):
        print(path)
    if failures:
        print(f"error: {len(failures)} run(s) failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)

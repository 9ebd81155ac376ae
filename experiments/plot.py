"""Learning curves from one or more run directories.

    python -m experiments.plot --logdir=runs/sac/pendulum/seed0[,runs/mbpo/...] \
        [--metric=eval_return] [--x=env_steps] [--out=curves.png]

Each logdir is one curve: the mean over seeds with a +-1 std band.
"""

from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from absl import app, flags  # noqa: E402

from memrl.reproduce.figures import load_curve  # noqa: E402

flags.DEFINE_list("logdir", None, "Run directories (comma-separated), each holding metrics.csv.")
flags.DEFINE_string("metric", "eval_return", "Column to plot.")
flags.DEFINE_string("x", "env_steps", "Column for the x axis.")
flags.DEFINE_string("out", None, "Output PNG (default: <first logdir>/<metric>.png).")
FLAGS = flags.FLAGS


def plot(logdirs: list[str], x: str, metric: str, out: str) -> str:
    fig, ax = plt.subplots(figsize=(6, 4))
    for logdir in logdirs:
        xs, mean, std = load_curve(logdir, x, metric)
        label = os.path.normpath(logdir).replace(os.sep, "/")
        ax.plot(xs, mean, label=label)
        ax.fill_between(xs, mean - std, mean + std, alpha=0.25)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv):
    del argv
    if not FLAGS.logdir:
        print("error: --logdir is required", file=sys.stderr)
        sys.exit(2)
    out = FLAGS.out or os.path.join(FLAGS.logdir[0], f"{FLAGS.metric.replace('/', '_')}.png")
    try:
        print(plot(FLAGS.logdir, FLAGS.x, FLAGS.metric, out))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)

"""Where a run's rows go besides ``metrics.csv``: TensorBoard and Weights & Biases.

``metrics.csv`` stays the source of truth; these sinks mirror the same rows
into the tools people already watch runs with:

- TensorBoard (``tensorboardX``, always on unless ``--notensorboard``): event
  files in the run directory itself, so ``tensorboard --logdir=runs`` shows
  every run of a tree. Each numeric column is one scalar, the mean over seeds
  at ``env_steps``; each seed's evaluation return is ``eval_return/seed<k>``.
- Weights & Biases (``--wandb``; ``pip install wandb``): the same means,
  logged at ``step=env_steps``, with the run's ``config.json`` as the run
  config. ``--wandb_mode=offline`` (or ``WANDB_MODE=offline``) writes to
  ``<logdir>/wandb`` without a network; ``wandb sync`` uploads it later. The
  W&B run id is kept in ``<logdir>/wandb_id`` so ``--resume`` continues the
  same W&B run.

A resumed run re-logs the rows past its checkpoint: TensorBoard drops the
earlier copies through ``purge_step``; W&B ignores steps it has already seen.
"""

from __future__ import annotations

import math
import os
import uuid
from collections import defaultdict
from typing import Any

import numpy as np

# Columns that are coordinates, not scalars to plot.
_NOT_SCALARS = ("env_steps", "seed")
WANDB_MODES = ("online", "offline", "disabled")


def seed_means(rows: list[dict]) -> dict[int, dict[str, float]]:
    """``{env_steps: {column: mean over seeds}}``; empty cells and NaN skipped."""
    values: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for key, value in row.items():
            if key in _NOT_SCALARS or value == "" or value is None:
                continue
            value = float(value)
            if math.isfinite(value):
                values[int(row["env_steps"])][key].append(value)
    return {
        step: {key: float(np.mean(v)) for key, v in columns.items()}
        for step, columns in values.items()
    }


class TensorBoard:
    """TensorBoard event files in ``logdir`` (module docstring)."""

    def __init__(self, logdir: str, resume_step: int = 0):
        from tensorboardX import SummaryWriter

        # Rows after the checkpoint were logged by the interrupted run; the
        # purge marks them stale so TensorBoard shows the resumed ones only.
        self._writer = SummaryWriter(
            logdir=logdir, purge_step=resume_step + 1 if resume_step else None, flush_secs=30
        )

    def write(self, rows: list[dict]) -> None:
        for step, means in sorted(seed_means(rows).items()):
            for key, value in means.items():
                self._writer.add_scalar(key, value, global_step=step)
        for row in rows:
            self._writer.add_scalar(
                f"eval_return/seed{row['seed']}", float(row["eval_return"]), int(row["env_steps"])
            )
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandB:
    """A Weights & Biases run mirroring ``metrics.csv`` (module docstring).

    Raises:
      ImportError: ``wandb`` is not installed (the runner reports one line).
    """

    def __init__(
        self,
        logdir: str,
        settings: dict,
        project: str,
        mode: str | None,
        resume: bool,
    ):
        import wandb  # optional: pip install wandb

        id_path = os.path.join(logdir, "wandb_id")
        run_id = None
        if resume and os.path.exists(id_path):
            with open(id_path) as f:
                run_id = f.read().strip() or None
        run_id = run_id or uuid.uuid4().hex[:12]
        with open(id_path, "w") as f:
            f.write(run_id + "\n")
        self._run = wandb.init(
            project=project,
            dir=logdir,
            id=run_id,
            resume="allow",
            name=os.path.normpath(logdir).replace(os.sep, "/"),
            config=settings,
            mode=mode,
            settings=wandb.Settings(console="off", quiet=True),
        )

    def write(self, rows: list[dict]) -> None:
        for step, means in sorted(seed_means(rows).items()):
            self._run.log(means, step=step)

    def close(self) -> None:
        self._run.finish()


def open_sinks(run: Any, settings: dict, resume_step: int) -> list[Any]:
    """The sinks a ``RunConfig`` asks for (primary process only).

    Raises:
      UserError: ``--wandb`` without the ``wandb`` package, or a W&B start
        that fails (one line, before training starts).
    """
    from memrl.training.runner import UserError

    sinks: list[Any] = []
    if run.tensorboard:
        sinks.append(TensorBoard(run.logdir, resume_step))
    if run.wandb:
        try:
            sinks.append(WandB(run.logdir, settings, run.wandb_project, run.wandb_mode, run.resume))
        except ImportError:
            close(sinks)
            raise UserError("--wandb needs the wandb package: pip install wandb") from None
        except Exception as e:  # noqa: BLE001 (network, login, bad project name)
            close(sinks)
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"--wandb: {text}") from None
    return sinks


def close(sinks: list[Any]) -> None:
    for sink in sinks:
        sink.close()

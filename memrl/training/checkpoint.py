"""Orbax checkpoints of the whole runner state (learner, buffers, env, keys)."""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


class Checkpointer:
    """Keeps the two newest checkpoints of a run under ``directory``.

    Each holds the runner state, the env-step count and the wall time so far,
    so a resumed run continues to the numbers an uninterrupted one reaches.
    """

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, wall_time: float) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                extra=ocp.args.JsonSave({"wall_time": float(wall_time), "step": int(step)}),
            ),
        )
        self._manager.wait_until_finished()

    def restore(self, abstract_state: Any) -> tuple[Any, int, float]:
        """Returns ``(state, step, wall_time)`` of the newest checkpoint."""
        step = self._manager.latest_step()
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                extra=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], int(step), float(restored["extra"]["wall_time"])

    def close(self) -> None:
        self._manager.close()

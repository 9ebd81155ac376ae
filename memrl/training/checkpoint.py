"""Orbax checkpoints of the whole runner state (learner, buffers, env, keys)."""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


class Checkpointer:
    """Keeps the two newest checkpoints of a run under ``directory``.

    Each holds the runner state, the env-step count, the wall time and the
    cumulative counters so far,
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

    def save(self, step: int, state: Any, extra: dict) -> None:
        """Saves ``state`` (arrays) and ``extra`` (JSON: wall time, counters)."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                extra=ocp.args.JsonSave({**extra, "step": int(step)}),
            ),
        )
        self._manager.wait_until_finished()

    def restore(self, abstract_state: Any) -> tuple[Any, int, dict]:
        """Returns ``(state, step, extra)`` of the newest checkpoint."""
        step = self._manager.latest_step()
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                extra=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], int(step), dict(restored["extra"])

    def close(self) -> None:
        self._manager.close()

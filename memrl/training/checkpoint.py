"""Orbax checkpoints of the whole runner state (learner, buffers, env, keys)."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


def _sized_leaves(tree: Any) -> dict[str, Any]:
    """The leaves of ``tree`` that hold data, keyed by their flat position.

    Orbax refuses zero-size arrays, and MJX states carry some (e.g.
    ``pipeline_state.act`` of models without activations); they are rebuilt
    from the abstract state on restore.
    """
    leaves = jax.tree_util.tree_leaves(tree)
    return {f"{i:05d}": x for i, x in enumerate(leaves) if x.size}


def _rebuild(abstract: Any, saved: dict[str, Any]) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(abstract)
    out = []
    for i, a in enumerate(leaves):
        key = f"{i:05d}"
        if key in saved:
            out.append(saved[key])
        else:
            out.append(jax.device_put(jnp.zeros(a.shape, a.dtype), a.sharding))
    return jax.tree_util.tree_unflatten(treedef, out)


class Checkpointer:
    """Keeps the two newest checkpoints of a run under ``directory``.

    Each holds the runner state (its non-empty leaves, by flat position), the
    env-step count, the wall time and the cumulative counters so far, so a
    resumed run continues to the numbers an uninterrupted one reaches.
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
                state=ocp.args.StandardSave(_sized_leaves(state)),
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
                state=ocp.args.StandardRestore(_sized_leaves(abstract_state)),
                extra=ocp.args.JsonRestore(),
            ),
        )
        state = _rebuild(abstract_state, restored["state"])
        return state, int(step), dict(restored["extra"])

    def read_extra(self) -> dict:
        """The JSON part (``extra``) of the newest checkpoint, without its arrays."""
        step = self._manager.latest_step()
        args = ocp.args.Composite(extra=ocp.args.JsonRestore())
        restored = self._manager.restore(step, args=args)
        return dict(restored["extra"])

    def close(self) -> None:
        self._manager.close()

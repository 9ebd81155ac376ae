"""The generic jitted runner: env interaction, evaluation, seeds, logging, checkpoints.

``RunConfig``, ``UserError`` and ``train`` load the runner on first use, so a
light submodule (``memrl.training.compilation_cache``) imports without it.
"""

from typing import Any

__all__ = ["RunConfig", "UserError", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from memrl.training import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'memrl.training' has no attribute {name!r}")

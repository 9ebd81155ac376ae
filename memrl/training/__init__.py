"""The generic jitted runner: env interaction, evaluation, seeds, logging, checkpoints."""

from memrl.training.runner import RunConfig, UserError, train

__all__ = ["RunConfig", "UserError", "train"]

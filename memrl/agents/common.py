"""Pieces every agent shares: one gradient step for any loss.

Polyak averaging is ``optax.incremental_update(online, target, tau)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

PyTree = Any


def gradient_step(
    loss_fn: Callable[..., tuple[jax.Array, dict]], optimizer: optax.GradientTransformation
) -> Callable[..., tuple[PyTree, optax.OptState, dict]]:
    """Turns ``loss_fn(params, *args) -> (loss, aux_metrics)`` into an update.

    Returns:
      ``step(params, opt_state, *args) -> (params, opt_state, aux_metrics)``.
    """

    def step(params, opt_state, *args):
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *args)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, aux

    return step

"""Pieces every agent shares: one gradient step for any loss, and the mark of
``train_step`` metrics computed on only some steps.

Polyak averaging is ``optax.incremental_update(online, target, tau)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

PyTree = Any

# A ``train_step`` metric ``k`` may come with a boolean companion
# ``COMPUTED + k``: the runner then averages ``k`` only over the steps where the
# companion is true (``memrl.training.loop``). ``computed_when`` adds them.
COMPUTED = "computed/"


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


def computed_when(computed: jax.Array, metrics: dict) -> dict:
    """``metrics`` plus a companion ``COMPUTED + k = computed`` for each metric
    ``k`` that is not a ``count/`` key.

    Use it on the output of a ``lax.cond`` whose skip branch returns
    placeholder values (zeros): the runner then averages each such metric only
    over the steps that computed it, instead of with the placeholders.

    Args:
      computed: scalar bool, whether this step computed ``metrics``.
      metrics: flat dict of scalar metrics.
    """
    flag = jnp.asarray(computed, bool)
    marks = {COMPUTED + k: flag for k in metrics if not k.startswith("count/")}
    return {**metrics, **marks}

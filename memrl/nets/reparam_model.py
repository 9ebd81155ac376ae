"""Reparameterized dynamics and reward models of S2VG (Sec. 3.1, eq. 6) and
MEMB (Sec. 3.1, eq. 4).

Each model is one network ``(s, a) -> (mu, log_sigma)`` of a diagonal Gaussian;
a sample is ``mu + sigma * zeta`` with ``zeta ~ N(0, I)`` given from outside,
so the sample is differentiable in ``s``, ``a`` and the parameters
(``f(s, a, zeta_omega)`` and ``r_hat(s, a, zeta_phi)`` in the papers). Both
are trained by the mean squared error of such a sample against the observed
target (eq. 6 / eq. 4)::

    J = 1/2 E_{D, zeta} || mu(s, a) + sigma(s, a) zeta - y ||^2

Why not ``memrl.nets.dynamics``: the papers' model is one network per output
(dynamics and reward apart), predicts the absolute next state, is trained by
MSE on a reparameterized sample (not Gaussian likelihood), one gradient step
per environment step (not fitted to convergence), without input normalizers
or an ensemble. Those are the authors' choices (MEMB code: ``core.py``,
``dynamic_model`` / ``reward_model``, log-sigma squashed by ``tanh`` into
``[-20, 2]``), so the model is a small module of its own. Note that the MSE of
a sample is ``||mu - y||^2 + ||sigma||^2`` in expectation: it drives sigma to
its lower bound, so the trained model is close to deterministic.

Shapes: ``B`` batch, ``O`` observation size, ``A`` action size, ``D`` output
size (``O`` for dynamics, 1 for reward).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from memrl.nets.mlp import MLP


class GaussianOutput(NamedTuple):
    """Mean and log-std of the predicted Gaussian, each ``[..., D]``."""

    mean: jax.Array
    log_std: jax.Array


class ReparamModel(nn.Module):
    """``(s, a) -> (mu, log_sigma)`` over ``output_size`` targets.

    Attributes:
      output_size: ``D``.
      hidden_sizes: MLP widths (S2VG/MEMB Table 2, e.g. (32, 16) for pendulum).
      activation: hidden activation (ReLU in the papers).
      log_std_min: lower bound of log-sigma (MEMB code: -20).
      log_std_max: upper bound of log-sigma (MEMB code: 2).
    """

    output_size: int
    hidden_sizes: Sequence[int] = (256, 128)
    activation: str = "relu"
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> GaussianOutput:
        x = jnp.concatenate([obs, action], axis=-1)
        out = MLP(tuple(self.hidden_sizes), 2 * self.output_size, self.activation)(x)
        mean, raw = jnp.split(out, 2, axis=-1)
        unit = 0.5 * (jnp.tanh(raw) + 1.0)
        return GaussianOutput(mean, self.log_std_min + (self.log_std_max - self.log_std_min) * unit)


def sample(out: GaussianOutput, zeta: jax.Array) -> jax.Array:
    """The reparameterized sample ``mu + sigma * zeta`` (``zeta = 0``: the mean)."""
    chex.assert_equal_shape([out.mean, zeta])
    return out.mean + jnp.exp(out.log_std) * zeta


def mse_loss(
    module: ReparamModel,
    params,
    obs: jax.Array,
    action: jax.Array,
    target: jax.Array,
    zeta: jax.Array,
) -> tuple[jax.Array, GaussianOutput]:
    """``1/2 mean_b || mu(s_b, a_b) + sigma(s_b, a_b) zeta_b - y_b ||^2`` (eq. 6 / eq. 4).

    Args:
      module: the model.
      params: its parameters (differentiated).
      obs: ``[B, O]``.
      action: ``[B, A]``.
      target: ``[B, D]`` observed next state (or reward as ``[B, 1]``).
      zeta: ``[B, D]`` standard normal noise.

    Returns:
      The loss and the predicted Gaussian.
    """
    out = module.apply(params, obs, action)
    chex.assert_equal_shape([out.mean, target])
    err = sample(out, zeta) - target
    return 0.5 * jnp.mean(jnp.sum(err**2, axis=-1)), out

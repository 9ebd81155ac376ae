"""Diagonal Gaussian conditional density ``N(a; mu(s), diag(sigma(s)^2))``.

MEMR's model-data policy ``pi_psi`` (Sec. 3.1, Problem 3.1) is such a Gaussian
fitted by maximum likelihood to the state-action pairs of the model dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from memrl.nets.mlp import MLP
from memrl.nets.policy import GaussianParams


class GaussianNetwork(nn.Module):
    """``s -> (mean, log_std)``, log-std softly bounded to ``[log_std_min, log_std_max]``.

    Attributes:
      output_size: dimension of the modelled variable.
      hidden_sizes: MLP widths.
      activation: hidden activation.
      log_std_min: lower log-std bound.
      log_std_max: upper log-std bound.
    """

    output_size: int
    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, x: jax.Array) -> GaussianParams:
        out = MLP(self.hidden_sizes, 2 * self.output_size, self.activation)(x)
        mean, raw = jnp.split(out, 2, axis=-1)
        unit = 0.5 * (jnp.tanh(raw) + 1.0)
        return GaussianParams(mean, self.log_std_min + (self.log_std_max - self.log_std_min) * unit)


def log_prob(params: GaussianParams, x: jax.Array) -> jax.Array:
    """``log N(x; mean, diag(exp(log_std)^2))`` summed over the last axis."""
    z = (x - params.mean) * jnp.exp(-params.log_std)
    return jnp.sum(-0.5 * z**2 - params.log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)

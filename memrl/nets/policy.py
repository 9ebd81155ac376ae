"""Tanh-squashed diagonal Gaussian policy (SAC, Haarnoja et al. 2018, App. C).

The network outputs the mean and log-std of a Gaussian ``u``; the action is
``a = tanh(u)``. Its exact log-density follows from the change of variables
(SAC eq. 21): ``log pi(a|s) = log N(u; mu, sigma) - sum_i log(1 - tanh(u_i)^2)``.
distrax's ``Tanh`` bijector computes the log-det-Jacobian in the numerically
stable form ``2 (log 2 - u - softplus(-2u))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from memrl.nets.mlp import MLP


class GaussianParams(NamedTuple):
    """Mean and log-std of the pre-squash Gaussian, each ``[..., action_size]``."""

    mean: jax.Array
    log_std: jax.Array


class TanhGaussianPolicy(nn.Module):
    """``s -> (mean, log_std)`` of the pre-tanh Gaussian.

    Attributes:
      action_size: dimension of the action.
      hidden_sizes: MLP widths (SAC: 2 x 256).
      activation: hidden activation name.
      log_std_min: lower bound of log-std (soft clip with tanh).
      log_std_max: upper bound of log-std.
    """

    action_size: int
    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> GaussianParams:
        out = MLP(self.hidden_sizes, 2 * self.action_size, self.activation)(obs)
        mean, raw = jnp.split(out, 2, axis=-1)
        # Smooth bound of the log-std into [log_std_min, log_std_max].
        unit = 0.5 * (jnp.tanh(raw) + 1.0)
        log_std = self.log_std_min + (self.log_std_max - self.log_std_min) * unit
        return GaussianParams(mean, log_std)


def distribution(params: GaussianParams) -> distrax.Distribution:
    """The squashed distribution ``tanh(N(mean, exp(log_std)))`` over the last axis."""
    base = distrax.MultivariateNormalDiag(params.mean, jnp.exp(params.log_std))
    return distrax.Transformed(base, distrax.Block(distrax.Tanh(), ndims=1))


def sample_and_log_prob(params: GaussianParams, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reparameterized sample ``a = tanh(mu + sigma * eps)`` and its exact log-density.

    Computed from ``u`` directly (not by inverting tanh, which loses precision
    near +-1).

    Returns:
      action ``[..., action_size]`` and log-probability ``[...]``.
    """
    eps = jax.random.normal(key, params.mean.shape, params.mean.dtype)
    return squash_with_log_prob(params, eps)


def squash_with_log_prob(params: GaussianParams, eps: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``a = tanh(mu + sigma eps)`` and ``log pi(a|s)`` for given standard noise ``eps``."""
    u = params.mean + jnp.exp(params.log_std) * eps
    base = distrax.MultivariateNormalDiag(params.mean, jnp.exp(params.log_std))
    bijector = distrax.Block(distrax.Tanh(), ndims=1)
    action, log_det = bijector.forward_and_log_det(u)
    return action, base.log_prob(u) - log_det


def gaussian_log_prob(params: GaussianParams, x: jax.Array) -> jax.Array:
    """``log N(x; mean, diag(exp(log_std)^2))`` of the unsquashed Gaussian,
    summed over the last axis (MEMR's model-data policy pi_psi)."""
    z = (x - params.mean) * jnp.exp(-params.log_std)
    return jnp.sum(-0.5 * z**2 - params.log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def mode(params: GaussianParams) -> jax.Array:
    """The deterministic action ``tanh(mean)`` used for evaluation."""
    return jnp.tanh(params.mean)

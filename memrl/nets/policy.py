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


class TanhNormalActor(nn.Module):
    """Dreamer v1's action model (``ActionDecoder`` with ``tanh_normal``).

    An ELU MLP gives ``(x_mean, x_std)``; the pre-tanh Gaussian has
    ``mean = mean_scale * tanh(x_mean / mean_scale)`` and ``std =
    softplus(x_std + softplus^-1(init_std)) + min_std``, so a fresh network
    starts near std ``init_std`` (5) whatever its output scale. The action is
    ``tanh`` of a sample (``distribution`` / ``sample_and_log_prob`` above,
    with ``log_std = log std``).

    Attributes:
      action_size: dimension of the action.
      layers: hidden layers (Dreamer: 4).
      units: hidden width (Dreamer: 400).
      activation: hidden activation (Dreamer: ELU).
      init_std: std of the pre-tanh Gaussian at zero output (Dreamer: 5).
      min_std: lower bound of the std (Dreamer: 1e-4).
      mean_scale: bound of the pre-tanh mean (Dreamer: 5).
    """

    action_size: int
    layers: int = 4
    units: int = 400
    activation: str = "elu"
    init_std: float = 5.0
    min_std: float = 1e-4
    mean_scale: float = 5.0

    @nn.compact
    def __call__(self, feat: jax.Array) -> GaussianParams:
        out = MLP((self.units,) * self.layers, 2 * self.action_size, self.activation)(feat)
        x_mean, x_std = jnp.split(out, 2, axis=-1)
        mean = self.mean_scale * jnp.tanh(x_mean / self.mean_scale)
        raw_init = jnp.log(jnp.expm1(self.init_std))  # softplus^-1(init_std)
        std = jax.nn.softplus(x_std + raw_init) + self.min_std
        return GaussianParams(mean, jnp.log(std))


def sample_mode(params: GaussianParams, key: jax.Array, num_samples: int = 100) -> jax.Array:
    """Dreamer v1's ``SampleDist.mode``: of ``num_samples`` squashed samples, the
    one with the highest log-density (the tanh-Gaussian has no closed-form
    mode; for a wide pre-tanh Gaussian it lies near +-1, not at ``tanh(mean)``).

    Args:
      params: pre-tanh Gaussian, ``[..., action_size]``.
      key: PRNG key.
      num_samples: candidates drawn per distribution.

    Returns:
      ``[..., action_size]`` actions.
    """
    eps = jax.random.normal(key, (num_samples,) + params.mean.shape, params.mean.dtype)
    actions, log_prob = jax.vmap(squash_with_log_prob, in_axes=(None, 0))(params, eps)
    best = jnp.argmax(log_prob, axis=0)  # [...]
    return jnp.take_along_axis(actions, best[None, ..., None], axis=0)[0]

"""Mixture density network P(s | s_t) over latent states (Bishop 1994; MaxEnt
Dreamer, paper 004 Sec. 4.1: hidden size 256, 8 components).

``MDN(s_t)`` gives the parameters of a mixture of ``K`` diagonal Gaussians,

    P(s | s_t) = sum_k pi_k(s_t) N(s; mu_k(s_t), diag(sigma_k(s_t)^2)),

with ``pi = softmax(logits)`` and ``sigma = softplus(raw) + min_std``.
``distribution`` is the distrax ``MixtureSameFamily``; ``pairwise_log_prob``
evaluates the log-density of many points under many conditionings at once
(MaxEnt Dreamer needs ``log P(s_j | s_t)`` for every pair of imagined
states), and ``sample`` draws reparameterized samples (the Gaussian part
differentiable, the component index not).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from memrl.nets.mlp import MLP


class MixtureParams(NamedTuple):
    """Mixture parameters; leading axes ``[...]`` are the conditionings.

    Attributes:
      logits: component logits, ``[..., K]``.
      mean: component means, ``[..., K, D]``.
      std: component standard deviations, ``[..., K, D]``.
    """

    logits: jax.Array
    mean: jax.Array
    std: jax.Array


class MDN(nn.Module):
    """``s_t -> MixtureParams`` of ``P(. | s_t)`` over ``output_size``-dim states.

    Attributes:
      output_size: dimension D of the modelled state.
      components: mixture components K (paper 004: 8).
      hidden_sizes: MLP widths (paper 004: hidden size 256; two layers here).
      activation: hidden activation.
      min_std: added to softplus of the raw std.
    """

    output_size: int
    components: int = 8
    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "elu"
    min_std: float = 0.01

    @nn.compact
    def __call__(self, cond: jax.Array) -> MixtureParams:
        k, d = self.components, self.output_size
        out = MLP(tuple(self.hidden_sizes), k * (1 + 2 * d), self.activation)(cond)
        logits, rest = out[..., :k], out[..., k:]
        rest = rest.reshape(rest.shape[:-1] + (k, 2 * d))
        mean, raw_std = jnp.split(rest, 2, axis=-1)
        return MixtureParams(logits, mean, jax.nn.softplus(raw_std) + self.min_std)


def distribution(params: MixtureParams) -> distrax.MixtureSameFamily:
    """The mixture as a distrax distribution (event shape ``[D]``)."""
    return distrax.MixtureSameFamily(
        mixture_distribution=distrax.Categorical(logits=params.logits),
        components_distribution=distrax.MultivariateNormalDiag(params.mean, params.std),
    )


def pairwise_log_prob(params: MixtureParams, x: jax.Array) -> jax.Array:
    """``log P(x_j | cond_t)`` for every conditioning ``t`` and point ``j``.

    With ``w = 1 / sigma^2`` the Gaussian exponent is expanded as

        sum_d w_d (x_d - mu_d)^2 = sum_d w_d x_d^2 - 2 sum_d w_d mu_d x_d
                                   + sum_d w_d mu_d^2,

    three contractions over ``D`` instead of a ``[T, J, N, K, D]``
    intermediate, then ``log P = logsumexp_k [log pi_k - 1/2 (...) -
    sum_d log sigma_kd - D/2 log 2 pi]``.

    Args:
      params: leaves ``[T, N, K, (D)]``.
      x: ``[J, N, D]``.

    Returns:
      ``[T, J, N]``.
    """
    w = 1.0 / jnp.square(params.std)  # [T, N, K, D]
    quad = (
        jnp.einsum("jnd,tnkd->tjnk", jnp.square(x), w)
        - 2.0 * jnp.einsum("jnd,tnkd->tjnk", x, w * params.mean)
        + jnp.sum(w * jnp.square(params.mean), -1)[:, None]
    )
    d = x.shape[-1]
    log_norm = -jnp.sum(jnp.log(params.std), -1) - 0.5 * d * math.log(2.0 * math.pi)  # [T, N, K]
    log_weight = jax.nn.log_softmax(params.logits, -1)  # [T, N, K]
    return jax.nn.logsumexp((log_weight + log_norm)[:, None] - 0.5 * quad, axis=-1)


def sample(params: MixtureParams, key: jax.Array, num_samples: int) -> jax.Array:
    """``num_samples`` draws per conditioning: ``k ~ Categorical(pi)`` (no
    gradient), then ``mu_k + sigma_k eps`` (reparameterized).

    Args:
      params: leaves ``[N, K, (D)]``.
      key: PRNG key.
      num_samples: M.

    Returns:
      ``[M, N, D]``.
    """
    k_comp, k_eps = jax.random.split(key)
    n, _, d = params.mean.shape
    comp = jax.random.categorical(
        k_comp, jax.lax.stop_gradient(params.logits), shape=(num_samples, n)
    )  # [M, N]
    pick = lambda a: jnp.take_along_axis(a[None], comp[..., None, None], axis=2)[:, :, 0]  # noqa: E731
    eps = jax.random.normal(k_eps, (num_samples, n, d), params.mean.dtype)
    return pick(params.mean) + pick(params.std) * eps

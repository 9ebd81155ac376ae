"""Running observation-normalization statistics as pure functions.

``update`` merges a batch into the running statistics with the exact parallel
variance formula of Chan, Golub & LeVeque (1979), the batched form of Welford's
algorithm: for parts ``a`` and ``b`` with counts ``n_a``, ``n_b``, means
``m_a``, ``m_b`` and sums of squared deviations ``M2_a``, ``M2_b``::

    n     = n_a + n_b
    delta = m_b - m_a
    mean  = m_a + delta * n_b / n
    M2    = M2_a + M2_b + delta^2 * n_a * n_b / n

The stored ``var`` is the population variance ``M2 / n`` (numpy's default
``ddof=0``).

Example::

    stats = normalization.init(obs_size)
    stats = normalization.update(stats, batch_obs)          # [B, obs_size]
    x = normalization.normalize(stats, obs, clip=5.0)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class NormStats(NamedTuple):
    """Running statistics of observations.

    Attributes:
      count: int32 scalar, number of observations seen.
      mean: ``[obs_size]`` running mean.
      var: ``[obs_size]`` running population variance (1 before any data, so
        ``normalize`` starts as the identity).
    """

    count: jax.Array
    mean: jax.Array
    var: jax.Array


def init(obs_size: int, dtype=jnp.float32) -> NormStats:
    """Empty statistics for observations of shape ``[obs_size]``."""
    return NormStats(
        count=jnp.zeros((), jnp.int32),
        mean=jnp.zeros((obs_size,), dtype),
        var=jnp.ones((obs_size,), dtype),
    )


def update(stats: NormStats, batch_obs: jax.Array) -> NormStats:
    """Merges a batch into the statistics (exact parallel Welford / Chan merge).

    Args:
      stats: current statistics.
      batch_obs: ``[..., obs_size]`` observations; every leading axis is a batch
        axis (e.g. ``[B, obs_size]`` or ``[T, B, obs_size]``).

    Returns:
      Statistics over all observations seen so far, with the dtypes of ``stats``.
    """
    dtype = stats.mean.dtype
    x = jnp.reshape(batch_obs, (-1,) + stats.mean.shape).astype(dtype)
    n_b = x.shape[0]
    if n_b == 0:
        return stats
    mean_b = jnp.mean(x, axis=0)
    m2_b = jnp.sum(jnp.square(x - mean_b), axis=0)

    n_a = stats.count.astype(dtype)
    n = n_a + n_b
    delta = mean_b - stats.mean
    mean = stats.mean + delta * (n_b / n)
    # With n_a = 0 the first and last terms vanish, so the placeholder var=1
    # of `init` never leaks into the result.
    m2 = stats.var * n_a + m2_b + jnp.square(delta) * (n_a * n_b / n)
    return NormStats(
        count=stats.count + jnp.asarray(n_b, stats.count.dtype),
        mean=mean.astype(dtype),
        var=(m2 / n).astype(dtype),
    )


def _std(stats: NormStats, eps: float) -> jax.Array:
    return jnp.sqrt(stats.var + eps)


def normalize(
    stats: NormStats, obs: jax.Array, clip: float | None = None, eps: float = 1e-8
) -> jax.Array:
    """``(obs - mean) / sqrt(var + eps)``, optionally clipped to ``[-clip, clip]``.

    Args:
      stats: statistics.
      obs: ``[..., obs_size]`` observations.
      clip: bound on the normalized values; None for no clipping.
      eps: added to the variance so constant features do not divide by zero.

    Returns:
      Normalized observations, same shape as ``obs``.
    """
    x = (obs - stats.mean) / _std(stats, eps)
    if clip is not None:
        x = jnp.clip(x, -clip, clip)
    return x


def denormalize(stats: NormStats, x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Inverse of ``normalize`` without clipping: ``x * sqrt(var + eps) + mean``."""
    return x * _std(stats, eps) + stats.mean

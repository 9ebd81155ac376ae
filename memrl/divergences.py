"""Divergences between diagonal Gaussians, and Dreamer's free nats.

Shared by the Dreamer world model (paper 004 eq. 3-4, Hafner et al. 2020) and
MaxEnt Dreamer's revised prior term (paper 004 Sec. 4.2: KL to N(0, I) plus a
Jeffreys divergence). The functions are elementwise over leading axes and sum
over the last (event) axis, so they need no vmap: ``[..., D] -> [...]``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def kl_diag_gaussian(
    mean_p: jax.Array, std_p: jax.Array, mean_q: jax.Array, std_q: jax.Array
) -> jax.Array:
    """KL(p || q) for diagonal Gaussians, summed over the last axis.

    With p = N(mu_p, diag(s_p^2)) and q = N(mu_q, diag(s_q^2)) over D dims,

        KL(p || q) = sum_{d=1..D} [ log(s_q,d / s_p,d)
                                    + (s_p,d^2 + (mu_p,d - mu_q,d)^2) / (2 s_q,d^2)
                                    - 1/2 ].

    Args:
      mean_p, std_p: parameters of p, [..., D] (std > 0).
      mean_q, std_q: parameters of q, [..., D] (std > 0).

    Returns:
      KL(p || q), [...] (the last axis summed).
    """
    chex.assert_equal_shape([mean_p, std_p, mean_q, std_q])
    chex.assert_rank(mean_p, {*range(1, 8)})
    var_ratio = jnp.square(std_p / std_q)
    mahalanobis = jnp.square((mean_p - mean_q) / std_q)
    per_dim = 0.5 * (var_ratio + mahalanobis - 1.0) - jnp.log(std_p / std_q)
    return jnp.sum(per_dim, axis=-1)


def jeffreys_diag_gaussian(
    mean_p: jax.Array, std_p: jax.Array, mean_q: jax.Array, std_q: jax.Array
) -> jax.Array:
    """Jeffreys divergence D_J(p, q) = KL(p || q) + KL(q || p), summed over the last axis.

    Symmetric in p and q (paper 004 Sec. 4.2). Shapes as in ``kl_diag_gaussian``.
    """
    return kl_diag_gaussian(mean_p, std_p, mean_q, std_q) + kl_diag_gaussian(
        mean_q, std_q, mean_p, std_p
    )


def kl_to_standard_normal(mean: jax.Array, std: jax.Array) -> jax.Array:
    """KL(N(mean, diag(std^2)) || N(0, I)), summed over the last axis.

    Equals sum_d [ (std_d^2 + mean_d^2 - 1) / 2 - log std_d ]. [..., D] -> [...].
    """
    return kl_diag_gaussian(mean, std, jnp.zeros_like(mean), jnp.ones_like(std))


def free_nats(kl: jax.Array, nats: float) -> jax.Array:
    """Dreamer v1's free nats: ``max(mean(kl), nats)``.

    The KL is averaged over every axis (batch and time) first and the mean is
    then clipped from below, as in the authors' code
    (``tf.maximum(tf.reduce_mean(kl), free_nats)``). While the mean KL is below
    ``nats`` the result is the constant ``nats`` and no gradient reaches the
    KL; above it the gradient is that of the plain mean. This differs from
    clipping each element's KL (DreamerV2/V3 and "free bits" per dimension).

    Args:
      kl: per-example KL values, any shape (typically [T, B]).
      nats: the free nats (Dreamer v1: 3.0).

    Returns:
      A scalar.
    """
    chex.assert_type(kl, float)
    return jnp.maximum(jnp.mean(kl), nats)

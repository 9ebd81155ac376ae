"""Stochastic ensemble value expansion (Buckman et al. 2018, "Sample-Efficient
Reinforcement Learning with Stochastic Ensemble Value Expansion"), the critic
targets of MAAC (Clavera et al. 2020, Sec. 4.3, "Q-function learning").

Small unbatched functions in the rlax style; callers ``vmap`` them over the
batch, the ensemble members and the Q heads.

For one real transition ``(s_0, a_0, r_0, s_1)`` and one imagined continuation
``s_1, a_1, r_1, s_2, ...`` (model member ``m``) with bootstrap values
``v_j`` at ``s_j``, the ``i``-step candidate target is

    T_i = sum_{j=0}^{i} (prod_{k<j} c_k) r_j + (prod_{k<=i} c_k) v_{i+1},

``i = 0..H``, with ``c_k = gamma * (1 - done_k)`` (``T_0`` is one-step TD).
STEVE computes ``T_i`` for every member (MAAC bootstraps each from the min
over its Q heads), and combines the horizons by inverse variance over those
``M`` samples (STEVE eq. 2-3):

    T = sum_i w_i mean_i / sum_i w_i,   w_i = 1 / var_i.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from memrl import returns

# Added to each variance so that a horizon whose candidates all agree (the
# one-step target when all Q heads agree) gets a large finite weight.
VARIANCE_EPS = 1e-6


# The H + 1 candidates T_0 .. T_H (STEVE eq. 2); the math lives in
# memrl.returns, this is the name MAAC and the tests use.
candidate_targets = returns.value_expansion_candidates


def combine(candidates: jax.Array, eps: float = VARIANCE_EPS) -> jax.Array:
    """Inverse-variance combination of candidate targets (STEVE eq. 3).

    Args:
      candidates: ``[H + 1, K]``: for each horizon ``i``, ``K`` samples of
        ``T_i`` (one per model member and Q head).
      eps: added to each variance.

    Returns:
      Scalar ``sum_i w_i mean_i / sum_i w_i`` with ``w_i = 1 / (var_i + eps)``
      (population variance over the ``K`` samples).
    """
    chex.assert_rank(candidates, 2)
    mean = jnp.mean(candidates, axis=1)
    var = jnp.var(candidates, axis=1)
    w = 1.0 / (var + eps)
    return jnp.sum(w * mean) / jnp.sum(w)


def horizon_weights(candidates: jax.Array, eps: float = VARIANCE_EPS) -> jax.Array:
    """``[H + 1]`` normalized weights ``w_i / sum_j w_j`` of ``combine`` (for logging)."""
    w = 1.0 / (jnp.var(candidates, axis=1) + eps)
    return w / jnp.sum(w)


def combine_batch(candidates: jax.Array, eps: float = VARIANCE_EPS) -> jax.Array:
    """``combine`` over a leading batch axis: ``[B, H + 1, K] -> [B]``."""
    return jax.vmap(lambda c: combine(c, eps))(candidates)

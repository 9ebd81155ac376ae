"""The discounted distribution of future states and its entropy (MaxEnt
Dreamer, paper 004 Sec. 3, eq. 6-10).

**The distribution (eq. 6, re-derived).** For a policy pi and a state
``s_t``, the discounted distribution of the states that follow ``s_t`` is

    q(. | s_t) = (1 - g) sum_{i>=0} g^i p(s_{t+1+i} = . | s_t),

with ``g`` the state discount (paper: 0.9) and ``p(s_{t+k} | s_t)`` the
k-step distribution under pi. The text's eq. 6 is garbled; the form above is
the one whose one-step unrolling reads as eq. 6:
``q(. | s_t) = (1 - g) p(s_{t+1} = .) + g E_{s_{t+1}} q(. | s_{t+1})``.

**n-step form (eq. 8-9).** Unrolling ``n`` steps along one trajectory
``s_{t+1} .. s_{t+n}`` (Markov property):

    q(. | s_t) = (1 - g) sum_{i=0}^{n-1} g^i p(s_{t+1+i} = . | s_t)
                 + g^n E_{s_{t+n}} q(. | s_{t+n}).

The weights sum to one: ``(1 - g)(1 - g^n) / (1 - g) + g^n = 1``.

**Learning P (eq. 10).** A density model ``P(. | s_t)`` is fitted to ``q``
by maximum likelihood. Expectations under ``q`` are estimated from an
imagined trajectory plus samples of the (target) model at its last state,
importance sampling with ``P(. | s_{t+n}) ~ q(. | s_{t+n})``:

    E_{s ~ q(.|s_t)} L(s, s_t) ~= (1 - g) sum_{i=0}^{n-1} g^i L(s_{t+1+i}, s_t)
                                  + g^n E_{s ~ P(.|s_{t+n})} L(s, s_t),

with ``L(s, s_t) = -log P(s | s_t)`` for the model's loss. (Eq. 10's indices
``i + t`` with ``i`` from 0 are the same sum shifted by one; the weights
above are the ones that sum to one with the bootstrap.)

**Entropy (eq. 7).** ``H(q(. | s_t)) ~= H(P(. | s_t)) = -E_{s ~ q} log
P(s | s_t)``, estimated with the same weights (Monte Carlo over the imagined
states and the bootstrap samples) and differentiated through the imagined
states and the reparameterized samples.

Every imagined trajectory ``s_0 .. s_H`` holds one such estimate per start
``s_t``, ``t < H``, with the ``n = H - t`` states after it.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def discounted_weights(num_states: int, gamma: float) -> tuple[jax.Array, jax.Array]:
    """Weights of eq. 9-10 for one start and the ``n`` states after it.

    Returns:
      ``(w [n], w_boot [])`` with ``w_i = (1 - g) g^i`` on ``s_{t+1+i}`` and
      ``w_boot = g^n`` on the model's distribution at ``s_{t+n}``.
    """
    i = jnp.arange(num_states, dtype=jnp.float32)
    return (1.0 - gamma) * gamma**i, jnp.asarray(gamma, jnp.float32) ** num_states


def trajectory_weights(num_states: int, gamma: float) -> tuple[jax.Array, jax.Array]:
    """``discounted_weights`` for every start of one trajectory ``s_0 .. s_H``.

    Args:
      num_states: ``H``, the states after ``s_0``.
      gamma: the state discount.

    Returns:
      ``(w [H, H], w_boot [H])``: row ``t`` (start ``s_t``) holds
      ``w[t, j] = (1 - g) g^(j - t)`` on ``s_{j+1}`` for ``j >= t`` (0 before)
      and ``w_boot[t] = g^(H - t)``.
    """
    t = jnp.arange(num_states)[:, None]
    j = jnp.arange(num_states)[None, :]
    lag = (j - t).astype(jnp.float32)
    w = jnp.where(j >= t, (1.0 - gamma) * gamma ** jnp.maximum(lag, 0.0), 0.0)
    boot = gamma ** (num_states - jnp.arange(num_states)).astype(jnp.float32)
    return w, boot


def expected_log_prob(log_prob: jax.Array, boot_log_prob: jax.Array, gamma: float) -> jax.Array:
    """``E_{s ~ q(.|s_t)} log P(s | s_t)`` by eq. 10, for every start.

    Args:
      log_prob: ``[T, H, N]``: ``log P(s_{j+1} | s_t)`` for starts ``t < T <=
        H`` and the trajectory's states ``s_1 .. s_H`` (entries ``j < t`` are
        ignored).
      boot_log_prob: ``[T, M, N]``: ``log P(x_m | s_t)`` for ``M`` samples
        ``x_m ~ P(. | s_H)``.
      gamma: the state discount.

    Returns:
      ``[T, N]``. Minus this is the entropy estimate of ``q(. | s_t)``, and
      the model's maximum-likelihood loss is its negated mean.
    """
    chex.assert_rank([log_prob, boot_log_prob], 3)
    num_starts, num_states, _ = log_prob.shape
    w, boot = trajectory_weights(num_states, gamma)
    w, boot = w[:num_starts], boot[:num_starts]
    return jnp.einsum("tj,tjn->tn", w, log_prob) + boot[:, None] * jnp.mean(boot_log_prob, 1)

"""Multi-step return targets shared by the agents, in the style of rlax.

Small unbatched functions over one trajectory of ``T`` (or ``H``) steps with
``chex`` checks at the entry; callers ``vmap`` them over the batch, ensemble
members and Q heads. Where ``rlax`` has the computation (``lambda_returns``,
``discounted_returns``, ``n_step_bootstrapped_returns``) the function wraps
it; this module only fixes the conventions and documents the equations.

Conventions (the same in every function):

* ``t = 0 .. T-1`` indexes steps ``(s_t, a_t, r_t, s_{t+1})``.
* ``r_t``: the reward of step ``t``.
* ``discount_t``: ``c_t``, the discount applied *after* step ``t``, e.g.
  ``gamma * (1 - done_t)``; a terminal ``c_t = 0`` cuts everything that
  follows step ``t``, including the bootstrap.
* ``v_t``: the value of the state *after* step ``t``, ``v_t = V(s_{t+1})``
  (rlax's convention: ``r_t, discount_t, v_t`` are its ``[1, T]`` sequences
  shifted to start at 0). From a value sequence ``value[0..T]`` of the states
  ``s_0 .. s_T`` pass ``v_t = value[1:]``.

Gradients flow through every input unless ``stop_target_gradients`` is set
(Dreamer's actor differentiates the lambda-returns through rewards and
values).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import rlax


def lambda_returns(
    r_t: jax.Array,
    discount_t: jax.Array,
    v_t: jax.Array,
    lambda_: chex.Numeric = 1.0,
    stop_target_gradients: bool = False,
) -> jax.Array:
    """TD(lambda) returns of one trajectory, computed backwards::

        G_t     = r_t + c_t ((1 - lambda) v_t + lambda G_{t+1}),   t = 0 .. T-2
        G_{T-1} = r_{T-1} + c_{T-1} v_{T-1}

    with ``c_t = discount_t`` and ``v_t = V(s_{t+1})`` (equivalently
    ``G_T := v_{T-1} = V(s_T)``). ``lambda = 1``: discounted rewards plus the
    discounted bootstrap ``V(s_T)`` (``discounted_returns``); ``lambda = 0``:
    one-step TD targets ``r_t + c_t v_t``.

    Unrolled, the recursion is (``prod`` over an empty range is 1)::

        G_0 = sum_{t=0}^{T-1} (prod_{k<t} lambda c_k) (r_t + c_t (1 - lambda) v_t)
              + lambda^T (prod_{k<T} c_k) v_{T-1},

    which with ``c_t = gamma`` is eq. 5 of MaxEnt Dreamer (paper 004)::

        G^lambda_T = lambda^T gamma^T V(s_T)
                     + sum_{t=0}^{T-1} gamma^t lambda^t (r_t + gamma (1 - lambda) V(s_{t+1})).

    The paper's first form is garbled in the text; the one consistent with
    eq. 5 mixes the n-step returns ``G^(n) = sum_{i<n} gamma^i r_i + gamma^n
    V(s_n)``, ``n = 1 .. T``, as ``(1 - lambda) sum_{n=1}^{T-1} lambda^{n-1}
    G^(n) + lambda^{T-1} G^(T)`` (expanding the sum and collecting each
    ``r_t`` and ``V(s_{t+1})`` gives eq. 5; ``tests/test_returns.py`` checks
    it numerically).

    Dreamer v1 (``tools.lambda_return(reward[:-1], value[:-1], pcont[:-1],
    bootstrap=value[-1], lambda_)`` in danijar/dreamer) computes
    ``R_t = reward_t + pcont_t (1 - lambda) value_{t+1} + pcont_t lambda
    R_{t+1}``, ``R_T = value_T``: this function with ``r_t = reward[:-1]``,
    ``discount_t = pcont[:-1]``, ``v_t = value[1:]``.

    Wraps ``rlax.lambda_returns``.

    Args:
      r_t: ``[T]`` rewards ``r_0 .. r_{T-1}``.
      discount_t: ``[T]`` discounts ``c_0 .. c_{T-1}``.
      v_t: ``[T]`` values ``V(s_1) .. V(s_T)``.
      lambda_: ``[]`` or ``[T]`` mixing parameter (``lambda_t`` per step).
      stop_target_gradients: stop the gradient of the returns.

    Returns:
      ``[T]`` returns ``G_0 .. G_{T-1}``.
    """
    chex.assert_rank([r_t, discount_t, v_t, lambda_], [1, 1, 1, {0, 1}])
    chex.assert_equal_shape([r_t, discount_t, v_t])
    lambda_ = jnp.asarray(lambda_, dtype=r_t.dtype)
    return rlax.lambda_returns(
        r_t, discount_t, v_t, lambda_, stop_target_gradients=stop_target_gradients
    )


def discounted_returns(
    r_t: jax.Array,
    discount_t: jax.Array,
    v_last: jax.Array,
    stop_target_gradients: bool = False,
) -> jax.Array:
    """Discounted returns bootstrapped from the last state::

        G_T = V(s_T),   G_t = r_t + c_t G_{t+1},   t = 0 .. T-1,

    i.e. ``G_t = sum_{k=t}^{T-1} (prod_{j=t}^{k-1} c_j) r_k
    + (prod_{j=t}^{T-1} c_j) V(s_T)`` (``lambda_returns`` at ``lambda = 1``;
    ``v_last = 0`` gives Monte-Carlo returns). Wraps ``rlax.discounted_returns``.

    Args:
      r_t: ``[T]`` rewards.
      discount_t: ``[T]`` discounts ``c_t``.
      v_last: ``[]`` bootstrap value ``V(s_T)``.
      stop_target_gradients: stop the gradient of the returns.

    Returns:
      ``[T]`` returns ``G_0 .. G_{T-1}``.
    """
    chex.assert_rank([r_t, discount_t, v_last], [1, 1, 0])
    chex.assert_equal_shape([r_t, discount_t])
    return rlax.discounted_returns(
        r_t, discount_t, v_last, stop_target_gradients=stop_target_gradients
    )


def n_step_returns(
    r_t: jax.Array,
    discount_t: jax.Array,
    v_t: jax.Array,
    n: int,
    stop_target_gradients: bool = False,
) -> jax.Array:
    """``n``-step bootstrapped returns, truncated at the end of the trajectory::

        G_t = sum_{k=t}^{m-1} (prod_{j=t}^{k-1} c_j) r_k + (prod_{j=t}^{m-1} c_j) v_{m-1},
        m = min(t + n, T),   t = 0 .. T-1,

    with ``v_{m-1} = V(s_m)``. ``n = 1``: one-step TD ``r_t + c_t v_t``;
    ``n >= T``: ``discounted_returns(r_t, discount_t, v_t[-1])``. Wraps
    ``rlax.n_step_bootstrapped_returns``.

    Args:
      r_t: ``[T]`` rewards.
      discount_t: ``[T]`` discounts ``c_t``.
      v_t: ``[T]`` values ``V(s_1) .. V(s_T)``.
      n: number of rewards before bootstrapping (static, ``>= 1``).
      stop_target_gradients: stop the gradient of the returns.

    Returns:
      ``[T]`` returns ``G_0 .. G_{T-1}``.
    """
    chex.assert_rank([r_t, discount_t, v_t], 1)
    chex.assert_equal_shape([r_t, discount_t, v_t])
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return rlax.n_step_bootstrapped_returns(
        r_t, discount_t, v_t, n, stop_target_gradients=stop_target_gradients
    )


def value_expansion_targets(
    r_t: jax.Array,
    discount_t: jax.Array,
    v_h: jax.Array,
    gamma: float,
    entropy_t: jax.Array | None = None,
) -> jax.Array:
    """Value-expansion targets (Feinberg et al. 2018; S2VG eq. 7) of one
    trajectory of ``H`` steps, plain or soft.

    Plain (``entropy_t`` None), eq. 7 as printed::

        G_t = sum_{k=t}^{H-1} gamma^{k-t} r_k + gamma^{H-t} V(s_H),   t = 0 .. H-1

    computed backwards as ``G_H = V(s_H)``, ``G_t = r_t + gamma d_t G_{t+1}``,
    so that a terminal ``d_t = 0`` cuts the bootstrap (``d = 1``: eq. 7
    exactly). With ``H = 1``: ``G_0 = r_0 + gamma d_0 V(s_1)``, one-step TD
    (MEMB eq. 6). This is ``discounted_returns(r_t, gamma * discount_t, v_h)``.

    Soft (``entropy_t[k] = -alpha log pi(a_k|s_k)``): the soft Q and V of
    S2VG eq. 4-5 (MEMB eq. 5-6) satisfy ``Q(s_t, a_t) = r_t + gamma E V(s_{t+1})``
    and ``V(s_{t+1}) = E[Q(s_{t+1}, a_{t+1}) - alpha log pi(a_{t+1}|s_{t+1})]``.
    Unrolling ``Q`` along the trajectory ``H - t - 1`` times and stopping at
    ``V(s_H)`` gives::

        G_t = r_t + sum_{k=t+1}^{H-1} gamma^{k-t} (r_k - alpha log pi(a_k|s_k))
              + gamma^{H-t} V(s_H)

    i.e. every *later* step's reward carries its entropy bonus; the first
    action ``a_t`` is Q's argument, so its own bonus is not in ``G_t``
    (``entropy_t[0]`` is never used). Backwards: ``S_H = V(s_H)``, ``S_k =
    r_k + e_k + gamma d_k S_{k+1}`` (a soft value estimate of ``s_k``), and
    ``G_t = r_t + gamma d_t S_{t+1}``. The plain form is this with ``e = 0``;
    it differs from the soft one by ``sum_{k>t} gamma^{k-t} e_k``, about
    ``alpha`` times the discounted policy entropies of the later states,
    while its bootstrap ``V(s_H)`` is soft. The two agree for ``H = 1``.

    Args:
      r_t: ``[H]`` rewards ``r_0 .. r_{H-1}``.
      discount_t: ``[H]`` continuation flags ``d_0 .. d_{H-1}`` (gamma not
        included).
      v_h: ``[]`` the value of the last state ``V(s_H)``.
      gamma: discount factor.
      entropy_t: ``[H]`` soft bonuses ``e_k = -alpha log pi(a_k|s_k)`` of the
        trajectory's actions, or None for eq. 7 as printed.

    Returns:
      ``[H]`` targets ``G_0 .. G_{H-1}``.
    """
    chex.assert_rank([r_t, discount_t, v_h], [1, 1, 0])
    chex.assert_equal_shape([r_t, discount_t])
    if entropy_t is None:
        return discounted_returns(r_t, gamma * discount_t, v_h)
    chex.assert_equal_shape([r_t, entropy_t])
    soft_values = discounted_returns(r_t + entropy_t, gamma * discount_t, v_h)  # S_0 .. S_{H-1}
    next_values = jnp.concatenate([soft_values[1:], jnp.reshape(v_h, (1,))])  # S_1 .. S_H
    return r_t + gamma * discount_t * next_values


def value_expansion_candidates(r_t: jax.Array, discount_t: jax.Array, v_t: jax.Array) -> jax.Array:
    """The ``H + 1`` truncated-horizon targets from ``t = 0`` of one path
    (STEVE's candidates, Buckman et al. 2018 eq. 2)::

        T_i = sum_{j=0}^{i} (prod_{k<j} c_k) r_j + (prod_{k<=i} c_k) v_i,   i = 0 .. H

    i.e. ``T_i`` is the ``(i+1)``-step return of ``s_0`` bootstrapped from
    ``v_i = V(s_{i+1})``; ``T_0 = r_0 + c_0 v_0`` is one-step TD and
    ``T_i = n_step_returns(r_t, discount_t, v_t, i + 1)[0]``. (Not in rlax:
    rlax's n-step returns fix ``n`` and vary the start, this fixes the start
    and varies ``n``.)

    Args:
      r_t: ``[H + 1]`` rewards; in STEVE ``r_t[0]`` is the real reward and
        ``r_t[j]`` the (soft) reward of imagined step ``j``.
      discount_t: ``[H + 1]`` discounts ``c_t = gamma * (1 - done_t)`` after
        step ``t``.
      v_t: ``[H + 1]`` bootstrap values; ``v_t[i]`` is the value of the state
        reached after step ``i`` (``s_{i+1}``).

    Returns:
      ``[H + 1]`` candidates ``T_0 .. T_H``.
    """
    chex.assert_rank([r_t, discount_t, v_t], 1)
    chex.assert_equal_shape([r_t, discount_t, v_t])
    through = jnp.cumprod(discount_t)  # prod_{k<=i} c_k
    before = jnp.concatenate([jnp.ones((1,), through.dtype), through[:-1]])  # prod_{k<i}
    return jnp.cumsum(before * r_t) + through * v_t

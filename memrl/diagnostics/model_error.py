"""Prediction error of a dynamics model on real transitions it was not trained on.

MEMR (Sec. 3) argues that one-step model rollouts keep the model error at its
validation level while k-step rollouts compound it; MEMB (App. B.2) tracks the
model error over training. This module measures both on consecutive real
transitions:

* one step: ``s_hat' = f(s, a)`` against the true ``s'``;
* k steps: from ``s_i``, apply the recorded actions ``a_i .. a_{i+k-1}``
  through the model and compare ``s_hat_{i+k}`` with the true ``s_{i+k}``;
  windows that cross an episode end (a terminal transition, or an automatic
  reset where ``next_obs[j] != obs[j+1]``) are left out.

Errors, each averaged over state dimensions:

* ``mse``: mean squared error of the prediction;
* ``pair_w1``: ``E |s_hat' - s'|`` over the evaluated pairs, the quantity
  MEMB App. B.2 plots. For a deterministic environment the true
  ``p(s'|s, a)`` is a point mass, and the Wasserstein-1 distance between a
  point mass at ``s'`` and the model's ``p_hat(s'|s, a)`` is ``E_{s_hat' ~
  p_hat} d(s_hat', s')`` (the only coupling with a point mass is the
  product). With a sampled prediction this is a one-sample estimate of it
  per pair; ``gaussian_w1_to_point`` gives it exactly for a Gaussian model.
  Per dimension, i.e. the L1 ground metric divided by the dimension.
* ``marginal_w1``: the Wasserstein-1 distance between the *pooled* predicted
  and true next states of all evaluated pairs, per dimension (for
  equal-size 1-D samples, ``W1 = mean |sort(x) - sort(y)|``). It compares
  marginals only: a model that predicts the right next states for the wrong
  ``(s, a)`` pairs scores 0. It is a lower bound of ``pair_w1`` (pairing the
  rows is one coupling of the two samples).

The held-out data are the transitions gathered since the last model fit:
``recent(buffer, n)`` returns them in the order they were stored.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy.stats import norm

from memrl.replay import buffer as buffer_lib
from memrl.types import Transition

StepFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def recent(state: buffer_lib.BufferState, length: int) -> Transition:
    """The last ``length`` items added, oldest first (with one env, consecutive steps)."""
    idx = (state.cursor - length + jnp.arange(length)) % state.capacity
    return buffer_lib.gather(state, idx)


def wasserstein1(x: jax.Array, y: jax.Array, mask: jax.Array) -> jax.Array:
    """Per-dimension W1 between the rows of ``x`` and ``y`` [N, D] where ``mask``,
    each taken as a sample of a distribution (the ``marginal_w1`` metrics).

    Both samples hold the same rows (``mask`` is shared), so the 1-D W1 is the
    mean absolute difference of their sorted values.
    """
    big = jnp.finfo(x.dtype).max
    m = mask[:, None]
    xs = jnp.sort(jnp.where(m, x, big), axis=0)
    ys = jnp.sort(jnp.where(m, y, big), axis=0)
    n = jnp.sum(mask)
    valid = (jnp.arange(x.shape[0]) < n)[:, None]
    diff = jnp.where(valid, jnp.abs(xs - ys), 0.0)
    return jnp.sum(diff, axis=0) / jnp.maximum(n, 1)


def pair_w1(pred: jax.Array, true: jax.Array, mask: jax.Array) -> jax.Array:
    """``mean_{rows where mask} mean_d |pred - true|``: the per-pair W1 between
    a sampled prediction and a deterministic truth (one sample per pair).

    Args:
      pred, true: ``[N, D]``.
      mask: ``[N]`` bool, the rows to average.
    """
    n = jnp.maximum(jnp.sum(mask), 1)
    return jnp.sum(jnp.where(mask[:, None], jnp.abs(pred - true), 0.0)) / (n * pred.shape[-1])


def gaussian_w1_to_point(mean: jax.Array, std: jax.Array, point: jax.Array) -> jax.Array:
    """Per-dimension W1 between ``N(mean, std^2)`` and a point mass at
    ``point``: ``E|X - point|`` with ``X ~ N(mean, std^2)``, the mean of a
    folded normal. With ``m = mean - point``::

        E|X - point| = std sqrt(2 / pi) exp(-m^2 / (2 std^2)) + m (1 - 2 Phi(-m / std))

    Elementwise over any shape (``std > 0``).
    """
    m = mean - point
    z = m / std
    return std * jnp.sqrt(2.0 / jnp.pi) * jnp.exp(-0.5 * z**2) + m * (1.0 - 2.0 * norm.cdf(-z))


def _errors(
    pred: jax.Array, true: jax.Array, mask: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    n = jnp.maximum(jnp.sum(mask), 1)
    mse = jnp.sum(jnp.where(mask[:, None], (pred - true) ** 2, 0.0)) / (n * pred.shape[-1])
    return mse, pair_w1(pred, true, mask), jnp.mean(wasserstein1(pred, true, mask))


def contiguous(window: Transition) -> jax.Array:
    """``[L - 1]`` bool: transition ``j + 1`` continues transition ``j``."""
    same = jnp.all(window.next_obs[:-1] == window.obs[1:], axis=-1)
    return same & (window.discount[:-1] > 0)


def prediction_error(
    step_fn: StepFn, window: Transition, key: jax.Array, horizon: int
) -> dict[str, jax.Array]:
    """One-step and ``horizon``-step errors of ``step_fn`` on consecutive data.

    Args:
      step_fn: ``(obs [B, O], action [B, A], key) -> next_obs [B, O]``, e.g.
        ``lambda o, a, k: dynamics.step(model, o, a, k)[0]``.
      window: consecutive transitions, leaves ``[L, ...]``.
      key: PRNG key for the model's sampling.
      horizon: ``k >= 1``; windows of ``k`` steps start at ``0 .. L - k``.

    Returns:
      ``model/mse_{1,k}``, ``model/pair_w1_{1,k}`` and
      ``model/marginal_w1_{1,k}`` (see the module docstring).
    """
    length = window.obs.shape[0]
    if not 1 <= horizon <= length:
        raise ValueError(f"horizon must be in [1, {length}], got {horizon}")
    k1, kk = jax.random.split(key)
    one = step_fn(window.obs, window.action, k1)
    mse1, pair1, marginal1 = _errors(one, window.next_obs, jnp.ones((length,), bool))

    starts = length - horizon + 1
    links = jnp.concatenate([contiguous(window), jnp.zeros((1,), bool)])
    # A window [i, i + k) is valid when links i .. i + k - 2 all hold.
    ok = jnp.ones((starts,), bool)
    for j in range(horizon - 1):
        ok = ok & links[j : j + starts]
    obs = window.obs[:starts]
    for j, k in enumerate(jax.random.split(kk, horizon)):
        obs = step_fn(obs, window.action[j : j + starts], k)
    msek, pairk, marginalk = _errors(obs, window.next_obs[horizon - 1 : horizon - 1 + starts], ok)
    return {
        "model/mse_1": mse1,
        "model/pair_w1_1": pair1,
        "model/marginal_w1_1": marginal1,
        "model/mse_k": msek,
        "model/pair_w1_k": pairk,
        "model/marginal_w1_k": marginalk,
    }

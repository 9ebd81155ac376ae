"""The cross-entropy method (CEM) over action sequences, for model-predictive
control (MAAC Sec. 5.4: "we use the cross-entropy method with our stochastic
policy as our initial distributions"; authors' code: 1024 candidates, horizon
10, 8 iterations, 10% elites).

``optimize`` is generic: it maximizes any batched ``objective(candidates [N,
...], key) -> [N]`` over a box. Iteration 0 scores a caller-given population
(MAAC: action sequences sampled by rolling the policy through the model);
each later iteration refits a diagonal Gaussian to the elites of the previous
population and samples a new one from it (clipped to the box).

Example::

    def objective(x, key):            # x: [N, T, A]
        return -jnp.sum((x - 0.3) ** 2, axis=(1, 2))

    init = jax.random.uniform(key, (1024, 10, 2), minval=-1, maxval=1)
    result = cem.optimize(objective, init, key, cem.CEMConfig())
    first_action = result.mean[0]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

Objective = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class CEMConfig:
    """CEM settings (MAAC authors' code).

    Attributes:
      num_iterations: scoring rounds, the initial population included (8).
      elite_fraction: fraction of each population kept to refit (0.1).
      lower, upper: box of every candidate coordinate (actions: [-1, 1]).
      min_std: floor of the refitted standard deviation.
    """

    num_iterations: int = 8
    elite_fraction: float = 0.1
    lower: float = -1.0
    upper: float = 1.0
    min_std: float = 1e-3


class CEMResult(NamedTuple):
    """Outcome of ``optimize``.

    Attributes:
      mean: the last refitted mean (the plan, shape of one candidate).
      std: the last refitted standard deviation.
      best: the best candidate scored in any iteration.
      best_score: its score.
      mean_scores: ``[num_iterations]`` mean elite score per iteration.
    """

    mean: jax.Array
    std: jax.Array
    best: jax.Array
    best_score: jax.Array
    mean_scores: jax.Array


def num_elites(num_candidates: int, elite_fraction: float) -> int:
    """``max(1, round(num_candidates * elite_fraction))``."""
    return max(1, int(round(num_candidates * elite_fraction)))


def fit_elites(candidates: jax.Array, scores: jax.Array, k: int, min_std: float):
    """Mean, std (floored), best candidate, best score and mean score of the top ``k``."""
    chex.assert_rank(scores, 1)
    top_scores, idx = jax.lax.top_k(scores, k)
    elites = candidates[idx]
    mean = jnp.mean(elites, axis=0)
    std = jnp.maximum(jnp.std(elites, axis=0), min_std)
    return mean, std, elites[0], top_scores[0], jnp.mean(top_scores)


def optimize(
    objective: Objective, initial: jax.Array, key: jax.Array, config: CEMConfig
) -> CEMResult:
    """Maximizes ``objective`` by CEM, starting from the population ``initial``.

    Args:
      objective: ``(candidates [N, ...], key) -> scores [N]`` (higher is better).
      initial: ``[N, ...]`` first population (e.g. policy samples); ``N`` is
        the population size of every iteration.
      key: PRNG key.
      config: a ``CEMConfig``.

    Returns:
      A ``CEMResult``.
    """
    n = initial.shape[0]
    k = num_elites(n, config.elite_fraction)
    k_score, k_loop = jax.random.split(key)
    initial = jnp.clip(initial, config.lower, config.upper)
    mean, std, best, best_score, first = fit_elites(
        initial, objective(initial, k_score), k, config.min_std
    )

    def iteration(carry, k_it):
        mean, std, best, best_score = carry
        k_sample, k_obj = jax.random.split(k_it)
        eps = jax.random.normal(k_sample, (n,) + mean.shape, mean.dtype)
        candidates = jnp.clip(mean + std * eps, config.lower, config.upper)
        scores = objective(candidates, k_obj)
        mean, std, top, top_score, elite_mean = fit_elites(candidates, scores, k, config.min_std)
        better = top_score > best_score
        best = jnp.where(better, top, best)
        best_score = jnp.where(better, top_score, best_score)
        return (mean, std, best, best_score), elite_mean

    keys = jax.random.split(k_loop, max(config.num_iterations - 1, 1))[: config.num_iterations - 1]
    (mean, std, best, best_score), later = jax.lax.scan(
        iteration, (mean, std, best, best_score), keys
    )
    return CEMResult(mean, std, best, best_score, jnp.concatenate([first[None], later]))


def gaussian_population(
    key: jax.Array, mean: jax.Array, std: jax.Array, num_candidates: int, config: CEMConfig
) -> jax.Array:
    """``[num_candidates, ...]`` samples of ``N(mean, std^2)`` clipped to the box
    (an initial population when no policy is at hand)."""
    eps = jax.random.normal(key, (num_candidates,) + mean.shape, mean.dtype)
    return jnp.clip(mean + std * eps, config.lower, config.upper)

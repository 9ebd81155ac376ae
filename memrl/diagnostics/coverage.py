"""State coverage: the entropy of the histogram of visited true states on a
fixed 2-D grid (issue 12, item 5).

For an env with a grid the runner keeps one cumulative histogram ``h`` per
seed (``RunnerState.coverage``, ``bins`` int32 counts) of every training
env's visited states since the start of the run, and logs

    coverage/entropy = H(h) = -sum_{c: h_c > 0} p_c log p_c,  p_c = h_c / sum_c' h_c'
    coverage/cells   = #{c : h_c > 0}

(natural log; ``0 <= H <= log(cells) <= log(bins_x * bins_y)``). The logged
value at ``N`` frames covers the first ``N`` frames of the run. ``cells``
never decreases along a run; ``H`` can (new visits to already frequent cells).

A visited state is the true observation each training env step reached,
before the auto-reset (``info['terminal_obs']``: terminal states count, reset
states do not), one per agent step (not per repeated frame); evaluation
episodes do not count. With ``--obs=pixels`` the true observation is
``info['state']``, which on a step that ends an episode already holds the next
episode's start state (``memrl.training.loop.visited_states``).

Grids (``GRIDS``), 32 x 32 bins by default:

* ``pendulum``: angle ``th = atan2(sin th, cos th)`` in ``[-pi, pi]`` (from the
  observation ``(cos th, sin th, thdot)``) x angular velocity ``thdot`` in
  ``[-8, 8]``;
* ``mountain_car``: position in ``[-1.2, 0.6]`` x velocity in
  ``[-0.07, 0.07]`` (the observation itself).

Binning: coordinate ``x`` on an axis ``[low, high]`` with ``n`` bins falls in
bin ``i = clip(floor((x - low) * n / (high - low)), 0, n - 1)``: bins are
``[low + i w, low + (i + 1) w)`` with ``w = (high - low) / n``, the last one
also holding ``high`` (as ``np.histogram2d``), and values outside the range
count in the edge bins. Other envs have no grid (``grid(name)`` is None) and
no coverage columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

DEFAULT_BINS = (32, 32)


def pendulum_coordinates(obs: jax.Array) -> jax.Array:
    """``(cos th, sin th, thdot) [..., 3] -> (atan2(sin th, cos th), thdot) [..., 2]``.

    The angle is wrapped into ``[-pi, pi]`` whatever the unwrapped ``th`` was.
    """
    angle = jnp.arctan2(obs[..., 1], obs[..., 0])
    return jnp.stack([angle, obs[..., 2]], axis=-1)


def mountain_car_coordinates(obs: jax.Array) -> jax.Array:
    """``(position, velocity) [..., 2]``: the observation is the coordinates."""
    return obs[..., :2]


class Grid(NamedTuple):
    """A fixed 2-D grid over the true state of an env.

    Attributes:
      low: lower bound of each coordinate.
      high: upper bound of each coordinate.
      coordinates: ``obs [..., D] -> [..., 2]``, the true observation vector
        mapped to the gridded coordinates.
      bins: number of bins along each coordinate.
    """

    low: tuple[float, float]
    high: tuple[float, float]
    coordinates: Callable[[jax.Array], jax.Array]
    bins: tuple[int, int] = DEFAULT_BINS


GRIDS: dict[str, Grid] = {
    "pendulum": Grid((-math.pi, -8.0), (math.pi, 8.0), pendulum_coordinates),
    "mountain_car": Grid((-1.2, -0.07), (0.6, 0.07), mountain_car_coordinates),
}


def grid(env_name: str) -> Grid | None:
    """The grid of ``env_name``, or None for envs without one (no coverage)."""
    return GRIDS.get(env_name)


def coordinates(env_name: str, obs: jax.Array) -> jax.Array:
    """``obs [..., D] -> [..., 2]`` gridded coordinates of ``env_name``'s true
    observations (see the module docstring).

    Raises:
      KeyError: ``env_name`` has no grid.
    """
    return GRIDS[env_name].coordinates(obs)


def init(spec: Grid) -> jax.Array:
    """An empty histogram: int32 zeros of shape ``spec.bins``."""
    return jnp.zeros(spec.bins, jnp.int32)


def bin_indices(spec: Grid, coords: jax.Array) -> jax.Array:
    """``coords [..., 2] -> int32 [..., 2]`` bin indices,
    ``i_k = clip(floor((x_k - low_k) * n_k / (high_k - low_k)), 0, n_k - 1)``."""
    low = jnp.asarray(spec.low, jnp.float32)
    high = jnp.asarray(spec.high, jnp.float32)
    n = jnp.asarray(spec.bins, jnp.float32)
    scaled = (coords.astype(jnp.float32) - low) * (n / (high - low))
    # Clip in float before the cast: huge values must not overflow int32.
    return jnp.clip(jnp.floor(scaled), 0.0, n - 1.0).astype(jnp.int32)


def add(histogram: jax.Array, coords: jax.Array, spec: Grid) -> jax.Array:
    """``histogram`` plus one count per point of ``coords [..., 2]``.

    ``h'_c = h_c + #{points j : bin(coords_j) = c}``: a scatter-add over every
    leading axis (e.g. the env axis ``[num_envs, 2]``); points in the same cell
    all count.

    Args:
      histogram: int ``spec.bins`` counts.
      coords: ``[..., 2]`` gridded coordinates (``coordinates(env, obs)``).
      spec: the grid the histogram is over.
    """
    idx = bin_indices(spec, coords).reshape(-1, 2)
    one = jnp.ones((idx.shape[0],), histogram.dtype)
    return histogram.at[idx[:, 0], idx[:, 1]].add(one)


def entropy(histogram: jax.Array) -> jax.Array:
    """``H = -sum_{c: h_c > 0} p_c log p_c`` with ``p_c = h_c / sum h`` (nats,
    float32 scalar); 0 for an empty histogram."""
    counts = histogram.astype(jnp.float32)
    total = jnp.sum(counts)
    p = counts / jnp.maximum(total, 1.0)
    positive = p > 0
    terms = jnp.where(positive, p * jnp.log(jnp.where(positive, p, 1.0)), 0.0)
    return -jnp.sum(terms)


def cells(histogram: jax.Array) -> jax.Array:
    """Number of visited cells ``#{c : h_c > 0}`` (int32 scalar)."""
    return jnp.sum(histogram > 0).astype(jnp.int32)


def summary(histogram: jax.Array) -> dict[str, jax.Array]:
    """The logged columns: ``{'coverage/entropy': H, 'coverage/cells': cells}``."""
    return {"coverage/entropy": entropy(histogram), "coverage/cells": cells(histogram)}

"""Known termination functions ``done(next_obs) -> bool`` for model rollouts.

MBPO (Janner et al. 2019) and MAAC (Clavera et al. 2020) do not learn when an
episode ends: they use the task's known "unhealthy" rule on the predicted next
observation. These mirror the rules of brax's MJX tasks with their default
arguments (``terminate_when_unhealthy=True``, positions excluded from the
observation so ``obs[0]`` is the torso height ``z``):

* hopper: ``z > 0.7``, ``|angle| < 0.2`` (``obs[1]``) and ``|obs[1:]| < 100``.
* walker2d: ``0.8 < z < 2.0`` and ``-1 < angle < 1``.
* ant: ``0.2 <= z <= 1.0``.
* humanoid: ``1.0 <= z <= 2.0``.

Non-finite predictions also terminate. Tasks without a rule never terminate.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp


def _finite(obs: jax.Array) -> jax.Array:
    return jnp.all(jnp.isfinite(obs), axis=-1)


def hopper(next_obs: jax.Array) -> jax.Array:
    z, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = (
        (z > 0.7)
        & (jnp.abs(angle) < 0.2)
        & jnp.all(jnp.abs(next_obs[..., 1:]) < 100.0, axis=-1)
        & _finite(next_obs)
    )
    return ~healthy


def walker2d(next_obs: jax.Array) -> jax.Array:
    z, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0) & _finite(next_obs)
    return ~healthy


def ant(next_obs: jax.Array) -> jax.Array:
    z = next_obs[..., 0]
    return ~((z >= 0.2) & (z <= 1.0) & _finite(next_obs))


def humanoid(next_obs: jax.Array) -> jax.Array:
    z = next_obs[..., 0]
    return ~((z >= 1.0) & (z <= 2.0) & _finite(next_obs))


def never(next_obs: jax.Array) -> jax.Array:
    """Tasks that only end at the time limit."""
    return jnp.zeros(next_obs.shape[:-1], bool)


RULES: dict[str, Callable[[jax.Array], jax.Array]] = {
    "hopper": hopper,
    "walker2d": walker2d,
    "ant": ant,
    "humanoid": humanoid,
}


def for_env(name: str) -> Callable[[jax.Array], jax.Array]:
    """The termination function of ``name`` (``never`` where the task has none)."""
    return RULES.get(name, never)

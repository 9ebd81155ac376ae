"""Environment registry: ``make(name)`` and ``spec(name)``.

Contract: ``make(name, **overrides)`` returns a brax ``Env`` (unbatched
``reset(key) -> State``, ``step(state, action) -> State``) whose actions lie in
``[-1, 1]^action_size`` for EVERY name:

* brax MJX tasks (``brax.envs.get_environment(name, backend='mjx', **overrides)``)
  take ``[-1, 1]`` actions natively; the tasks whose actuators have other
  ranges (humanoid ``[-0.4, 0.4]``, inverted_pendulum ``[-3, 3]``, pusher
  ``[-2, 2]``) rescale inside brax's own ``step``.
* ``pendulum`` (gymnasium Pendulum-v1) is wrapped with ``RescaleAction`` onto
  ``[-max_torque, max_torque] = [-2, 2]``; ``pendulum.Pendulum`` itself takes
  torques.
* ``double_integrator`` (MAAC Sec. 5.2) uses its accelerations unscaled and
  unclipped (nominal range ``[-1, 1]``, as in the authors' code).
* ``mountain_car`` (gymnasium MountainCarContinuous-v0) takes its force in
  ``[-1, 1]`` natively.
* ``dmc_<domain>_<task>`` (``DMC_NAMES``): the DeepMind Control Suite through
  MuJoCo Playground's MJX ports (``memrl.envs.dmc``; optional extra
  ``memrl[dmc]``); every actuator's range is ``[-1, 1]``.

Time limits and batching come from ``wrap_for_training`` / ``wrap_for_eval``
with ``spec(name).episode_length``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
from brax import envs as brax_envs
from brax.envs.base import Env

from memrl.envs import dmc, double_integrator, mountain_car, normalization, pendulum, pixels
from memrl.envs.wrappers import (
    ActionRepeat,
    AddBatchAxis,
    AutoResetWrapper,
    RescaleAction,
    agent_steps,
    wrap_for_eval,
    wrap_for_training,
)

BRAX_NAMES = (
    "ant",
    "halfcheetah",
    "hopper",
    "walker2d",
    "humanoid",
    "reacher",
    "inverted_pendulum",
    "inverted_double_pendulum",
    "pusher",
)
# DeepMind Control Suite tasks (playground is imported only when one is built).
DMC_NAMES = tuple(f"dmc_{task}" for task in dmc.TASKS)
NAMES = BRAX_NAMES + ("pendulum", "double_integrator", "mountain_car") + DMC_NAMES

# Steps per episode: brax's default of 1000 for its tasks; Pendulum-v1's
# TimeLimit of 200; the authors' max_path_length of 200 for the double integrator;
# MountainCarContinuous-v0's TimeLimit of 999.
_EPISODE_LENGTH = {
    **{name: 1000 for name in BRAX_NAMES},
    "pendulum": 200,
    "double_integrator": double_integrator.EPISODE_LENGTH,
    "mountain_car": 999,
    **{name: dmc.EPISODE_LENGTH for name in DMC_NAMES},
}


class EnvSpec(NamedTuple):
    """Static description of an environment.

    Attributes:
      name: registry name.
      observation_size: length of the (flat) observation vector.
      action_size: length of the action vector; actions lie in ``[-1, 1]``.
      episode_length: time limit in steps to pass to the wrappers.
      observation_shape: shape of one observation: ``(observation_size,)``,
        or ``(size, size, 3)`` for images (``pixel_spec``).
    """

    name: str
    observation_size: int
    action_size: int
    episode_length: int
    observation_shape: tuple[int, ...] = ()


def pixel_spec(spec: EnvSpec, size: int) -> EnvSpec:
    """``spec`` with ``size x size`` RGB image observations (``memrl.envs.pixels``)."""
    return spec._replace(observation_size=size * size * 3, observation_shape=(size, size, 3))


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or name not in NAMES:
        raise ValueError(f"unknown env {name!r}; valid envs: {', '.join(NAMES)}")


def _build(name: str, overrides: dict[str, Any]) -> Env:
    try:
        if name == "pendulum":
            env = pendulum.Pendulum(**overrides)
            bound = env.params.max_torque
            return RescaleAction(env, -bound, bound)
        if name == "double_integrator":
            return double_integrator.DoubleIntegrator(**overrides)
        if name == "mountain_car":
            return mountain_car.MountainCar(**overrides)
        if name in DMC_NAMES:
            return dmc.DMCEnv(name[len("dmc_") :], **overrides)
        kwargs = {"backend": "mjx", **overrides}
        return brax_envs.get_environment(name, **kwargs)
    except (TypeError, ValueError) as e:
        message = " ".join(str(e).split())
        raise ValueError(f"bad overrides {overrides!r} for env {name!r}: {message}") from None


@functools.lru_cache(maxsize=64)
def _build_cached(name: str, items: tuple[tuple[str, Any], ...]) -> Env:
    return _build(name, dict(items))


def make(name: str, **overrides: Any) -> Env:
    """Builds an environment by name (actions in ``[-1, 1]``, see module docstring).

    Envs are stateless, so one object per ``(name, overrides)`` is cached and
    MJX models are not rebuilt.

    Args:
      name: one of ``NAMES``.
      **overrides: constructor arguments (brax task kwargs such as
        ``ctrl_cost_weight``, ``Pendulum`` / ``DoubleIntegrator`` arguments).

    Returns:
      An unbatched brax ``Env``.

    Raises:
      ValueError: unknown name (the message lists the valid ones) or overrides
        the env's constructor rejects.
    """
    _check_name(name)
    items = tuple(sorted(overrides.items()))
    try:
        hash(items)
    except TypeError:
        return _build(name, overrides)
    return _build_cached(name, items)


@functools.lru_cache(maxsize=64)
def _spec_cached(name: str, items: tuple[tuple[str, Any], ...]) -> EnvSpec:
    env = make(name, **dict(items))
    # eval_shape traces reset without compiling it (brax's observation_size
    # would run an un-jitted MJX reset).
    obs = jax.eval_shape(env.reset, jax.random.PRNGKey(0)).obs
    return EnvSpec(
        name=name,
        observation_size=int(obs.shape[-1]),
        action_size=int(env.action_size),
        episode_length=_EPISODE_LENGTH[name],
        observation_shape=tuple(int(d) for d in obs.shape),
    )


def spec(name: str, **overrides: Any) -> EnvSpec:
    """Sizes and episode length of ``make(name, **overrides)``.

    Raises:
      ValueError: as ``make``.
    """
    _check_name(name)
    items = tuple(sorted(overrides.items()))
    try:
        hash(items)
    except TypeError:
        return _spec_cached.__wrapped__(name, items)
    return _spec_cached(name, items)


__all__ = [
    "ActionRepeat",
    "AddBatchAxis",
    "AutoResetWrapper",
    "BRAX_NAMES",
    "DMC_NAMES",
    "agent_steps",
    "dmc",
    "EnvSpec",
    "NAMES",
    "RescaleAction",
    "double_integrator",
    "make",
    "mountain_car",
    "normalization",
    "pendulum",
    "pixels",
    "pixel_spec",
    "spec",
    "wrap_for_eval",
    "wrap_for_training",
]

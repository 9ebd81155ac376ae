"""Image observations rendered inside the jitted step, for every registered env.

``Pixels(env, render)`` replaces ``state.obs`` by ``render(state)``, a uint8
``[size, size, 3]`` image, and keeps the true observation in
``state.info['state']`` (for diagnostics; agents never read it). It is pure
and batch-free like the env it wraps, so it jits, vmaps over environments
and seeds, and runs inside the runner's ``lax.scan``: no host round trip.

``renderer(name, env, size)`` picks the drawing for an environment:

* classic control (pendulum, double_integrator, mountain_car): the
  antialiased analytic drawings of ``memrl.render.classic``, from the true
  observation;
* MJX environments (the brax tasks, the ``dmc_*`` tasks): the ray caster of
  ``memrl.render.raycast`` on ``state.pipeline_state`` through the model's
  camera 0 (the brax tasks' ``track`` camera, which follows the torso; the
  control suite's first camera, as Dreamer's ``camera_id=0``).

The wrapper sits above ``ActionRepeat`` (``wrap_for_training(...,
render=...)``), so an agent step renders once however many frames it
repeats.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from brax.envs.base import Env, State, Wrapper

from memrl.render import classic, raycast

OBS_TYPES = ("state", "pixels")
Render = Callable[[State], jax.Array]


class Pixels(Wrapper):
    """``state.obs`` = ``render(state)``; the true observation in ``info['state']``."""

    def __init__(self, env: Env, render: Render, shape: tuple[int, int, int]):
        super().__init__(env)
        self._render = render
        self._shape = tuple(shape)

    @property
    def observation_size(self) -> tuple[int, int, int]:
        return self._shape

    def _observe(self, state: State) -> State:
        info = dict(state.info, state=state.obs)
        return state.replace(obs=self._render(state), info=info)

    def reset(self, rng: jax.Array) -> State:
        return self._observe(self.env.reset(rng))

    def step(self, state: State, action: jax.Array) -> State:
        inner = state.replace(obs=state.info["state"])
        return self._observe(self.env.step(inner, action))


def mj_model(env: Env) -> Any:
    """The MuJoCo model behind an MJX env (brax's ``sys.mj_model`` or ``mj_model``), else None."""
    while True:
        model = getattr(env, "mj_model", None)
        if model is None and hasattr(env, "sys"):
            model = getattr(env.sys, "mj_model", None)
        if model is not None or not hasattr(env, "env"):
            return model
        env = env.env


def renderer(name: str, env: Env, size: int = 64, camera: int | str = 0) -> Render:
    """``render(state) -> uint8 [size, size, 3]`` for env ``name`` (see the module docstring).

    Raises:
      ValueError: an env with neither an analytic drawing nor an MJX scene.
    """
    if size < 1:
        raise ValueError(f"image size must be positive, got {size}")
    if name in classic.DRAWERS:
        draw = classic.DRAWERS[name]
        return lambda state: draw(state.obs, size)
    model = mj_model(env)
    if model is None:
        raise ValueError(f"env {name!r} has no renderer for --obs=pixels")
    cast = raycast.make_raycaster(model, size, size, camera)
    return lambda state: cast(state.pipeline_state)


def wrapper(name: str, size: int = 64, env: Env | None = None) -> Callable[[Env], Env]:
    """``env -> Pixels(env, render)``: what the runner passes as ``render``.

    With ``env`` given, the renderer is built once from it now (raising
    ValueError for an env without one) and shared by every env wrapped;
    otherwise it is built from each wrapped env.
    """
    shared = None if env is None else renderer(name, env, size)

    def wrap(inner: Env) -> Env:
        draw = shared if shared is not None else renderer(name, inner, size)
        return Pixels(inner, draw, (size, size, 3))

    return wrap

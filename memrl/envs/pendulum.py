"""Gymnasium's Pendulum-v1 as a pure, differentiable JAX environment.

Reference: gymnasium ``gymnasium/envs/classic_control/pendulum.py`` (Pendulum-v1,
gymnasium 1.x). The swing-up task: a pendulum of mass ``m`` and length ``l``
starts at a random angle and must be swung up and held upright (``th = 0``)
with a bounded torque.

Dynamics (semi-implicit Euler, one step of ``dt`` seconds), for torque ``u``::

    u       = clip(u, -max_torque, max_torque)
    thdot'  = clip(thdot + (3 g / (2 l) sin(th) + 3 / (m l^2) u) dt,
                   -max_speed, max_speed)
    th'     = th + thdot' dt
    reward  = -(angle_normalize(th)^2 + 0.1 thdot^2 + 0.001 u^2)

The reward is computed on the state *before* the step, exactly as gymnasium
does. The observation is ``[cos th, sin th, thdot]``; the angle itself is never
wrapped in the state (gymnasium keeps it unwrapped too). Episodes never
terminate; gymnasium's 200-step time limit is applied by ``EpisodeWrapper``
(see ``memrl.envs.spec``).

Gradients: the clips are ``jnp.clip``, so gradients flow through them where they
are inactive and are exactly zero with respect to a clipped quantity (torque
beyond ``max_torque``, angular velocity beyond ``max_speed``). ``angle_normalize``
uses a modulo, whose gradient is one everywhere except at its jumps.

Units: ``Pendulum.step`` takes torques in gymnasium units, ``[-2, 2]``.
``memrl.envs.make('pendulum')`` wraps it with ``RescaleAction`` so that agents
act in ``[-1, 1]`` like for every other env.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State


class PendulumParams(NamedTuple):
    """Physical constants of Pendulum-v1 (gymnasium defaults).

    Attributes:
      g: gravitational acceleration (gymnasium's ``g`` argument, default 10.0).
      mass: pendulum mass ``m``.
      length: pendulum length ``l``.
      dt: integration step in seconds.
      max_speed: bound on the angular velocity.
      max_torque: bound on the applied torque.
    """

    g: float = 10.0
    mass: float = 1.0
    length: float = 1.0
    dt: float = 0.05
    max_speed: float = 8.0
    max_torque: float = 2.0


DEFAULT_PARAMS = PendulumParams()

# Reset bounds of gymnasium's Pendulum-v1 (DEFAULT_X, DEFAULT_Y there).
INIT_MAX_ANGLE = jnp.pi
INIT_MAX_SPEED = 1.0


def angle_normalize(th: jax.Array) -> jax.Array:
    """Wraps angles to ``[-pi, pi)``, as gymnasium's ``angle_normalize``."""
    return jnp.mod(th + jnp.pi, 2.0 * jnp.pi) - jnp.pi


def dynamics(x: jax.Array, u: jax.Array, params: PendulumParams = DEFAULT_PARAMS) -> jax.Array:
    """One Pendulum-v1 step of the physical state.

    Args:
      x: ``[..., 2]`` state ``[th, thdot]``.
      u: ``[..., 1]`` torque (gymnasium units), clipped to ``[-max_torque, max_torque]``.
      params: physical constants.

    Returns:
      ``[..., 2]`` next state ``[th', thdot']``, with ``thdot'`` clipped to
      ``[-max_speed, max_speed]`` (zero gradient where clipped).
    """
    p = params
    th, thdot = x[..., 0], x[..., 1]
    torque = jnp.clip(u[..., 0], -p.max_torque, p.max_torque)
    accel = 3.0 * p.g / (2.0 * p.length) * jnp.sin(th) + 3.0 / (p.mass * p.length**2) * torque
    new_thdot = jnp.clip(thdot + accel * p.dt, -p.max_speed, p.max_speed)
    new_th = th + new_thdot * p.dt
    return jnp.stack([new_th, new_thdot], axis=-1)


def reward(x: jax.Array, u: jax.Array, params: PendulumParams = DEFAULT_PARAMS) -> jax.Array:
    """Pendulum-v1 reward of taking torque ``u`` in state ``x`` (pre-step state).

    Args:
      x: ``[..., 2]`` state ``[th, thdot]``.
      u: ``[..., 1]`` torque (gymnasium units), clipped like in ``dynamics``.
      params: physical constants (only ``max_torque`` is used).

    Returns:
      ``[...]`` reward ``-(angle_normalize(th)^2 + 0.1 thdot^2 + 0.001 u^2)``.
    """
    th, thdot = x[..., 0], x[..., 1]
    torque = jnp.clip(u[..., 0], -params.max_torque, params.max_torque)
    return -(angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * torque**2)


def observation(x: jax.Array) -> jax.Array:
    """Observation ``[..., 3]`` = ``[cos th, sin th, thdot]`` of state ``x`` ``[..., 2]``."""
    th, thdot = x[..., 0], x[..., 1]
    return jnp.stack([jnp.cos(th), jnp.sin(th), thdot], axis=-1)


def observation_step(
    obs: jax.Array, action: jax.Array, params: PendulumParams = DEFAULT_PARAMS
) -> tuple[jax.Array, jax.Array]:
    """The environment's own step on observations, differentiable, as an agent
    sees it through ``memrl.envs.make('pendulum')`` (MEMB's true-model
    ablation, App. B.3 Fig. 4, uses it in place of the learned model).

    An observation determines the state: ``th = atan2(sin th, cos th)``
    (equal to the unwrapped angle modulo 2 pi, which is all ``dynamics``,
    ``reward`` and ``observation`` depend on). The action is in ``[-1, 1]``
    and becomes the torque ``max_torque * action`` (``RescaleAction``).

    Args:
      obs: ``[..., 3]`` observations ``[cos th, sin th, thdot]``.
      action: ``[..., 1]`` actions in ``[-1, 1]``.
      params: physical constants.

    Returns:
      ``([..., 3]`` next observation, ``[...]`` reward of the pre-step state``)``.
    """
    x = jnp.stack([jnp.arctan2(obs[..., 1], obs[..., 0]), obs[..., 2]], axis=-1)
    u = params.max_torque * action
    return observation(dynamics(x, u, params)), reward(x, u, params)


class Pendulum(Env):
    """Gymnasium Pendulum-v1 as a brax ``Env`` (pure JAX, differentiable).

    ``state.pipeline_state`` holds the physical state ``[th, thdot]`` (shape
    ``[2]``); ``done`` is always 0. Actions are torques in ``[-max_torque,
    max_torque]`` (gymnasium units); values outside are clipped as in gymnasium.

    Args:
      g: gravitational acceleration (gymnasium's only constructor argument).
      mass, length, dt, max_speed, max_torque: the other constants, fixed in
        gymnasium; exposed for experiments, defaults equal gymnasium's.
    """

    def __init__(
        self,
        g: float = 10.0,
        mass: float = 1.0,
        length: float = 1.0,
        dt: float = 0.05,
        max_speed: float = 8.0,
        max_torque: float = 2.0,
    ):
        values = dict(
            g=g, mass=mass, length=length, dt=dt, max_speed=max_speed, max_torque=max_torque
        )
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"pendulum: {key} must be a number, got {value!r}")
            if key != "g" and value <= 0:
                raise ValueError(f"pendulum: {key} must be positive, got {value!r}")
        self.params = PendulumParams(**{k: float(v) for k, v in values.items()})

    def reset(self, rng: jax.Array) -> State:
        """Samples ``th ~ U[-pi, pi]``, ``thdot ~ U[-1, 1]`` (gymnasium's reset)."""
        high = jnp.array([INIT_MAX_ANGLE, INIT_MAX_SPEED], dtype=jnp.float32)
        x = jax.random.uniform(rng, (2,), minval=-high, maxval=high)
        zero = jnp.zeros((), jnp.float32)
        return State(pipeline_state=x, obs=observation(x), reward=zero, done=zero)

    def step(self, state: State, action: jax.Array) -> State:
        """Applies torque ``action`` (shape ``[1]``, gymnasium units)."""
        x = state.pipeline_state
        r = reward(x, action, self.params)
        x_next = dynamics(x, action, self.params)
        return state.replace(
            pipeline_state=x_next,
            obs=observation(x_next),
            reward=r.astype(jnp.float32),
            done=jnp.zeros((), jnp.float32),
        )

    @property
    def observation_size(self) -> int:
        return 3

    @property
    def action_size(self) -> int:
        return 1

    @property
    def backend(self) -> str:
        return "jax"

    @property
    def dt(self) -> float:
        return self.params.dt

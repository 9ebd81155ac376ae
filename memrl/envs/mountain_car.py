"""Gymnasium's MountainCarContinuous-v0 as a pure JAX environment.

Reference: gymnasium ``gymnasium/envs/classic_control/continuous_mountain_car.py``
(``Continuous_MountainCarEnv``, gymnasium 1.x). An under-powered car at the
bottom of the valley ``height(x) = sin(3 x)`` must rock back and forth to reach
the flag on the right hill at ``x = 0.45``.

Dynamics (one step), for action ``a`` and state ``[x, v]``::

    force = min(max(a, -1), 1)
    v'    = clip(v + power force - 0.0025 cos(3 x), -max_speed, max_speed)
    x'    = clip(x + v', min_position, max_position)
    v'    = 0            if x' == min_position and v' < 0   (inelastic left wall)
    done  = x' >= goal_position and v' >= goal_velocity
    reward = 100 done - 0.1 a^2

with ``power = 0.0015``, ``max_speed = 0.07``, ``[min_position, max_position] =
[-1.2, 0.6]``, ``goal_position = 0.45``, ``goal_velocity = 0``. As in
gymnasium, the action cost uses the raw action ``a``, not the clipped force,
and the goal test uses the post-step state. The right boundary clips the
position but keeps the velocity (only the left wall is inelastic; the goal
ends the episode before that matters).

Start state: ``x ~ U[-0.6, -0.4]``, ``v = 0``. The observation is ``[x, v]``.
Episodes terminate (``done = 1``) at the goal; gymnasium's ``TimeLimit`` of
999 steps is applied by ``EpisodeWrapper`` (see ``memrl.envs.spec``).

Gradients: the clips and the wall are ``jnp.clip`` / ``jnp.where``, so gradients
flow where they are inactive and are zero through a clipped quantity. The
reward is discontinuous at the goal (its gradient ignores the +100 step).

Units: actions are gymnasium's, which already lie in ``[-1, 1]``;
``memrl.envs.make('mountain_car')`` returns this env unwrapped.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State


class MountainCarParams(NamedTuple):
    """Constants of MountainCarContinuous-v0 (gymnasium defaults).

    Attributes:
      power: force multiplier on the clipped action.
      gravity: coefficient of ``-cos(3 x)`` in the velocity update.
      min_position: left wall (inelastic: the velocity is zeroed there).
      max_position: right bound of the position.
      max_speed: bound on the absolute velocity.
      goal_position: the episode ends at ``x >= goal_position`` ...
      goal_velocity: ... with ``v >= goal_velocity`` (gymnasium's only
        constructor argument besides the render mode).
      min_action: lower bound of the force.
      max_action: upper bound of the force.
    """

    power: float = 0.0015
    gravity: float = 0.0025
    min_position: float = -1.2
    max_position: float = 0.6
    max_speed: float = 0.07
    goal_position: float = 0.45
    goal_velocity: float = 0.0
    min_action: float = -1.0
    max_action: float = 1.0


DEFAULT_PARAMS = MountainCarParams()

# Reset bounds of gymnasium's reset (its default ``low``, ``high``).
INIT_LOW = -0.6
INIT_HIGH = -0.4
GOAL_REWARD = 100.0
ACTION_COST = 0.1


def dynamics(x: jax.Array, a: jax.Array, params: MountainCarParams = DEFAULT_PARAMS) -> jax.Array:
    """One MountainCarContinuous-v0 step of the state.

    Args:
      x: ``[..., 2]`` state ``[position, velocity]``.
      a: ``[..., 1]`` action, clipped to ``[min_action, max_action]``.
      params: constants.

    Returns:
      ``[..., 2]`` next state ``[position', velocity']`` (see module docstring).
    """
    p = params
    position, velocity = x[..., 0], x[..., 1]
    force = jnp.clip(a[..., 0], p.min_action, p.max_action)
    velocity = velocity + force * p.power - p.gravity * jnp.cos(3.0 * position)
    velocity = jnp.clip(velocity, -p.max_speed, p.max_speed)
    position = jnp.clip(position + velocity, p.min_position, p.max_position)
    at_wall = (position == p.min_position) & (velocity < 0)
    velocity = jnp.where(at_wall, jnp.zeros_like(velocity), velocity)
    return jnp.stack([position, velocity], axis=-1)


def terminated(x_next: jax.Array, params: MountainCarParams = DEFAULT_PARAMS) -> jax.Array:
    """``[...]`` bool: the post-step state ``x_next`` ``[..., 2]`` is at the goal."""
    return (x_next[..., 0] >= params.goal_position) & (x_next[..., 1] >= params.goal_velocity)


def reward(x: jax.Array, a: jax.Array, params: MountainCarParams = DEFAULT_PARAMS) -> jax.Array:
    """Reward of taking action ``a`` in state ``x`` (pre-step state).

    Args:
      x: ``[..., 2]`` state ``[position, velocity]`` before the step.
      a: ``[..., 1]`` raw action (the cost is not clipped, as in gymnasium).
      params: constants.

    Returns:
      ``[...]`` reward ``100 [goal reached by dynamics(x, a)] - 0.1 a^2``.
    """
    done = terminated(dynamics(x, a, params), params)
    return GOAL_REWARD * done.astype(x.dtype) - ACTION_COST * a[..., 0] ** 2


class MountainCar(Env):
    """Gymnasium MountainCarContinuous-v0 as a brax ``Env`` (pure JAX).

    ``state.pipeline_state`` and ``state.obs`` both hold ``[position,
    velocity]`` (shape ``[2]``); ``done`` is 1 on the step that reaches the goal.
    Actions are gymnasium's, in ``[-1, 1]``; values outside are clipped in the
    dynamics (not in the action cost), as in gymnasium.

    Args:
      goal_velocity: gymnasium's constructor argument (default 0).
      power, max_speed, goal_position: the other constants, fixed in
        gymnasium; exposed for experiments, defaults equal gymnasium's.
    """

    def __init__(
        self,
        goal_velocity: float = 0.0,
        power: float = 0.0015,
        max_speed: float = 0.07,
        goal_position: float = 0.45,
    ):
        values = dict(
            goal_velocity=goal_velocity,
            power=power,
            max_speed=max_speed,
            goal_position=goal_position,
        )
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"mountain_car: {key} must be a number, got {value!r}")
        if power <= 0 or max_speed <= 0:
            raise ValueError(
                f"mountain_car: power and max_speed must be positive, got {power!r}, {max_speed!r}"
            )
        if not DEFAULT_PARAMS.min_position < goal_position <= DEFAULT_PARAMS.max_position:
            raise ValueError(
                f"mountain_car: goal_position must lie in (-1.2, 0.6], got {goal_position!r}"
            )
        self.params = MountainCarParams(**{k: float(v) for k, v in values.items()})

    def reset(self, rng: jax.Array) -> State:
        """Samples ``position ~ U[-0.6, -0.4]``, ``velocity = 0`` (gymnasium's reset)."""
        position = jax.random.uniform(rng, (), minval=INIT_LOW, maxval=INIT_HIGH)
        x = jnp.stack([position, jnp.zeros_like(position)])
        zero = jnp.zeros((), jnp.float32)
        return State(pipeline_state=x, obs=x, reward=zero, done=zero)

    def step(self, state: State, action: jax.Array) -> State:
        """Applies force ``action`` (shape ``[1]``, in ``[-1, 1]``)."""
        x = state.pipeline_state
        x_next = dynamics(x, action, self.params)
        done = terminated(x_next, self.params).astype(jnp.float32)
        r = GOAL_REWARD * done - ACTION_COST * action[0] ** 2
        return state.replace(
            pipeline_state=x_next,
            obs=x_next,
            reward=r.astype(jnp.float32),
            done=done,
        )

    @property
    def observation_size(self) -> int:
        return 2

    @property
    def action_size(self) -> int:
        return 1

    @property
    def backend(self) -> str:
        return "jax"

    @property
    def dt(self) -> float:
        # gymnasium's step has no physical time step; one step is one unit.
        return 1.0

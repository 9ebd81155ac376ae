"""DeepMind Control Suite tasks through MuJoCo Playground's MJX ports.

``DMCEnv('cheetah_run')`` wraps ``mujoco_playground.dm_control_suite.load(
'CheetahRun')`` (PyPI ``playground``, imported lazily: ``pip install
memrl[dmc]``) into memrl's env contract; ``memrl.envs.make('dmc_cheetah_run')``
builds it. ``TASKS`` maps memrl's ``<domain>_<task>`` to the playground name
and dm_control's ``(domain, task)``; ``cup_catch`` is dm_control's
``ball_in_cup/catch`` (Dreamer's name for it).

Contract, as for every memrl env:

* unbatched ``reset(key)`` / ``step(state, action)`` on brax ``State``s;
  ``state.pipeline_state`` is playground's ``mjx.Data`` (JAX implementation,
  ``impl='jax'``, by default), ``env.mj_model`` the ``mujoco.MjModel`` and
  ``env.mjx_model`` the ``mjx.Model`` (no brax ``sys``: brax's
  ``mjcf.load_model`` writes into the MjModel it reads).
* Actions in ``[-1, 1]``: every registered task's actuators have
  ``ctrlrange = [-1, 1]``, so actions go to ``data.ctrl`` unchanged; a task
  with other limited ranges is rescaled affinely onto them (MuJoCo clamps
  ``ctrl`` to the range, as dm_control does; rewards see the unclamped
  action, as dm_control's ``physics.control()``).
* ``done`` is termination only: 1 when ``qpos`` or ``qvel`` holds a NaN
  (dm_control raises a ``PhysicsError`` there), else 0. Playground's envs have
  no time limit or auto-reset of their own (those live in playground's brax
  wrappers, which are not used); memrl's wrappers apply
  ``spec(name).episode_length`` = 1000 control steps, dm_control's time
  limit for every task of the suite (10 s of 0.01 s steps for cartpole and
  cheetah, 25 s of 0.025 s steps for walker, ...).
* ``obs``: one float32 vector. Playground's suite envs return arrays already,
  ordered as dm_control's observation dict flattened (``dm_control.suite
  .wrappers`` / ``flatten_observation`` order), e.g. cheetah ``[qpos[1:] (8),
  qvel (9)]``, walker ``[orientations (14), height (1), velocity (9)]``. A dict
  observation (none of the registered tasks) would be concatenated in sorted
  key order, each entry raveled.
* ``metrics``: playground's (e.g. ``reward/upright``), float32, the same keys
  at reset and step. ``info['playground']``: playground's own ``info`` (its
  ``rng``, for cartpole ``time_out``), the same structure at reset and step.

``match_dm_control=True`` (the default) changes three things in playground's
ports so that a state reads as in dm_control; ``match_dm_control=False`` runs
playground's ``reset`` and ``step`` unchanged (as in its published baselines):

1. Kinematics after a step. ``mjx.step`` computes positions, sensors and
   camera poses at the START of a physics substep and then integrates, and
   playground computes observations and rewards from that data, so its
   ``xmat``/``geom_xpos``/sensor values lag ``qpos``/``qvel`` by one physics
   substep (by a whole control step for cartpole and cheetah, one substep per
   control step; their pixels would show the previous frame). dm_control's
   ``Physics.step`` runs ``mj_step1`` after stepping. This adapter does the
   same: after the substeps it runs ``mjx.fwd_position``, ``sensor_pos``,
   ``fwd_velocity``, ``sensor_vel`` (touch sensors, which need the constraint
   forces, keep the last substep's values, as in dm_control) and calls the
   playground env's ``_get_reward`` / ``_get_obs`` on that data; ``reset``
   too. So ``pipeline_state.geom_xpos`` etc. describe the observed state.
2. Implicit joint damping in Euler steps (MuJoCo's default, dm_control's):
   playground sets ``mjDSBL_EULERDAMP``. That flag alone made cheetah's joint
   velocities differ from dm_control's by 0.5-1.6 after one step; without it
   they agree to 1e-5, contacts with the floor included.
3. Observation content: pendulum's orientation is ordered ``[zz, xz]`` and
   fish's observation ``[joint angles, upright, target, velocity]`` as in
   dm_control (playground: ``[xz, zz]``, ``[upright, joint angles, ...]``);
   walker's ``height`` entry is the torso's height as in dm_control
   (playground puts the torso's ``zz`` orientation there, a copy of its
   ``xx``).

With 1-3, the observation and reward of every registered task equal
dm_control's on the same physics state (checked here to 1e-5 at a reset
and after 3 steps, targets copied into dm_control's model; in
tests/test_dmc.py for cartpole, cheetah and walker). Cost on one CPU core
(200 steps in ``lax.scan``): cheetah +30-60% per step (an extra forward pass
on one substep per step), cartpole about 0, walker within noise (the solver
exits early depending on the trajectory); compile +40-50%.

What still differs from dm_control (MuJoCo C), measured here from the same
physics state with the same actions (one control step, or the 5 steps of
tests/test_dmc.py):

* Constraint solver: playground cuts MuJoCo's 100 Newton / 50 line-search
  iterations to 1-4 / 4-10. Free motion agrees to float32 rounding (walker in
  the air 6e-6; cheetah on its feet 2e-4); once a joint limit or a new
  contact becomes active, velocities differ by up to 0.6-3 per step (walker),
  and with 100 iterations in MJX they agree again (3e-6). At hopper's
  random start (torso and leg interpenetrating) MJX found 2 of the 3 self
  contacts MuJoCo found (not nose-thigh): velocities differed by up to 5 for
  the 3 steps the interpenetration lasted.
* Integrator / timestep (the control step is dm_control's everywhere):
  cartpole and acrobot Euler (dm_control RK4; cartpole 2e-3 over 5 steps,
  acrobot 1.4e-3 in one step); finger 0.005 s implicitfast with pyramidal
  cones (0.01 s Euler, elliptic; 0.3 in joint velocity per step); reacher
  0.005 s (0.02 s; joint velocities differ by 0.1-1.6 per step); pendulum
  0.01 s (0.02 s; 3e-4 per step); fish 0.002 s (0.004 s; 0.8 per step);
  swimmer 0.003 s (0.002 s).
* Models: finger's spinner hinge damping 0.03 (dm_control 0.5), and some of
  its geoms do not collide; swimmer's geoms do not collide; the targets of
  reacher, finger turn, fish and swimmer are mocap bodies (dm_control moves
  model geoms or sites).
* Reset distributions follow dm_control's ``initialize_episode`` (cheetah's
  200 settling steps included) drawn from JAX keys; pendulum starts in
  ``[0, pi)`` (dm_control ``[-pi, pi)``, the same task by symmetry).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import Env, State

# memrl task name -> (playground dm_control_suite name, dm_control domain, task).
TASKS: dict[str, tuple[str, str, str]] = {
    "acrobot_swingup": ("AcrobotSwingup", "acrobot", "swingup"),
    "acrobot_swingup_sparse": ("AcrobotSwingupSparse", "acrobot", "swingup_sparse"),
    "cup_catch": ("BallInCup", "ball_in_cup", "catch"),
    "cartpole_balance": ("CartpoleBalance", "cartpole", "balance"),
    "cartpole_balance_sparse": ("CartpoleBalanceSparse", "cartpole", "balance_sparse"),
    "cartpole_swingup": ("CartpoleSwingup", "cartpole", "swingup"),
    "cartpole_swingup_sparse": ("CartpoleSwingupSparse", "cartpole", "swingup_sparse"),
    "cheetah_run": ("CheetahRun", "cheetah", "run"),
    "finger_spin": ("FingerSpin", "finger", "spin"),
    "finger_turn_easy": ("FingerTurnEasy", "finger", "turn_easy"),
    "finger_turn_hard": ("FingerTurnHard", "finger", "turn_hard"),
    "fish_swim": ("FishSwim", "fish", "swim"),
    "hopper_hop": ("HopperHop", "hopper", "hop"),
    "hopper_stand": ("HopperStand", "hopper", "stand"),
    "humanoid_run": ("HumanoidRun", "humanoid", "run"),
    "humanoid_stand": ("HumanoidStand", "humanoid", "stand"),
    "humanoid_walk": ("HumanoidWalk", "humanoid", "walk"),
    "pendulum_swingup": ("PendulumSwingup", "pendulum", "swingup"),
    "point_mass_easy": ("PointMass", "point_mass", "easy"),
    "reacher_easy": ("ReacherEasy", "reacher", "easy"),
    "reacher_hard": ("ReacherHard", "reacher", "hard"),
    "swimmer_swimmer6": ("SwimmerSwimmer6", "swimmer", "swimmer6"),
    "walker_run": ("WalkerRun", "walker", "run"),
    "walker_stand": ("WalkerStand", "walker", "stand"),
    "walker_walk": ("WalkerWalk", "walker", "walk"),
}

# dm_control's episodes: 1000 control steps for every task of the suite.
EPISODE_LENGTH = 1000

MISSING_EXTRA = "dmc_* envs need the optional extra: pip install memrl[dmc]"

INFO_KEY = "playground"

# Playground config entries that memrl's wrappers own or that change the task.
_REJECTED = ("episode_length", "action_repeat", "vision", "vision_config")


def _suite():
    """``mujoco_playground.dm_control_suite``, or one clear ImportError."""
    try:
        from mujoco_playground import dm_control_suite
    except ImportError:
        raise ImportError(MISSING_EXTRA) from None
    return dm_control_suite


def _physics_step(model, data, ctrl, n_substeps: int):
    from mujoco_playground import step

    return step(model, data, ctrl, n_substeps)


def _flatten(obs: Any) -> jax.Array:
    """One float32 vector: an array raveled, a dict in sorted key order."""
    if isinstance(obs, dict):
        parts = [jnp.ravel(obs[k]) for k in sorted(obs)]
        return jnp.concatenate(parts).astype(jnp.float32)
    return jnp.ravel(obs).astype(jnp.float32)


def _f32(x: Any) -> jax.Array:
    """A strong (not weakly typed) float32 array."""
    return jnp.asarray(x, dtype=jnp.float32)


def _strong(tree: Any) -> Any:
    """Strips weak types (cheetah's reset sets ``time=0.0``) so the state's
    types are the same after reset and after step."""

    def fix(x):
        if isinstance(x, jax.Array) and x.weak_type:
            return jnp.asarray(x, dtype=x.dtype)
        if isinstance(x, float):
            return jnp.asarray(x, dtype=jnp.float32)
        return x

    return jax.tree.map(fix, tree)


def action_bounds(mj_model) -> tuple[jax.Array, jax.Array] | None:
    """``(low, high)`` ctrl bounds when some limited actuator's range is not
    ``[-1, 1]`` (unlimited ones keep ``[-1, 1]``), else None (no rescaling)."""
    limited = np.asarray(mj_model.actuator_ctrllimited, bool)
    low, high = np.asarray(mj_model.actuator_ctrlrange, np.float64).reshape(-1, 2).T
    if np.all(~limited | ((low == -1.0) & (high == 1.0))):
        return None
    low = np.where(limited, low, -1.0)
    high = np.where(limited, high, 1.0)
    return jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)


def to_ctrl(action: jax.Array, bounds: tuple[jax.Array, jax.Array] | None) -> jax.Array:
    """Maps ``action`` in ``[-1, 1]`` affinely onto ``bounds`` (identity for None)."""
    action = jnp.asarray(action, jnp.float32)
    if bounds is None:
        return action
    low, high = bounds
    return low + (action + 1.0) * 0.5 * (high - low)


def _dm_control_obs(task: str, mj_model) -> Callable[[jax.Array, Any], jax.Array] | None:
    """Maps playground's observation of ``task`` onto dm_control's, or None
    where they already agree (checked in tests/test_dmc.py)."""
    if task == "pendulum_swingup":
        # playground orders the pole orientation [xz, zz]; dm_control [zz, xz].
        return lambda obs, data: obs[jnp.array([1, 0, 2])]
    if task == "fish_swim":
        # playground: [upright, joint angles (7), target (3), qvel (13)];
        # dm_control: [joint angles, upright, target, qvel].
        order = jnp.array([1, 2, 3, 4, 5, 6, 7, 0, *range(8, 24)])
        return lambda obs, data: obs[order]
    if task.startswith("walker_"):
        # playground's 'height' entry is the torso's zz orientation (equal to
        # its xx, already observed); dm_control's is the torso's height.
        torso = mj_model.body("torso").id
        return lambda obs, data: obs.at[14].set(data.xpos[torso, 2])
    return None


class DMCEnv(Env):
    """A DeepMind Control Suite task (playground MJX port) as a brax ``Env``.

    Args:
      task: a key of ``TASKS`` (``'cheetah_run'``, ``'cup_catch'``, ...).
      impl: MJX implementation, ``'jax'`` (default; runs on CPU, GPU, TPU) or
        ``'warp'`` (NVIDIA GPU with ``warp``; playground's own default; not
        tested here).
      match_dm_control: observations, rewards and Euler damping as
        dm_control (see the module docstring); ``False`` runs playground's
        ``reset`` and ``step`` unchanged.
      **config_overrides: playground config entries (``sim_dt``, ``ctrl_dt``,
        ``njmax``, ...); ``episode_length`` / ``action_repeat`` belong to
        memrl's wrappers and ``vision`` is not supported.

    Raises:
      ImportError: playground is not installed (one line naming the extra).
      ValueError: unknown task or config entry.
    """

    def __init__(
        self,
        task: str,
        impl: str = "jax",
        match_dm_control: bool = True,
        **config_overrides: Any,
    ):
        if task not in TASKS:
            raise ValueError(f"unknown dmc task {task!r}; valid: {', '.join(TASKS)}")
        if impl not in ("jax", "warp"):
            raise ValueError(f"impl must be 'jax' or 'warp', got {impl!r}")
        for key in _REJECTED:
            if key in config_overrides:
                raise ValueError(f"dmc: {key!r} is not a dmc override (memrl's wrappers own it)")
        suite = _suite()
        pg_name = TASKS[task][0]
        valid = set(suite.get_default_config(pg_name).keys())
        for key in config_overrides:
            if key.split(".", 1)[0] not in valid:
                raise ValueError(
                    f"dmc: unknown config entry {key!r}; valid: {', '.join(sorted(valid))}"
                )
        env = suite.load(pg_name, config_overrides={"impl": impl, **config_overrides})
        self.task = task
        self.playground_env = env
        self.match_dm_control = bool(match_dm_control)
        self._impl = impl
        self._n_substeps = int(env.n_substeps)
        self._obs_map = None
        if self.match_dm_control:
            if not all(hasattr(env, a) for a in ("_get_obs", "_get_reward", "_mjx_model")):
                raise ValueError(
                    f"dmc: playground's {pg_name} lacks _get_obs/_get_reward/_mjx_model; "
                    "use match_dm_control=False"
                )
            _use_euler_damping(env, impl)
            self._obs_map = _dm_control_obs(task, env.mj_model)
        self.mj_model = env.mj_model
        self.mjx_model = env.mjx_model

        self._bounds = action_bounds(env.mj_model)

    # -- physics -----------------------------------------------------------

    def _refresh(self, data):
        """MuJoCo's ``mj_step1``: positions, velocities and their sensors for
        the current ``qpos``/``qvel`` (what dm_control computes after a step)."""
        from mujoco import mjx

        m = self.mjx_model
        if self._impl != "jax":
            return mjx.forward(m, data)
        data = mjx.fwd_position(m, data)
        data = mjx.sensor_pos(m, data)
        data = mjx.fwd_velocity(m, data)
        return mjx.sensor_vel(m, data)

    def _observe(self, data, pg_info) -> jax.Array:
        obs = self.playground_env._get_obs(data, pg_info)
        if self._obs_map is not None:
            obs = self._obs_map(obs, data)
        return obs

    def _ctrl(self, action: jax.Array) -> jax.Array:
        return to_ctrl(action, self._bounds)

    def _wrap(self, pg_state, info: dict) -> State:
        info = dict(info)
        info[INFO_KEY] = _strong(pg_state.info)
        return State(
            pipeline_state=_strong(pg_state.data),
            obs=_flatten(pg_state.obs),
            reward=_f32(pg_state.reward),
            done=_f32(pg_state.done),
            metrics={k: _f32(v) for k, v in pg_state.metrics.items()},
            info=info,
        )

    # -- brax Env ------------------------------------------------------------

    def reset(self, rng: jax.Array) -> State:
        """Playground's reset (dm_control's start distribution) from ``rng``."""
        pg_state = self.playground_env.reset(rng)
        if self.match_dm_control:
            data = self._refresh(pg_state.data)
            pg_state = pg_state.replace(data=data, obs=self._observe(data, pg_state.info))
        return self._wrap(pg_state, {})

    def step(self, state: State, action: jax.Array) -> State:
        """One control step (``dt`` seconds) with ``action`` in ``[-1, 1]``."""
        env = self.playground_env
        ctrl = self._ctrl(action)
        pg_info = state.info[INFO_KEY]
        # playground's reward functions write into the metrics dict they get.
        metrics = dict(state.metrics)
        if self.match_dm_control:
            data = _physics_step(self.mjx_model, state.pipeline_state, ctrl, self._n_substeps)
            data = self._refresh(data)
            reward = env._get_reward(data, ctrl, pg_info, metrics)
            obs = self._observe(data, pg_info)
            done = jnp.isnan(data.qpos).any() | jnp.isnan(data.qvel).any()
            pg_state = _pg_state(data, obs, reward, done, metrics, pg_info)
        else:
            pg_state = _pg_state(
                state.pipeline_state, state.obs, state.reward, state.done, metrics, pg_info
            )
            pg_state = env.step(pg_state, ctrl)
        return self._wrap(pg_state, state.info)

    @property
    def observation_size(self) -> int:
        return int(jax.eval_shape(self.reset, jax.random.PRNGKey(0)).obs.shape[-1])

    @property
    def action_size(self) -> int:
        return int(self.mj_model.nu)

    @property
    def backend(self) -> str:
        return "mjx"

    @property
    def dt(self) -> float:
        """Control timestep in seconds."""
        return float(self.playground_env.dt)


def _use_euler_damping(env, impl: str) -> None:
    """Integrates joint damping implicitly in Euler steps, MuJoCo's default
    and dm_control's: playground sets ``mjDSBL_EULERDAMP``. Rebuilds the
    playground env's MJX model (its reset, e.g. cheetah's settling steps, and
    our step both use it)."""
    import mujoco
    from mujoco import mjx

    m = env.mj_model
    bit = int(mujoco.mjtDisableBit.mjDSBL_EULERDAMP)
    if m.opt.disableflags & bit:
        m.opt.disableflags = m.opt.disableflags & ~bit
        env._mjx_model = mjx.put_model(m, impl=impl)


def _pg_state(data, obs, reward, done, metrics, info):
    from mujoco_playground import State as PGState

    return PGState(data=data, obs=obs, reward=reward, done=done, metrics=metrics, info=info)

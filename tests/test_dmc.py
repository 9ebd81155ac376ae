"""memrl.envs.dmc (DeepMind Control Suite through MuJoCo Playground's MJX ports)
against dm_control's own tasks (MuJoCo C physics).

Each compared task is started from one physics state in both (our state's
``qpos``/``qvel`` written into ``dm_control.suite.load(domain, task)``'s
physics) and stepped 5 times with the same actions, open loop; after every
step the observation (dm_control's dict flattened in its own order) and the
reward are compared. A second check writes each of our post-step states into
dm_control and compares its observation and reward functions on that very
state: that isolates the task functions (timing of the kinematics included)
from the physics.

Tolerances, with what was measured here (playground 0.2.0, mujoco 4.0.0, MJX
3.17 in float32, dm_control 1.0.50 in float64):

* task functions on the same state: 1e-5 (measured <= 2e-7 on all three).
* cartpole_swingup (pole near upright, rewards 0.8-0.96): observations 1e-2,
  rewards 1e-3; measured 2.0e-3 and 1.0e-4. Playground integrates with
  Euler, dm_control with RK4 (same 0.01 s step).
* cheetah_run (settled on its feet, 6 m/s forward, rewards ~0.455):
  observations 1e-3, rewards 1e-4; measured 2.1e-4 and 3.3e-6, with 4 solver
  iterations against dm_control's 100. Without the implicit Euler damping
  this adapter turns back on (playground disables it) joint velocities
  differed by 0.5-1.6 after ONE step.
* walker_walk (0.3 m in the air, no contact, no joint at a limit, actions
  scaled by 0.1, rewards 0.75): observations 1e-3, rewards 1e-4; measured
  5.6e-6 and 1.7e-7. With constraints the 2 solver iterations (dm_control:
  100) show: with full random actions a knee or ankle reaches its limit and
  joint velocities differed by up to 3.2 within 5 steps; from a start lying
  on the floor, one step with a new contact differed by 0.63 (3e-6 with 100
  iterations in MJX).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import sys

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from memrl import envs
from memrl.envs import dmc

needs_playground = pytest.mark.skipif(
    importlib.util.find_spec("mujoco_playground") is None,
    reason="playground not installed (pip install memrl[dmc])",
)
needs_dm_control = pytest.mark.skipif(
    importlib.util.find_spec("dm_control") is None, reason="dm-control not installed"
)

STEPS = 5
REQUIRED = (
    "cartpole_swingup",
    "cheetah_run",
    "walker_walk",
    "hopper_hop",
    "finger_spin",
    "reacher_easy",
    "pendulum_swingup",
    "cup_catch",
)


def _dm_control_suite():
    """dm_control's suite, working around dm_control 1.0.50's field table on
    mujoco 4.0: it names MjModel/MjData arrays that mujoco 4.0 no longer has
    (``flex_vertedge``, ``flexvert_J``, ...), which fails every ``suite.load``.
    The missing names are dropped from that table; nothing else changes."""
    from dm_control.mujoco.wrapper.mjbindings import sizes

    model = mujoco.MjModel.from_xml_string(
        "<mujoco><worldbody><body><joint/><geom size='1'/></body></worldbody></mujoco>"
    )
    for struct, obj in (("mjmodel", model), ("mjdata", mujoco.MjData(model))):
        for field in list(sizes.array_sizes[struct]):
            if not hasattr(obj, field):
                del sizes.array_sizes[struct][field]
    from dm_control import suite

    return suite


def _flat(observation: dict) -> np.ndarray:
    return np.concatenate([np.ravel(v) for v in observation.values()])


def _start(name: str, env: dmc.DMCEnv, qpos: np.ndarray, qvel: np.ndarray):
    """A start state with a known reward scale: ``(qpos, qvel)`` changed."""
    m = env.mj_model

    def set_joint(arr, joint, value, vel=False):
        adr = m.jnt_dofadr[m.joint(joint).id] if vel else m.jnt_qposadr[m.joint(joint).id]
        arr[adr] = value

    qpos, qvel = qpos.copy(), qvel.copy()
    if name == "cartpole_swingup":  # pole 0.2 rad from upright: upright ~ 0.99
        set_joint(qpos, "slider", 0.1)
        set_joint(qpos, "hinge_1", 0.2)
        set_joint(qvel, "hinge_1", -0.5, vel=True)
    elif name == "cheetah_run":  # settled on its feet, running at 6 m/s: reward ~ 0.6
        set_joint(qvel, "rootx", 6.0, vel=True)
    elif name == "walker_walk":  # upright, 0.3 m up, knees off their limits, 0.7 m/s
        qpos[:] = 0.0
        qvel[:] = 0.0
        set_joint(qpos, "rootz", 0.3)
        set_joint(qpos, "right_hip", 0.3)
        set_joint(qpos, "right_knee", -0.6)
        set_joint(qpos, "left_knee", -0.6)
        set_joint(qvel, "rootx", 0.7, vel=True)
    return qpos, qvel


@functools.cache
def _rollout_fn(name: str, match: bool = True):
    """One compiled program per task: reset, then ``STEPS`` steps from a
    given ``(qpos, qvel)`` (reset's state when both are None)."""
    env = dmc.DMCEnv(name, match_dm_control=match)

    def rollout(key, qpos, qvel, actions):
        s0 = env.reset(key)
        data = s0.pipeline_state
        s = s0.replace(pipeline_state=data.replace(qpos=qpos, qvel=qvel))

        def body(state, action):
            nxt = env.step(state, action)
            d = nxt.pipeline_state
            return nxt, (nxt.obs, nxt.reward, d.qpos, d.qvel, d.xmat)

        return s0, jax.lax.scan(body, s, actions)[1]

    return env, jax.jit(rollout)


def _reset_state(name: str, key):
    env, fn = _rollout_fn(name)
    nq, nv = env.mj_model.nq, env.mj_model.nv
    zeros = jnp.zeros((STEPS, env.action_size))
    s0, _ = fn(key, jnp.zeros(nq), jnp.zeros(nv), zeros)
    return s0


def _put(physics, qpos, qvel, ctrl=None):
    physics.data.qpos[:] = np.asarray(qpos)
    physics.data.qvel[:] = np.asarray(qvel)
    if ctrl is not None:
        physics.data.ctrl[:] = np.asarray(ctrl)
    physics.forward()


# Walker's actions are scaled down so that no joint reaches a limit within the
# 5 steps: limits are constraints, solved with 2 iterations in playground.
ACTION_SCALE = {"walker_walk": 0.1}

# Observation / reward tolerances of the open-loop comparison (see docstring).
TOLERANCE = {
    "cartpole_swingup": (1e-2, 1e-3),
    "cheetah_run": (1e-3, 1e-4),
    "walker_walk": (1e-3, 1e-4),
}


@needs_playground
@needs_dm_control
@pytest.mark.parametrize("name", list(TOLERANCE))
def test_matches_dm_control(name):
    suite = _dm_control_suite()
    _, domain, task = dmc.TASKS[name]
    reference = suite.load(domain, task, task_kwargs={"random": 0})
    reference.reset()
    physics = reference.physics
    env, fn = _rollout_fn(name)
    key = jax.random.PRNGKey(7)
    actions = np.random.default_rng(0).uniform(-1, 1, (STEPS, env.action_size))
    actions = (actions * ACTION_SCALE.get(name, 1.0)).astype(np.float32)

    s0 = _reset_state(name, key)
    d0 = s0.pipeline_state
    # The reset observation is dm_control's observation of the reset state.
    _put(physics, d0.qpos, d0.qvel)
    np.testing.assert_allclose(
        np.asarray(s0.obs), _flat(reference.task.get_observation(physics)), atol=1e-5
    )

    qpos, qvel = _start(name, env, np.asarray(d0.qpos), np.asarray(d0.qvel))
    _, (obs, reward, qpos_t, qvel_t, _) = fn(key, qpos, qvel, jnp.asarray(actions))
    obs_tol, reward_tol = TOLERANCE[name]

    _put(physics, qpos, qvel)
    expected_obs, expected_reward = [], []
    for t in range(STEPS):
        step = reference.step(actions[t])
        expected_obs.append(_flat(step.observation))
        expected_reward.append(step.reward)
    np.testing.assert_allclose(np.asarray(obs), np.stack(expected_obs), atol=obs_tol, rtol=1e-3)
    np.testing.assert_allclose(np.asarray(reward), np.array(expected_reward), atol=reward_tol)
    assert max(expected_reward) > 0.1  # a start state where the reward says something

    # dm_control's task functions on each of our post-step states.
    for t in range(STEPS):
        _put(physics, qpos_t[t], qvel_t[t], actions[t])
        np.testing.assert_allclose(
            np.asarray(obs[t]), _flat(reference.task.get_observation(physics)), atol=1e-5, rtol=1e-5
        )
        np.testing.assert_allclose(float(reward[t]), reference.task.get_reward(physics), atol=1e-5)


@needs_playground
def test_playground_verbatim_observations_lag_one_substep():
    """``match_dm_control=False`` is playground's step: cartpole's pole
    cos/sin after a step are those of the angle before it (one substep per
    control step), while the default observes the new angle."""
    for match, lag in ((False, 1), (True, 0)):
        env, fn = _rollout_fn("cartpole_swingup", match)
        qpos = jnp.array([0.0, 0.3])
        qvel = jnp.array([0.0, 2.0])
        actions = jnp.ones((STEPS, 1))
        _, (obs, _, qpos_t, _, _) = fn(jax.random.PRNGKey(0), qpos, qvel, actions)
        angles = np.concatenate([[0.3], np.asarray(qpos_t[:, 1])])  # angle before step t is [t]
        observed = np.arctan2(np.asarray(obs[:, 2]), np.asarray(obs[:, 1]))
        np.testing.assert_allclose(observed, angles[1 - lag : 1 - lag + STEPS], atol=1e-5)


@needs_playground
def test_spec_sizes_and_registry():
    assert {f"dmc_{name}" for name in REQUIRED} <= set(envs.DMC_NAMES) <= set(envs.NAMES)
    assert envs.spec("dmc_cheetah_run") == envs.EnvSpec("dmc_cheetah_run", 17, 6, 1000, (17,))
    assert envs.spec("dmc_walker_walk")[1:4] == (24, 6, 1000)
    assert envs.spec("dmc_cartpole_swingup")[1:4] == (5, 1, 1000)


@needs_playground
@needs_dm_control
def test_actions_are_unit_range_and_sizes_match_dm_control():
    suite = _dm_control_suite()
    for name in REQUIRED:
        env = envs.make(f"dmc_{name}")
        assert isinstance(env.mj_model, mujoco.MjModel)
        assert dmc.action_bounds(env.mj_model) is None  # every actuator's range is [-1, 1]
        _, domain, task = dmc.TASKS[name]
        action_spec = suite.load(domain, task).action_spec()
        assert action_spec.shape == (env.action_size,)
        np.testing.assert_array_equal(action_spec.minimum, -1.0)
        np.testing.assert_array_equal(action_spec.maximum, 1.0)


def test_actions_rescale_onto_other_ctrl_ranges():
    model = mujoco.MjModel.from_xml_string(
        """<mujoco><worldbody><body><joint name='a'/><joint name='b' axis='0 1 0'/>
        <joint name='c' axis='1 0 0'/><geom size='1'/></body></worldbody><actuator>
        <motor joint='a' ctrlrange='-2 2'/><motor joint='b' ctrlrange='0 1'/>
        <motor joint='c' ctrllimited='false'/></actuator></mujoco>"""
    )
    bounds = dmc.action_bounds(model)
    action = jnp.array([[-1.0, -1.0, -1.0], [0.0, 0.0, 0.5], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(
        dmc.to_ctrl(action, bounds), [[-2.0, 0.0, -1.0], [0.0, 0.5, 0.5], [2.0, 1.0, 1.0]]
    )
    assert dmc.to_ctrl(action, None) is not None
    np.testing.assert_array_equal(dmc.to_ctrl(action, None), action)


@needs_playground
def test_jit_vmap_through_memrl_wrappers():
    """The training stack (vmapped, fresh auto-reset) runs the adapter: reset
    and step states have one structure and float32 leaves, and jitted steps
    do not retrace."""
    env = envs.make("dmc_cartpole_swingup")
    wrapped = envs.wrap_for_training(env, episode_length=3, num_envs=2)
    reset, step = jax.jit(wrapped.reset), jax.jit(wrapped.step)
    state = reset(jax.random.PRNGKey(0))
    first = state
    for _ in range(4):  # crosses the 3-step time limit: one auto-reset
        state = step(state, jnp.full((2, 1), 0.5))
    assert step._cache_size() == 1
    assert jax.tree.structure(first) == jax.tree.structure(state)
    assert state.obs.shape == (2, 5) and state.obs.dtype == jnp.float32
    assert state.reward.dtype == jnp.float32 and state.done.dtype == jnp.float32
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(state), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert set(state.info[dmc.INFO_KEY]) == {"rng", "time_out"}
    np.testing.assert_array_equal(state.info["steps"], [1, 1])  # restarted after 3
    assert np.all(np.isfinite(np.asarray(state.obs)))
    # MJX data for the pixel renderer: poses of the geoms and cameras.
    data = state.pipeline_state
    assert data.geom_xpos.shape == (2, env.mj_model.ngeom, 3)
    assert data.cam_xmat.shape == (2, env.mj_model.ncam, 3, 3)


def test_unknown_dmc_names_and_overrides_are_clear_errors():
    with pytest.raises(ValueError, match="unknown env 'dmc_cheetah_sprint'.*dmc_cheetah_run"):
        envs.make("dmc_cheetah_sprint")
    with pytest.raises(ValueError, match="unknown dmc task 'cheetah_sprint'"):
        dmc.DMCEnv("cheetah_sprint")


@needs_playground
def test_bad_overrides():
    with pytest.raises(ValueError, match="bad overrides.*episode_length"):
        envs.make("dmc_cartpole_swingup", episode_length=5)
    with pytest.raises(ValueError, match="unknown config entry 'n_frames'"):
        envs.make("dmc_cartpole_swingup", n_frames=5)


def test_missing_playground_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "mujoco_playground", None)  # import fails
    with pytest.raises(ImportError) as info:
        envs.make("dmc_pendulum_swingup", impl="jax")  # not cached: builds
    assert str(info.value) == "dmc_* envs need the optional extra: pip install memrl[dmc]"


def test_playground_is_imported_lazily():
    """``import memrl.envs`` must work without playground: dmc.py imports it
    only inside functions."""
    tree = ast.parse(inspect.getsource(dmc))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top for a in n.names] + [
        n.module for n in top if isinstance(n, ast.ImportFrom)
    ]
    assert not any(str(x).startswith(("mujoco_playground", "dm_control")) for x in names)

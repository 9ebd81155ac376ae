"""memrl.envs.dmc (DeepMind Control Suite through MuJoCo Playground's MJX ports)
against dm_control's own tasks (MuJoCo C physics).

Each compared task is started from one physics state in both (the same
``qpos``/``qvel`` written into ``dm_control.suite.load(domain, task)``'s
physics and into our state) and stepped 5 times with the same actions, open
loop; after every step the observation (dm_control's dict flattened in its
own order) and the reward are compared. A second check writes each of our
post-step states into dm_control and compares its observation and reward
functions on that very state: that isolates the task functions (timing of
the kinematics included) from the physics. cartpole runs two envs in one
vmapped program that starts from real resets; cheetah and walker run one
compiled step program each (their resets are traced, not compiled: MJX
compiles for tens of seconds on CPU).

Tolerances, with what was measured here (playground 0.2.0, mujoco 4.0.0, MJX
3.17 in float32, dm_control 1.0.50 in float64):

* task functions on the same state: 1e-5 (measured <= 2e-7 on all three).
* cartpole_swingup (pole near upright, rewards 0.8-0.97): observations 1e-2,
  rewards 1e-3; measured 2.0e-3 and 1.0e-4. Playground integrates with
  Euler, dm_control with RK4 (same 0.01 s step).
* cheetah_run (dm_control's settled start on its feet, 6 m/s forward,
  rewards ~0.455): observations 1e-3, rewards 1e-4; measured 5.9e-5 and
  8.6e-7, with 4 solver iterations against dm_control's 100. Without the implicit Euler damping
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
    """A start state where the reward says something: ``(qpos, qvel)`` changed."""
    m = env.mj_model

    def set_joint(arr, joint, value, vel=False):
        adr = m.jnt_dofadr[m.joint(joint).id] if vel else m.jnt_qposadr[m.joint(joint).id]
        arr[adr] = value

    qpos, qvel = np.array(qpos, np.float64), np.array(qvel, np.float64)
    if name == "cartpole_swingup":  # pole 0.2 rad from upright: rewards 0.8-0.96
        set_joint(qpos, "slider", 0.1)
        set_joint(qpos, "hinge_1", 0.2)
        set_joint(qvel, "hinge_1", -0.5, vel=True)
    elif name == "cheetah_run":  # dm_control's settled start, running at 6 m/s: ~0.45
        set_joint(qvel, "rootx", 6.0, vel=True)
    elif name == "walker_walk":  # upright, 0.3 m up, knees off their limits: 0.75
        qpos[:] = 0.0
        qvel[:] = 0.0
        set_joint(qpos, "rootz", 0.3)
        set_joint(qpos, "right_hip", 0.3)
        set_joint(qpos, "right_knee", -0.6)
        set_joint(qpos, "left_knee", -0.6)
        set_joint(qvel, "rootx", 0.7, vel=True)
    return qpos, qvel


def _scan_steps(env, state, actions):
    def body(s, action):
        nxt = env.step(s, action)
        return nxt, (nxt.obs, nxt.reward, nxt.pipeline_state.qpos, nxt.pipeline_state.qvel)

    return jax.lax.scan(body, state, actions)  # (last state, per-step outputs)


def _at(state, qpos, qvel):
    data = state.pipeline_state.replace(
        qpos=jnp.asarray(qpos, jnp.float32), qvel=jnp.asarray(qvel, jnp.float32)
    )
    return state.replace(pipeline_state=data)


def _state_at(abstract, qpos, qvel):
    """A state at ``(qpos, qvel)`` without compiling ``reset`` (cheetah's holds
    200 settling steps): reset's structure (``abstract``, traced, not run)
    filled with zeros. ``step`` recomputes all else from ``qpos``/``qvel``."""
    return _at(jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), abstract), qpos, qvel)


@functools.cache
def _batched_cartpole():
    """cartpole's compiled program, vmapped over 2 envs: reset, then ``STEPS``
    steps from a given ``(qpos, qvel)``."""
    env = envs.make("dmc_cartpole_swingup")

    def run(key, qpos, qvel, actions):
        start = env.reset(key)
        return start, _scan_steps(env, _at(start, qpos, qvel), actions)[1]

    return env, jax.jit(jax.vmap(run))


@functools.cache
def _unbatched(name: str):
    env = envs.make(f"dmc_{name}")
    return env, jax.jit(functools.partial(_scan_steps, env))


def _avals(tree):
    return [(x.shape, x.dtype, x.weak_type) for x in jax.tree.leaves(tree)]


def _put(physics, qpos, qvel, ctrl=None):
    physics.data.qpos[:] = np.asarray(qpos)
    physics.data.qvel[:] = np.asarray(qvel)
    if ctrl is not None:
        physics.data.ctrl[:] = np.asarray(ctrl)
    physics.forward()


def _reference(name: str):
    _, domain, task = dmc.TASKS[name]
    reference = _dm_control_suite().load(domain, task, task_kwargs={"random": 0})
    reference.reset()
    return reference


# Walker's actions are scaled down so that no joint reaches a limit within the
# 5 steps: limits are constraints, solved with 2 iterations in playground.
ACTION_SCALE = {"walker_walk": 0.1}

# Observation / reward tolerances of the open-loop comparison (see docstring).
TOLERANCE = {
    "cartpole_swingup": (1e-2, 1e-3),
    "cheetah_run": (1e-3, 1e-4),
    "walker_walk": (1e-3, 1e-4),
}


def _actions(name: str, env, seed: int = 0) -> np.ndarray:
    actions = np.random.default_rng(seed).uniform(-1, 1, (STEPS, env.action_size))
    return (actions * ACTION_SCALE.get(name, 1.0)).astype(np.float32)


def _check_against_dm_control(name, reference, qpos, qvel, actions, outputs):
    """Open-loop steps of dm_control from ``(qpos, qvel)`` against ours, then
    dm_control's task functions on each of our post-step states."""
    obs, reward, qpos_t, qvel_t = (np.asarray(x) for x in outputs)
    physics = reference.physics
    obs_tol, reward_tol = TOLERANCE[name]
    _put(physics, qpos, qvel)
    expected = [reference.step(a) for a in actions]
    np.testing.assert_allclose(
        obs, np.stack([_flat(e.observation) for e in expected]), atol=obs_tol, rtol=1e-3
    )
    expected_reward = np.array([e.reward for e in expected])
    np.testing.assert_allclose(reward, expected_reward, atol=reward_tol)
    assert expected_reward.max() > 0.1  # a start state where the reward says something
    for t in range(STEPS):
        _put(physics, qpos_t[t], qvel_t[t], actions[t])
        np.testing.assert_allclose(
            obs[t], _flat(reference.task.get_observation(physics)), atol=1e-5, rtol=1e-5
        )
        np.testing.assert_allclose(reward[t], reference.task.get_reward(physics), atol=1e-5)


@needs_playground
@needs_dm_control
def test_cartpole_batched_matches_dm_control():
    """Two cartpoles in one vmapped, jitted program (reset, then 5 steps from
    a chosen state) each match dm_control; resets observe as dm_control."""
    env, run = _batched_cartpole()
    reference = _reference("cartpole_swingup")
    keys = jax.random.split(jax.random.PRNGKey(7), 2)
    zeros = jnp.zeros((2, env.mj_model.nq))
    no_actions = jnp.zeros((2, STEPS, 1))
    starts, _ = run(keys, zeros, zeros, no_actions)
    qpos, qvel, actions = [], [], []
    for i in range(2):
        d = starts.pipeline_state
        # The reset observation is dm_control's observation of the reset state.
        _put(reference.physics, d.qpos[i], d.qvel[i])
        np.testing.assert_allclose(
            starts.obs[i], _flat(reference.task.get_observation(reference.physics)), atol=1e-5
        )
        q, v = _start("cartpole_swingup", env, d.qpos[i], d.qvel[i])
        q[1] += 0.1 * i  # two different starts
        qpos.append(q), qvel.append(v), actions.append(_actions("cartpole_swingup", env, i))
    _, outputs = run(keys, jnp.asarray(qpos), jnp.asarray(qvel), jnp.asarray(np.stack(actions)))
    assert run._cache_size() == 1  # one program for both calls
    for i in range(2):
        row = [x[i] for x in outputs]
        _check_against_dm_control("cartpole_swingup", reference, qpos[i], qvel[i], actions[i], row)


@needs_playground
@needs_dm_control
@pytest.mark.parametrize("name", ["cheetah_run", "walker_walk"])
def test_matches_dm_control(name):
    env, run = _unbatched(name)
    reference = _reference(name)  # cheetah: dm_control's own settled start
    physics = reference.physics
    qpos, qvel = _start(name, env, physics.data.qpos, physics.data.qvel)
    actions = _actions(name, env)
    abstract = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
    start = _state_at(abstract, qpos, qvel)
    last, outputs = run(start, jnp.asarray(actions))
    _check_against_dm_control(name, reference, qpos, qvel, actions, outputs)
    # reset's and step's states agree in every leaf's shape, dtype and weak
    # type (playground's cheetah reset leaves a weakly typed ``time``).
    assert jax.tree.structure(start) == jax.tree.structure(last)
    assert _avals(abstract) == _avals(last)


@needs_playground
def test_spec_sizes_and_registry():
    assert {f"dmc_{name}" for name in REQUIRED} <= set(envs.DMC_NAMES) <= set(envs.NAMES)
    assert envs.spec("dmc_cheetah_run") == envs.EnvSpec("dmc_cheetah_run", 17, 6, 1000, (17,))


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
def test_states_keep_one_structure_through_memrl_wrappers():
    """Under the training stack (vmap, time limit, fresh auto-reset, which
    selects between reset and step states) reset and step give the same
    pytree, shapes, dtypes and weak types, so a jitted step never retraces.
    Traced only: the batched cartpole test runs the compiled path."""
    env = envs.make("dmc_cartpole_swingup")
    wrapped = envs.wrap_for_training(env, episode_length=3, num_envs=2)
    first = jax.eval_shape(wrapped.reset, jax.random.PRNGKey(0))
    state = jax.eval_shape(wrapped.step, first, jnp.zeros((2, env.action_size)))
    assert jax.tree.structure(first) == jax.tree.structure(state)
    assert _avals(first) == _avals(state)
    assert state.obs.dtype == jnp.float32 and state.obs.shape[0] == 2
    assert state.reward.dtype == jnp.float32 and state.done.dtype == jnp.float32
    assert "rng" in state.info[dmc.INFO_KEY]
    # MJX data for the pixel renderer: poses of the geoms and cameras.
    data = state.pipeline_state
    assert data.geom_xpos.shape == (2, env.mj_model.ngeom, 3)
    assert data.cam_xmat.shape == (2, env.mj_model.ncam, 3, 3)


@needs_playground
def test_playground_verbatim_step_keeps_the_contract():
    """``match_dm_control=False`` (playground's own reset and step, traced)."""
    env = dmc.DMCEnv("cartpole_swingup", match_dm_control=False)
    first = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
    state = jax.eval_shape(env.step, first, jnp.zeros(1))
    assert _avals(first) == _avals(state)
    assert state.obs.shape == (5,) and state.obs.dtype == jnp.float32


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

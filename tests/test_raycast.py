"""memrl.render.raycast against MuJoCo's C ray caster, ``mujoco.mj_ray``, on one model and state."""

import types

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from memrl import envs
from memrl.render import raycast

GROUPS = np.array([1, 1, 1, 0, 0, 0], np.uint8)  # the caster's visible groups 0-2

# Every geom type the caster draws, in one scene, seen by a fixed camera and a
# tracking one; a hidden geom (group 3) and a transparent one must be skipped.
SHAPES_XML = """
<mujoco>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1=".9 .9 .9" rgb2=".1 .2 .3"
             width="64" height="64"/>
    <material name="grid" texture="grid" texrepeat="4 4"/>
  </asset>
  <worldbody>
    <light directional="true" dir="0 0 -1" diffuse=".8 .8 .8"/>
    <geom type="plane" size="3 3 .1" material="grid"/>
    <camera name="fixed" pos="0 -4 2" xyaxes="1 0 0 0 .45 .9" fovy="60"/>
    <body pos="0 0 .6">
      <freejoint/>
      <camera name="track" mode="trackcom" pos="0 -3 .5" xyaxes="1 0 0 0 0 1"/>
      <geom type="box" size=".3 .2 .25" pos="-.9 0 0" euler="10 20 30" rgba="1 0 0 1"/>
      <geom type="sphere" size=".25" pos="-.3 .2 .1" rgba="0 1 0 1"/>
      <geom type="capsule" size=".1 .3" pos=".3 0 0" euler="0 60 20" rgba="0 0 1 1"/>
      <geom type="ellipsoid" size=".3 .15 .2" pos=".9 .1 .1" euler="30 0 40" rgba="1 1 0 1"/>
      <geom type="cylinder" size=".15 .25" pos="0 -.3 .5" euler="70 10 0" rgba="0 1 1 1"/>
      <geom type="sphere" size=".5" pos="0 0 1" rgba="1 0 1 1" group="3"/>
      <geom type="sphere" size=".5" pos="0 0 1.2" rgba="1 0 1 0"/>
    </body>
  </worldbody>
</mujoco>
"""


def _c_data(m, qpos):
    d = mujoco.MjData(m)
    d.qpos[:] = qpos
    mujoco.mj_forward(m, d)
    return d


def _as_state(d):
    """The C state's poses as the caster's input (float32, as MJX holds them)."""
    return types.SimpleNamespace(
        geom_xpos=jnp.asarray(d.geom_xpos, jnp.float32),
        geom_xmat=jnp.asarray(d.geom_xmat.reshape(-1, 3, 3), jnp.float32),
        cam_xpos=jnp.asarray(d.cam_xpos, jnp.float32),
        cam_xmat=jnp.asarray(d.cam_xmat.reshape(-1, 3, 3), jnp.float32),
    )


def _mj_ray_image(m, d, camera, size):
    """Depth and geom id per pixel from mujoco.mj_ray, along the caster's pixel rays."""
    sc = raycast.scene(m, camera)
    cam = sc.camera
    dirs = np.asarray(
        raycast.camera_rays(jnp.asarray(d.cam_xmat[cam].reshape(3, 3)), sc.fovy, size, size),
        np.float64,
    )
    depth = np.full((size, size), np.inf)
    ids = np.full((size, size), -1)
    geomid = np.zeros(1, np.int32)
    for i in range(size):
        for j in range(size):
            dist = mujoco.mj_ray(m, d, d.cam_xpos[cam], dirs[i, j], GROUPS, 1, -1, geomid)
            if geomid[0] >= 0:
                depth[i, j], ids[i, j] = dist, geomid[0]
    return depth, ids


def _compare(m, d, camera, size=64):
    want_depth, want_ids = _mj_ray_image(m, d, camera, size)
    depth, ids = raycast.depth_and_ids(m, _as_state(d), size, size, camera)
    depth, ids = np.asarray(depth), np.asarray(ids)
    both_miss = np.isinf(want_depth) & np.isinf(depth)
    with np.errstate(invalid="ignore"):
        close = np.abs(depth - want_depth) <= 1e-3 * want_depth
    depth_ok = np.mean(both_miss | close)
    ids_ok = np.mean(ids == want_ids)
    return depth_ok, ids_ok, want_ids


@pytest.mark.parametrize("name", ["halfcheetah", "ant"])
def test_depth_and_geom_ids_match_mj_ray(name):
    env = envs.make(name)
    m = env.sys.mj_model
    rng = np.random.default_rng(0)
    seen = set()
    for trial in range(3):
        qpos = m.qpos0.copy()
        qpos[: min(3, m.nq)] += rng.normal(0, 0.1, min(3, m.nq))
        qpos[7 if name == "ant" else 3 :] += rng.uniform(
            -0.6, 0.6, m.nq - (7 if name == "ant" else 3)
        )
        d = _c_data(m, qpos)
        depth_ok, ids_ok, want_ids = _compare(m, d, "track")
        assert depth_ok >= 0.99, (trial, depth_ok)
        assert ids_ok >= 0.99, (trial, ids_ok)
        seen |= set(np.unique(want_ids).tolist())
    assert -1 in seen and 0 in seen and len(seen) >= 5  # sky, floor and several limbs in view


def test_every_geom_type_matches_mj_ray():
    m = mujoco.MjModel.from_xml_string(SHAPES_XML)
    rng = np.random.default_rng(1)
    kinds = set()
    for trial in range(3):
        qpos = m.qpos0.copy()
        qpos[:3] += rng.normal(0, 0.1, 3)
        quat = rng.normal(size=4) * [1, 0.2, 0.2, 0.2] + [3, 0, 0, 0]
        qpos[3:7] = quat / np.linalg.norm(quat)
        d = _c_data(m, qpos)
        for camera in ("fixed", "track"):
            depth_ok, ids_ok, want_ids = _compare(m, d, camera, size=48)
            assert depth_ok >= 0.99, (trial, camera, depth_ok)
            assert ids_ok >= 0.99, (trial, camera, ids_ok)
            kinds |= {int(m.geom_type[g]) for g in np.unique(want_ids) if g >= 0}
    assert kinds == set(raycast.SUPPORTED)


def test_hidden_and_transparent_geoms_are_skipped():
    m = mujoco.MjModel.from_xml_string(SHAPES_XML)
    sc = raycast.scene(m)
    drawn = np.concatenate(list(sc.geoms.values()))
    assert sorted(drawn.tolist()) == list(range(6))


def test_unsupported_camera_and_geom_raise():
    m = mujoco.MjModel.from_xml_string(SHAPES_XML)
    with pytest.raises(ValueError, match="unknown camera"):
        raycast.scene(m, "nope")
    mesh = mujoco.MjModel.from_xml_string(
        '<mujoco><asset><mesh name="t" vertex="0 0 0 1 0 0 0 1 0 0 0 1"/></asset>'
        '<worldbody><geom type="mesh" mesh="t"/><camera pos="0 0 3"/></worldbody></mujoco>'
    )
    with pytest.raises(ValueError, match="MESH"):
        raycast.scene(mesh)


def test_render_is_pure_and_vmaps_over_mjx_states():
    env = envs.make("halfcheetah")
    render = raycast.make_raycaster(env.sys.mj_model, 32, 24)
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 3))
    images = jax.jit(jax.vmap(render))(states.pipeline_state)
    assert images.shape == (3, 24, 32, 3) and images.dtype == jnp.uint8
    again = jax.jit(jax.vmap(render))(states.pipeline_state)
    np.testing.assert_array_equal(images, again)
    first = jax.tree.map(lambda x: x[0], states.pipeline_state)
    np.testing.assert_array_equal(jax.jit(render)(first), images[0])
    # Different states give different pictures; the floor and the body are both drawn.
    assert np.any(images[0] != images[1])
    assert len(np.unique(images[0].reshape(-1, 3), axis=0)) > 20

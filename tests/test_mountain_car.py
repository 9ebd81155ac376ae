"""Tests for memrl.envs.mountain_car against gymnasium's MountainCarContinuous-v0."""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.base import State
from scipy import stats

from memrl import envs
from memrl.envs import mountain_car as mc


@pytest.fixture(scope="module")
def gym_car():
    env = gymnasium.make("MountainCarContinuous-v0").unwrapped
    env.reset(seed=0)
    yield env
    env.close()


def _pump(velocity, rng):
    """Energy pumping (push along the velocity) with noise; some actions fall
    outside [-1, 1] to exercise the force clip and the unclipped action cost."""
    direction = 1.0 if velocity >= 0 else -1.0
    a = direction * rng.uniform(0.6, 1.3) + rng.normal(0.0, 0.3)
    return np.float32(np.clip(a, -1.5, 1.5))


def test_rollout_matches_gymnasium(gym_car):
    """600 free-running steps (no resync within an episode): five episodes that
    each hit the left wall and reach the goal; obs, reward and termination agree."""
    env = mc.MountainCar()
    step = jax.jit(env.step)
    rng = np.random.default_rng(0)
    state = env.reset(jax.random.PRNGKey(0))
    gym_car.state = np.array(state.pipeline_state, np.float64)
    goals = walls = clipped = 0
    for t in range(600):
        a = _pump(float(state.obs[1]), rng)
        state = step(state, jnp.array([a]))
        obs, rew, term, trunc, _ = gym_car.step(np.array([a], np.float32))
        np.testing.assert_allclose(state.obs, obs, rtol=0, atol=1e-6)
        np.testing.assert_allclose(state.pipeline_state, obs, rtol=0, atol=1e-6)
        np.testing.assert_allclose(state.reward, rew, rtol=1e-6, atol=1e-6)
        assert bool(state.done) == term and not trunc
        if obs[0] == -1.2:
            walls += 1
            assert obs[1] == 0 and state.obs[1] == 0  # inelastic left wall
        clipped += abs(a) > 1
        if term:
            goals += 1
            assert obs[0] >= 0.45 and rew > 99
            state = env.reset(jax.random.PRNGKey(t))
            gym_car.state = np.array(state.pipeline_state, np.float64)
    assert goals >= 4 and walls >= 4 and clipped > 20


def test_random_states_match_gymnasium(gym_car):
    """Single steps from random states over the whole box, including the
    speed clip, the right bound and arbitrary actions."""
    rng = np.random.default_rng(1)
    n = 300
    # Velocities slightly beyond max_speed too, so the speed clip acts often.
    xs = np.stack([rng.uniform(-1.2, 0.6, n), rng.uniform(-0.075, 0.075, n)], -1)
    xs[:20, 0] = -1.2  # on the wall
    xs = xs.astype(np.float32)
    us = rng.uniform(-2.0, 2.0, (n, 1)).astype(np.float32)
    zeros = jnp.zeros(n)
    batch = State(pipeline_state=jnp.asarray(xs), obs=jnp.asarray(xs), reward=zeros, done=zeros)
    out = jax.jit(jax.vmap(mc.MountainCar().step))(batch, jnp.asarray(us))
    np.testing.assert_allclose(mc.reward(jnp.asarray(xs), jnp.asarray(us)), out.reward, atol=1e-6)
    speed_clipped = done = 0
    for i in range(n):
        gym_car.state = xs[i].copy()
        obs, rew, term, _, _ = gym_car.step(us[i])
        np.testing.assert_allclose(out.obs[i], obs, rtol=0, atol=1e-6)
        np.testing.assert_allclose(out.reward[i], rew, rtol=1e-6, atol=1e-6)
        assert bool(out.done[i]) == term
        speed_clipped += abs(obs[1]) == np.float32(0.07)
        done += term
    assert speed_clipped > 10 and done > 5


def test_dynamics_by_hand():
    x = jnp.array([[-0.5, 0.01], [-1.19, -0.02], [0.59, 0.05]])
    a = jnp.array([[0.5], [-3.0], [1.0]])
    out = np.asarray(mc.dynamics(x, a))
    v0 = 0.01 + 0.5 * 0.0015 - 0.0025 * np.cos(-1.5)
    np.testing.assert_allclose(out[0], [-0.5 + v0, v0], rtol=1e-6)
    np.testing.assert_allclose(out[1], [-1.2, 0.0], atol=1e-7)  # wall: velocity zeroed
    assert out[2, 0] == np.float32(0.6) and out[2, 1] > 0.0  # right bound keeps speed
    np.testing.assert_array_equal(mc.terminated(jnp.asarray(out)), [False, False, True])
    np.testing.assert_allclose(mc.reward(x, a), [-0.025, -0.9, 99.9], rtol=1e-6)
    # Gradients pass where no clip is active, vanish through a clipped force.
    grad = jax.jacfwd(mc.dynamics, argnums=1)(x[0], a[0])
    np.testing.assert_allclose(grad[:, 0], [0.0015, 0.0015], rtol=1e-6)
    assert jnp.all(jax.jacfwd(mc.dynamics, argnums=1)(x[0], jnp.array([2.0])) == 0)


def test_reset_distribution():
    env = mc.MountainCar()
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 4000))
    position, velocity = np.asarray(states.obs).T
    assert states.obs.shape == (4000, 2) and states.obs.dtype == jnp.float32
    assert np.all(velocity == 0) and np.all(states.done == 0)
    assert np.all((position >= -0.6) & (position <= -0.4))
    assert stats.kstest(position, stats.uniform(loc=-0.6, scale=0.2).cdf).pvalue > 1e-3
    np.testing.assert_array_equal(states.pipeline_state, states.obs)


def test_registry_jit_vmap_and_auto_reset():
    spec = envs.spec("mountain_car")
    assert spec == envs.EnvSpec("mountain_car", 2, 1, 999, (2,))
    assert "mountain_car" in envs.NAMES
    env = envs.make("mountain_car")
    assert isinstance(env, mc.MountainCar) and env is envs.make("mountain_car")
    assert envs.make("mountain_car", goal_velocity=0.01).params.goal_velocity == 0.01
    with pytest.raises(ValueError, match="bad overrides .* for env 'mountain_car'"):
        envs.make("mountain_car", power=-1.0)

    keys = jax.random.split(jax.random.PRNGKey(1), 8)
    states = jax.jit(jax.vmap(env.reset))(keys)
    out = jax.jit(jax.vmap(env.step))(states, jnp.ones((8, 1)))
    assert out.obs.shape == (8, 2) and out.reward.shape == (8,) and out.done.shape == (8,)
    assert out.obs.dtype == out.reward.dtype == out.done.dtype == jnp.float32

    # Through the training stack: a car just below the goal terminates and
    # restarts from a fresh start state, keeping the goal as terminal_obs.
    wrapped = envs.wrap_for_training(env, spec.episode_length, num_envs=2)
    state = wrapped.reset(jax.random.PRNGKey(2))
    near_goal = jnp.array([[0.44, 0.05], [0.44, 0.05]])
    state = state.replace(pipeline_state=near_goal, obs=near_goal)
    state = jax.jit(wrapped.step)(state, jnp.array([[1.0], [-1.0]]))
    np.testing.assert_array_equal(state.done, [1, 1])
    np.testing.assert_allclose(state.reward, [99.9, 99.9], rtol=1e-6)
    assert np.all(state.info["terminal_obs"][:, 0] >= 0.45)
    assert np.all((state.obs[:, 0] <= -0.4) & (state.obs[:, 1] == 0))

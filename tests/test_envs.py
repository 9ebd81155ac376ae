"""Tests for memrl.envs: pendulum vs gymnasium, double integrator, wrappers, registry."""

import chex
import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.base import Env, State

from memrl import envs
from memrl.envs import double_integrator as di
from memrl.envs import pendulum
from memrl.envs.wrappers import AutoResetWrapper, RescaleAction


@pytest.fixture(scope="module")
def gym_pendulum():
    env = gymnasium.make("Pendulum-v1").unwrapped
    env.reset(seed=0)
    yield env
    env.close()


def _gym_step(gym_env, x, u):
    gym_env.state = np.array(x, dtype=np.float64)
    obs, rew, terminated, truncated, _ = gym_env.step(np.array([u], dtype=np.float32))
    assert not terminated and not truncated
    return obs, float(rew), np.array(gym_env.state)


def _random_pendulum_cases(n, seed):
    rng = np.random.default_rng(seed)
    th = rng.uniform(-2 * np.pi, 2 * np.pi, n)  # unwrapped angles too
    thdot = rng.uniform(-9.0, 9.0, n)  # some beyond max_speed
    u = rng.uniform(-4.0, 4.0, n)  # some beyond max_torque
    return np.stack([th, thdot], -1).astype(np.float32), u.astype(np.float32)


# ---------------------------------------------------------------- pendulum


def test_pendulum_matches_gymnasium_step_by_step(gym_pendulum):
    xs, us = _random_pendulum_cases(300, seed=0)
    env = pendulum.Pendulum()
    step = jax.jit(jax.vmap(env.step))
    zeros = jnp.zeros(len(xs))
    state = State(
        pipeline_state=jnp.asarray(xs),
        obs=pendulum.observation(jnp.asarray(xs)),
        reward=zeros,
        done=zeros,
    )
    out = step(state, jnp.asarray(us)[:, None])
    speed_clipped = torque_clipped = 0
    for i, (x, u) in enumerate(zip(xs, us, strict=True)):
        obs, rew, x_next = _gym_step(gym_pendulum, x, u)
        np.testing.assert_allclose(out.obs[i], obs, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.reward[i], rew, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.pipeline_state[i], x_next, rtol=1e-5, atol=1e-5)
        assert out.done[i] == 0
        speed_clipped += abs(x_next[1]) == 8.0
        torque_clipped += abs(u) > 2.0
    # The random cases exercise both clips.
    assert speed_clipped > 10 and torque_clipped > 50


def test_pendulum_rollout_matches_gymnasium(gym_pendulum):
    """200 steps (one Pendulum-v1 episode) of our env vs gymnasium from one start."""
    env = pendulum.Pendulum()
    state = env.reset(jax.random.PRNGKey(3))
    gym_pendulum.state = np.array(state.pipeline_state, dtype=np.float64)
    us = np.random.default_rng(1).uniform(-2.5, 2.5, 200).astype(np.float32)
    step = jax.jit(env.step)
    for u in us:
        state = step(state, jnp.array([u]))
        obs, rew, _, _, _ = gym_pendulum.step(np.array([u]))
        np.testing.assert_allclose(state.obs, obs, atol=1e-4)
        np.testing.assert_allclose(state.reward, rew, rtol=1e-4, atol=1e-4)


def test_make_pendulum_takes_unit_actions(gym_pendulum):
    env = envs.make("pendulum")
    assert env.action_size == 1 and env.observation_size == 3
    xs, _ = _random_pendulum_cases(50, seed=1)
    actions = np.random.default_rng(2).uniform(-1.2, 1.2, 50).astype(np.float32)
    step = jax.jit(env.step)
    for x, a in zip(xs, actions, strict=True):
        x = jnp.asarray(x)
        s = State(
            pipeline_state=x, obs=pendulum.observation(x), reward=jnp.zeros(()), done=jnp.zeros(())
        )
        out = step(s, jnp.array([a]))
        obs, rew, x_next = _gym_step(gym_pendulum, np.asarray(x), 2.0 * a)
        np.testing.assert_allclose(out.obs, obs, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.reward, rew, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.pipeline_state, x_next, rtol=1e-5, atol=1e-5)


def test_pendulum_reset_distribution():
    env = pendulum.Pendulum()
    states = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 2000))
    th, thdot = states.pipeline_state[:, 0], states.pipeline_state[:, 1]
    assert jnp.all(jnp.abs(th) <= np.pi) and jnp.all(jnp.abs(thdot) <= 1.0)
    assert jnp.max(jnp.abs(th)) > 3.0 and jnp.max(jnp.abs(thdot)) > 0.95
    np.testing.assert_allclose(states.obs, pendulum.observation(states.pipeline_state))
    assert jnp.all(states.done == 0)


def test_pendulum_pure_functions_differentiable():
    x = jnp.array([0.3, -1.0])
    jac_u = jax.jacfwd(pendulum.dynamics, argnums=1)(x, jnp.array([0.5]))
    np.testing.assert_allclose(jac_u[:, 0], [3.0 * 0.05**2, 3.0 * 0.05], rtol=1e-5)
    # Zero gradient where the torque is clipped.
    assert jnp.all(jax.jacfwd(pendulum.dynamics, argnums=1)(x, jnp.array([3.0])) == 0)
    grad_r = jax.grad(pendulum.reward, argnums=(0, 1))(x, jnp.array([0.5]))
    np.testing.assert_allclose(grad_r[0], [-2 * 0.3, -0.2 * -1.0], rtol=1e-5)
    np.testing.assert_allclose(grad_r[1], [-0.002 * 0.5], rtol=1e-5)


# ------------------------------------------------------- double integrator


def test_double_integrator_matches_authors_equations():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(20, 2)).astype(np.float32)
    a = rng.normal(size=(20, 1)).astype(np.float32)
    dt = 0.05
    expected_next = np.stack([s[:, 0] + dt * s[:, 1], s[:, 1] + dt * a[:, 0]], -1)
    expected_r = -0.5 * (s[:, 0] ** 2 + s[:, 1] ** 2 + a[:, 0] ** 2)
    np.testing.assert_allclose(di.dynamics(s, a), expected_next, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(di.reward(s, a), expected_r, rtol=1e-6, atol=1e-6)

    env = envs.make("double_integrator")
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 20))
    assert jnp.all(jnp.abs(state.obs) <= 2.0)
    out = jax.vmap(env.step)(state, jnp.asarray(a))
    np.testing.assert_allclose(out.obs, di.dynamics(state.obs, a), rtol=1e-6)
    np.testing.assert_allclose(out.reward, di.reward(state.obs, a), rtol=1e-6)
    # Not clipped: a large action moves the velocity proportionally.
    big = env.step(jax.tree.map(lambda x: x[0], state), jnp.array([10.0]))
    np.testing.assert_allclose(big.obs[1], state.obs[0, 1] + 0.5, rtol=1e-5)


def test_expected_return_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        K = jnp.array([[-0.8, -1.3]])
        log_std = jnp.array([np.log(0.4)])
        mean, cov = jnp.array([1.0, -0.5]), jnp.array([[0.5, 0.1], [0.1, 0.3]])

        @jax.jit
        def J(K, log_std):
            return di.expected_return(K, log_std, 40, mean, cov, gamma=0.97)

        grad_K, grad_log_std = jax.grad(J, argnums=(0, 1))(K, log_std)
        assert grad_K.dtype == jnp.float64
        h = 1e-6
        fd_K = np.zeros((1, 2))
        for j in range(2):
            e = jnp.zeros((1, 2)).at[0, j].set(h)
            fd_K[0, j] = (J(K + e, log_std) - J(K - e, log_std)) / (2 * h)
        fd_std = (J(K, log_std + h) - J(K, log_std - h)) / (2 * h)
        np.testing.assert_allclose(grad_K, fd_K, rtol=1e-6)
        np.testing.assert_allclose(grad_log_std, [fd_std], rtol=1e-6)
    assert jnp.zeros(1).dtype == jnp.float32  # x64 did not leak


def test_expected_return_matches_monte_carlo():
    """Uniform starts (authors' reset): exact because only two moments matter."""
    K = np.array([[-1.0, -1.5]])
    sigma, horizon, gamma, n = 0.3, 30, 0.99, 200_000
    p = di.make_params()
    A, B, Q, R = (np.asarray(m, np.float64) for m in p)
    rng = np.random.default_rng(0)
    s = rng.uniform(-2.0, 2.0, size=(n, 2))
    returns = np.zeros(n)
    for t in range(horizon):
        a = s @ K.T + sigma * rng.normal(size=(n, 1))
        r = -(np.einsum("ni,ij,nj->n", s, Q, s) + np.einsum("ni,ij,nj->n", a, R, a))
        returns += gamma**t * r
        s = s @ A.T + a @ B.T
    mean, cov = di.init_moments()
    exact = di.expected_return(
        jnp.asarray(K, jnp.float32), jnp.log(jnp.array([sigma])), horizon, mean, cov, gamma=gamma
    )
    stderr = returns.std() / np.sqrt(n)
    assert abs(float(exact) - returns.mean()) < 4 * stderr + 1e-3 * abs(returns.mean())


# ---------------------------------------------------------------- wrappers


class _Countdown(Env):
    """Toy env: random start obs, terminates after 3 steps (to test termination)."""

    def reset(self, rng):
        obs = jax.random.normal(rng, (2,))
        zero = jnp.zeros(())
        return State(
            pipeline_state=jnp.zeros(()),
            obs=obs,
            reward=zero,
            done=zero,
            info={"counter": jnp.zeros((), jnp.int32)},
        )

    def step(self, state, action):
        counter = state.info["counter"] + 1
        return state.replace(
            pipeline_state=state.pipeline_state + 1.0,
            obs=state.obs + action,
            reward=jnp.ones(()),
            done=(counter >= 3).astype(jnp.float32),
            info={**state.info, "counter": counter},
        )

    @property
    def observation_size(self):
        return 2

    @property
    def action_size(self):
        return 2

    @property
    def backend(self):
        return "jax"


def _rollout(env, num_steps, action, key=0):
    state = jax.jit(env.reset)(jax.random.PRNGKey(key))

    def body(state, _):
        nxt = env.step(state, action)
        return nxt, (state, nxt)

    _, (before, after) = jax.jit(lambda s: jax.lax.scan(body, s, None, num_steps))(state)
    return state, before, after


def test_auto_reset_time_limit_gives_fresh_reset():
    num_envs, length = 3, 5
    env = envs.wrap_for_training(envs.make("pendulum"), length, num_envs)
    first, before, after = _rollout(env, 3 * length, jnp.full((num_envs, 1), 0.3))
    assert first.obs.shape == (num_envs, 3) and first.info["reset_key"].shape == (num_envs, 2)
    done = np.asarray(after.done)
    ends = np.arange(3 * length) % length == length - 1
    np.testing.assert_array_equal(done, np.repeat(ends[:, None], num_envs, 1))
    np.testing.assert_array_equal(after.info["truncation"], done)
    # steps: 1..4, then 0 on the returned (already reset) state.
    np.testing.assert_array_equal(after.info["steps"][:, 0], [1, 2, 3, 4, 0] * 3)

    # terminal_obs is the true next obs of the last transition.
    expected_obs = pendulum.observation(
        pendulum.dynamics(
            before.pipeline_state, jnp.full(before.pipeline_state.shape[:-1] + (1,), 0.6)
        )
    )
    np.testing.assert_allclose(after.info["terminal_obs"], expected_obs, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(after.info["terminal_obs"][~ends], after.obs[~ends])
    assert np.all(np.abs(after.info["terminal_obs"][ends] - after.obs[ends]).max(-1) > 1e-3)
    # The returned obs is a fresh start: consistent with the new physical state,
    # in the reset range, different across episodes and across envs.
    np.testing.assert_allclose(after.obs, pendulum.observation(after.pipeline_state), atol=1e-6)
    starts = np.concatenate(
        [np.asarray(first.pipeline_state)[None], np.asarray(after.pipeline_state)[ends]]
    )  # [3 episodes, envs, 2]
    assert np.all(np.abs(starts[..., 1]) <= 1.0)
    for i in range(len(starts)):
        for j in range(i):
            assert np.all(np.abs(starts[i] - starts[j]).max(-1) > 1e-4)
    assert np.all(np.abs(starts[:, 0] - starts[:, 1]).max(-1) > 1e-4)
    # Episode metrics at the end step sum the episode's rewards.
    sums = after.reward.reshape(3, length, num_envs).sum(1)
    np.testing.assert_allclose(after.info["episode_metrics"]["sum_reward"][ends], sums, rtol=1e-5)


def test_auto_reset_on_termination_is_not_truncation():
    env = envs.wrap_for_training(_Countdown(), episode_length=100, num_envs=2)
    _, before, after = _rollout(env, 7, jnp.ones((2, 2)))
    np.testing.assert_array_equal(after.done[:, 0], [0, 0, 1, 0, 0, 1, 0])
    assert np.all(after.info["truncation"] == 0)
    # The env's own info (counter) and pipeline state restart with the episode.
    np.testing.assert_array_equal(after.info["counter"][:, 0], [1, 2, 0, 1, 2, 0, 1])
    np.testing.assert_array_equal(after.pipeline_state[:, 0], [1, 2, 0, 1, 2, 0, 1])
    np.testing.assert_allclose(after.info["terminal_obs"], before.obs + 1.0, rtol=1e-6)
    assert not np.allclose(after.obs[2], after.obs[5])


def test_auto_reset_unbatched_and_structure_stable():
    env = AutoResetWrapper(envs.wrappers.EpisodeWrapper(envs.make("double_integrator"), 2, 1))
    state = env.reset(jax.random.PRNGKey(0))
    nxt = env.step(state, jnp.zeros(1))
    assert jax.tree.structure(state) == jax.tree.structure(nxt)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(nxt), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype


def test_single_env_stack_matches_vmapped_one():
    """num_envs=1 runs unbatched (auto-reset in a real lax.cond); it must give
    the states of the vmapped stack of size 1 (reset computed every step and
    selected), across several episode ends."""
    length = 4
    single = envs.wrap_for_training(envs.make("pendulum"), length, 1)
    assert isinstance(single, envs.AddBatchAxis)
    base = envs.wrappers.EpisodeWrapper(envs.make("pendulum"), length, 1)
    vmapped = envs.wrappers.VmapWrapper(AutoResetWrapper(base), batch_size=1)
    actions = jnp.sin(jnp.arange(11.0))[:, None, None]
    outs = []
    for env in (single, vmapped):
        state = jax.jit(env.reset)(jax.random.PRNGKey(3))
        _, after = jax.jit(
            lambda s, env=env: jax.lax.scan(lambda s, a: (env.step(s, a),) * 2, s, actions)
        )(state)
        outs.append(after)
    assert int(np.sum(outs[0].done)) == 2
    chex.assert_trees_all_close(outs[0], outs[1], rtol=1e-6, atol=1e-6)


def test_wrap_for_eval_does_not_reset():
    env = envs.wrap_for_eval(envs.make("double_integrator"), episode_length=3, num_episodes=4)
    _, before, after = _rollout(env, 5, jnp.zeros((4, 1)))
    np.testing.assert_array_equal(after.done[:, 0], [0, 0, 1, 1, 1])
    np.testing.assert_allclose(after.obs, di.dynamics(before.obs, jnp.zeros((5, 4, 1))), rtol=1e-6)
    assert "reset_key" not in after.info


def test_rescale_action():
    env = RescaleAction(_Countdown(), low=jnp.array([-3.0, 0.0]), high=jnp.array([1.0, 4.0]))
    state = env.reset(jax.random.PRNGKey(0))
    for a, expected in [
        ([-1.0, -1.0], [-3.0, 0.0]),
        ([1.0, 1.0], [1.0, 4.0]),
        ([0.0, 0.5], [-1.0, 3.0]),
    ]:
        out = env.step(state, jnp.array(a))
        np.testing.assert_allclose(out.obs - state.obs, expected, rtol=1e-6)


# ---------------------------------------------------------------- registry


def test_unknown_env_error_lists_valid_names():
    with pytest.raises(ValueError) as err:
        envs.make("nope")
    message = str(err.value)
    assert message.startswith("unknown env 'nope'; valid envs: ant, ")
    assert "\n" not in message
    assert all(name in message for name in envs.NAMES)
    with pytest.raises(ValueError, match="unknown env"):
        envs.spec("nope")


def test_bad_overrides_raise_one_line_value_error():
    for name, overrides in [
        ("pendulum", {"foo": 1}),
        ("pendulum", {"max_torque": -1.0}),
        ("double_integrator", {"dt": "fast"}),
        ("inverted_pendulum", {"not_an_arg": 3}),
    ]:
        with pytest.raises(ValueError, match=f"bad overrides .* for env '{name}'") as err:
            envs.make(name, **overrides)
        assert "\n" not in str(err.value)


def test_specs_and_overrides():
    assert envs.spec("pendulum") == envs.EnvSpec("pendulum", 3, 1, 200, (3,))
    assert envs.spec("double_integrator") == envs.EnvSpec("double_integrator", 2, 1, 200, (2,))
    assert envs.make("pendulum") is envs.make("pendulum")  # cached
    env = envs.make("pendulum", g=9.81)
    assert env.unwrapped.params.g == 9.81
    assert set(envs.NAMES) >= {"ant", "humanoid", "pusher", "pendulum", "double_integrator"}


def test_inverted_pendulum_sizes():
    """Sizes of an MJX task through the training stack, traced but not compiled."""
    spec = envs.spec("inverted_pendulum")
    assert spec == envs.EnvSpec("inverted_pendulum", 4, 1, 1000, (4,))
    env = envs.wrap_for_training(envs.make("inverted_pendulum"), spec.episode_length, 2)
    state = jax.eval_shape(
        lambda key: env.step(env.reset(key), jnp.zeros((2, 1))), jax.random.PRNGKey(0)
    )
    assert state.obs.shape == (2, 4) and state.info["terminal_obs"].shape == (2, 4)
    assert state.reward.shape == (2,) and state.info["reset_key"].shape == (2, 2)


@pytest.mark.slow
def test_inverted_pendulum_runs_through_auto_reset():
    """The MJX compile (about a minute on 2 CPU cores): episodes end and restart."""
    env = envs.wrap_for_training(envs.make("inverted_pendulum"), episode_length=4, num_envs=2)
    first, before, after = _rollout(env, 6, jnp.ones((2, 1)))
    assert np.all(np.isfinite(after.obs))
    assert np.all(after.done[3] == 1) and np.all(after.info["steps"][3] == 0)
    assert np.all(np.abs(after.obs[3] - first.obs).max(-1) > 0)  # fresh, not the first state


def test_action_repeat_equals_consecutive_gymnasium_steps(gym_pendulum):
    """Pendulum with action repeat 3: one agent step is three gymnasium
    Pendulum-v1 steps with the same torque; the reward is their sum."""
    env = envs.ActionRepeat(envs.make("pendulum"), 3)
    state = env.reset(jax.random.PRNGKey(4))
    x = np.asarray(state.pipeline_state, np.float64)
    step = jax.jit(env.step)
    for a in (0.5, -1.0, 0.25):
        state = step(state, jnp.array([a]))
        total = 0.0
        for _ in range(3):
            _, r, x = _gym_step(gym_pendulum, x, 2.0 * a)
            total += r
        np.testing.assert_allclose(state.pipeline_state, x, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(state.reward, total, rtol=1e-4)


def test_action_repeat_stops_at_termination_and_counts_agent_steps():
    """_Countdown terminates on its 3rd frame: with repeat 2, the 2nd agent step
    ends after one frame (reward 1, state frozen), and the time limit counts
    agent steps (4 frames with repeat 2 = 2 agent steps)."""
    env = envs.wrap_for_training(_Countdown(), episode_length=100, num_envs=2, action_repeat=2)
    _, before, after = _rollout(env, 4, jnp.ones((2, 2)))
    np.testing.assert_array_equal(after.reward[:, 0], [2, 1, 2, 1])
    np.testing.assert_array_equal(after.done[:, 0], [0, 1, 0, 1])
    # The terminal observation moved by 3 frames of +1, not 4.
    np.testing.assert_allclose(after.info["terminal_obs"][1], before.obs[0] + 3.0, rtol=1e-6)
    np.testing.assert_array_equal(before.info["steps"][:, 0], [0, 1, 0, 1])
    limited = envs.wrap_for_training(envs.make("pendulum"), 10, 1, action_repeat=3)
    _, _, after = _rollout(limited, 8, jnp.zeros((1, 1)))
    # ceil(10 / 3) = 4 agent steps per episode, cut by truncation.
    np.testing.assert_array_equal(after.done[:, 0], [0, 0, 0, 1, 0, 0, 0, 1])
    assert np.all(after.info["truncation"][after.done == 1] == 1)

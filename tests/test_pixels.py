"""memrl.envs.pixels: image observations inside the jitted step, and --obs=pixels end to end."""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scripts

from memrl import envs
from memrl.agents import dreamer, sac
from memrl.render import classic
from memrl.training import runner


def test_pixels_keep_the_dynamics_and_the_true_state():
    env = envs.make("pendulum")
    wrapped = envs.pixels.wrapper("pendulum", 32)(env)
    key = jax.random.PRNGKey(0)
    plain, image = env.reset(key), wrapped.reset(key)
    assert image.obs.shape == (32, 32, 3) and image.obs.dtype == jnp.uint8
    step, wstep = jax.jit(env.step), jax.jit(wrapped.step)
    for a in jax.random.uniform(jax.random.PRNGKey(1), (5, 1), minval=-1, maxval=1):
        np.testing.assert_array_equal(image.info["state"], plain.obs)
        plain, image = step(plain, a), wstep(image, a)
        np.testing.assert_array_equal(image.reward, plain.reward)
    # The picture is the analytic drawing of the true state (pole angle and all).
    np.testing.assert_array_equal(image.obs, classic.pendulum(plain.obs, 32))
    assert wrapped.observation_size == (32, 32, 3)


def test_wrap_for_training_renders_above_action_repeat_and_vmaps():
    env = envs.make("pendulum")
    render = envs.pixels.wrapper("pendulum", 16)
    batched = envs.wrap_for_training(env, 200, num_envs=3, action_repeat=2, render=render)
    state = jax.jit(batched.reset)(jax.random.PRNGKey(0))
    state = jax.jit(batched.step)(state, jnp.zeros((3, 1)))
    assert state.obs.shape == (3, 16, 16, 3) and state.obs.dtype == jnp.uint8
    assert state.info["state"].shape == (3, 3)
    # One picture per agent step: the wrapper sits directly above ActionRepeat.
    inner = batched.env.env.env
    assert isinstance(inner, envs.pixels.Pixels) and isinstance(inner.env, envs.ActionRepeat)
    # Frames after the repeat: the picture shows the state after both frames.
    pictures = jax.vmap(lambda o: classic.pendulum(o, 16))(state.info["state"])
    np.testing.assert_array_equal(state.obs, pictures)


# Opt-in (-m slow) to keep the default suite under 15 min on 2 cores: an MJX scan of the ray
# caster costs ~170 s cold; the ray caster itself is checked against mj_ray in test_raycast.
@pytest.mark.slow
def test_mjx_pixels_are_a_pure_function_of_the_state_under_vmap_and_scan():
    env = envs.make("halfcheetah")
    wrapped = envs.pixels.wrapper("halfcheetah", 24)(env)
    states = jax.vmap(wrapped.reset)(jax.random.split(jax.random.PRNGKey(0), 2))

    def rollout(state):
        def body(s, a):
            s = wrapped.step(s, a)
            return s, s.obs

        return jax.lax.scan(body, state, jnp.full((3, env.action_size), 0.5))

    final, frames = jax.jit(jax.vmap(rollout))(states)
    assert frames.shape == (2, 3, 24, 24, 3) and frames.dtype == jnp.uint8
    again = jax.jit(jax.vmap(wrapped._render))(final)
    np.testing.assert_array_equal(again, final.obs)
    assert np.any(frames[:, 0] != frames[:, -1])  # the cheetah moved


def test_obs_flag_is_checked_with_one_clear_error(tmp_path):
    run = runner.RunConfig(env="pendulum", total_steps=10, eval_every=10, obs="pixels")
    with pytest.raises(runner.UserError, match="sac learns from state only"):
        runner.build(sac, sac.Config.for_env("pendulum"), run)
    bad = runner.RunConfig(env="pendulum", total_steps=10, eval_every=10, obs="rgb")
    with pytest.raises(runner.UserError, match="--obs must be one of"):
        runner.validate(bad, sac.Config())
    small = runner.RunConfig(
        env="pendulum", total_steps=10, eval_every=10, obs="pixels", image_size=32
    )
    config = dreamer.Config.for_env("pendulum", obs="pixels")
    with pytest.raises(runner.UserError, match="64x64"):
        runner.build(dreamer, config, small)


def test_dreamer_pixel_config_is_cpu_sized():
    config = dreamer.Config.for_env("pendulum", obs="pixels")
    assert config.cnn_depth < dreamer.Config().cnn_depth
    assert dreamer.Config.for_env("pendulum").cnn_depth == dreamer.Config().cnn_depth
    # Images are 12 KB each: the MuJoCo default replay ring is 1.2 GB, not 12.
    assert dreamer.Config.for_env("halfcheetah", obs="pixels").buffer_size * 64 * 64 * 3 < 2e9


# Opt-in (-m slow) to keep the default suite under 15 min on 2 cores: the pixel update is covered
# by test_dreamer.test_image_update_uses_conv_encoder_and_decoder and the script by
# test_dreamer.test_script_end_to_end.
@pytest.mark.slow
def test_dreamer_from_pixels_script_end_to_end(tmp_path):
    logdir = tmp_path / "run"
    tiny = dict(
        cnn_depth=2, stoch_size=4, deter_size=8, hidden_size=8, units=8, batch_size=2,
        batch_length=4, horizon=3, train_steps=1, periodic_every=40, warmup_steps=40,
        buffer_size=100, mode_samples=4,
    )  # fmt: skip
    result = scripts.run(
        "experiments.dreamer", "--env=pendulum", "--obs=pixels", "--total_steps=80",
        "--eval_every=80", "--eval_episodes=1", f"--logdir={logdir}", "--noprogress",
        *[f"--config.{k}={v}" for k, v in tiny.items()],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    with open(logdir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and int(rows[0]["policy_updates"]) == 2
    assert np.isfinite(float(rows[0]["eval_return"]))
    assert np.isfinite(float(rows[0]["model/kl"]))


@pytest.mark.slow
def test_pendulum_from_pixels_improves_500_over_random(tmp_path):
    """Issue acceptance: Dreamer from 64x64 pixels on pendulum, with
    Config.for_env('pendulum', obs='pixels'), improves the eval return by at
    least 500 over the random policy (about -1200) within 30k frames."""
    run = runner.RunConfig(
        env="pendulum",
        total_steps=30_000,
        eval_every=10_000,
        logdir=str(tmp_path),
        progress=False,
        obs="pixels",
    )
    config = dreamer.Config.for_env("pendulum", obs="pixels")
    rows = runner.train(dreamer, config, run)
    assert rows[-1]["eval_return"] >= -700.0

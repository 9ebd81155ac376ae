"""MEMB: the imagined states of the policy gradient, the true-model ablation
(against the environment and finite differences through pendulum), Table 2
and the script."""

import collections
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_s2vg import run_script

from memrl import envs
from memrl.agents import memb
from memrl.agents import value_gradient as core
from memrl.training import runner

Spec = collections.namedtuple("Spec", "observation_size action_size")


def _learner(**kw):
    base = dict(hidden_sizes=(8,), model_hidden_sizes=(8,), env_name="pendulum")
    return _base_learner().replace(config=memb.Config(**{**base, **kw}))


@functools.cache
def _base_learner():
    """One initialization for the file (the configs differ in static fields only)."""
    config = memb.Config(hidden_sizes=(8,), model_hidden_sizes=(8,))
    return jax.jit(core.init_learner, static_argnums=(1, 2, 3))(jax.random.PRNGKey(0), 3, 1, config)


def _pendulum_obs(n, key):
    th = jax.random.uniform(key, (n,), minval=-2.5, maxval=2.5)
    thdot = jax.random.uniform(jax.random.fold_in(key, 1), (n,), minval=-3, maxval=3)
    return jnp.stack([jnp.cos(th), jnp.sin(th), thdot], axis=-1)


def test_true_step_is_the_environment_step():
    env = envs.make("pendulum")
    step = core.true_step("pendulum")
    for i in range(4):
        state = env.reset(jax.random.PRNGKey(i))
        action = jnp.array([0.8 - 0.5 * i])
        nxt = env.step(state, action)
        obs, reward = step(state.obs, action)
        np.testing.assert_allclose(obs, nxt.obs, atol=1e-5)
        np.testing.assert_allclose(reward, nxt.reward, rtol=1e-5)


def test_policy_states_are_real_then_imagined():
    obs = _pendulum_obs(5, jax.random.PRNGKey(1))
    key = jax.random.PRNGKey(2)
    one = memb.imagined_states(_learner(rollout_length=1), obs, key)
    np.testing.assert_array_equal(one, obs)  # k = 1: the authors' code, real states only
    for true_model in (False, True):
        states = memb.imagined_states(_learner(rollout_length=3, true_model=true_model), obs, key)
        assert states.shape == (15, 3)
        np.testing.assert_array_equal(states[:5], obs)
        norm = jnp.sum(states[5:, :2] ** 2, axis=-1)
        # The true pendulum keeps (cos, sin) on the unit circle; the untrained model does not.
        assert bool(jnp.allclose(norm, 1.0, atol=1e-5)) == true_model


def test_true_model_policy_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        learner = _learner(true_model=True, alpha=0.2)
        to64 = lambda t: jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), t)
        learner = learner.replace(policy=to64(learner.policy), value=to64(learner.value))
        obs = _pendulum_obs(16, jax.random.PRNGKey(3)).astype(jnp.float64)
        key = jax.random.PRNGKey(4)

        @jax.jit
        def loss(theta):
            return core.policy_loss(theta, learner, obs, key)[0]

        grad = jax.jit(jax.grad(loss))(learner.policy)
        leaves, tree = jax.tree_util.tree_flatten(learner.policy)
        keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
        direction = tree.unflatten(
            [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
        )
        eps = 1e-6
        shifted = lambda s: jax.tree_util.tree_map(
            lambda p, d: p + s * d, learner.policy, direction
        )
        fd = (loss(shifted(eps)) - loss(shifted(-eps))) / (2 * eps)
        analytic = sum(
            jnp.vdot(g, d)
            for g, d in zip(
                jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(direction), strict=True
            )
        )
        np.testing.assert_allclose(analytic, fd, rtol=1e-6)
        # The gradient goes through the true dynamics: a learned model gives another.
        learned = learner.replace(config=dataclasses.replace(learner.config, true_model=False))
        other = jax.jit(jax.grad(lambda th: core.policy_loss(th, learned, obs, key)[0]))(
            learner.policy
        )
        diffs = jax.tree_util.tree_map(lambda a, b: jnp.max(jnp.abs(a - b)), grad, other)
        assert max(float(d) for d in jax.tree_util.tree_leaves(diffs)) > 1e-3


def test_true_model_needs_a_differentiable_jax_step():
    config = dataclasses.replace(memb.Config.for_env("inverted_pendulum"), true_model=True)
    with pytest.raises(ValueError, match="pendulum only"):
        memb.init(jax.random.PRNGKey(0), Spec(4, 1), config)


def test_table_2_settings():
    swimmer = memb.Config.for_env("swimmer")
    assert (swimmer.epochs, swimmer.updates_per_step, swimmer.alpha) == (180, 5, 0.2)
    reacher = memb.Config.for_env("reacher")
    assert (reacher.epochs, reacher.epoch_length, reacher.model_learning_rate) == (50, 50, 1e-4)
    pend = memb.Config.for_env("pendulum")
    assert (pend.alpha, pend.updates_per_step, pend.model_hidden_sizes) == (0.2, 5, (32, 16))
    assert (pend.batch_size, pend.tau, pend.horizon, pend.rollout_length) == (100, 0.005, 1, 2)
    assert memb.Config.for_env("inverted_pendulum").updates_per_step == 1


# Opt-in (-m slow) to keep the default suite under 15 min on 2 cores:
# test_s2vg.test_script_end_to_end runs the same value-gradient loop through the script.
@pytest.mark.slow
def test_script_end_to_end(tmp_path):
    rows = run_script("experiments.memb", str(tmp_path / "run"), "--config.rollout_length=3")
    assert float(rows[-1]["policy_updates"]) == 2 * 200
    # MEMB App. B.2: the held-out per-pair model error is logged.
    for column in ("model/heldout_pair_w1", "model/heldout_reward_w1"):
        assert float(rows[-1][column]) > 0


@pytest.mark.slow
def test_script_with_true_model_and_alpha_zero(tmp_path):
    run_script(
        "experiments.memb",
        str(tmp_path / "run"),
        "--config.true_model=true",
        "--config.alpha=0",
        "--config.exploration_noise=0.2",
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "env,steps,goal", [("pendulum", 10_000, -200.0), ("inverted_pendulum", 16_000, 900.0)]
)
def test_learns(tmp_path, env, steps, goal):
    """Acceptance: pendulum within 10 epochs, inverted pendulum within 16 (MEMB Fig. 1)."""
    run = runner.RunConfig(
        env=env, total_steps=steps, eval_every=1000, logdir=str(tmp_path), progress=False
    )
    rows = runner.train(memb, memb.Config.for_env(env), run)
    assert rows[-1]["eval_return"] >= goal

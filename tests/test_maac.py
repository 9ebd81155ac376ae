"""MAAC: the objective at H = 0 is SAC's actor loss, pathwise gradients through
a tiny model match finite differences, STEVE against hand computations, the
ablation flags, and the script end to end."""

import collections
import csv
import dataclasses
import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memrl.agents import maac, sac, steve
from memrl.nets import dynamics
from memrl.nets import policy as policy_lib
from memrl.replay import buffer
from memrl.training import runner
from memrl.types import Transition

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Spec = collections.namedtuple("Spec", "observation_size action_size")
OBS, ACT = 3, 2


def _config(**kw):
    base = dict(
        env_name="pendulum",
        hidden_sizes=(8,),
        batch_size=6,
        buffer_size=64,
        rollout_batch_size=4,
        updates_per_step=2,
        horizon=2,
        num_samples=2,
        terminal_actions=2,
        steve_horizon=2,
        steve_members=2,
        model_members=3,
        model_elites=3,
        model_hidden_sizes=(8,),
        model_max_epochs=2,
        model_error_horizon=0,
        periodic_every=50,
    )
    return maac.Config(**{**base, **kw})


@functools.partial(jax.jit, static_argnums=(0, 1))
def _state(config, seed=0):
    state = maac.init(jax.random.PRNGKey(seed), Spec(OBS, ACT), config)
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed + 1))
    obs = jax.random.normal(k1, (40, OBS))
    real = Transition(
        obs=obs,
        action=jax.random.uniform(k2, (40, ACT), minval=-1, maxval=1),
        reward=jnp.sin(obs[:, 0]),
        discount=jnp.ones(40),
        next_obs=obs + 0.1,
    )
    return state.replace(env_buffer=buffer.add(state.env_buffer, real))


def test_objective_with_zero_horizon_is_the_sac_actor_loss():
    config = _config(horizon=0, num_samples=1, terminal_actions=1)
    state = _state(config)
    learner = state.learner.replace(log_alpha=jnp.log(0.3))
    obs = jax.random.normal(jax.random.PRNGKey(3), (5, OBS))
    key = jax.random.PRNGKey(4)
    want, _ = jax.jit(sac.actor_loss)(learner.policy, learner, obs, key)
    noise = maac.sample_noise(key, state.model, config, 5, ACT)
    # SAC draws its noise as normal(key, [B, A]); use the same for a_0.
    noise = noise._replace(terminal=jax.random.normal(key, (5, ACT))[None])
    got, metrics = jax.jit(maac.actor_loss)(learner.policy, learner, state.model, obs, noise)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    assert float(metrics["actor/model_return"]) == 0.0


def test_pathwise_gradient_through_the_model_matches_finite_differences():
    with jax.enable_x64(True):
        config = _config(horizon=3, num_samples=2, terminal_actions=2)
        state = jax.tree_util.tree_map(
            lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, _state(config)
        )
        learner, model = state.learner, state.model
        # A model with visible noise, so the reparameterized path matters.
        model = model.replace(
            params={**model.params, "min_logvar": model.params["min_logvar"] * 0 - 3.0}
        )
        obs = jax.random.normal(jax.random.PRNGKey(5), (3, OBS), jnp.float64)
        noise = jax.tree_util.tree_map(
            lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x,
            maac.sample_noise(jax.random.PRNGKey(6), model, config, 3, ACT),
        )

        @jax.jit
        def loss(params):
            return maac.actor_loss(params, learner, model, obs, noise)[0]

        grads = jax.jit(jax.grad(loss))(learner.policy)
        direction = jax.tree_util.tree_map(
            lambda p, k: jax.random.normal(k, p.shape, p.dtype),
            learner.policy,
            _keys_like(learner.policy, jax.random.PRNGKey(7)),
        )
        analytic = sum(
            jnp.vdot(g, d)
            for g, d in zip(
                jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(direction), strict=True
            )
        )
        h = 1e-6
        shift = lambda s: jax.tree_util.tree_map(lambda p, d: p + s * d, learner.policy, direction)
        numeric = (loss(shift(h)) - loss(shift(-h))) / (2 * h)
        np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-5, atol=1e-8)

        # The gradient of the path's value with respect to the start state
        # flows through the model steps.
        @jax.jit
        def value(s0):
            out = maac.pathwise_return(
                s0,
                lambda s, e: (jnp.tanh(s[..., :ACT] + 0.1 * e), jnp.zeros(s.shape[:-1])),
                lambda s, a, e: dynamics.step_with(model, s, a, noise.member[:3], e),
                lambda s, a: jnp.sum(s**2, -1) + jnp.sum(a, -1),
                noise.action[:, :3],
                noise.model[:, :3],
                noise.terminal[:, :3],
                0.9,
            )
            return jnp.sum(out.value)

        g = jax.jit(jax.grad(value))(obs)
        e = jnp.zeros_like(obs).at[1, 2].set(1.0)
        fd = (value(obs + h * e) - value(obs - h * e)) / (2 * h)
        np.testing.assert_allclose(float(g[1, 2]), float(fd), rtol=1e-5, atol=1e-8)


def _keys_like(tree, key):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(treedef, list(jax.random.split(key, len(leaves))))


def test_steve_candidates_and_inverse_variance_combination_by_hand():
    r = jnp.array([1.0, 2.0, 3.0])
    c = jnp.array([0.9, 0.5, 0.0])
    v = jnp.array([10.0, 20.0, 30.0])
    got = steve.candidate_targets(r, c, v)
    want = [1 + 0.9 * 10, 1 + 0.9 * 2 + 0.45 * 20, 1 + 0.9 * 2 + 0.45 * 3 + 0.0 * 30]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)

    candidates = jnp.array([[1.0, 3.0], [2.0, 2.0 + 2 * np.sqrt(2)], [0.0, 6.0]])
    # Means 2, 2+sqrt2, 3; variances 1, 2, 9 -> weights 1, 1/2, 1/9.
    w = np.array([1.0, 0.5, 1 / 9])
    m = np.array([2.0, 2 + np.sqrt(2), 3.0])
    np.testing.assert_allclose(float(steve.combine(candidates, eps=0.0)), w @ m / w.sum(), 1e-6)
    np.testing.assert_allclose(
        np.asarray(steve.horizon_weights(candidates, eps=0.0)), w / w.sum(), 1e-6
    )


def test_steve_targets_stop_at_real_terminations_and_reduce_to_td_at_horizon_zero():
    config = _config(steve_horizon=2)
    state = _state(config)
    learner, model = state.learner, state.model
    batch = buffer.sample(state.env_buffer, jax.random.PRNGKey(8), 6)
    ended = batch._replace(discount=jnp.zeros(6))
    steve_targets = jax.jit(maac.steve_targets)
    target, _ = steve_targets(learner, model, ended, jax.random.PRNGKey(9))
    np.testing.assert_allclose(np.asarray(target), np.asarray(ended.reward), rtol=1e-6)

    # Horizon 0: one-step soft targets with the min over the 2 target heads
    # (as the TD target), averaged over the 2 members, each with its own
    # next action.
    zero = learner.replace(config=dataclasses.replace(config, steve_horizon=0))
    target, metrics = steve_targets(zero, model, batch, jax.random.PRNGKey(9))
    pi, q = sac.networks(config, ACT)
    k_path = jax.random.split(jax.random.PRNGKey(9))[1]
    k_act = jax.random.split(jax.random.split(k_path, 1)[0])[0]
    next_obs = jnp.broadcast_to(batch.next_obs, (2,) + batch.next_obs.shape)
    a, logp = policy_lib.sample_and_log_prob(pi.apply(learner.policy, next_obs), k_act)
    qv = q.apply(learner.target_critic, next_obs, a) - jnp.exp(learner.log_alpha) * logp
    want = batch.reward + config.gamma * batch.discount * jnp.mean(jnp.min(qv, axis=0), axis=0)
    np.testing.assert_allclose(np.asarray(target), np.asarray(want), rtol=1e-4, atol=1e-5)
    assert float(metrics["steve/mean_horizon"]) == 0.0


def test_update_runs_for_every_ablation_and_keeps_shapes():
    base = _config()
    # The default flags run in the script test below.
    ablations = [dict(horizon=0, steve=False, num_samples=1, use_entropy=False, real_ratio=1.0)]
    for kw in ablations:
        config = dataclasses.replace(base, **kw)
        state = _state(config)
        step = jnp.int32(10_000)
        state, periodic_metrics = jax.jit(maac.periodic)(state, jax.random.PRNGKey(1), step)
        transition = buffer.gather(state.env_buffer, jnp.array([0]))
        new, metrics = jax.jit(maac.train_step)(state, transition, jax.random.PRNGKey(2), step)
        assert int(metrics["count/policy_updates"]) == config.updates_per_step
        for k, v in metrics.items():
            assert np.all(np.isfinite(np.asarray(v))), k
        same = jax.tree_util.tree_map(lambda a, b: a.shape == b.shape, state.learner, new.learner)
        assert all(jax.tree_util.tree_leaves(same))
        if not config.use_entropy:
            assert float(metrics["alpha"]) == 0.0
            assert float(new.learner.log_alpha) == float(state.learner.log_alpha)
        if config.real_ratio == 1.0:
            assert int(periodic_metrics["count/model_rollouts"]) == 0
            assert int(new.model_buffer.size) == 0
        else:
            assert int(new.model_buffer.size) == config.rollout_batch_size


def test_for_env_uses_the_authors_settings():
    ant = maac.Config.for_env("ant")
    assert (ant.horizon, ant.model_members, ant.updates_per_step, ant.warmup_steps) == (
        3,
        8,
        8,
        5000,
    )
    assert ant.steve_horizon == 2 and ant.steve_members == 4 and ant.terminal_actions == 5
    assert (ant.mpc_candidates, ant.mpc_horizon, ant.mpc_iterations) == (1024, 10, 8)
    assert maac.Config.for_env("walker2d").horizon == 1
    with pytest.raises(ValueError):
        maac.validate(dataclasses.replace(ant, steve_members=9))


def _script(module, *args):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


TINY = [
    "--env=pendulum",
    "--total_steps=300",
    "--eval_every=150",
    "--eval_episodes=2",
    "--noprogress",
    "--config.hidden_sizes=(8,)",
    "--config.batch_size=8",
    "--config.warmup_steps=100",
    "--config.periodic_every=100",
    "--config.updates_per_step=1",
    "--config.rollout_batch_size=16",
    "--config.model_members=2",
    "--config.model_elites=2",
    "--config.steve_members=2",
    "--config.model_hidden_sizes=(8,)",
    "--config.model_max_epochs=2",
    "--config.buffer_size=400",
    "--config.mpc=True",
    "--config.mpc_candidates=8",
    "--config.mpc_horizon=2",
    "--config.mpc_iterations=2",
]


def test_maac_script_end_to_end_with_mpc_evaluation(tmp_path):
    result = _script("experiments.maac", *TINY, f"--logdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["env_steps"] for r in rows] == ["150", "300"]
    assert np.isfinite(float(rows[-1]["eval_return"]))
    assert float(rows[-1]["loss/actor"]) != 0.0
    assert "final eval_return" in result.stdout


def test_gradient_error_script_end_to_end(tmp_path):
    result = _script(
        "experiments.maac_gradient_error",
        f"--logdir={tmp_path}",
        "--num_seeds=1",
        "--max_horizon=2",
        "--num_starts=64",
        "--episodes=2",
        "--model_members=2",
        "--model_hidden_sizes=8",
        "--model_epochs=2",
        "--q_hidden_sizes=8",
        "--q_steps=20",
        "--return_horizon=50",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "gradient_error.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 3  # H = 0, 1, 2 x three estimators
    assert all(np.isfinite(float(r["l1_error"])) for r in rows)
    with open(tmp_path / "gradient_error.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_learns_pendulum(tmp_path):
    """Acceptance: mean eval return >= -250 after 10^4 pendulum steps."""
    run = runner.RunConfig(
        env="pendulum", total_steps=10_000, eval_every=1000, logdir=str(tmp_path), progress=False
    )
    rows = runner.train(maac, maac.Config.for_env("pendulum"), run)
    assert rows[-1]["eval_return"] >= -250.0

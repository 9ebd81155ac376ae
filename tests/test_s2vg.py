"""S2VG: the policy gradient of eq. 11 against its hand-derived terms, the
ablation flags (alpha = 0, exploration noise, m), Table 2, and the script."""

import collections
import csv
import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scripts
from scipy import stats

from memrl.agents import s2vg
from memrl.agents import value_gradient as core
from memrl.training import runner
from memrl.types import Transition

Spec = collections.namedtuple("Spec", "observation_size action_size")


def test_gradient_equals_the_three_terms_of_eq_11():
    """Linear-Gaussian policy a = K s + b + exp(l) eta, linear model
    s' = F s + G a + c, reward r = p.s + q.a - |a|^2 / 2, quadratic V'."""
    rng = np.random.default_rng(0)
    o, a_dim, n = 3, 2, 5
    F, G = rng.normal(size=(o, o)), rng.normal(size=(o, a_dim))
    c, p, q = rng.normal(size=o), rng.normal(size=o), rng.normal(size=a_dim)
    w, M = rng.normal(size=o), rng.normal(size=(o, o))
    M = M + M.T
    s, eta = rng.normal(size=(n, o)), rng.normal(size=(n, a_dim))
    theta = {
        "K": rng.normal(size=(a_dim, o)),
        "b": rng.normal(size=a_dim),
        "l": rng.normal(size=a_dim),
    }
    alpha, gamma = 0.3, 0.9

    def policy(th, obs, e):
        a = obs @ th["K"].T + th["b"] + jnp.exp(th["l"]) * e
        log_prob = jnp.sum(-0.5 * e**2 - th["l"] - 0.5 * jnp.log(2 * jnp.pi), -1)
        return a, log_prob

    def step(obs, a):
        return obs @ F.T + a @ G.T + c, obs @ p + a @ q - 0.5 * jnp.sum(a**2, -1)

    def value(x):
        return x @ w + 0.5 * jnp.einsum("bi,ij,bj->b", x, M, x)

    def objective(th):
        est, _ = core.soft_value_estimate(th, s, eta, policy, step, value, alpha, gamma)
        return jnp.mean(est)

    with jax.enable_x64(True):
        th64 = jax.tree_util.tree_map(jnp.asarray, theta)
        got = jax.grad(objective)(th64)

    # By hand, per sample: da/dK_jk = s_k e_j, da/db = I, da/dl_j = exp(l_j) eta_j e_j.
    a = s @ theta["K"].T + theta["b"] + np.exp(theta["l"]) * eta
    s_next = s @ F.T + a @ G.T + c
    reward_path = q - a  # dr/da
    value_path = gamma * (w + s_next @ M) @ G  # gamma dV'/ds' df/da
    entropy = alpha * np.ones(a_dim)  # -alpha dlog pi/dl (eta fixed); 0 for K and b
    g_a = reward_path + value_path
    want_k = np.mean(g_a[:, :, None] * s[:, None, :], axis=0)
    want_b = np.mean(g_a, axis=0)
    want_l = np.mean(g_a * np.exp(theta["l"]) * eta, axis=0) + entropy
    np.testing.assert_allclose(got["K"], want_k, rtol=1e-10)
    np.testing.assert_allclose(got["b"], want_b, rtol=1e-10)
    np.testing.assert_allclose(got["l"], want_l, rtol=1e-10)


def _config(**kw):
    base = dict(
        hidden_sizes=(8,),
        model_hidden_sizes=(8,),
        batch_size=4,
        buffer_size=32,
        warmup_steps=3,
        updates_per_step=2,
        env_name="pendulum",
        model_error_horizon=0,
        periodic_every=0,
    )
    return s2vg.Config(**{**base, **kw})


@functools.cache
def _initial_state():
    return jax.jit(s2vg.init, static_argnums=(1, 2))(jax.random.PRNGKey(0), Spec(3, 1), _config())


def _learner(**kw):
    """The file's one initialization with another (static) config."""
    return _initial_state().learner.replace(config=_config(**kw))


def _transition(i):
    k = jax.random.split(jax.random.PRNGKey(i), 3)
    return Transition(
        obs=jax.random.normal(k[0], (1, 3)),
        action=jax.random.uniform(k[1], (1, 1), minval=-1, maxval=1),
        reward=jax.random.normal(k[2], (1,)),
        discount=jnp.ones(1),
        next_obs=jax.random.normal(k[0], (1, 3)) + 0.1,
    )


def test_alpha_zero_drops_exactly_the_entropy_gradient():
    learner = _learner(alpha=0.5)
    obs = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
    key = jax.random.PRNGKey(2)

    def grad(config):
        lrn = learner.replace(config=config)
        loss = lambda th: core.policy_loss(th, lrn, obs, key)[0]
        return jax.jit(jax.grad(loss))(learner.policy)

    def mean_log_prob(th):
        k_eta, _ = jax.random.split(key)
        eta = jax.random.normal(k_eta, (6, 1))
        return jnp.mean(core.policy_fn(learner)(th, obs, eta)[1])

    g_soft = grad(learner.config)
    g_zero = grad(dataclasses.replace(learner.config, alpha=0.0))
    g_logp = jax.jit(jax.grad(mean_log_prob))(learner.policy)
    expect = jax.tree_util.tree_map(lambda a, b: a - 0.5 * b, g_soft, g_logp)
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6), g_zero, expect
    )
    assert any(float(jnp.max(jnp.abs(x))) > 1e-4 for x in jax.tree_util.tree_leaves(g_logp))


def test_exploration_noise_perturbs_sampled_actions_only():
    learner = _learner()
    noisy = learner.replace(config=dataclasses.replace(learner.config, exploration_noise=0.5))
    obs = jax.random.normal(jax.random.PRNGKey(1), (64, 3))
    key = jax.random.PRNGKey(2)
    plain, explored = s2vg.act(learner, obs, key), s2vg.act(noisy, obs, key)
    assert float(jnp.std(explored - plain)) > 0.2
    assert float(jnp.max(jnp.abs(explored))) <= 1.0
    np.testing.assert_array_equal(
        s2vg.act(learner, obs, key, deterministic=True), s2vg.act(noisy, obs, key, True)
    )


def _same(a, b):
    return all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(jnp.array_equal, a, b)))


def test_m_updates_per_step_and_model_alone_during_warmup():
    counts = {}
    for m in (1, 3):
        config = _config(updates_per_step=m)
        state = _initial_state()
        state = state.replace(learner=state.learner.replace(config=config))
        step = jax.jit(s2vg.train_step)
        first, metrics = step(state, _transition(0), jax.random.PRNGKey(1), jnp.int32(0))
        # Warm-up: the model learns, the actor-critic does not.
        assert int(metrics["count/policy_updates"]) == 0
        assert not _same(first.learner.model, state.learner.model)
        assert _same(first.learner.policy, state.learner.policy)
        assert _same(first.learner.critic, state.learner.critic)
        # MEMB App. B.2 held out: W1 between the pre-update model's Gaussian
        # and the arriving transition's s' (a point mass), as a folded normal.
        t = _transition(0)
        dyn, rew = core.model_outputs(state.learner, t.obs, t.action)
        for key, mean, log_std, target in [
            ("model/heldout_pair_w1", dyn.mean, dyn.log_std, t.next_obs),
            ("model/heldout_reward_w1", rew.mean[:, 0], rew.log_std[:, 0], t.reward),
        ]:
            gap = np.abs(np.asarray(mean - target, np.float64))
            sd = np.exp(np.asarray(log_std, np.float64))
            want = np.mean(stats.foldnorm.mean(gap / sd, scale=sd))
            np.testing.assert_allclose(float(metrics[key]), want, rtol=1e-4)
        after, metrics = step(first, _transition(1), jax.random.PRNGKey(2), jnp.int32(5))
        counts[m] = int(metrics["count/policy_updates"])
        assert all(bool(jnp.isfinite(v)) for v in metrics.values())
        assert not _same(after.learner.policy, first.learner.policy)
    assert counts == {1: 1, 3: 3}


def test_table_2_settings():
    pend = s2vg.Config.for_env("pendulum")
    assert (pend.alpha, pend.updates_per_step, pend.model_hidden_sizes, pend.epochs) == (
        0.2,
        5,
        (32, 16),
        50,
    )
    inv = s2vg.Config.for_env("inverted_pendulum")
    assert (inv.alpha, inv.updates_per_step, inv.value_learning_rate) == (0.1, 1, 3e-4)
    cheetah = s2vg.Config.for_env("halfcheetah")
    assert (cheetah.alpha, cheetah.value_learning_rate, cheetah.model_hidden_sizes) == (
        0.4,
        1e-3,
        (256, 128),
    )
    walker = s2vg.Config.for_env("walker2d")
    assert (walker.updates_per_step, walker.model_hidden_sizes, walker.epochs) == (
        3,
        (256, 256),
        300,
    )
    assert s2vg.Config.for_env("hopper").model_learning_rate == 1e-4
    assert (
        pend.horizon == 1 and pend.hidden_sizes == (256, 256) and pend.policy_learning_rate == 3e-4
    )
    # Not an S2VG task: the defaults.
    assert s2vg.Config.for_env("reacher").model_hidden_sizes == s2vg.Config().model_hidden_sizes


TINY = [
    "--env=pendulum",
    "--total_steps=300",
    "--eval_every=150",
    "--eval_episodes=2",
    "--config.hidden_sizes=(8,)",
    "--config.model_hidden_sizes=(8,)",
    "--config.batch_size=8",
    "--config.warmup_steps=100",
    "--config.updates_per_step=2",
    "--config.periodic_every=100",
    "--config.model_error_horizon=2",
    "--noprogress",
]


def run_script(module, logdir, *extra):
    """Runs ``python -m module`` on the tiny config; returns the metrics rows."""
    result = scripts.run(module, *TINY, *extra, f"--logdir={logdir}")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(os.path.join(logdir, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["env_steps"] for r in rows] == ["150", "300"]
    assert all(np.isfinite(float(r["eval_return"])) for r in rows)
    return rows


def test_script_end_to_end(tmp_path):
    rows = run_script("experiments.s2vg", str(tmp_path / "run"), "--config.horizon=2")
    assert float(rows[-1]["policy_updates"]) == 2 * 200
    for column in ("model/mse_1", "model/pair_w1_k", "model/heldout_pair_w1"):
        assert column in rows[-1] and np.isfinite(float(rows[-1][column]))


@pytest.mark.slow
def test_learns_pendulum(tmp_path):
    """Acceptance: eval return >= -200 within 10,000 steps (S2VG Fig. 2a)."""
    run = runner.RunConfig(
        env="pendulum", total_steps=10_000, eval_every=1000, logdir=str(tmp_path), progress=False
    )
    rows = runner.train(s2vg, s2vg.Config.for_env("pendulum"), run)
    assert rows[-1]["eval_return"] >= -200.0

"""Value expansion (S2VG eq. 7) and the critic and value losses of the shared
S2VG/MEMB core, against hand computations."""

import collections
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memrl.agents import value_gradient as core
from memrl.nets import policy as policy_lib
from memrl.types import Transition

Spec = collections.namedtuple("Spec", "observation_size action_size")


def test_value_expansion_with_one_step_is_one_step_td():
    for r, d, v in [(1.5, 1.0, 2.0), (-0.3, 0.0, 7.0), (0.2, 1.0, -4.0)]:
        got = core.value_expansion_targets(jnp.array([r]), jnp.array([d]), jnp.asarray(v), 0.9)
        np.testing.assert_allclose(got, [r + 0.9 * d * v], rtol=1e-6)


@pytest.mark.parametrize("horizon", [2, 5])
def test_value_expansion_matches_eq7_sum(horizon):
    rng = np.random.default_rng(horizon)
    r = rng.normal(size=horizon).astype(np.float32)
    v_h, gamma = 1.7, 0.95
    got = core.value_expansion_targets(jnp.asarray(r), jnp.ones(horizon), jnp.asarray(v_h), gamma)
    # Eq. 7: G_t = sum_{k=t}^{H-1} gamma^{k-t} r_k + gamma^{H-t} V(s_H).
    want = [
        sum(gamma ** (k - t) * r[k] for k in range(t, horizon)) + gamma ** (horizon - t) * v_h
        for t in range(horizon)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_value_expansion_terminal_cuts_the_bootstrap():
    r = jnp.array([1.0, 2.0, 3.0])
    got = core.value_expansion_targets(r, jnp.array([1.0, 0.0, 1.0]), jnp.asarray(10.0), 0.5)
    # G_2 = 3 + 0.5 * 10, G_1 = 2 (terminal), G_0 = 1 + 0.5 * 2.
    np.testing.assert_allclose(got, [2.0, 2.0, 8.0], rtol=1e-6)


def _learner(**kw):
    base = dict(
        hidden_sizes=(8,),
        model_hidden_sizes=(8,),
        batch_size=4,
        alpha=0.3,
        gamma=0.9,
        env_name="pendulum",
    )
    config = core.Config(**{**base, **kw})
    return _base_learner().replace(config=config)


@functools.cache
def _base_learner():
    """One initialization for the file (the configs differ in static fields only)."""
    config = core.Config(hidden_sizes=(8,), model_hidden_sizes=(8,))
    learner = jax.jit(core.init_learner, static_argnums=(1, 2, 3))(
        jax.random.PRNGKey(0), 3, 1, config
    )
    # Distinct target V so that using V instead of V bar would show.
    target = jax.tree_util.tree_map(lambda p: p + 0.1, learner.value)
    return learner.replace(target_value=target)


def _batch(n=4):
    k = jax.random.split(jax.random.PRNGKey(3), 4)
    return Transition(
        obs=jax.random.normal(k[0], (n, 3)),
        action=jax.random.uniform(k[1], (n, 1), minval=-1, maxval=1),
        reward=jax.random.normal(k[2], (n,)),
        discount=jnp.array([1.0, 0.0, 1.0, 1.0])[:n],
        next_obs=jax.random.normal(k[3], (n, 3)),
    )


def test_critic_loss_with_horizon_one_is_td_on_the_real_transition():
    learner = _learner(horizon=1)
    batch = _batch()
    loss, _ = core.critic_loss(learner.critic, learner, batch, jax.random.PRNGKey(1))
    nets = learner.nets
    v_next = nets.value.apply(learner.target_value, batch.next_obs)
    y = batch.reward + 0.9 * batch.discount * v_next
    q = nets.critic.apply(learner.critic, batch.obs, batch.action)
    want = jnp.mean(0.5 * jnp.sum((q - y) ** 2, axis=0))  # MEMB eq. 6, both Qs
    np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_critic_loss_with_horizon_two_uses_the_imagined_step():
    learner = _learner(horizon=2, soft_expansion=False)  # eq. 7 as printed
    batch = _batch()
    key = jax.random.PRNGKey(1)
    loss, _ = core.critic_loss(learner.critic, learner, batch, key)
    # Rebuild eq. 7 by hand: s_1 real, a_1 ~ pi, (s_2, r_1) from the model.
    traj = core.imagine(learner, batch.next_obs, key, 1)
    nets = learner.nets
    v2 = nets.value.apply(learner.target_value, traj.obs[1])
    g1 = traj.reward[0] + 0.9 * v2
    g0 = batch.reward + 0.9 * batch.discount * g1
    q0 = nets.critic.apply(learner.critic, batch.obs, batch.action)
    q1 = nets.critic.apply(learner.critic, batch.next_obs, traj.action[0])
    sq0 = 0.5 * jnp.sum((q0 - g0) ** 2, axis=0)
    sq1 = 0.5 * jnp.sum((q1 - g1) ** 2, axis=0) * batch.discount  # nothing after a terminal
    np.testing.assert_allclose(loss, jnp.mean((sq0 + sq1) / 2), rtol=1e-5)
    # The learned model enters the H = 2 targets only.
    model = jax.tree_util.tree_map(lambda p: p * 1.5, learner.model)
    for h, changes in [(1, False), (2, True)]:
        base = dataclasses.replace(learner.config, horizon=h)
        a = learner.replace(config=base)
        b = a.replace(model=model)
        la = core.critic_loss(a.critic, a, batch, key)[0]
        lb = core.critic_loss(b.critic, b, batch, key)[0]
        assert bool(jnp.abs(la - lb) > 1e-6) == changes


def _linear_mlp(weight, bias, width=8):
    """``Dense_0``/``Dense_1`` parameters of a one-hidden-layer ReLU MLP that
    computes ``x @ weight + bias`` exactly (``relu(x) - relu(-x) = x``)."""
    n_in, n_out = weight.shape
    k0 = np.zeros((n_in, width), np.float32)
    k0[:, :n_in], k0[:, n_in : 2 * n_in] = np.eye(n_in), -np.eye(n_in)
    k1 = np.zeros((width, n_out), np.float32)
    k1[:n_in], k1[n_in : 2 * n_in] = weight, -weight
    return {
        "Dense_0": {"kernel": k0, "bias": np.zeros(width, np.float32)},
        "Dense_1": {"kernel": k1, "bias": np.asarray(bias, np.float32)},
    }


def _linear_learner(soft, horizon=2):
    """Every network linear: policy ``tanh(N(s K + m, sigma^2))`` with a fixed
    sigma, model ``s' = [s, a] F + f`` and ``r = [s, a] c + c0`` (sigma about
    2e-9), ``V_bar(s) = s v + v0``, ``Q_i = [s, a] w_i + b_i``."""
    rng = np.random.default_rng(0)
    p = dict(
        K=rng.normal(size=(3, 1)) * 0.5,
        m=np.array([0.2]),
        raw=0.0,  # log sigma = -5 + 7 (tanh(raw) + 1) / 2 = -1.5
        F=rng.normal(size=(4, 3)) * 0.5,
        f=rng.normal(size=3),
        c=rng.normal(size=(4, 1)),
        c0=np.array([0.3]),
        v=rng.normal(size=(3, 1)),
        v0=np.array([-0.4]),
        w=[rng.normal(size=(4, 1)) for _ in range(2)],
        b=[np.array([0.1]), np.array([-0.2])],
    )
    p["log_std"] = -5.0 + 7.0 * (np.tanh(p["raw"]) + 1.0) / 2.0
    zeros = np.zeros
    learner = _learner(horizon=horizon, soft_expansion=soft)
    flat = -1e3  # tanh(-1e3) = -1: the model's log-sigma at its bound -20
    learner = learner.replace(
        policy={
            "params": {
                "MLP_0": _linear_mlp(
                    np.concatenate([p["K"], zeros((3, 1))], 1), [p["m"][0], p["raw"]]
                )
            }
        },
        model={
            "dynamics": {
                "params": {
                    "MLP_0": _linear_mlp(
                        np.concatenate([p["F"], zeros((4, 3))], 1),
                        np.concatenate([p["f"], [flat] * 3]),
                    )
                }
            },
            "reward": {
                "params": {
                    "MLP_0": _linear_mlp(
                        np.concatenate([p["c"], zeros((4, 1))], 1), [p["c0"][0], flat]
                    )
                }
            },
        },
        target_value={"params": {"MLP_0": _linear_mlp(p["v"], p["v0"])}},
        critic={"params": {f"MLP_{i}": _linear_mlp(p["w"][i], p["b"][i]) for i in range(2)}},
    )
    return learner, p


@pytest.mark.parametrize("soft", [True, False])
def test_critic_loss_with_horizon_two_by_hand(soft):
    """S2VG eq. 7 with H = 2, both steps written out in NumPy (linear model,
    fixed policy). Soft: G_0 = r_0 + gamma d_0 (r_1 - alpha log pi(a_1|s_1)
    + gamma V_bar(s_2)); literal eq. 7: the same without the log pi term."""
    alpha, gamma = 0.3, 0.9
    learner, p = _linear_learner(soft)
    batch = _batch()
    key = jax.random.PRNGKey(1)
    loss, _ = core.critic_loss(learner.critic, learner, batch, key)

    # The policy noise of the one imagined step: imagine scans over
    # split(key, H - 1) and splits each into (policy, model) keys.
    k_pi = jax.random.split(jax.random.split(key, 1)[0])[0]
    eta = np.asarray(jax.random.normal(k_pi, (4, 1)), np.float64)
    s0, a0, r0, d0, s1 = (np.asarray(x, np.float64) for x in batch)
    sigma = np.exp(p["log_std"])
    u1 = s1 @ p["K"] + p["m"] + sigma * eta
    a1 = np.tanh(u1)
    log_pi1 = np.sum(
        -0.5 * eta**2 - np.log(sigma) - 0.5 * np.log(2 * np.pi) - np.log(1 - a1**2), axis=-1
    )
    x1 = np.concatenate([s1, a1], -1)
    r1 = (x1 @ p["c"] + p["c0"])[:, 0]
    s2 = x1 @ p["F"] + p["f"]
    g1 = r1 + gamma * (s2 @ p["v"] + p["v0"])[:, 0]
    bonus = -alpha * log_pi1 if soft else 0.0
    g0 = r0 + gamma * d0 * (g1 + bonus)
    x0 = np.concatenate([s0, a0], -1)
    sq0 = sum(0.5 * ((x0 @ p["w"][i] + p["b"][i])[:, 0] - g0) ** 2 for i in range(2))
    sq1 = sum(0.5 * ((x1 @ p["w"][i] + p["b"][i])[:, 0] - g1) ** 2 for i in range(2))
    want = np.mean((sq0 + d0 * sq1) / 2)  # nothing imagined after a terminal
    np.testing.assert_allclose(float(loss), want, rtol=1e-4)
    # The entropy term matters here: the soft and literal losses differ.
    other = _linear_learner(not soft)[0]
    assert abs(float(core.critic_loss(other.critic, other, batch, key)[0]) - want) > 1e-2


def test_soft_and_literal_expansion_agree_for_horizon_one():
    batch, key = _batch(), jax.random.PRNGKey(1)
    soft, _ = _linear_learner(True, horizon=1)
    literal, _ = _linear_learner(False, horizon=1)
    np.testing.assert_allclose(
        core.critic_loss(soft.critic, soft, batch, key)[0],
        core.critic_loss(literal.critic, literal, batch, key)[0],
        rtol=1e-6,
    )


def test_value_loss_regresses_on_min_q_minus_alpha_log_pi():
    learner = _learner()
    obs = _batch().obs
    key = jax.random.PRNGKey(2)
    loss, _ = core.value_loss(learner.value, learner, obs, key)
    nets = learner.nets
    a, logp = policy_lib.sample_and_log_prob(nets.policy.apply(learner.policy, obs), key)
    target = jnp.min(nets.critic.apply(learner.critic, obs, a), axis=0) - 0.3 * logp
    want = 0.5 * jnp.mean((nets.value.apply(learner.value, obs) - target) ** 2)
    np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_model_loss_is_half_squared_error_of_a_reparameterized_sample():
    learner = _learner()
    batch = _batch()
    key = jax.random.PRNGKey(4)
    loss, metrics = core.model_loss(learner.model, learner, batch, key)
    k_f, k_r = jax.random.split(key)
    dyn, rew = core.model_outputs(learner, batch.obs, batch.action)
    f = dyn.mean + jnp.exp(dyn.log_std) * jax.random.normal(k_f, batch.next_obs.shape)
    r = rew.mean + jnp.exp(rew.log_std) * jax.random.normal(k_r, (4, 1))
    want_f = 0.5 * jnp.mean(jnp.sum((f - batch.next_obs) ** 2, -1))
    want_r = 0.5 * jnp.mean((r[:, 0] - batch.reward) ** 2)
    np.testing.assert_allclose(metrics["loss/model_dynamics"], want_f, rtol=1e-5)
    np.testing.assert_allclose(loss, want_f + want_r, rtol=1e-5)


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="horizon"):
        core.init_learner(jax.random.PRNGKey(0), 3, 1, core.Config(horizon=0))
    with pytest.raises(ValueError, match="pendulum only"):
        core.init_learner(
            jax.random.PRNGKey(0), 3, 1, core.Config(true_model=True, env_name="hopper")
        )

"""SAC losses against a NumPy hand computation on a tiny batch, and update
properties (jit parity, shapes, finiteness)."""

import collections

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memrl.agents import sac
from memrl.types import Transition

Spec = collections.namedtuple("Spec", "observation_size action_size")
CONFIG = sac.Config(hidden_sizes=(5, 4), batch_size=3, buffer_size=64, warmup_steps=4)


def _mlp(params, x):
    """NumPy forward of memrl.nets.mlp.MLP (ReLU between Dense layers)."""
    layers = sorted(params, key=lambda k: int(k.split("_")[1]))
    for i, name in enumerate(layers):
        x = x @ np.asarray(params[name]["kernel"], np.float64) + np.asarray(
            params[name]["bias"], np.float64
        )
        if i < len(layers) - 1:
            x = np.maximum(x, 0)
    return x


def _policy(params, obs, eps):
    """NumPy tanh-Gaussian: returns (action, log_prob) by the change of variables."""
    out = _mlp(params["params"]["MLP_0"], obs)
    mean, raw = np.split(out, 2, axis=-1)
    log_std = -5.0 + 7.0 * 0.5 * (np.tanh(raw) + 1.0)
    u = mean + np.exp(log_std) * eps
    a = np.tanh(u)
    log_normal = -0.5 * eps**2 - log_std - 0.5 * np.log(2 * np.pi)
    return a, np.sum(log_normal - np.log(1 - a**2), axis=-1)


def _q(params, obs, act):
    x = np.concatenate([obs, act], -1)
    return np.stack([_mlp(params["params"][f"MLP_{i}"], x)[:, 0] for i in range(2)])


@pytest.fixture(scope="module")
def setup():
    learner = sac.init_learner(jax.random.PRNGKey(0), 3, 2, CONFIG)
    # Distinct target critic and a non-unit temperature make every term count.
    learner = learner.replace(
        target_critic=sac.init_learner(jax.random.PRNGKey(9), 3, 2, CONFIG).critic,
        log_alpha=jnp.log(jnp.float32(0.3)),
    )
    rng = np.random.default_rng(0)
    batch = Transition(
        obs=jnp.asarray(rng.normal(size=(3, 3)), jnp.float32),
        action=jnp.asarray(rng.uniform(-1, 1, size=(3, 2)), jnp.float32),
        reward=jnp.asarray([1.0, -0.5, 2.0], jnp.float32),
        discount=jnp.asarray([1.0, 0.0, 1.0], jnp.float32),
        next_obs=jnp.asarray(rng.normal(size=(3, 3)), jnp.float32),
    )
    return learner, batch


def test_critic_loss_matches_hand_computation(setup):
    learner, batch = setup
    key = jax.random.PRNGKey(5)
    weights = jnp.asarray([0.5, 1.0, 2.0])
    loss, _ = sac.critic_loss(learner.critic, learner, batch, key, weights)

    eps = np.asarray(jax.random.normal(key, (3, 2)), np.float64)
    np_b = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), batch)
    a_next, logp_next = _policy(learner.policy, np_b.next_obs, eps)
    q_next = _q(learner.target_critic, np_b.next_obs, a_next).min(0)
    y = np_b.reward + 0.99 * np_b.discount * (q_next - 0.3 * logp_next)
    q = _q(learner.critic, np_b.obs, np_b.action)
    expected = np.mean(np.asarray(weights) * 0.5 * ((q - y) ** 2).sum(0))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)

    unweighted, _ = sac.critic_loss(learner.critic, learner, batch, key)
    np.testing.assert_allclose(float(unweighted), np.mean(0.5 * ((q - y) ** 2).sum(0)), rtol=1e-4)


def test_actor_and_alpha_losses_match_hand_computation(setup):
    learner, batch = setup
    key = jax.random.PRNGKey(6)
    loss, aux = sac.actor_loss(learner.policy, learner, batch.obs, key)
    eps = np.asarray(jax.random.normal(key, (3, 2)), np.float64)
    obs = np.asarray(batch.obs, np.float64)
    a, logp = _policy(learner.policy, obs, eps)
    q = _q(learner.critic, obs, a).min(0)
    np.testing.assert_allclose(float(loss), np.mean(0.3 * logp - q), rtol=1e-4)

    a_loss, _ = sac.alpha_loss(learner.log_alpha, aux["log_prob"], -2.0)
    np.testing.assert_allclose(float(a_loss), -0.3 * np.mean(logp - 2.0), rtol=1e-4)
    # d J / d log_alpha = -alpha * mean(log pi + target): raises alpha when entropy < target.
    grad = jax.grad(lambda la: sac.alpha_loss(la, aux["log_prob"], -2.0)[0])(learner.log_alpha)
    np.testing.assert_allclose(float(grad), -0.3 * np.mean(logp - 2.0), rtol=1e-4)


def test_target_entropy_default_is_minus_action_size():
    assert sac.target_entropy(sac.Config(), 6) == -6.0
    assert sac.target_entropy(sac.Config(target_entropy=-1.5), 6) == -1.5


def test_update_keeps_shapes_and_moves_the_target_by_polyak():
    # jit against op by op (jax.disable_jit): test_jit_parity.py, for every agent.
    learner = sac.init_learner(jax.random.PRNGKey(0), 3, 2, CONFIG)
    rng = np.random.default_rng(1)
    batch = Transition(
        obs=jnp.asarray(rng.normal(size=(3, 3)), jnp.float32),
        action=jnp.asarray(rng.uniform(-1, 1, size=(3, 2)), jnp.float32),
        reward=jnp.ones(3),
        discount=jnp.ones(3),
        next_obs=jnp.asarray(rng.normal(size=(3, 3)), jnp.float32),
    )
    new, metrics = jax.jit(sac.update)(learner, batch, jax.random.PRNGKey(1))
    chex.assert_trees_all_equal_shapes_and_dtypes(new, learner)
    chex.assert_tree_all_finite((new, metrics))
    # target <- (1 - tau) target + tau critic, with target == old critic here.
    expected = jax.tree_util.tree_map(
        lambda old, c: old + 0.005 * (c - old), learner.critic, new.critic
    )
    chex.assert_trees_all_close(new.target_critic, expected, rtol=1e-6, atol=1e-7)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: bool((a != b).any()), new, learner))
    assert any(moved)  # the update changed parameters: the Polyak check is not vacuous


def test_train_step_learns_only_after_warmup():
    spec = Spec(3, 2)
    state = sac.init(jax.random.PRNGKey(0), spec, CONFIG)
    t = jax.tree_util.tree_map(lambda x: jnp.ones((1,) + x.shape), sac.example_transition(3, 2))
    step = jax.jit(sac.train_step)
    before = state.learner.policy
    for i in range(4):
        state, metrics = step(state, t, jax.random.PRNGKey(i), jnp.int32(i))
    chex.assert_trees_all_equal(state.learner.policy, before)  # warm-up: stored only
    assert int(state.buffer.size) == 4 and float(metrics["loss/critic"]) == 0.0
    state, metrics = step(state, t, jax.random.PRNGKey(9), jnp.int32(4))
    assert float(metrics["loss/critic"]) > 0
    with pytest.raises(AssertionError):
        chex.assert_trees_all_equal(state.learner.policy, before)


def test_polyak_target_moves_tau_toward_the_new_critic(setup):
    """theta' <- tau theta_new + (1 - tau) theta'_old (SAC, tau = 0.005): the
    coefficient multiplies the freshly updated online critic, not the target."""
    learner, batch = setup
    new, _ = jax.jit(sac.update_critic)(learner, batch, jax.random.PRNGKey(1))
    tau = CONFIG.tau
    assert tau == 0.005
    leaves = lambda t: [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(t)]  # noqa: E731
    for old_t, online, new_t in zip(
        leaves(learner.target_critic), leaves(new.critic), leaves(new.target_critic), strict=True
    ):
        np.testing.assert_allclose(new_t, tau * online + (1 - tau) * old_t, rtol=1e-5, atol=1e-7)
    # The online critic moved, and the target moved by tau of the gap only.
    gap = sum(
        np.abs(o - t).sum()
        for o, t in zip(leaves(new.critic), leaves(learner.target_critic), strict=True)
    )
    moved = sum(
        np.abs(n - t).sum()
        for n, t in zip(leaves(new.target_critic), leaves(learner.target_critic), strict=True)
    )
    np.testing.assert_allclose(moved, tau * gap, rtol=1e-3)

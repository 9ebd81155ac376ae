"""Tests for memrl.divergences and memrl.nets.world_model (Dreamer v1)."""

import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from memrl import divergences
from memrl.nets import world_model as wm

STOCH, DETER, HIDDEN, EMBED, ACTION = 3, 5, 8, 4, 2


def _gaussians(seed, shape):
    rng = np.random.default_rng(seed)
    mean_p, mean_q = rng.normal(size=shape), rng.normal(size=shape)
    std_p, std_q = rng.uniform(0.3, 2.0, size=shape), rng.uniform(0.3, 2.0, size=shape)
    return [x.astype(np.float32) for x in (mean_p, std_p, mean_q, std_q)]


def _numpy_kl(mean_p, std_p, mean_q, std_q):
    # Independent form: KL = 1/2 [tr(Sq^-1 Sp) + dmu' Sq^-1 dmu - D + ln(det Sq / det Sp)].
    var_p, var_q = np.float64(std_p) ** 2, np.float64(std_q) ** 2
    diff = np.float64(mean_q) - np.float64(mean_p)
    d = mean_p.shape[-1]
    trace = np.sum(var_p / var_q, -1)
    quad = np.sum(diff**2 / var_q, -1)
    logdet = np.sum(np.log(var_q), -1) - np.sum(np.log(var_p), -1)
    return 0.5 * (trace + quad - d + logdet)


@pytest.mark.parametrize("shape", [(4,), (3, 6), (2, 3, 5)])
def test_kl_matches_numpy_closed_form(shape):
    args = _gaussians(0, shape)
    got = divergences.kl_diag_gaussian(*map(jnp.asarray, args))
    np.testing.assert_allclose(got, _numpy_kl(*args), rtol=1e-5, atol=1e-5)
    assert got.shape == shape[:-1]


def test_kl_matches_monte_carlo():
    mean_p, std_p, mean_q, std_q = _gaussians(1, (4,))
    rng = np.random.default_rng(2)
    x = mean_p + std_p * rng.normal(size=(400_000, 4))
    log_p = scipy.stats.norm.logpdf(x, mean_p, std_p).sum(-1)
    log_q = scipy.stats.norm.logpdf(x, mean_q, std_q).sum(-1)
    samples = log_p - log_q
    estimate, stderr = samples.mean(), samples.std() / np.sqrt(len(samples))
    got = float(divergences.kl_diag_gaussian(mean_p, std_p, mean_q, std_q))
    assert abs(got - estimate) < 5 * stderr


def test_kl_self_zero_jeffreys_symmetric_and_standard_normal():
    mean_p, std_p, mean_q, std_q = _gaussians(3, (5, 4))
    np.testing.assert_allclose(divergences.kl_diag_gaussian(mean_p, std_p, mean_p, std_p), 0.0)
    j_pq = divergences.jeffreys_diag_gaussian(mean_p, std_p, mean_q, std_q)
    j_qp = divergences.jeffreys_diag_gaussian(mean_q, std_q, mean_p, std_p)
    np.testing.assert_allclose(j_pq, j_qp, rtol=1e-6)
    np.testing.assert_allclose(
        j_pq,
        _numpy_kl(mean_p, std_p, mean_q, std_q) + _numpy_kl(mean_q, std_q, mean_p, std_p),
        rtol=1e-5,
    )
    zeros, ones = np.zeros_like(mean_p), np.ones_like(std_p)
    np.testing.assert_allclose(
        divergences.kl_to_standard_normal(mean_p, std_p),
        _numpy_kl(mean_p, std_p, zeros, ones),
        rtol=1e-5,
    )


@pytest.mark.parametrize("offset, expect_grad", [(0.5, False), (5.0, True)])
def test_free_nats_value_and_gradient(offset, expect_grad):
    kl = jnp.asarray(np.random.default_rng(4).uniform(0, 1, size=(3, 4)), jnp.float32) + offset
    nats = 3.0
    value, grad = jax.value_and_grad(lambda k: divergences.free_nats(k, nats))(kl)
    np.testing.assert_allclose(value, max(float(jnp.mean(kl)), nats), rtol=1e-6)
    expected = jax.grad(jnp.mean)(kl) if expect_grad else jnp.zeros_like(kl)
    np.testing.assert_allclose(grad, expected)


# ---------------------------------------------------------------- RSSM


@pytest.fixture(scope="module")
def rssm_and_params():
    rssm = wm.RSSM(stoch_size=STOCH, deter_size=DETER, hidden_size=HIDDEN)
    params = wm.init_rssm(rssm, jax.random.PRNGKey(0), EMBED, ACTION)
    return rssm, params


def _sequence(seed, num_steps, batch):
    rng = np.random.default_rng(seed)
    embed = jnp.asarray(rng.normal(size=(num_steps, batch, EMBED)), jnp.float32)
    action = jnp.asarray(rng.uniform(-1, 1, size=(num_steps, batch, ACTION)), jnp.float32)
    return embed, action


def _count_scans(jaxpr):
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == "scan"
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            count += _count_scans(sub)
    return count


def test_observe_shapes_one_scan_and_min_std(rssm_and_params):
    rssm, params = rssm_and_params
    T, B = 6, 3
    embed, action = _sequence(0, T, B)
    is_first = jnp.zeros((T, B), bool).at[0].set(True)
    key = jax.random.PRNGKey(1)
    post, prior = wm.observe(rssm, params, embed, action, is_first, key)
    for state in (post, prior):
        chex.assert_shape([state.mean, state.std, state.stoch], (T, B, STOCH))
        chex.assert_shape(state.deter, (T, B, DETER))
        chex.assert_tree_all_finite(state)
        assert float(jnp.min(state.std)) >= rssm.min_std
    np.testing.assert_array_equal(post.deter, prior.deter)
    assert wm.feature(post).shape == (T, B, STOCH + DETER)
    np.testing.assert_array_equal(wm.feature(post)[..., :STOCH], post.stoch)
    jaxpr = jax.make_jaxpr(lambda e, a: wm.observe(rssm, params, e, a, is_first, key))(
        embed, action
    )
    assert _count_scans(jaxpr.jaxpr) == 1
    jitted = jax.jit(lambda e, a: wm.observe(rssm, params, e, a, is_first, key))(embed, action)
    chex.assert_trees_all_close(jitted, (post, prior), rtol=1e-5, atol=1e-5)


def test_observe_resets_at_is_first(rssm_and_params):
    rssm, params = rssm_and_params
    T, B, half = 8, 2, 4
    embed, action = _sequence(1, T, B)
    is_first = jnp.zeros((T, B), bool).at[0].set(True).at[half].set(True)
    key = jax.random.PRNGKey(7)
    post, prior = wm.observe(rssm, params, embed, action, is_first, key)

    # A different first half (other embeds, actions) changes nothing after the reset.
    other_embed, other_action = _sequence(2, T, B)
    embed2 = embed.at[:half].set(other_embed[:half])
    action2 = action.at[:half].set(other_action[:half])
    post2, _ = wm.observe(rssm, params, embed2, action2, is_first, key)
    assert not np.allclose(post.mean[:half], post2.mean[:half])
    chex.assert_trees_all_close(
        jax.tree.map(lambda x: x[half:], post), jax.tree.map(lambda x: x[half:], post2)
    )

    # Observing the second half alone from the initial state, with the same
    # per-step keys, gives the same posterior (action[half] is reset to zeros).
    keys = jax.random.split(key, T)
    state = rssm.initial((B,))
    for t in range(half, T):
        act_t = jnp.zeros_like(action[t]) if t == half else action[t]
        state, prior_t = rssm.apply(
            params, state, act_t, embed[t], keys[t], method=wm.RSSM.obs_step
        )
        chex.assert_trees_all_close(state, jax.tree.map(lambda x, t=t: x[t], post), atol=1e-6)
        chex.assert_trees_all_close(prior_t, jax.tree.map(lambda x, t=t: x[t], prior), atol=1e-6)


def test_imagine_shapes_and_policy_gradient(rssm_and_params):
    rssm, params = rssm_and_params
    N, H = 5, 4
    embed, action = _sequence(3, 3, N)
    is_first = jnp.zeros((3, N), bool).at[0].set(True)
    post, _ = wm.observe(rssm, params, embed, action, is_first, jax.random.PRNGKey(0))
    start = jax.tree.map(lambda x: x[-1], post)
    head = wm.DenseHead(layers=1, units=8)
    policy = wm.DenseHead(layers=1, units=8)  # a tiny deterministic "actor" per action dim
    policy_params = policy.init(jax.random.PRNGKey(1), jnp.zeros((1, STOCH + DETER)))
    head_params = head.init(jax.random.PRNGKey(2), jnp.zeros((1, STOCH + DETER)))

    def policy_fn(pp, feat, key):
        out = jnp.tanh(policy.apply(pp, jax.lax.stop_gradient(feat)))
        noise = 0.1 * jax.random.normal(key, out.shape + (ACTION,))
        return out[..., None] + noise

    def objective(pp):
        states, actions = wm.imagine(
            rssm, params, lambda f, k: policy_fn(pp, f, k), start, H, jax.random.PRNGKey(3)
        )
        return jnp.mean(head.apply(head_params, wm.feature(states))), (states, actions)

    (value, (states, actions)), grads = jax.value_and_grad(objective, has_aux=True)(policy_params)
    chex.assert_shape(states.stoch, (H, N, STOCH))
    chex.assert_shape(states.deter, (H, N, DETER))
    chex.assert_shape(actions, (H, N, ACTION))
    chex.assert_tree_all_finite(grads)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(grads))
    assert float(jnp.min(states.std)) >= rssm.min_std

    # The first imagined state follows the start (its deter needs no noise),
    # in the closed-loop and the open-loop rollout alike.
    open_loop = wm.imagine_with_actions(rssm, params, start, actions, jax.random.PRNGKey(4))
    chex.assert_shape(open_loop.deter, (H, N, DETER))
    first = rssm.apply(params, start, actions[0], jax.random.PRNGKey(9), method=wm.RSSM.img_step)
    np.testing.assert_allclose(open_loop.deter[0], first.deter, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(states.deter[0], first.deter, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- encoders, decoders


def test_conv_encoder_decoder_shapes():
    T, B, depth = 2, 1, 2
    image = jnp.asarray(np.random.default_rng(0).integers(0, 256, (T, B, 64, 64, 3)), jnp.uint8)
    x = wm.preprocess_image(image)
    assert x.dtype == jnp.float32
    assert float(x.min()) >= -0.5 and float(x.max()) <= 0.5
    encoder, decoder = wm.ConvEncoder(depth=depth), wm.ConvDecoder(depth=depth)
    # Shapes only (abstract evaluation; the values are tested in test_conv).
    embed, _ = jax.eval_shape(encoder.init_with_output, jax.random.PRNGKey(0), x)
    assert embed.shape == (T, B, 2 * 2 * 8 * depth) == (T, B, 32 * depth)
    feat = jnp.ones((T, B, 7))
    image, _ = jax.eval_shape(decoder.init_with_output, jax.random.PRNGKey(1), feat)
    assert image.shape == (T, B, 64, 64, 3)
    # Full Dreamer depth gives 1024 features.
    out = jax.eval_shape(wm.ConvEncoder().init_with_output, jax.random.PRNGKey(0), x)
    assert out[0].shape == (T, B, 1024)


def test_mlp_encoder_decoder_and_heads():
    obs = jnp.ones((2, 3, 6))
    encoder = wm.MLPEncoder(hidden_sizes=(8, 4))
    embed, _ = encoder.init_with_output(jax.random.PRNGKey(0), obs)
    assert embed.shape == (2, 3, 4)
    decoder = wm.MLPDecoder(output_size=6, hidden_sizes=(8,))
    assert decoder.init_with_output(jax.random.PRNGKey(1), embed)[0].shape == (2, 3, 6)
    head = wm.DenseHead(layers=2, units=8)
    assert head.init_with_output(jax.random.PRNGKey(2), embed)[0].shape == (2, 3)


# ---------------------------------------------------------------- losses


@pytest.mark.parametrize("shape, event_ndims", [((2, 3, 5), 1), ((2, 3, 4, 4, 3), 3), ((4,), 0)])
def test_reconstruction_log_prob_matches_scipy(shape, event_ndims):
    rng = np.random.default_rng(5)
    mean, target = rng.normal(size=shape), rng.normal(size=shape)
    got = wm.reconstruction_log_prob(jnp.asarray(mean), jnp.asarray(target), event_ndims)
    axes = tuple(range(len(shape) - event_ndims, len(shape)))
    expected = scipy.stats.norm.logpdf(target, mean, 1.0).sum(axis=axes)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_continuation_log_prob_soft_target():
    logits, target = jnp.array([0.3, -2.0, 4.0]), jnp.array([0.99, 0.0, 0.5])
    p = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    expected = np.asarray(target) * np.log(p) + (1 - np.asarray(target)) * np.log(1 - p)
    np.testing.assert_allclose(wm.continuation_log_prob(logits, target), expected, rtol=1e-5)


def test_model_loss_composes_eq3(rssm_and_params):
    rssm, params = rssm_and_params
    T, B = 3, 2
    embed, action = _sequence(6, T, B)
    is_first = jnp.zeros((T, B), bool).at[0].set(True)
    post, prior = wm.observe(rssm, params, embed, action, is_first, jax.random.PRNGKey(0))
    rng = np.random.default_rng(7)
    obs_mean, obs = (jnp.asarray(rng.normal(size=(T, B, 4))) for _ in range(2))
    reward_mean, reward = (jnp.asarray(rng.normal(size=(T, B))) for _ in range(2))
    logits, discount = jnp.asarray(rng.normal(size=(T, B))), jnp.ones((T, B))

    loss, metrics = wm.model_loss(
        post, prior, obs_mean, obs, reward_mean, reward, kl_scale=0.5, nats=0.0
    )
    kl = _numpy_kl(post.mean, post.std, prior.mean, prior.std)
    obs_nll = -scipy.stats.norm.logpdf(obs, obs_mean, 1.0).sum(-1).mean()
    reward_nll = -scipy.stats.norm.logpdf(reward, reward_mean, 1.0).mean()
    np.testing.assert_allclose(loss, obs_nll + reward_nll + 0.5 * kl.mean(), rtol=1e-4)
    np.testing.assert_allclose(metrics["model/kl"], kl.mean(), rtol=1e-4)
    assert {"model/loss", "model/obs_nll", "model/reward_nll", "model/prior_entropy"} <= set(
        metrics
    )

    loss_nats, _ = wm.model_loss(
        post, prior, obs_mean, obs, reward_mean, reward, nats=kl.mean() + 10.0
    )
    np.testing.assert_allclose(loss_nats, obs_nll + reward_nll + kl.mean() + 10.0, rtol=1e-4)

    loss_cont, metrics_cont = wm.model_loss(
        post, prior, obs_mean, obs, reward_mean, reward,
        cont_logits=logits, discount=discount, gamma=0.9, pcont_scale=10.0, nats=0.0,
    )  # fmt: skip
    cont_nll = -np.mean(wm.continuation_log_prob(logits, 0.9 * discount))
    np.testing.assert_allclose(
        loss_cont, obs_nll + reward_nll + kl.mean() + 10 * cont_nll, rtol=1e-4
    )
    np.testing.assert_allclose(metrics_cont["model/cont_nll"], cont_nll, rtol=1e-5)


def test_revised_model_loss_fixed_prior_jeffreys_and_smooth_l1_by_hand():
    """Paper 004 Sec. 4.2: 0.1 KL(q || N(0, I)) + 0.1 D_J(q, p) (each batch
    mean clipped by the free nats) and a Smooth L1 reward loss, worked out
    with a hand-written Huber and the closed-form KL in NumPy."""
    T, B, D = 3, 2, 4
    rng = np.random.default_rng(11)
    mean_q, mean_p = rng.normal(size=(2, T, B, D))
    std_q, std_p = rng.uniform(0.3, 2.0, size=(2, T, B, D))
    post = wm.RSSMState(mean_q, std_q, mean_q, np.zeros((T, B, 5)))
    prior = wm.RSSMState(mean_p, std_p, mean_p, np.zeros((T, B, 5)))
    obs_mean, obs = rng.normal(size=(2, T, B, 6))
    reward_mean = rng.normal(size=(T, B))
    reward = reward_mean + rng.choice([-3.0, -0.4, 0.2, 2.5], size=(T, B))
    cast = lambda *xs: [jnp.asarray(x, jnp.float32) for x in xs]  # noqa: E731
    post, prior = (wm.RSSMState(*cast(*s)) for s in (post, prior))
    loss, metrics = wm.model_loss(
        post, prior, *cast(obs_mean, obs, reward_mean, reward),
        kl_scale=0.1, nats=0.5, fixed_prior=True, jeffreys_scale=0.1, reward_smooth_l1=True,
    )  # fmt: skip
    kl0 = _numpy_kl(mean_q, std_q, np.zeros_like(mean_q), np.ones_like(std_q))
    jeff = _numpy_kl(mean_q, std_q, mean_p, std_p) + _numpy_kl(mean_p, std_p, mean_q, std_q)
    err = np.abs(reward_mean - reward)
    huber = np.where(err <= 1.0, 0.5 * err**2, err - 0.5).mean()
    obs_nll = -scipy.stats.norm.logpdf(obs, obs_mean, 1.0).sum(-1).mean()
    want = obs_nll + huber + 0.1 * max(kl0.mean(), 0.5) + 0.1 * max(jeff.mean(), 0.5)
    np.testing.assert_allclose(loss, want, rtol=1e-4)
    np.testing.assert_allclose(metrics["model/jeffreys"], jeff.mean(), rtol=1e-4)
    np.testing.assert_allclose(metrics["model/kl_fixed_prior"], kl0.mean(), rtol=1e-4)
    # Free nats above both means: no gradient reaches either divergence.
    grad = jax.grad(
        lambda m: wm.model_loss(
            post._replace(mean=m),
            prior,
            *cast(obs_mean, obs, reward_mean, reward),
            nats=1e6,
            fixed_prior=True,
            reward_smooth_l1=True,
        )[0]  # fmt: skip
    )(post.mean)
    np.testing.assert_allclose(grad, 0.0)

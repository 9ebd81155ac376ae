"""Tests of the bootstrap ensemble of probabilistic dynamics models.

References are independent: a NumPy forward pass and loss written from the
PETS/MBPO formulas, NumPy normalizers on the documented holdout split, a
known linear system, and finite differences for the reparameterized step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memrl.nets import dynamics
from memrl.types import Transition

OBS, ACT = 3, 2
CAPACITY, SIZE = 256, 200

CONFIG = dynamics.EnsembleConfig(
    num_members=4,
    num_elites=2,
    hidden_sizes=(16, 16),
    batch_size=32,
    learning_rate=3e-3,
    weight_decay=1e-4,
    max_epochs=60,
    patience=5,
)
# Learning rate 0: the holdout loss is flat from the first epoch on.
FROZEN = dataclasses.replace(CONFIG, learning_rate=0.0)

# One jitted function per config, so each compiles once for the whole module.
_train = jax.jit(dynamics.train)
_train_frozen = jax.jit(dynamics.train)


def _size(n: int = SIZE) -> jax.Array:
    return jnp.asarray(n, jnp.int32)


def _dataset(seed: int, noise_only: bool = False, garbage: float = np.nan) -> Transition:
    """``CAPACITY`` rows, the first ``SIZE`` valid, the rest filled with ``garbage``."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(CAPACITY, OBS)).astype(np.float32)
    action = rng.uniform(-1, 1, size=(CAPACITY, ACT)).astype(np.float32)
    if noise_only:
        next_obs = obs + rng.normal(size=obs.shape).astype(np.float32)
        reward = rng.normal(size=CAPACITY).astype(np.float32)
    else:
        next_obs, reward = _linear_system(obs, action)
    data = Transition(obs, action, reward, np.ones(CAPACITY, np.float32), next_obs)
    return Transition(*(np.where(_row_mask(x), x, garbage).astype(np.float32) for x in data))


def _row_mask(x: np.ndarray) -> np.ndarray:
    return (np.arange(CAPACITY) < SIZE).reshape((CAPACITY,) + (1,) * (x.ndim - 1))


def _linear_system(obs, action):
    """``s' = s + 0.1 * a`` (a's first component drives two dims), ``r = sum(s) + sum(a)``."""
    next_obs = obs + 0.1 * np.concatenate([action, action[:, :1]], axis=1)
    return next_obs.astype(np.float32), (obs.sum(1) + action.sum(1)).astype(np.float32)


# ----------------------------------------------------------------------------
# NumPy reference of one member stack.


def _softplus(x):
    return np.logaddexp(0.0, x)


def _np_forward(params, x, activation="swish"):
    """NumPy forward of all members: ``x [E, B, in] -> (mean, logvar) [E, B, D]``."""
    params = jax.tree_util.tree_map(lambda p: np.asarray(p, np.float64), params)
    act = {"swish": lambda z: z / (1.0 + np.exp(-z)), "relu": lambda z: np.maximum(z, 0.0)}
    layers = sorted(params["mlp"], key=lambda name: int(name.split("_")[-1]))
    h = np.asarray(x, np.float64)
    for i, name in enumerate(layers):
        h = np.einsum("ebi,eio->ebo", h, params["mlp"][name]["kernel"])
        h = h + params["mlp"][name]["bias"][:, None, :]
        if i < len(layers) - 1:
            h = act[activation](h)
    d = h.shape[-1] // 2
    mean, raw = h[..., :d], h[..., d:]
    hi = params["max_logvar"][:, None, :]
    lo = params["min_logvar"][:, None, :]
    logvar = hi - _softplus(hi - raw)
    logvar = lo + _softplus(logvar - lo)
    return mean, logvar


def _np_loss(params, config, x, y, w):
    mean, logvar = _np_forward(params, x, config.activation)
    sq = (mean - y) ** 2
    nll = ((sq * np.exp(-logvar) + logvar).mean(-1) * w).sum(-1) / w.sum(-1)
    mse = (sq.mean(-1) * w).sum(-1) / w.sum(-1)
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    bounds = p["max_logvar"].sum(-1) - p["min_logvar"].sum(-1)
    l2 = sum((layer["kernel"] ** 2).sum(axis=(1, 2)) for layer in p["mlp"].values())
    total = np.sum(nll + config.logvar_bound_coef * bounds + 0.5 * config.weight_decay * l2)
    return total, nll, mse


# ----------------------------------------------------------------------------
# Fixtures (module scope: every function compiles once).


@pytest.fixture(scope="module")
def initial():
    return jax.jit(dynamics.init, static_argnums=(1, 2, 3))(jax.random.PRNGKey(0), OBS, ACT, CONFIG)


@pytest.fixture(scope="module")
def trained(initial):
    data = _dataset(1)
    state, metrics = _train(initial, data, _size(), jax.random.PRNGKey(1))
    return state, metrics, data


# ----------------------------------------------------------------------------
# Config and init.


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="num_elites"):
        dynamics.EnsembleConfig(num_members=3, num_elites=4)
    with pytest.raises(ValueError, match="activation"):
        dynamics.EnsembleConfig(activation="nope")
    with pytest.raises(ValueError, match="holdout_fraction"):
        dynamics.EnsembleConfig(holdout_fraction=0.0)
    mbpo, memr, maac = (
        dynamics.EnsembleConfig.mbpo(),
        dynamics.EnsembleConfig.memr(),
        dynamics.EnsembleConfig.maac(),
    )
    assert (mbpo.num_members, mbpo.num_elites, mbpo.hidden_sizes) == (7, 5, (200,) * 4)
    assert (memr.num_members, memr.hidden_sizes, memr.activation) == (5, (512,) * 4, "relu")
    assert memr.layer_norm and memr.batch_size == 512 and memr.holdout_fraction == 0.1
    assert (maac.num_members, maac.num_elites, maac.learning_rate) == (8, 8, 1e-3)


def test_init_shapes(initial):
    e, d = CONFIG.num_members, OBS + 1
    assert initial.params["max_logvar"].shape == (e, d)
    assert initial.params["mlp"]["Dense_0"]["kernel"].shape == (e, OBS + ACT, 16)
    assert initial.elites.dtype == jnp.int32 and initial.elites.shape == (CONFIG.num_elites,)
    # Members are initialized independently.
    k = np.asarray(initial.params["mlp"]["Dense_0"]["kernel"])
    assert not np.allclose(k[0], k[1])


def test_layer_norm_model_without_reward_output():
    config = dynamics.EnsembleConfig.memr(
        num_members=2, num_elites=1, hidden_sizes=(8,), predict_reward=False
    )
    state = dynamics.init(jax.random.PRNGKey(2), OBS, ACT, config)
    assert "LayerNorm_0" in state.params["mlp"]
    assert state.params["max_logvar"].shape == (2, OBS)
    obs, action = np.ones((5, OBS), np.float32), np.zeros((5, ACT), np.float32)
    pred = jax.jit(dynamics.predict)(state, obs, action)
    assert pred.next_obs_mean.shape == (2, 5, OBS)
    assert np.all(np.isfinite(pred.next_obs_mean)) and np.all(np.asarray(pred.next_obs_var) > 0)
    np.testing.assert_array_equal(pred.reward_mean, np.zeros((2, 5)))
    np.testing.assert_array_equal(pred.reward_var, np.zeros((2, 5)))


# ----------------------------------------------------------------------------
# Loss and bounds.


def test_nll_loss_matches_numpy(initial):
    config = dataclasses.replace(CONFIG, weight_decay=0.1, logvar_bound_coef=0.05)
    e = config.num_members
    rng = np.random.default_rng(3)
    # Bounds that differ per member and are hit by the large inputs below.
    params = dict(initial.params)
    params["max_logvar"] = jnp.asarray(rng.uniform(0.0, 0.5, (e, OBS + 1)), jnp.float32)
    params["min_logvar"] = jnp.asarray(rng.uniform(-2.0, -1.0, (e, OBS + 1)), jnp.float32)
    x = rng.normal(scale=3.0, size=(e, 6, OBS + ACT)).astype(np.float32)
    y = rng.normal(size=(e, 6, OBS + 1)).astype(np.float32)
    w = (rng.uniform(size=(e, 6)) < 0.7).astype(np.float32)
    w[:, 0] = 1.0
    loss, info = dynamics.nll_loss(params, config, x, y, w)
    ref_loss, ref_nll, ref_mse = _np_loss(params, config, x, y, w)
    np.testing.assert_allclose(info.nll, ref_nll, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(info.mse, ref_mse, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    # Masked rows contribute nothing, even when they hold NaN.
    y_nan = np.where(w[..., None] > 0, y, np.nan)
    _, info_nan = dynamics.nll_loss(params, config, x, y_nan, w)
    np.testing.assert_allclose(info_nan.nll, info.nll, rtol=1e-6)


def test_soft_bounds_keep_logvar_inside(initial):
    x = np.random.default_rng(4).normal(scale=1e3, size=(CONFIG.num_members, 64, OBS + ACT))
    _, logvar = dynamics.forward(initial.params, CONFIG, jnp.asarray(x, jnp.float32))
    lo, hi = CONFIG.init_min_logvar, CONFIG.init_max_logvar
    # logvar = lo + softplus(l - lo) with l <= hi: at most hi + softplus(lo - hi).
    assert np.all(np.asarray(logvar) >= lo)
    assert np.all(np.asarray(logvar) <= hi + _softplus(lo - hi) + 1e-6)
    # Such inputs reach the bounds, so both are active.
    assert np.min(logvar) < lo + 0.1 and np.max(logvar) > hi - 0.1


# ----------------------------------------------------------------------------
# Training.


def test_train_fits_linear_system(initial, trained):
    state, metrics, _ = trained
    assert all(np.isfinite(np.asarray(v)) for v in metrics.values())
    assert int(metrics["model/num_holdout"]) == 40 and int(metrics["model/num_train"]) == 160
    assert 1 <= int(metrics["model/epochs"]) <= CONFIG.max_epochs
    # Fresh inputs from the same system; errors in units of the targets' std.
    rng = np.random.default_rng(11)
    obs = rng.normal(size=(500, OBS)).astype(np.float32)
    action = rng.uniform(-1, 1, size=(500, ACT)).astype(np.float32)
    next_obs, reward = _linear_system(obs, action)
    delta_std = (next_obs - obs).std(0)

    def normalized_mse(s):
        pred = dynamics.predict(s, obs, action)
        err_obs = ((np.asarray(pred.next_obs_mean) - next_obs) / delta_std) ** 2
        err_rew = ((np.asarray(pred.reward_mean) - reward) / reward.std()) ** 2
        return err_obs.mean(), err_rew.mean()

    # Untrained network under the fitted normalizers, for the starting error.
    before = normalized_mse(state.replace(params=initial.params))
    after = normalized_mse(state)
    assert after[0] < 0.1 * before[0] and after[0] < 0.05
    assert after[1] < 0.1 * before[1] and after[1] < 0.05
    assert float(metrics["model/val_mse"]) < 0.05


def test_early_stopping_on_plateau(initial):
    # Targets are pure noise: after a few epochs nothing improves by 1%.
    _, metrics = _train(initial, _dataset(5, noise_only=True), _size(), jax.random.PRNGKey(5))
    assert int(metrics["model/epochs"]) < CONFIG.max_epochs
    assert float(metrics["model/val_mse"]) > 0.5


def test_frozen_training_stops_after_patience_and_picks_elites(initial):
    """lr = 0: epoch 1 improves on +inf, then `patience` flat epochs end training.

    With frozen parameters the elites must be the argsort of each member's
    holdout MSE, recomputed here in NumPy on the documented split.
    """
    state0 = initial.replace(config=FROZEN)
    data = _dataset(6)
    key = jax.random.PRNGKey(7)
    state, metrics = _train_frozen(state0, data, _size(), key)
    assert int(metrics["model/epochs"]) == FROZEN.patience + 1
    jax.tree_util.tree_map(np.testing.assert_array_equal, state.params, state0.params)

    split = dynamics.holdout_split(jax.random.fold_in(key, 0), _size(), CAPACITY, FROZEN)
    perm, n_hold = np.asarray(split.perm), int(split.num_holdout)
    assert n_hold == int(0.2 * SIZE)
    assert sorted(perm[:SIZE]) == list(range(SIZE))
    hold, train_rows = perm[:n_hold], perm[n_hold:SIZE]

    inputs = np.concatenate([data.obs, data.action], 1).astype(np.float64)
    targets = np.concatenate([data.next_obs - data.obs, data.reward[:, None]], 1)
    in_mean, in_std = inputs[train_rows].mean(0), inputs[train_rows].std(0)
    tg_mean, tg_std = targets[train_rows].mean(0), targets[train_rows].std(0)
    np.testing.assert_allclose(state.input_mean, in_mean, atol=1e-5)
    np.testing.assert_allclose(state.input_std, in_std, rtol=1e-4)
    np.testing.assert_allclose(state.target_mean, tg_mean, atol=1e-5)
    np.testing.assert_allclose(state.target_std, tg_std, rtol=1e-4)

    e = FROZEN.num_members
    x = np.broadcast_to((inputs[hold] - in_mean) / in_std, (e, n_hold, OBS + ACT))
    y = np.broadcast_to((targets[hold] - tg_mean) / tg_std, (e, n_hold, OBS + 1))
    _, nll, mse = _np_loss(state.params, FROZEN, x, y, np.ones((e, n_hold)))
    expected = np.argsort(mse)[: FROZEN.num_elites]
    np.testing.assert_array_equal(state.elites, expected)
    np.testing.assert_allclose(metrics["model/val_mse"], mse[expected].mean(), rtol=1e-4)
    np.testing.assert_allclose(metrics["model/val_nll"], nll[expected].mean(), rtol=1e-4)


def test_invalid_rows_never_matter(initial):
    key = jax.random.PRNGKey(8)
    with_nan, m_nan = _train(initial, _dataset(8, garbage=np.nan), _size(), key)
    with_junk, m_junk = _train(initial, _dataset(8, garbage=1e30), _size(), key)
    for leaf in jax.tree_util.tree_leaves((with_nan, m_nan)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    jax.tree_util.tree_map(np.testing.assert_array_equal, (with_nan, m_nan), (with_junk, m_junk))


def test_second_train_call_does_not_retrace(trained):
    state, _, data = trained
    before = _train._cache_size()
    state2, _ = _train(state, data, _size(150), jax.random.PRNGKey(9))
    assert _train._cache_size() == before
    assert jax.tree_util.tree_structure(state2) == jax.tree_util.tree_structure(state)


def test_train_under_vmap_matches_single_seeds(initial):
    """Seeds as a vmapped axis (as the runner does) give the per-seed results."""
    data = _dataset(10)
    keys = jax.random.split(jax.random.PRNGKey(10), 2)
    batched, metrics = jax.jit(jax.vmap(dynamics.train, in_axes=(None, None, None, 0)))(
        initial, data, _size(), keys
    )
    for i in range(2):
        single, m = _train(initial, data, _size(), keys[i])
        assert int(metrics["model/epochs"][i]) == int(m["model/epochs"])
        np.testing.assert_array_equal(batched.elites[i], single.elites)
        # Batched and single matmuls round apart, and training compounds it:
        # 1.1e-3 relative after this run with XLA's -O0 build (below 1e-3 at -O3).
        np.testing.assert_allclose(metrics["model/val_mse"][i], m["model/val_mse"], rtol=5e-3)


# ----------------------------------------------------------------------------
# Prediction and sampling.


def _constant_member_state(initial):
    """Member m predicts delta = reward = 10 m with std e^-5 (the lower bound)."""
    params = jax.tree_util.tree_map(jnp.asarray, initial.params)
    last = params["mlp"]["Dense_2"]
    d = OBS + 1
    members = 10.0 * jnp.arange(CONFIG.num_members, dtype=jnp.float32)[:, None]
    bias = jnp.concatenate(
        [
            jnp.broadcast_to(members, (CONFIG.num_members, d)),
            jnp.full((CONFIG.num_members, d), -100.0),
        ],
        axis=1,
    )
    params["mlp"] = dict(params["mlp"])
    params["mlp"]["Dense_2"] = {"kernel": jnp.zeros_like(last["kernel"]), "bias": bias}
    return initial.replace(params=params, elites=jnp.asarray([3, 1], jnp.int32))


def test_step_samples_only_elites(initial):
    state = _constant_member_state(initial)
    obs = np.random.default_rng(12).normal(size=(4000, OBS)).astype(np.float32)
    action = np.zeros((4000, ACT), np.float32)
    next_obs, reward = jax.jit(dynamics.step)(state, obs, action, jax.random.PRNGKey(12))
    member = np.rint(np.asarray(reward) / 10.0).astype(int)
    np.testing.assert_allclose(np.asarray(reward), 10.0 * member, atol=0.05)
    expected = np.broadcast_to(10.0 * member[:, None], obs.shape)
    np.testing.assert_allclose(np.asarray(next_obs) - obs, expected, atol=0.05)
    assert set(member) == {1, 3}
    assert abs(np.mean(member == 3) - 0.5) < 0.05
    drawn = np.asarray(dynamics.sample_elites(state, jax.random.PRNGKey(13), 4000))
    assert set(drawn) == {1, 3} and abs(np.mean(drawn == 3) - 0.5) < 0.05


def test_step_with_and_step_all_match_predict(trained):
    state, _, data = trained
    rng = np.random.default_rng(14)
    obs, action = data.obs[:32], data.action[:32]
    e, d = CONFIG.num_members, OBS + 1
    pred = dynamics.predict(state, obs, action)
    assert pred.next_obs_mean.shape == (e, 32, OBS) and pred.reward_var.shape == (e, 32)
    assert np.all(np.asarray(pred.next_obs_var) > 0)

    member = rng.integers(0, e, size=32).astype(np.int32)
    eps = rng.normal(size=(32, d)).astype(np.float32)
    next_obs, reward = dynamics.step_with(state, obs, action, member, eps)
    rows = np.arange(32)
    mean_o, var_o = np.asarray(pred.next_obs_mean)[member, rows], np.asarray(pred.next_obs_var)
    np.testing.assert_allclose(
        next_obs, mean_o + np.sqrt(var_o[member, rows]) * eps[:, :OBS], rtol=1e-5, atol=1e-5
    )
    mean_r, var_r = np.asarray(pred.reward_mean), np.asarray(pred.reward_var)
    np.testing.assert_allclose(
        reward,
        mean_r[member, rows] + np.sqrt(var_r[member, rows]) * eps[:, OBS],
        rtol=1e-5,
        atol=1e-5,
    )

    # Zero noise gives every member's mean; per-member inputs [E, B, .] work too.
    all_obs, all_rew = dynamics.step_all(state, obs, action, np.zeros((e, 32, d), np.float32))
    np.testing.assert_allclose(all_obs, pred.next_obs_mean, rtol=1e-6)
    np.testing.assert_allclose(all_rew, pred.reward_mean, rtol=1e-6)
    stacked_obs = np.stack([obs + i for i in range(e)])
    stacked_act = np.broadcast_to(action, (e,) + action.shape)
    per_obs, _ = dynamics.step_all(state, stacked_obs, stacked_act, np.zeros((e, 32, d)))
    for i in range(e):
        np.testing.assert_allclose(
            per_obs[i], dynamics.predict(state, obs + i, action).next_obs_mean[i], rtol=1e-5
        )


def test_step_with_gradient_matches_finite_differences(trained):
    state, _, data = trained
    rng = np.random.default_rng(15)
    obs = jnp.asarray(data.obs[:8])
    action = jnp.asarray(data.action[:8])
    member = jnp.asarray(rng.integers(0, CONFIG.num_members, size=8), jnp.int32)
    eps = jnp.asarray(rng.normal(size=(8, OBS + 1)), jnp.float32)

    def objective(o, a):
        next_obs, reward = dynamics.step_with(state, o, a, member, eps)
        return jnp.sum(jnp.sin(next_obs)) + jnp.sum(reward)

    g_obs, g_act = jax.jit(jax.grad(objective, argnums=(0, 1)))(obs, action)
    assert np.all(np.isfinite(g_obs)) and np.any(np.asarray(g_act) != 0)
    d_obs = jnp.asarray(rng.normal(size=obs.shape), jnp.float32)
    d_act = jnp.asarray(rng.normal(size=action.shape), jnp.float32)
    h = 1e-2
    f = jax.jit(objective)
    fd = (f(obs + h * d_obs, action + h * d_act) - f(obs - h * d_obs, action - h * d_act)) / (2 * h)
    analytic = jnp.sum(g_obs * d_obs) + jnp.sum(g_act * d_act)
    np.testing.assert_allclose(fd, analytic, rtol=2e-2)

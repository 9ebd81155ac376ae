"""Model-error diagnostics against SciPy's Wasserstein distance and hand-made
models with known errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from memrl.diagnostics import model_error
from memrl.envs import pendulum
from memrl.replay import buffer
from memrl.types import Transition


def _pendulum_window(length, reset_at=None):
    rng = np.random.default_rng(0)
    x = jnp.asarray([0.3, -0.2])
    obs, act, nxt = [], [], []
    for t in range(length):
        if t == reset_at:
            x = jnp.asarray([2.0, 0.5])
        u = jnp.asarray([rng.uniform(-2, 2)], jnp.float32)
        x2 = pendulum.dynamics(x, u)
        obs.append(pendulum.observation(x))
        act.append(u)
        nxt.append(pendulum.observation(x2))
        x = x2
    return Transition(
        obs=jnp.stack(obs),
        action=jnp.stack(act),
        reward=jnp.zeros(length),
        discount=jnp.ones(length),
        next_obs=jnp.stack(nxt),
    )


def _true_step(obs, action, key):
    del key
    th = jnp.arctan2(obs[:, 1], obs[:, 0])
    x = jnp.stack([th, obs[:, 2]], -1)
    return pendulum.observation(jax.vmap(pendulum.dynamics)(x, action))


def test_wasserstein_matches_scipy_with_mask():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 3)), rng.normal(1.0, 2.0, size=(50, 3))
    mask = rng.uniform(size=50) < 0.7
    got = np.asarray(model_error.wasserstein1(jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask)))
    want = [stats.wasserstein_distance(x[mask, d], y[mask, d]) for d in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_true_dynamics_has_zero_error_and_bias_compounds():
    window = _pendulum_window(40)
    errs = model_error.prediction_error(_true_step, window, jax.random.PRNGKey(0), 5)
    for v in errs.values():
        assert float(v) < 1e-6  # float32 round trip through arctan2

    def biased(obs, action, key):
        return _true_step(obs, action, key) + jnp.asarray([0.0, 0.0, 0.1])

    errs = model_error.prediction_error(biased, window, jax.random.PRNGKey(0), 1)
    np.testing.assert_allclose(float(errs["model/mse_1"]), 0.01 / 3, rtol=1e-4)
    np.testing.assert_allclose(float(errs["model/marginal_w1_1"]), 0.1 / 3, rtol=1e-3)
    np.testing.assert_allclose(float(errs["model/pair_w1_1"]), 0.1 / 3, rtol=1e-3)
    five = model_error.prediction_error(biased, window, jax.random.PRNGKey(0), 5)
    assert float(five["model/mse_k"]) > 5 * float(five["model/mse_1"])


def test_windows_across_a_reset_are_left_out():
    window = _pendulum_window(20, reset_at=10)
    links = np.asarray(model_error.contiguous(window))
    assert not links[9] and links[:9].all() and links[10:].all()
    errs = model_error.prediction_error(_true_step, window, jax.random.PRNGKey(0), 4)
    assert float(errs["model/mse_k"]) < 1e-6  # a window over the reset would be wrong
    with pytest.raises(ValueError, match="horizon"):
        model_error.prediction_error(_true_step, window, jax.random.PRNGKey(0), 21)


def test_recent_returns_last_items_in_order():
    state = buffer.init(jnp.zeros(()), 8)
    state = buffer.add(state, jnp.arange(11.0)[:8])
    state = buffer.add(state, jnp.arange(8.0, 11.0))
    np.testing.assert_array_equal(np.asarray(model_error.recent(state, 5)), [6, 7, 8, 9, 10])


def test_permuted_predictions_score_zero_pooled_but_not_per_pair():
    """Right next states for the wrong (s, a) pairs: the pooled (marginal) W1
    cannot see it, the per-pair E|s_hat' - s'| of MEMB App. B.2 does."""
    window = _pendulum_window(30)
    true_next = np.asarray(window.next_obs)
    perm = np.random.default_rng(3).permutation(30)

    def permuted(obs, action, key):
        del obs, action, key
        return jnp.asarray(true_next[perm])

    errs = model_error.prediction_error(permuted, window, jax.random.PRNGKey(0), 1)
    assert float(errs["model/marginal_w1_1"]) < 1e-6
    want = np.mean(np.abs(true_next[perm] - true_next))  # over pairs and dimensions
    assert want > 0.1
    np.testing.assert_allclose(float(errs["model/pair_w1_1"]), want, rtol=1e-5)
    np.testing.assert_allclose(
        float(errs["model/mse_1"]), np.mean((true_next[perm] - true_next) ** 2), rtol=1e-5
    )


def test_pair_w1_with_mask_matches_numpy_and_bounds_the_marginal():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(40, 3)), rng.normal(0.5, 1.5, size=(40, 3))
    mask = rng.uniform(size=40) < 0.6
    got = float(model_error.pair_w1(jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask)))
    np.testing.assert_allclose(got, np.mean(np.abs(x[mask] - y[mask])), rtol=1e-5)
    marginal = np.mean([stats.wasserstein_distance(x[mask, d], y[mask, d]) for d in range(3)])
    assert marginal <= got  # pairing the rows is one coupling


@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (0.7, 0.3), (-2.0, 0.5), (1e-3, 1e-6)])
def test_gaussian_w1_to_a_point_is_the_folded_normal_mean(mean, std):
    point = 0.25
    got = float(model_error.gaussian_w1_to_point(jnp.asarray(mean), jnp.asarray(std), point))
    m = mean - point
    want = stats.foldnorm.mean(abs(m) / std, scale=std)  # E|X - point|, X ~ N(mean, std^2)
    np.testing.assert_allclose(got, want, rtol=1e-4)

"""SVG(1)-ER: importance weights and the stored behaviour density against
NumPy densities (Gaussian + tanh correction), exploration with a fixed policy
noise, noise inference that reproduces the data, the weighted gradient, and
the script."""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_s2vg import run_script

from memrl.agents import svg
from memrl.types import Transition

Spec = collections.namedtuple("Spec", "observation_size action_size")


def _config(**kw):
    base = dict(
        hidden_sizes=(8,),
        model_hidden_sizes=(8,),
        batch_size=4,
        buffer_size=32,
        warmup_steps=3,
        env_name="pendulum",
        model_error_horizon=0,
        periodic_every=0,
        alpha=0.1,
    )
    return svg.Config(**{**base, **kw})


@functools.cache
def _initial_state():
    return jax.jit(svg.init, static_argnums=(1, 2))(jax.random.PRNGKey(0), Spec(3, 1), _config())


def _batch(learner, n=6):
    k = jax.random.split(jax.random.PRNGKey(7), 4)
    obs = jax.random.normal(k[0], (n, 3))
    action = svg.act(learner, obs, k[1])
    return Transition(
        obs=obs,
        action=action,
        reward=jax.random.normal(k[2], (n,)),
        discount=jnp.ones(n).at[0].set(0.0),
        next_obs=jax.random.normal(k[3], (n, 3)),
    )


def _perturbed(tree, scale=0.3, seed=9):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return treedef.unflatten(
        [x + scale * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    )


def _np_log_density(learner, policy, obs, action, std=None):
    """log of tanh(N(mu, std^2)) at ``action`` in float64: the Gaussian density
    of u = atanh(a) times |du/da| = 1 / (1 - a^2). ``std`` None: the network's."""
    params = learner.nets.policy.apply(policy, obs)
    mean = np.asarray(params.mean, np.float64)
    sd = np.exp(np.asarray(params.log_std, np.float64)) if std is None else std
    a = np.asarray(action, np.float64)
    u = np.arctanh(a)
    gauss = -0.5 * ((u - mean) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)
    return np.sum(gauss - np.log(1 - a**2), axis=-1)


def test_importance_weight_is_current_over_behaviour_density():
    behaviour = _initial_state().learner
    t = _batch(behaviour)
    record = svg.Record(t, svg.log_prob(behaviour, t.obs, t.action))
    current = behaviour.replace(policy=_perturbed(behaviour.policy))

    def density(params):
        return _np_log_density(behaviour, params, t.obs, t.action, std=0.3)

    ratio = np.exp(density(current.policy) - density(behaviour.policy))
    np.testing.assert_allclose(
        svg.importance_weights(current, record), jnp.minimum(ratio, 5.0), rtol=1e-3
    )
    assert float(jnp.max(jnp.abs(ratio - 1.0))) > 0.05
    np.testing.assert_allclose(svg.importance_weights(behaviour, record), 1.0, rtol=1e-4)


def test_inferred_noise_reproduces_the_real_transition():
    learner = _initial_state().learner
    t = _batch(learner)
    params = svg.policy_distribution(learner, learner.policy, t.obs)
    eta = svg.infer_policy_noise(params, t.action)
    action, _ = svg.policy_fn(learner)(learner.policy, t.obs, eta)
    np.testing.assert_allclose(action, t.action, atol=1e-5)
    next_obs, reward = svg.inferred_step(learner, t)(t.obs, t.action)
    np.testing.assert_allclose(next_obs, t.next_obs, atol=1e-6)
    np.testing.assert_allclose(reward, t.reward, atol=1e-6)
    # ... and moves with the action through the learned model.
    moved, _ = svg.inferred_step(learner, t)(t.obs, t.action + 0.1)
    assert float(jnp.max(jnp.abs(moved - t.next_obs))) > 1e-4


def test_policy_gradient_is_importance_weighted():
    learner = _initial_state().learner
    t = _batch(learner)
    logp = svg.log_prob(learner, t.obs, t.action)

    @jax.jit
    def grads(behaviour_log_prob):
        record = svg.Record(t, behaviour_log_prob)
        w = svg.importance_weights(learner, record)
        return jax.grad(lambda th: svg.policy_loss(th, learner, record, w)[0])(learner.policy)

    base = grads(logp)
    doubled = grads(logp - jnp.log(2.0))  # pi / pi_b doubles (below the truncation)
    clipped = grads(logp - 10.0)  # weight truncated at 5
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(2 * a, b, rtol=1e-4), base, doubled
    )
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(5 * a, b, rtol=1e-4), base, clipped
    )


def test_train_step_stores_the_behaviour_density():
    """The stored log-density is that of the action ``act`` took, under the
    distribution it was drawn from, computed independently in NumPy."""
    state = _initial_state()
    obs = jnp.ones((1, 3))
    action = svg.act(state, obs, jax.random.PRNGKey(1))
    t = Transition(obs, action, jnp.ones(1), jnp.ones(1), obs * 0.5)
    step = jax.jit(svg.train_step)
    warm, m0 = step(state, t, jax.random.PRNGKey(2), jnp.int32(0))
    np.testing.assert_allclose(warm.buffer.data.log_prob[0], -np.log(2.0), rtol=1e-6)
    assert int(m0["count/policy_updates"]) == 0
    action = svg.act(warm, obs, jax.random.PRNGKey(4))  # past the warm-up: the policy acts
    t = t._replace(action=action)
    after, m1 = step(warm, t, jax.random.PRNGKey(3), jnp.int32(3))
    want = _np_log_density(warm.learner, warm.learner.policy, obs, action, std=0.3)[0]
    np.testing.assert_allclose(after.buffer.data.log_prob[1], want, rtol=1e-4)
    assert int(m1["count/policy_updates"]) == 1
    assert after.learner.critic is None
    assert all(bool(jnp.isfinite(v)) for v in m1.values())


@pytest.mark.parametrize("policy_std", [0.3, 0.0])
def test_log_prob_is_the_acting_distributions_density(policy_std):
    learner = _initial_state().learner
    learner = learner.replace(config=_config(policy_std=policy_std))
    t = _batch(learner, n=16)
    want = _np_log_density(
        learner, learner.policy, t.obs, t.action, std=policy_std if policy_std else None
    )
    np.testing.assert_allclose(svg.log_prob(learner, t.obs, t.action), want, rtol=1e-4)


def test_fixed_policy_noise_explores_when_the_learned_std_has_collapsed():
    """alpha = 0 drives a learned std to its floor; the fixed policy noise
    keeps pre-tanh actions spread N(mu(s), policy_std^2) whatever the network."""
    learner = _initial_state().learner.replace(config=_config(alpha=0.0))
    params = learner.policy["params"]["MLP_0"]
    last = max(params)  # the output layer: bias [mean, raw log-std]
    bias = params[last]["bias"].at[1].set(-1e3)  # log-std at its floor, -5
    collapsed = {"params": {"MLP_0": {**params, last: {**params[last], "bias": bias}}}}
    learner = learner.replace(policy=collapsed)
    obs = jnp.tile(jnp.array([[0.3, -0.2, 1.0]]), (4096, 1))
    mean = float(learner.nets.policy.apply(learner.policy, obs[:1]).mean[0, 0])
    u = np.arctanh(np.asarray(svg.act(learner, obs, jax.random.PRNGKey(5)), np.float64))
    np.testing.assert_allclose(u.mean(), mean, atol=0.03)
    np.testing.assert_allclose(u.std(), 0.3, rtol=0.05)
    learned = learner.replace(config=_config(alpha=0.0, policy_std=0.0))
    u = np.arctanh(np.asarray(svg.act(learned, obs, jax.random.PRNGKey(5)), np.float64))
    np.testing.assert_allclose(u.std(), np.exp(-5.0), rtol=0.05)


def test_validate_refuses_noise_outside_the_policy():
    with pytest.raises(ValueError, match="exploration_noise"):
        svg.validate(_config(exploration_noise=0.1))
    with pytest.raises(ValueError, match="policy_std"):
        svg.validate(_config(policy_std=-1.0))


def test_svg_defaults():
    config = svg.Config.for_env("pendulum")
    assert (config.alpha, config.updates_per_step, config.policy_std) == (0.0, 1, 0.3)
    assert config.model_hidden_sizes == (32, 16)


# Opt-in (-m slow) to keep the default suite under 15 min on 2 cores:
# test_s2vg.test_script_end_to_end runs the same value-gradient loop through the script.
@pytest.mark.slow
def test_script_end_to_end(tmp_path):
    rows = run_script("experiments.svg", str(tmp_path / "run"))
    assert float(rows[-1]["policy_updates"]) == 2 * 200
    assert np.isfinite(float(rows[-1]["importance/mean"]))

"""SVG(1)-ER: importance weights against distrax densities, noise inference
that reproduces the data, the weighted gradient, the stored behaviour
density, and the script."""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
from test_s2vg import run_script

from memrl.agents import svg
from memrl.agents import value_gradient as core
from memrl.nets import policy as policy_lib
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


def test_importance_weight_is_current_over_behaviour_density():
    behaviour = _initial_state().learner
    t = _batch(behaviour)
    record = svg.Record(t, svg.log_prob(behaviour, t.obs, t.action))
    current = behaviour.replace(policy=_perturbed(behaviour.policy))
    pi = behaviour.nets.policy

    def density(params):  # distrax inverts tanh itself: an independent reference
        return policy_lib.distribution(pi.apply(params, t.obs)).log_prob(t.action)

    ratio = jnp.exp(density(current.policy) - density(behaviour.policy))
    np.testing.assert_allclose(
        svg.importance_weights(current, record), jnp.minimum(ratio, 5.0), rtol=1e-3
    )
    assert float(jnp.max(jnp.abs(ratio - 1.0))) > 0.05
    np.testing.assert_allclose(svg.importance_weights(behaviour, record), 1.0, rtol=1e-4)


def test_inferred_noise_reproduces_the_real_transition():
    learner = _initial_state().learner
    t = _batch(learner)
    params = learner.nets.policy.apply(learner.policy, t.obs)
    eta = svg.infer_policy_noise(params, t.action)
    action, _ = core.policy_fn(learner)(learner.policy, t.obs, eta)
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
    state = _initial_state()
    obs = jnp.ones((1, 3))
    action = svg.act(state, obs, jax.random.PRNGKey(1))
    t = Transition(obs, action, jnp.ones(1), jnp.ones(1), obs * 0.5)
    step = jax.jit(svg.train_step)
    warm, m0 = step(state, t, jax.random.PRNGKey(2), jnp.int32(0))
    np.testing.assert_allclose(warm.buffer.data.log_prob[0], -np.log(2.0), rtol=1e-6)
    assert int(m0["count/policy_updates"]) == 0
    after, m1 = step(warm, t, jax.random.PRNGKey(3), jnp.int32(3))
    want = svg.log_prob(warm.learner, obs, action)[0]
    np.testing.assert_allclose(after.buffer.data.log_prob[1], want, rtol=1e-5)
    assert int(m1["count/policy_updates"]) == 1
    assert after.learner.critic is None
    assert all(bool(jnp.isfinite(v)) for v in m1.values())


def test_svg_defaults():
    config = svg.Config.for_env("pendulum")
    assert (config.alpha, config.updates_per_step) == (0.0, 1)
    assert config.model_hidden_sizes == (32, 16)


def test_script_end_to_end(tmp_path):
    rows = run_script("experiments.svg", str(tmp_path / "run"))
    assert float(rows[-1]["policy_updates"]) == 2 * 200
    assert np.isfinite(float(rows[-1]["importance/mean"]))

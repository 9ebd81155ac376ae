"""MEMR pieces against hand computations: eq. 4, pi_psi's likelihood fit,
the beta schedule, and Table 1."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from memrl.agents import memr


def test_eq4_equals_its_definition():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(6, 3))
    std = np.exp(rng.normal(size=(6, 3)) * 0.5)
    action = rng.normal(size=(6, 3))
    got = np.asarray(
        memr.max_entropy_priority(jnp.asarray(mean), jnp.asarray(std), jnp.asarray(action))
    )
    # -log(sqrt(2 pi) pi(a|s) sigma) with the joint density and prod of sigmas:
    # -log((2 pi)^(D/2) prod_d N(a_d; mu_d, s_d) prod_d s_d).
    pdf = stats.norm.pdf(action, mean, std)
    want = -np.sum(np.log(np.sqrt(2 * np.pi) * pdf * std), axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # One dimension: half the squared standardized distance.
    one = memr.max_entropy_priority(jnp.zeros((1,)), jnp.full((1,), 2.0), jnp.ones((1,)) * 3.0)
    np.testing.assert_allclose(float(one), 0.5 * (3.0 / 2.0) ** 2, rtol=1e-6)


def test_priorities_are_clipped_and_positive():
    config = memr.Config(model_policy_hidden_sizes=(8,), priority_min=1e-3, priority_max=2.0)
    net = memr._model_policy_net(config, 2)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    policy = memr.ModelPolicy(params, memr._model_policy_optimizer(config).init(params))
    obs = jnp.zeros((4, 3))
    dist = net.apply(params, obs)
    action = jnp.stack([dist.mean[0], dist.mean[1] + 100.0, dist.mean[2], dist.mean[3]])
    p = np.asarray(memr.priorities(config, policy, obs, action))
    assert np.isclose(p[0], 1e-3)  # at the mean eq. 4 is 0: the floor
    assert np.isclose(p[1], 2.0)  # far away: ceiling


def test_model_policy_fit_raises_likelihood_toward_data():
    config = memr.Config(
        model_policy_hidden_sizes=(16,), model_policy_learning_rate=1e-2, model_policy_epochs=200
    )
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(size=(256, 3)), jnp.float32)
    action = 0.5 * obs[:, :2] + 0.1 * jnp.asarray(rng.normal(size=(256, 2)), jnp.float32)
    net = memr._model_policy_net(config, 2)
    params = net.init(jax.random.PRNGKey(0), obs[:1])
    policy = memr.ModelPolicy(params, memr._model_policy_optimizer(config).init(params))
    before, _ = memr.model_policy_loss(params, config, obs, action)
    fitted, metrics = jax.jit(memr.fit_model_policy, static_argnums=0)(config, policy, obs, action)
    after, _ = memr.model_policy_loss(fitted.params, config, obs, action)
    # The Gaussian with std 0.1 has NLL about 2 * (log(0.1) + 0.5 log(2 pi e)) = -1.77.
    assert float(after) < float(before) - 1.0 and float(after) < 0.0
    np.testing.assert_allclose(float(metrics["model_policy/nll"]), float(after), rtol=0.2, atol=0.2)


def test_beta_anneals_linearly_and_table1():
    config = memr.Config(anneal_steps=1000)
    np.testing.assert_allclose(
        [float(memr.beta(config, jnp.int32(s))) for s in (0, 500, 1000, 5000)],
        [0.4, 0.7, 1.0, 1.0],
        rtol=1e-6,
    )
    hc = memr.Config.for_env("halfcheetah")
    assert (hc.anneal_steps, hc.model_dataset_size, hc.rollouts_per_step) == (
        400_000,
        3_000_000,
        400,
    )
    assert (hc.priority_alpha, hc.model_policy_epochs, hc.updates_per_step) == (0.6, 2, 5)
    assert hc.periodic_every == 250 and memr.Config.for_env("ant").model_dataset_size == 6_000_000


def test_target_entropy_is_minus_half_the_action_size_as_in_the_authors_code():
    """-(|A| // 2): -3, -1, -3, -4 on HalfCheetah, Hopper, Walker2d, Ant (6, 3,
    6, 8 action dims), 0 on pendulum; an explicit value is kept. The SAC
    learner's temperature loss uses the resolved target."""
    import dataclasses
    import types

    from memrl.agents import sac

    config = memr.Config.for_env("pendulum")
    for dims, want in ((6, -3.0), (3, -1.0), (8, -4.0), (1, 0.0)):
        assert memr.target_entropy_for(config, dims) == want
    explicit = dataclasses.replace(config, target_entropy=-2.5)
    assert memr.target_entropy_for(explicit, 6) == -2.5
    spec = types.SimpleNamespace(observation_size=3, action_size=1)
    small = dataclasses.replace(
        config, model_hidden_sizes=(8,), model_members=2, model_elites=1, buffer_size=100,
        model_dataset_size=800, rollouts_per_step=4,
    )  # fmt: skip
    state = memr.init(jax.random.PRNGKey(0), spec, small)
    assert sac.target_entropy(state.learner.config, 1) == 0.0

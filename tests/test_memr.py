"""MEMR pieces against hand computations: eq. 4, pi_psi's likelihood fit,
the beta schedule, Table 1, and one rollout round's wiring (eq. 3-5, lines
8-19 of Algorithm 1) recomputed in NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
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


def test_round_wiring_priorities_weights_and_critic_against_numpy():
    """One learning step with a rollout round (Algorithm 1 lines 8-19), each
    quantity recomputed in NumPy from what the agent stored:

    * line 8: the new real transition enters with eq. 4 under the current
      pi_psi;
    * lines 10-11 and 14: the segment holds the drawn states with eq. 5
      weights ``(N P(j))^-beta / max`` from eq. 3 over all stored priorities;
    * line 15: pi_psi is refitted (``D`` Adam steps on the Gaussian NLL,
      written out here) to the drawn states and the actions actually taken;
    * line 16: the drawn states' priorities are eq. 4 under the refitted
      pi_psi with those actions; the other states keep theirs;
    * lines 18-19: every critic loss gets the weights of its rows' states.
    """
    import optax

    from memrl.agents import sac
    from memrl.replay import prioritized, sum_tree
    from memrl.types import Transition

    config = memr.Config(
        hidden_sizes=(8,),
        batch_size=16,
        buffer_size=32,
        rollouts_per_step=12,
        rollout_every=1,
        updates_per_step=2,
        warmup_steps=50,
        periodic_every=50,
        anneal_steps=100,
        model_members=2,
        model_elites=1,
        model_hidden_sizes=(8,),
        model_error_horizon=0,
        model_policy_hidden_sizes=(8,),
        model_policy_epochs=3,
        model_policy_learning_rate=0.05,
        model_dataset_size=48,
        priority_min=1e-3,
        priority_max=50.0,
        target_entropy=-1.0,
    )
    alpha, step = config.priority_alpha, 50
    beta = 0.4 + (step / 100) * (1.0 - 0.4)  # linear from 0.4 to 1.0 over 100 steps
    obs_size, action_size = 3, 2
    spec = type("Spec", (), {"observation_size": obs_size, "action_size": action_size})
    state = memr.init(jax.random.PRNGKey(0), spec, config)

    # Nine stored states with known priorities spread over [0.05, 20].
    rng = np.random.default_rng(0)
    n_old = 9
    obs = np.stack([np.arange(n_old + 1), np.zeros(n_old + 1), -np.arange(n_old + 1)], 1) / 10
    prio_old = np.geomspace(0.05, 20.0, n_old)
    rng.shuffle(prio_old)
    stored = Transition(
        obs=jnp.asarray(obs[:n_old], jnp.float32),
        action=jnp.asarray(rng.uniform(-1, 1, (n_old, action_size)), jnp.float32),
        reward=jnp.zeros(n_old),
        discount=jnp.ones(n_old),
        next_obs=jnp.zeros((n_old, obs_size)),
    )
    state = state.replace(
        env_buffer=prioritized.add(state.env_buffer, stored, jnp.asarray(prio_old), alpha)
    )
    new = Transition(
        obs=jnp.asarray(obs[n_old:], jnp.float32),
        action=jnp.asarray([[0.7, -0.4]]),
        reward=jnp.zeros(1),
        discount=jnp.ones(1),
        next_obs=jnp.zeros((1, obs_size)),
    )

    net = memr._model_policy_net(config, action_size)

    def eq4(params, s, a):
        dist = net.apply(params, jnp.asarray(s, jnp.float32))
        mu, sigma = np.asarray(dist.mean, np.float64), np.exp(np.asarray(dist.log_std, np.float64))
        p = 0.5 * np.sum(((np.asarray(a, np.float64) - mu) / sigma) ** 2, axis=-1)
        return np.clip(p, config.priority_min, config.priority_max)

    psi_old = state.model_policy.params
    prio = np.concatenate([prio_old, eq4(psi_old, obs[n_old:], new.action)])

    # Record what each critic loss receives.
    records = []
    critic_loss = sac.critic_loss

    def recording_critic_loss(params, learner, batch, key, weights=None):
        jax.debug.callback(
            lambda o, w: records.append((np.asarray(o), np.asarray(w))), batch.obs, weights
        )
        return critic_loss(params, learner, batch, key, weights)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sac, "critic_loss", recording_critic_loss)
        after, _ = jax.jit(memr.train_step)(state, new, jax.random.PRNGKey(1), jnp.int32(step))
        jax.effects_barrier()

    # The segment: drawn states, the actions taken there, the stored weights.
    segment = jax.tree_util.tree_map(lambda x: np.asarray(x[0]), after.model_buffer.segments.data)
    seg_obs, seg_action, seg_w = segment.items.obs, segment.items.action, segment.weights

    def slot(o):
        (i,) = np.flatnonzero(np.all(np.isclose(obs, o, atol=1e-6), axis=1))
        return i

    slots = np.array([slot(o) for o in seg_obs])
    assert int(after.model_buffer.segments.size) == 1

    # Eq. 3 and 5 over the ten stored priorities.
    n = n_old + 1
    prob = prio**alpha / np.sum(prio**alpha)
    w_all = (n * prob) ** -beta
    want_w = w_all[slots] / np.max(w_all[slots])
    np.testing.assert_allclose(seg_w, want_w, rtol=1e-4)
    assert np.ptp(seg_w) > 0.1  # the weights are not all one

    # Line 15: D full-batch Adam steps on -mean log N(a; mu(s), sigma(s)^2).
    def nll(params):
        dist = net.apply(params, jnp.asarray(seg_obs))
        z = (jnp.asarray(seg_action) - dist.mean) / jnp.exp(dist.log_std)
        return jnp.mean(jnp.sum(0.5 * z**2 + dist.log_std + 0.5 * jnp.log(2 * jnp.pi), -1))

    adam = optax.adam(config.model_policy_learning_rate)
    psi, opt_state = psi_old, adam.init(psi_old)
    for _ in range(config.model_policy_epochs):
        updates, opt_state = adam.update(jax.grad(nll)(psi), opt_state, psi)
        psi = optax.apply_updates(psi, updates)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        after.model_policy.params,
        psi,
    )

    # Line 16: eq. 4 under the refitted pi_psi and the actions taken; with a
    # slot drawn twice, the last draw's value is stored.
    want_p = prio.copy()
    refit = eq4(psi, seg_obs, seg_action)
    for j, i in enumerate(slots):
        want_p[i] = refit[j]
    leaves = np.asarray(sum_tree.get(after.env_buffer.tree, jnp.arange(n)))
    np.testing.assert_allclose(leaves, want_p**alpha, rtol=1e-4)
    # Under the old pi_psi the drawn states would have had other priorities.
    assert not np.allclose(eq4(psi_old, seg_obs, seg_action), refit, rtol=1e-2)

    # Lines 18-19: each critic loss weights its rows by their states' weights.
    assert len(records) >= config.updates_per_step
    for batch_obs, weights in records:
        assert weights.shape == (config.batch_size,)  # weights were passed
        rows = np.array([slot(o) for o in batch_obs])
        assert set(rows) <= set(slots)
        np.testing.assert_allclose(weights, w_all[rows] / np.max(w_all[slots]), rtol=1e-4)


@pytest.mark.slow
def test_learns_pendulum(tmp_path):
    """Opt-in: mean evaluation return >= -400 after 10^4 pendulum steps with
    the CPU settings of ``Config.for_env('pendulum')`` (uniform random actions
    score about -1200)."""
    from memrl.training import runner

    run = runner.RunConfig(
        env="pendulum", total_steps=10_000, eval_every=1000, logdir=str(tmp_path), progress=False
    )
    rows = runner.train(memr, memr.Config.for_env("pendulum"), run)
    assert rows[-1]["eval_return"] >= -400.0

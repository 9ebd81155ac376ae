"""MAAC: the objective at H = 0 is SAC's actor loss, pathwise gradients through
a tiny model match finite differences, ``pathwise_return`` on a linear system
and STEVE with H = 2 against hand computations, each ablation flag on its own
(Sec. 5.3, App. A.4), and the scripts end to end."""

import collections
import csv
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scripts

from memrl.agents import maac, sac, steve
from memrl.envs import termination
from memrl.nets import dynamics
from memrl.nets import policy as policy_lib
from memrl.replay import buffer
from memrl.training import runner
from memrl.types import Transition

Spec = collections.namedtuple("Spec", "observation_size action_size")
OBS, ACT = 3, 2


def _config(**kw):
    base = dict(
        env_name="pendulum",
        hidden_sizes=(8,),
        batch_size=6,
        buffer_size=64,
        rollout_batch_size=4,
        updates_per_step=2,
        horizon=2,
        num_samples=2,
        terminal_actions=2,
        steve_horizon=2,
        steve_members=2,
        model_members=3,
        model_elites=3,
        model_hidden_sizes=(8,),
        model_max_epochs=2,
        model_error_horizon=0,
        periodic_every=50,
    )
    return maac.Config(**{**base, **kw})


@functools.partial(jax.jit, static_argnums=(0, 1))
def _state(config, seed=0):
    state = maac.init(jax.random.PRNGKey(seed), Spec(OBS, ACT), config)
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed + 1))
    obs = jax.random.normal(k1, (40, OBS))
    real = Transition(
        obs=obs,
        action=jax.random.uniform(k2, (40, ACT), minval=-1, maxval=1),
        reward=jnp.sin(obs[:, 0]),
        discount=jnp.ones(40),
        next_obs=obs + 0.1,
    )
    return state.replace(env_buffer=buffer.add(state.env_buffer, real))


def test_objective_with_zero_horizon_is_the_sac_actor_loss():
    config = _config(horizon=0, num_samples=1, terminal_actions=1)
    state = _state(_config())  # The flags do not change the state's layout.
    learner = state.learner.replace(config=config, log_alpha=jnp.log(0.3))
    obs = jax.random.normal(jax.random.PRNGKey(3), (5, OBS))
    key = jax.random.PRNGKey(4)
    want, _ = jax.jit(sac.actor_loss)(learner.policy, learner, obs, key)
    noise = maac.sample_noise(key, state.model, config, 5, ACT)
    # SAC draws its noise as normal(key, [B, A]); use the same for a_0.
    noise = noise._replace(terminal=jax.random.normal(key, (5, ACT))[None])
    got, metrics = jax.jit(maac.actor_loss)(learner.policy, learner, state.model, obs, noise)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    assert float(metrics["actor/model_return"]) == 0.0


def test_pathwise_gradient_through_the_model_matches_finite_differences():
    with jax.enable_x64(True):
        config = _config(horizon=3, num_samples=2, terminal_actions=2)
        state = jax.tree_util.tree_map(
            lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, _state(config)
        )
        learner, model = state.learner, state.model
        # A model with visible noise, so the reparameterized path matters.
        model = model.replace(
            params={**model.params, "min_logvar": model.params["min_logvar"] * 0 - 3.0}
        )
        obs = jax.random.normal(jax.random.PRNGKey(5), (3, OBS), jnp.float64)
        noise = jax.tree_util.tree_map(
            lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x,
            maac.sample_noise(jax.random.PRNGKey(6), model, config, 3, ACT),
        )

        @jax.jit
        def loss(params):
            return maac.actor_loss(params, learner, model, obs, noise)[0]

        grads = jax.jit(jax.grad(loss))(learner.policy)
        direction = jax.tree_util.tree_map(
            lambda p, k: jax.random.normal(k, p.shape, p.dtype),
            learner.policy,
            _keys_like(learner.policy, jax.random.PRNGKey(7)),
        )
        analytic = sum(
            jnp.vdot(g, d)
            for g, d in zip(
                jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(direction), strict=True
            )
        )
        h = 1e-6
        shift = lambda s: jax.tree_util.tree_map(lambda p, d: p + s * d, learner.policy, direction)
        numeric = (loss(shift(h)) - loss(shift(-h))) / (2 * h)
        np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-5, atol=1e-8)

        # The gradient of the path's value with respect to the start state
        # flows through the model steps.
        @jax.jit
        def value(s0):
            out = maac.pathwise_return(
                s0,
                lambda s, e: (jnp.tanh(s[..., :ACT] + 0.1 * e), jnp.zeros(s.shape[:-1])),
                lambda s, a, e: dynamics.step_with(model, s, a, noise.member[:3], e),
                lambda s, a: jnp.sum(s**2, -1) + jnp.sum(a, -1),
                noise.action[:, :3],
                noise.model[:, :3],
                noise.terminal[:, :3],
                0.9,
            )
            return jnp.sum(out.value)

        g = jax.jit(jax.grad(value))(obs)
        e = jnp.zeros_like(obs).at[1, 2].set(1.0)
        fd = (value(obs + h * e) - value(obs - h * e)) / (2 * h)
        np.testing.assert_allclose(float(g[1, 2]), float(fd), rtol=1e-5, atol=1e-8)


def _keys_like(tree, key):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(treedef, list(jax.random.split(key, len(leaves))))


def test_steve_candidates_and_inverse_variance_combination_by_hand():
    r = jnp.array([1.0, 2.0, 3.0])
    c = jnp.array([0.9, 0.5, 0.0])
    v = jnp.array([10.0, 20.0, 30.0])
    got = steve.candidate_targets(r, c, v)
    want = [1 + 0.9 * 10, 1 + 0.9 * 2 + 0.45 * 20, 1 + 0.9 * 2 + 0.45 * 3 + 0.0 * 30]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)

    candidates = jnp.array([[1.0, 3.0], [2.0, 2.0 + 2 * np.sqrt(2)], [0.0, 6.0]])
    # Means 2, 2+sqrt2, 3; variances 1, 2, 9 -> weights 1, 1/2, 1/9.
    w = np.array([1.0, 0.5, 1 / 9])
    m = np.array([2.0, 2 + np.sqrt(2), 3.0])
    np.testing.assert_allclose(float(steve.combine(candidates, eps=0.0)), w @ m / w.sum(), 1e-6)
    np.testing.assert_allclose(
        np.asarray(steve.horizon_weights(candidates, eps=0.0)), w / w.sum(), 1e-6
    )


def test_steve_targets_stop_at_real_terminations_and_reduce_to_td_at_horizon_zero():
    config = _config(steve_horizon=2)
    state = _state(config)
    learner, model = state.learner, state.model
    batch = buffer.sample(state.env_buffer, jax.random.PRNGKey(8), 6)
    ended = batch._replace(discount=jnp.zeros(6))
    steve_targets = jax.jit(maac.steve_targets)
    target, _ = steve_targets(learner, model, ended, jax.random.PRNGKey(9))
    np.testing.assert_allclose(np.asarray(target), np.asarray(ended.reward), rtol=1e-6)

    # Horizon 0: one-step soft targets with the min over the 2 target heads
    # (as the TD target), averaged over the 2 members, each with its own
    # next action.
    zero = learner.replace(config=dataclasses.replace(config, steve_horizon=0))
    target, metrics = steve_targets(zero, model, batch, jax.random.PRNGKey(9))
    pi, q = sac.networks(config, ACT)
    k_path = jax.random.split(jax.random.PRNGKey(9))[1]
    k_act = jax.random.split(jax.random.split(k_path, 1)[0])[0]
    next_obs = jnp.broadcast_to(batch.next_obs, (2,) + batch.next_obs.shape)
    a, logp = policy_lib.sample_and_log_prob(pi.apply(learner.policy, next_obs), k_act)
    qv = q.apply(learner.target_critic, next_obs, a) - jnp.exp(learner.log_alpha) * logp
    want = batch.reward + config.gamma * batch.discount * jnp.mean(jnp.min(qv, axis=0), axis=0)
    np.testing.assert_allclose(np.asarray(target), np.asarray(want), rtol=1e-4, atol=1e-5)
    assert float(metrics["steve/mean_horizon"]) == 0.0


# --------------------------------------------------------------------------
# pathwise_return (Sec. 4.1 / 4.3) on a linear system, by hand.

_LIN_A = np.array([[1.0, 0.5], [0.0, 0.8]])
_LIN_B = np.array([[0.2], [1.0]])
_LIN_K = np.array([[-0.4], [0.3]])


# Written with array methods only, so NumPy (the hand computation) and JAX
# (pathwise_return) evaluate the same system.
def _lin_policy(s, eps):
    return s @ _LIN_K + 0.5 * eps, -0.5 * (eps**2).sum(-1) + 0.1 * s[..., 0]


def _lin_step(s, a, eps):
    return s @ _LIN_A.T + a @ _LIN_B.T + 0.1 * eps, s[..., 0] + 2.0 * a[..., 0] - s[..., 1] ** 2


def _lin_q(s, a):
    return 3.0 * s[..., 1] + a[..., 0] ** 2


def _lin_done(s):
    return s[..., 0] > 0.8


def test_pathwise_return_on_a_linear_system_by_hand():
    """``sum_{t<H} gamma^t c_t r_t + gamma^H c_H mean_k Q(s_H, a_H^k)`` with
    ``c_t = prod_{1<=j<=t} (1 - done(s_j))``, H = 2, three terminal actions:
    row 0 never terminates, row 1 at s_1 (r_1 and Q dropped), row 2 at s_2
    (r_1 kept, Q dropped)."""
    gamma = 0.9
    s0 = np.array([[0.1, 0.2], [0.9, 0.1], [0.3, 0.6]])
    eps_a = np.array([[[0.5], [-0.2], [0.1]], [[-0.3], [0.4], [0.2]]])
    eps_m = np.array([[[0.0, 0.1], [0.2, -0.1], [0.0, 0.3]], [[0.1, 0.0], [-0.2, 0.1], [0.3, 0.1]]])
    eps_t = np.array([[[0.7], [0.0], [-1.0]], [[-0.2], [0.3], [0.5]], [[1.1], [-0.6], [0.0]]])

    want_value, want_ret, want_q, want_logp = [], [], [], []
    for b in range(3):
        s, alive, ret = s0[b], 1.0, 0.0
        for t in range(2):
            a, logp = _lin_policy(s, eps_a[t, b])
            if t == 0:
                want_logp.append(logp)
            s, r = _lin_step(s, a, eps_m[t, b])
            ret += gamma**t * alive * r
            alive *= 1.0 - float(_lin_done(s))
        q = np.mean([_lin_q(s, _lin_policy(s, eps_t[k, b])[0]) for k in range(3)])
        want_value.append(ret + gamma**2 * alive * q)
        want_ret.append(ret)
        want_q.append(q)
    # The masking pattern the docstring describes.
    s1 = s0 @ _LIN_A.T + _lin_policy(s0, eps_a[0])[0] @ _LIN_B.T + 0.1 * eps_m[0]
    s2 = s1 @ _LIN_A.T + _lin_policy(s1, eps_a[1])[0] @ _LIN_B.T + 0.1 * eps_m[1]
    assert list(_lin_done(s1)) == [False, True, False]
    assert list(_lin_done(s2)) == [False, False, True]

    with jax.enable_x64(True):
        f = jnp.asarray
        out = maac.pathwise_return(
            f(s0), _lin_policy, _lin_step, _lin_q, f(eps_a), f(eps_m), f(eps_t), gamma, _lin_done
        )
        np.testing.assert_allclose(out.value, want_value, rtol=1e-12)
        np.testing.assert_allclose(out.model_return, want_ret, rtol=1e-12)
        np.testing.assert_allclose(out.terminal_value, want_q, rtol=1e-12)
        np.testing.assert_allclose(out.log_prob0, want_logp, rtol=1e-12)

        # H = 0: the terminal actions at s_0, the first one's log-probability.
        out0 = maac.pathwise_return(
            f(s0), _lin_policy, _lin_step, _lin_q, f(eps_a[:0]), f(eps_m[:0]), f(eps_t), gamma
        )
        q0 = [
            np.mean([_lin_q(s0[b], _lin_policy(s0[b], eps_t[k, b])[0]) for k in range(3)])
            for b in range(3)
        ]
        np.testing.assert_allclose(out0.value, q0, rtol=1e-12)
        np.testing.assert_allclose(out0.log_prob0, _lin_policy(s0, eps_t[0])[1], rtol=1e-12)
        assert np.all(np.asarray(out0.model_return) == 0.0)


# --------------------------------------------------------------------------
# STEVE targets (Buckman et al. 2018 eq. 2-3; MAAC Sec. 4.3) with H = 2.


@jax.jit
def _imagine_like_steve_targets(learner, model, batch, key):
    """The samples ``steve_targets`` draws (same keys, same primitives):
    per member ``m`` and row ``b``, ``x_1 = s'``, ``a_j ~ pi(x_j)``,
    ``x_{j+1}, r_j = model(x_j, a_j)``; lists over ``j`` of ``[M, B(, O)]``."""
    config = learner.config
    pi, q = sac.networks(config, ACT)
    h, m = config.steve_horizon, config.steve_members
    k_members, k_path = jax.random.split(key)
    members = jax.random.permutation(k_members, model.elites)[:m]
    sub = model.replace(params=jax.tree_util.tree_map(lambda p: p[members], model.params))
    x = jnp.broadcast_to(batch.next_obs, (m,) + batch.next_obs.shape)
    xs, logps, qmins, rewards = [x], [], [], []
    for j, k in enumerate(jax.random.split(k_path, h + 1)):
        k_act, k_model = jax.random.split(k)
        a, logp = policy_lib.sample_and_log_prob(pi.apply(learner.policy, x), k_act)
        logps.append(logp)
        qmins.append(jnp.min(q.apply(learner.target_critic, x, a), axis=0))
        if j < h:
            eps = jax.random.normal(k_model, x.shape[:2] + (model.target_size,))
            x, r = dynamics.step_all(sub, x, a, eps)
            xs.append(x)
            rewards.append(r)
    return xs, logps, qmins, rewards


@pytest.mark.parametrize("reward_entropy", [True, False])
def test_steve_targets_with_horizon_two_by_hand(reward_entropy, monkeypatch):
    """``T_i = r + sum_{j=1}^{i} gamma^j D_j r'_j + gamma^{i+1} D_{i+1} V_{i+1}``
    with ``V = min_n Q'_n - alpha log pi``, ``r'_j = r_j - alpha log pi_j`` only
    with ``steve_reward_entropy``, ``D_1 = d`` (real) and ``D_{j+1} = D_j (1 -
    done(x_{j+1}))`` (imagined terminations), combined by inverse variance
    over the 2 members: every index by hand in NumPy."""
    done_fn = lambda x: x[..., 0] > 0.0  # noqa: E731
    monkeypatch.setattr(termination, "for_env", lambda name: done_fn)
    # env_name keeps this trace apart from other tests' (the rule is read at trace time).
    state = _state(_config())
    config = dataclasses.replace(
        state.learner.config,
        env_name="hopper",
        steve_horizon=2,
        steve_members=2,
        steve_reward_entropy=reward_entropy,
    )
    alpha = 0.3
    learner = state.learner.replace(config=config, log_alpha=jnp.log(alpha))
    model = state.model
    batch = buffer.sample(state.env_buffer, jax.random.PRNGKey(8), 6)
    batch = batch._replace(discount=jnp.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0]))
    key = jax.random.PRNGKey(11)
    target, metrics = jax.jit(maac.steve_targets)(learner, model, batch, key)

    # The flag does not change the samples: one compile of the helper for both.
    canonical = learner.replace(config=dataclasses.replace(config, steve_reward_entropy=True))
    xs, logps, qmins, rewards = jax.tree_util.tree_map(
        np.asarray, _imagine_like_steve_targets(canonical, model, batch, key)
    )
    gamma, r, d = config.gamma, np.asarray(batch.reward), np.asarray(batch.discount)
    done = [np.asarray(done_fn(x)) for x in xs]
    assert done[1].any() and not done[1].all() and (~done[1] & done[2]).any()
    want, want_horizon = [], []
    for b in range(6):
        cands = np.zeros((3, 2))
        for m in range(2):
            values = [qmins[j][m, b] - alpha * logps[j][m, b] for j in range(3)]
            imagined = [
                rewards[j][m, b] - (alpha * logps[j][m, b] if reward_entropy else 0.0)
                for j in range(2)
            ]
            alive2 = 1.0 - done[1][m, b]  # D_2 / D_1
            alive3 = 1.0 - done[2][m, b]  # D_3 / D_2
            cands[0, m] = r[b] + gamma * d[b] * values[0]
            cands[1, m] = r[b] + gamma * d[b] * (imagined[0] + gamma * alive2 * values[1])
            cands[2, m] = r[b] + gamma * d[b] * (
                imagined[0] + gamma * alive2 * (imagined[1] + gamma * alive3 * values[2])
            )
        w = 1.0 / (cands.var(axis=1) + steve.VARIANCE_EPS)
        want.append(np.sum(w * cands.mean(axis=1)) / np.sum(w))
        want_horizon.append(np.sum(w * np.arange(3)) / np.sum(w))
    np.testing.assert_allclose(np.asarray(target), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(float(metrics["steve/mean_horizon"]), np.mean(want_horizon), 1e-4)
    np.testing.assert_allclose(float(target[2]), float(r[2]), rtol=1e-6)  # Real terminal.


# --------------------------------------------------------------------------
# Each ablation flag (Sec. 5.3, App. A.4) on its own.


def test_horizon_zero_ablation_is_the_model_free_actor_objective_by_hand():
    """``horizon=0``: ``mean_b [alpha log pi(a^0_b|s_b) - mean_k min_i Q_i(s_b, a^k_b)]``
    (no model step; the first terminal action carries the entropy)."""
    state = _state(_config())
    config = _config(horizon=0, num_samples=1, terminal_actions=2)
    learner = state.learner.replace(config=config, log_alpha=jnp.log(0.3))
    obs = jax.random.normal(jax.random.PRNGKey(3), (5, OBS))
    noise = maac.sample_noise(jax.random.PRNGKey(4), state.model, config, 5, ACT)
    assert noise.action.shape == (0, 5, ACT)
    loss, metrics = jax.jit(maac.actor_loss)(learner.policy, learner, state.model, obs, noise)
    pi, q = sac.networks(config, ACT)
    a, logp = policy_lib.squash_with_log_prob(pi.apply(learner.policy, obs), noise.terminal)
    q_min = np.min(np.asarray(jax.vmap(lambda a: q.apply(learner.critic, obs, a))(a)), axis=1)
    want = np.mean(0.3 * np.asarray(logp[0]) - q_min.mean(axis=0))
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    assert float(metrics["actor/model_return"]) == 0.0


def test_steve_off_is_one_step_td_and_steve_at_horizon_zero_is_the_same_target():
    """``steve=False``: ``y = r + gamma d (min_i Q'_i(s', a') - alpha log pi(a'|s'))``
    by hand, reaching the critic loss; STEVE with ``steve_horizon=0`` and one
    member gives the same target from the same action, so the flag changes
    only the model expansion (not the min over heads, not the soft value)."""
    state = _state(_config())
    config = _config(steve=False)
    learner = state.learner.replace(config=config, log_alpha=jnp.log(0.3))
    batch = buffer.sample(state.env_buffer, jax.random.PRNGKey(8), 6)
    batch = batch._replace(discount=jnp.array([1.0, 0.0, 1.0, 1.0, 1.0, 1.0]))
    key = jax.random.PRNGKey(12)
    _, metrics = jax.jit(maac.update_critic)(learner, state.model, batch, key)

    pi, q = sac.networks(config, ACT)

    def hand_td(k):
        a, logp = policy_lib.sample_and_log_prob(pi.apply(learner.policy, batch.next_obs), k)
        q_next = np.min(np.asarray(q.apply(learner.target_critic, batch.next_obs, a)), axis=0)
        v = q_next - 0.3 * np.asarray(logp)
        return np.asarray(batch.reward) + config.gamma * np.asarray(batch.discount) * v

    y = hand_td(key)
    q_sa = np.asarray(q.apply(learner.critic, batch.obs, batch.action))
    np.testing.assert_allclose(float(metrics["q/target"]), y.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        float(metrics["loss/critic"]), np.mean(0.5 * np.sum((q_sa - y) ** 2, 0)), rtol=1e-5
    )

    one = learner.replace(
        config=dataclasses.replace(config, steve=True, steve_horizon=0, steve_members=1)
    )
    steve_key = jax.random.PRNGKey(13)
    k_path = jax.random.split(steve_key)[1]
    k_act = jax.random.split(jax.random.split(k_path, 1)[0])[0]
    target, _ = jax.jit(maac.steve_targets)(one, state.model, batch, steve_key)
    np.testing.assert_allclose(np.asarray(target), hand_td(k_act), rtol=1e-5, atol=1e-5)


def test_num_samples_averages_that_many_paths_per_start_state():
    """``num_samples=2`` is the mean of two single-sample objectives on the
    paths ``2b`` and ``2b + 1`` of start state ``b`` (their noise, their member)."""
    state = _state(_config())
    two = _config(num_samples=2)
    learner = state.learner.replace(config=two, log_alpha=jnp.log(0.3))
    obs = jax.random.normal(jax.random.PRNGKey(3), (5, OBS))
    # 10 and 5 paths: 3 elites divide neither, so each path uses noise.member.
    noise = maac.sample_noise(jax.random.PRNGKey(4), state.model, two, 5, ACT)
    loss = jax.jit(maac.actor_loss)
    got, _ = loss(learner.policy, learner, state.model, obs, noise)
    single = learner.replace(config=dataclasses.replace(two, num_samples=1))
    parts = []
    for k in range(2):
        sub = maac.PathNoise(
            action=noise.action[:, k::2],
            model=noise.model[:, k::2],
            member=noise.member[k::2],
            terminal=noise.terminal[:, k::2],
        )
        parts.append(float(loss(single.policy, single, state.model, obs, sub)[0]))
    np.testing.assert_allclose(float(got), np.mean(parts), rtol=1e-5)
    assert abs(parts[0] - parts[1]) > 1e-4  # The two samples differ.


def test_use_entropy_off_removes_exactly_the_entropy_terms():
    """``use_entropy=False``: the actor loss loses ``alpha E[log pi(a_0|s_0)]``
    and nothing else; the TD target is ``r + gamma d min_i Q'_i(s', a')`` (by
    hand; the soft one is checked above). The temperature staying put is
    checked in ``test_update_runs_for_every_ablation_and_keeps_shapes``."""
    state = _state(_config())
    on = _config(num_samples=1)  # The single-sample config above: compiled once.
    off = dataclasses.replace(on, use_entropy=False)
    alpha = 0.3
    learner_on = state.learner.replace(config=on, log_alpha=jnp.log(alpha))
    learner_off = learner_on.replace(config=off)
    obs = jax.random.normal(jax.random.PRNGKey(3), (5, OBS))
    noise = maac.sample_noise(jax.random.PRNGKey(4), state.model, on, 5, ACT)
    loss = jax.jit(maac.actor_loss)
    l_on, m_on = loss(learner_on.policy, learner_on, state.model, obs, noise)
    l_off, m_off = loss(learner_off.policy, learner_off, state.model, obs, noise)
    log_prob0 = -float(m_on["policy/entropy"])
    np.testing.assert_allclose(float(l_on) - float(l_off), alpha * log_prob0, rtol=1e-4)
    for k in ("actor/model_return", "actor/terminal_q", "policy/entropy"):
        np.testing.assert_allclose(float(m_on[k]), float(m_off[k]), rtol=1e-6)

    batch = buffer.sample(state.env_buffer, jax.random.PRNGKey(8), 6)
    batch = batch._replace(discount=jnp.array([1.0, 0.0, 1.0, 1.0, 1.0, 1.0]))
    key = jax.random.PRNGKey(12)
    y_off, _ = jax.jit(maac.td_targets)(learner_off, batch, key)
    pi, q = sac.networks(on, ACT)
    a, _ = policy_lib.sample_and_log_prob(pi.apply(learner_on.policy, batch.next_obs), key)
    q_next = np.min(np.asarray(q.apply(learner_on.target_critic, batch.next_obs, a)), axis=0)
    want = np.asarray(batch.reward) + on.gamma * np.asarray(batch.discount) * q_next
    np.testing.assert_allclose(np.asarray(y_off), want, rtol=1e-5, atol=1e-6)


def test_real_ratio_one_draws_every_row_from_the_environment_buffer():
    """``real_ratio=1.0``: all ``B`` rows from ``D_env``; at 0.5, ``round(B / 2)``
    from ``D_env`` and the rest from ``D_model``."""
    half = _config(real_ratio=0.5)
    state = _state(_config())
    state = state.replace(learner=state.learner.replace(config=half))
    k1, k2 = jax.random.split(jax.random.PRNGKey(20))
    fake = Transition(  # Model rows that no real row equals.
        obs=jax.random.normal(k1, (30, OBS)) + 100.0,
        action=jax.random.uniform(k2, (30, ACT), minval=-1, maxval=1),
        reward=jnp.full((30,), -7.0),
        discount=jnp.ones(30),
        next_obs=jnp.zeros((30, OBS)),
    )
    state = state.replace(model_buffer=buffer.add(state.model_buffer, fake))
    env = state.env_buffer
    real_obs = np.asarray(env.data.obs[: int(env.size)])

    def real_rows(batch):
        return sum(
            bool(np.any(np.all(np.isclose(real_obs, o), axis=1))) and np.isclose(r, np.sin(o[0]))
            for o, r in zip(np.asarray(batch.obs), np.asarray(batch.reward), strict=True)
        )

    batch = jax.jit(maac.sample_batch)(state, jax.random.PRNGKey(21))
    assert batch.obs.shape[0] == half.batch_size
    assert real_rows(batch) == round(half.batch_size * 0.5)
    full = state.replace(
        learner=state.learner.replace(config=dataclasses.replace(half, real_ratio=1.0))
    )
    batch = jax.jit(maac.sample_batch)(full, jax.random.PRNGKey(21))
    assert real_rows(batch) == half.batch_size


def test_update_runs_for_every_ablation_and_keeps_shapes():
    base = _config()
    # The default flags run in the script test below.
    ablations = [dict(horizon=0, steve=False, num_samples=1, use_entropy=False, real_ratio=1.0)]
    for kw in ablations:
        config = dataclasses.replace(base, **kw)
        state = _state(config)
        step = jnp.int32(10_000)
        state, periodic_metrics = jax.jit(maac.periodic)(state, jax.random.PRNGKey(1), step)
        transition = buffer.gather(state.env_buffer, jnp.array([0]))
        new, metrics = jax.jit(maac.train_step)(state, transition, jax.random.PRNGKey(2), step)
        assert int(metrics["count/policy_updates"]) == config.updates_per_step
        for k, v in metrics.items():
            assert np.all(np.isfinite(np.asarray(v))), k
        same = jax.tree_util.tree_map(lambda a, b: a.shape == b.shape, state.learner, new.learner)
        assert all(jax.tree_util.tree_leaves(same))
        if not config.use_entropy:
            assert float(metrics["alpha"]) == 0.0
            assert float(new.learner.log_alpha) == float(state.learner.log_alpha)
        if config.real_ratio == 1.0:
            assert int(periodic_metrics["count/model_rollouts"]) == 0
            assert int(new.model_buffer.size) == 0
        else:
            assert int(new.model_buffer.size) == config.rollout_batch_size


def test_for_env_uses_the_authors_settings():
    ant = maac.Config.for_env("ant")
    assert (ant.horizon, ant.model_members, ant.updates_per_step, ant.warmup_steps) == (
        3,
        8,
        8,
        5000,
    )
    assert ant.steve_horizon == 2 and ant.steve_members == 4 and ant.terminal_actions == 5
    assert (ant.mpc_candidates, ant.mpc_horizon, ant.mpc_iterations) == (1024, 10, 8)
    assert maac.Config.for_env("walker2d").horizon == 1
    with pytest.raises(ValueError):
        maac.validate(dataclasses.replace(ant, steve_members=9))


def _script(module, *args):
    return scripts.run(module, *args, timeout=900)


TINY = [
    "--env=pendulum",
    "--total_steps=300",
    "--eval_every=150",
    "--eval_episodes=2",
    "--noprogress",
    "--config.hidden_sizes=(8,)",
    "--config.batch_size=8",
    "--config.warmup_steps=100",
    "--config.periodic_every=100",
    "--config.updates_per_step=1",
    "--config.rollout_batch_size=16",
    "--config.model_members=2",
    "--config.model_elites=2",
    "--config.steve_members=2",
    "--config.model_hidden_sizes=(8,)",
    "--config.model_max_epochs=2",
    "--config.buffer_size=400",
    "--config.mpc=True",
    "--config.mpc_candidates=8",
    "--config.mpc_horizon=2",
    "--config.mpc_iterations=2",
]


# Opt-in (-m slow) to keep the default suite under 15 min on 2 cores:
# test_cli.test_eval_only_mpc_gives_both_rows_of_maac_table_1 runs the MAAC script with MPC
# evaluation too.
@pytest.mark.slow
def test_maac_script_end_to_end_with_mpc_evaluation(tmp_path):
    result = _script("experiments.maac", *TINY, f"--logdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["env_steps"] for r in rows] == ["150", "300"]
    assert np.isfinite(float(rows[-1]["eval_return"]))
    assert float(rows[-1]["loss/actor"]) != 0.0
    assert "final eval_return" in result.stdout


# Opt-in (-m slow) to keep the default suite under 15 min on 2 cores: the maths is tested in
# test_gradient_error.
@pytest.mark.slow
def test_gradient_error_script_end_to_end(tmp_path):
    result = _script(
        "experiments.maac_gradient_error",
        f"--logdir={tmp_path}",
        "--num_seeds=1",
        "--max_horizon=1",
        "--num_starts=256",
        "--episodes=2",
        "--model_members=2",
        "--model_hidden_sizes=8",
        "--model_epochs=2",
        "--q_hidden_sizes=8",
        "--q_steps=20",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "gradient_error.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 4  # H = 0, 1 x four estimators
    assert all(np.isfinite(float(r["l1_error"])) for r in rows)
    err = {(r["estimator"], int(r["horizon"])): float(r["relative_l1_error"]) for r in rows}
    for h in range(2):
        # The reference is dJ/dK: Q^{pi_K} moving with K reaches it up to
        # Monte-Carlo error; the surrogate with a fixed exact Q misses most of it.
        assert err[("true_dynamics_exact_q_of_policy", h)] < 0.2
        assert err[("true_dynamics_exact_q_fixed", h)] > 0.7
    with open(tmp_path / "summary.csv", newline="") as f:
        assert {"relative_mean", "relative_std"} <= set(next(csv.DictReader(f)))
    with open(tmp_path / "gradient_error.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_learns_pendulum(tmp_path):
    """Acceptance: mean eval return >= -250 after 10^4 pendulum steps."""
    run = runner.RunConfig(
        env="pendulum", total_steps=10_000, eval_every=1000, logdir=str(tmp_path), progress=False
    )
    rows = runner.train(maac, maac.Config.for_env("pendulum"), run)
    assert rows[-1]["eval_return"] >= -250.0

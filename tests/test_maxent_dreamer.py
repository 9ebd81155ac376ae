"""MaxEnt Dreamer (paper 004): the variants' settings, beta's schedule, eq. 10's
MDN loss against an explicit per-start loop with distrax densities, the target
MDN's soft update, the deterministic agent at evaluation, the entropy bonus's
gradient, and every variant end to end through the runner and the script."""

import csv
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scripts

from memrl import envs
from memrl.agents import dreamer
from memrl.agents import maxent_dreamer as md
from memrl.nets import mdn as mdn_lib
from memrl.training import runner
from memrl.types import SequenceStep

SMALL = dict(
    stoch_size=4,
    deter_size=8,
    hidden_size=8,
    units=16,
    encoder_sizes=(16,),
    batch_size=3,
    batch_length=6,
    horizon=4,
    train_steps=2,
    periodic_every=40,
    warmup_steps=40,
    buffer_size=400,
    mdn_hidden=16,
    mdn_components=3,
)


def tiny(variant):
    config = dataclasses.replace(md.Config.for_env("pendulum", variant=variant), **SMALL)
    if config.fixed_prior:  # Revised Dreamer's larger stochastic state, scaled down
        config = dataclasses.replace(config, stoch_size=6)
    return config


def _batch(key, b=3, t=6):
    k1, k2, k3 = jax.random.split(key, 3)
    return SequenceStep(
        obs=jax.random.normal(k1, (b, t, 3)),
        action=jax.random.uniform(k2, (b, t, 1), minval=-1, maxval=1),
        reward=jax.random.normal(k3, (b, t)),
        discount=jnp.ones((b, t)).at[0, 4].set(0.0),
        is_first=jnp.zeros((b, t), bool).at[:, 0].set(True).at[0, 5].set(True),
    )


def test_variants_set_the_papers_switches():
    d, e, r, m = (md.Config.for_env("pendulum", variant=v) for v in md.VARIANTS)
    assert not (d.explore or d.deterministic_agent or d.fixed_prior or d.pcont)
    assert d.expl_amount > 0 and d.random_action_prob == 0
    assert e.explore and e.deterministic_agent and e.expl_amount == 0 and not e.fixed_prior
    for c in (r, m):  # Revised Dreamer (Sec. 4.2, 5.1)
        assert c.pcont and c.first_state_grad and c.fixed_prior and c.q_critic
        assert c.smooth_l1 and c.decoder_stoch_only and c.observe_before_act
        assert (c.stoch_size, c.kl_scale, c.jeffreys_scale) == (128, 0.1, 0.1)
        assert c.random_action_prob > 0
    assert r.expl_amount > 0 and not r.explore
    assert m.explore and m.deterministic_agent and m.expl_amount == 0  # no additive noise
    assert (m.mdn_hidden, m.mdn_components, m.state_discount, m.mdn_tau, m.mdn_lr) == (
        256,
        8,
        0.9,
        0.1,
        2e-4,
    )
    with pytest.raises(ValueError, match="unknown variant"):
        md.Config.for_env("pendulum", variant="nope")


def test_beta_falls_linearly_from_0p2_to_1em4():
    config = dataclasses.replace(md.Config(), beta_frames=1000)
    got = [float(md.beta(config, s)) for s in (0, 250, 1000, 5000)]
    np.testing.assert_allclose(got, [0.2, 0.2 - 0.25 * (0.2 - 1e-4), 1e-4, 1e-4], rtol=1e-5)


def test_mdn_loss_matches_explicit_eq10_loop():
    """-mean over starts t and batch of [sum_i (1-g) g^i log P(s_{t+1+i}|s_t)
    + g^(H-t) log P(x|s_t)], x the target's sample at s_H, with distrax's
    mixture density for every term."""
    config = tiny("maxent")
    net = md.mdn_network(config)
    f = config.stoch_size + config.deter_size
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, f)))
    target = net.init(jax.random.PRNGKey(1), jnp.zeros((1, f)))
    h, n = 4, 3
    feat = jax.random.normal(jax.random.PRNGKey(2), (h + 1, n, f))
    key = jax.random.PRNGKey(3)
    mdn_loss = jax.jit(md.mdn_loss, static_argnums=2)
    loss, _ = mdn_loss(params, target, config, feat, key)
    x = mdn_lib.sample(net.apply(target, feat[-1]), key, 1)[0]  # [N, F]
    g = config.state_discount
    total = np.zeros(n)
    starts = md.num_starts(config)
    assert starts == 1  # first-state gradients: the posterior start only
    config = dataclasses.replace(config, first_state_grad=False)
    loss, _ = mdn_loss(params, target, config, feat, key)
    starts = md.num_starts(config)
    assert starts == config.horizon - 1
    for t in range(starts):
        dist = mdn_lib.distribution(net.apply(params, feat[t]))
        term = sum((1 - g) * g ** (j - t - 1) * dist.log_prob(feat[j]) for j in range(t + 1, h + 1))
        total += np.asarray(term + g ** (h - t) * dist.log_prob(x))
    np.testing.assert_allclose(loss, -total.sum() / (starts * n), rtol=1e-4)
    # No gradient reaches the target MDN through the bootstrap samples.
    grads = jax.jit(jax.grad(lambda tgt: md.mdn_loss(params, tgt, config, feat, key)[0]))(target)
    assert all(float(jnp.abs(g_).max()) == 0.0 for g_ in jax.tree_util.tree_leaves(grads))


@pytest.fixture(scope="module")
def maxent_state():
    return md.init(jax.random.PRNGKey(0), envs.spec("pendulum"), tiny("maxent"))


def test_update_soft_updates_the_target_and_trains_every_module(maxent_state):
    learner = maxent_state.learner
    batch, key = _batch(jax.random.PRNGKey(4)), jax.random.PRNGKey(5)
    new, metrics = jax.jit(md.update)(learner, batch, key, 0.2)
    tau = learner.config.mdn_tau
    for old_t, new_m, new_t in zip(
        *(jax.tree_util.tree_leaves(x) for x in (learner.mdn_target, new.mdn, new.mdn_target)),
        strict=True,
    ):
        np.testing.assert_allclose(new_t, (1 - tau) * old_t + tau * new_m, rtol=1e-5, atol=1e-7)
    for name in ("mdn", "det_actor", "det_value"):
        before, after = (jax.tree_util.tree_leaves(getattr(x, name)) for x in (learner, new))
        assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True)), name
    for name in ("model", "actor", "value"):
        before, after = (jax.tree_util.tree_leaves(getattr(x.base, name)) for x in (learner, new))
        assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True)), name
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert float(metrics["explore/beta"]) == pytest.approx(0.2)


def test_entropy_bonus_reaches_the_actor_through_imagined_states(maxent_state):
    """The bonus alone (returns removed by zeroing the reward and critic) gives
    the actor a nonzero gradient; with beta = 0 it gives none."""
    learner = maxent_state.learner
    base = learner.base
    batch = dreamer.time_major(_batch(jax.random.PRNGKey(6)))
    _, (_, post) = jax.jit(dreamer.model_loss)(base.model, base, batch, jax.random.PRNGKey(7))
    zero = lambda tree: jax.tree.map(jnp.zeros_like, tree)  # noqa: E731
    model = dict(base.model, reward=zero(base.model["reward"]))
    flat = base.replace(model=model, value=zero(base.value))

    def loss(actor, beta):
        bonus_fn = md.bonus(learner.mdn_target, learner.config, beta)
        return dreamer.actor_loss(actor, flat, post, jax.random.PRNGKey(8), bonus_fn=bonus_fn)[0]

    grad = jax.jit(jax.grad(loss))  # beta traced: one program for both values
    norm = lambda g: sum(float(jnp.abs(x).sum()) for x in jax.tree_util.tree_leaves(g))  # noqa: E731
    assert norm(grad(base.actor, jnp.float32(0.2))) > 0
    assert norm(grad(base.actor, jnp.float32(0.0))) == 0


def test_evaluation_uses_the_deterministic_agent(maxent_state):
    learner = maxent_state.learner
    base = learner.base
    obs = jax.random.normal(jax.random.PRNGKey(9), (2, 3))
    key = jax.random.PRNGKey(10)
    action, carry = md.act(maxent_state, obs, key, deterministic=True)
    latent, feat = dreamer.observe_step(base, dreamer.init_carry(base, 2), obs, key)
    want = np.tanh(np.asarray(base.nets.actor.apply(learner.det_actor, feat).mean))
    np.testing.assert_allclose(action, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carry.latent.deter, latent.deter, rtol=1e-6)
    explore, _ = md.act(maxent_state, obs, key)  # the exploring actor's sample instead
    assert not np.allclose(explore, action)


def _read(logdir):
    with open(os.path.join(logdir, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("variant", md.VARIANTS)
def test_each_variant_updates_its_own_modules(variant):
    """Traced, not compiled: each variant's update computes the losses of its
    own parts (the MDN for the exploring variants, the Jeffreys term for the
    Revised ones) and no others'."""
    config = tiny(variant)
    key = jax.random.PRNGKey(0)
    state = jax.eval_shape(lambda k: md.init(k, envs.spec("pendulum"), config), key)
    _, metrics = jax.eval_shape(lambda lrn: md.update(lrn, _batch(key), key, 0.2), state.learner)
    assert ("mdn/loss" in metrics) == (variant in ("dreamer_explore", "maxent"))
    assert ("model/jeffreys" in metrics) == (variant in ("revised", "maxent"))
    assert ("deterministic/loss/actor" in metrics) == config.deterministic_agent
    assert {"model/kl", "loss/actor", "loss/value"} <= set(metrics)


# Opt-in (-m slow) to keep the default suite under 15 min on 2 cores: the
# maxent variant runs through the runner in the script test.
@pytest.mark.slow
@pytest.mark.parametrize("variant", md.VARIANTS)
def test_variant_runs_through_the_runner(variant, tmp_path):
    run = runner.RunConfig(
        env="pendulum", seed=0, total_steps=80, eval_every=80, eval_episodes=1,
        logdir=str(tmp_path), progress=False,
    )  # fmt: skip
    runner.train(md, tiny(variant), run)
    (row,) = _read(tmp_path)
    assert int(row["policy_updates"]) == 4 and np.isfinite(float(row["eval_return"]))
    assert ("mdn/loss" in row) == (variant in ("dreamer_explore", "maxent"))
    assert ("model/jeffreys" in row) == (variant in ("revised", "maxent"))
    assert int(row["coverage/cells"]) >= 1


def test_script_runs_the_maxent_variant_end_to_end(tmp_path):
    config = tiny("maxent")
    args = [f"--config.{k}={getattr(config, k)}" for k in SMALL if k != "encoder_sizes"] + [
        "--config.encoder_sizes=(16,)",
        "--config.stoch_size=6",
    ]
    result = scripts.run(
        "experiments.maxent_dreamer", "--env=pendulum", "--variant=maxent", "--total_steps=80",
        "--eval_every=80", "--eval_episodes=1", *args, f"--logdir={tmp_path}", "--noprogress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "maxent_dreamer pendulum: final eval_return" in result.stdout
    (row,) = _read(tmp_path)
    assert float(row["explore/beta"]) < 0.2  # beta falls over the run's 80 frames
    assert {"mdn/loss", "model/jeffreys", "deterministic/loss/actor"} <= set(row)
    with open(os.path.join(tmp_path, "config.json")) as f:
        assert '"variant": "maxent"' in f.read()


def test_script_rejects_an_unknown_variant(tmp_path):
    result = scripts.run("experiments.maxent_dreamer", "--variant=bogus", f"--logdir={tmp_path}")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "variant" in result.stderr

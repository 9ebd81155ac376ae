"""jit and no-jit agree (DESIGN.md Sec. 4): each agent's ``update`` run once
under ``jax.jit`` and once op by op under ``jax.disable_jit()``, from the same
learner, batch and key, gives the same learner and metrics to float32
tolerance. Tiny networks and batches; one compilation per agent. Dreamer and
MaxEnt Dreamer are opt-in (``-m slow``, see ``AGENTS``)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memrl import envs
from memrl.agents import dreamer, maac, maxent_dreamer, mbpo, memb, memr, s2vg, sac, svg
from memrl.types import SequenceStep, Transition

SPEC = envs.spec("pendulum")  # observation 3, action 1
OBS, ACT, B = SPEC.observation_size, SPEC.action_size, 5
# float32 agreement: the two paths run the same ops, fused differently.
RTOL, ATOL = 1e-5, 1e-5

SAC_SIZES = dict(hidden_sizes=(8, 8), batch_size=B, buffer_size=64)
MODEL_SIZES = dict(model_members=2, model_elites=2, model_hidden_sizes=(8,))
VG_SIZES = dict(
    hidden_sizes=(8,), model_hidden_sizes=(8,), batch_size=B, buffer_size=32, env_name="pendulum"
)
DREAMER_SIZES = dict(
    stoch_size=4,
    deter_size=8,
    hidden_size=8,
    units=8,
    encoder_sizes=(8,),
    batch_size=2,
    batch_length=4,
    horizon=3,
    buffer_size=64,
)


def _transitions(key, n=B):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    obs = jax.random.normal(k1, (n, OBS))
    return Transition(
        obs=obs,
        action=jax.random.uniform(k2, (n, ACT), minval=-1.0, maxval=1.0),
        reward=jax.random.normal(k3, (n,)),
        discount=jnp.ones((n,)).at[0].set(0.0),  # one terminal transition
        next_obs=obs + 0.1 * jax.random.normal(k4, (n, OBS)),
    )


def _sequences(key, config):
    b, t = config.batch_size, config.batch_length
    k1, k2, k3 = jax.random.split(key, 3)
    return SequenceStep(
        obs=jax.random.normal(k1, (b, t, OBS)),
        action=jax.random.uniform(k2, (b, t, ACT), minval=-1.0, maxval=1.0),
        reward=jax.random.normal(k3, (b, t)),
        discount=jnp.ones((b, t)).at[0, 2].set(0.0),
        is_first=jnp.zeros((b, t), bool).at[:, 0].set(True).at[1, 2].set(True),
    )


def _init(agent, config):
    return agent.init(jax.random.PRNGKey(0), SPEC, config)


def _case(name):
    """``(update(learner, batch, key), learner, batch)`` of one agent."""
    key = jax.random.PRNGKey(1)
    if name == "sac":
        state = _init(sac, sac.Config(**SAC_SIZES))
        return sac.update, state.learner, _transitions(key)
    if name == "mbpo":
        state = _init(mbpo, mbpo.Config(**SAC_SIZES, **MODEL_SIZES, rollout_batch_size=4))
        return mbpo.update, state.learner, _transitions(key)
    if name == "memr":
        # MEMR's critic loss weighted by the draw's importance weights (eq. 5).
        state = _init(memr, memr.Config(**SAC_SIZES, **MODEL_SIZES, rollouts_per_step=4))
        weights = jax.random.uniform(jax.random.PRNGKey(7), (B,), minval=0.2, maxval=1.0)
        return (
            lambda lrn, batch, k: memr.update(lrn, batch[0], k, batch[1]),
            state.learner,
            (_transitions(key), weights),
        )
    if name in ("s2vg", "memb"):
        agent = {"s2vg": s2vg, "memb": memb}[name]
        # H = 2 imagined steps (S2VG's expansion; MEMB's k-step rollout states).
        extra = {"horizon": 2} if name == "s2vg" else {"rollout_length": 2}
        state = _init(agent, agent.Config(**VG_SIZES, **extra))
        return agent.update, state.learner, _transitions(key)
    if name == "svg":
        state = _init(svg, svg.Config(**VG_SIZES, alpha=0.1))
        batch = svg.Record(
            transition=_transitions(key), log_prob=jnp.full((B,), svg.core.uniform_log_prob(ACT))
        )
        return svg.update, state.learner, batch
    if name == "maac":
        config = maac.Config(
            **SAC_SIZES,
            **MODEL_SIZES,
            env_name="pendulum",
            rollout_batch_size=4,
            horizon=2,
            num_samples=2,
            terminal_actions=2,
            steve_horizon=2,
            steve_members=2,
        )
        state = _init(maac, config)
        return (
            lambda lrn, batch, k: maac.update(lrn, batch, k, state.model),
            state.learner,
            _transitions(key),
        )
    if name == "dreamer":
        config = dreamer.Config(**DREAMER_SIZES)
        return dreamer.update, _init(dreamer, config).learner, _sequences(key, config)
    if name == "maxent_dreamer":
        config = dataclasses.replace(
            maxent_dreamer.Config.for_env("pendulum", variant="maxent"),
            **DREAMER_SIZES,
            mdn_hidden=8,
            mdn_components=2,
        )
        return (
            lambda lrn, batch, k: maxent_dreamer.update(lrn, batch, k, jnp.float32(0.1)),
            _init(maxent_dreamer, config).learner,
            _sequences(key, config),
        )
    raise ValueError(name)


# Dreamer's and MaxEnt Dreamer's updates are opt-in (-m slow): op by op, JAX
# compiles every distinct primitive on first use, and their world model,
# imagination and three (MaxEnt: five) optimizers take about 50 and 80 CPU
# seconds that way (measured on 2 cores), against 1-25 s for each other agent.
AGENTS = [
    "sac",
    "mbpo",
    "memr",
    "s2vg",
    "memb",
    "svg",
    pytest.param("maac", marks=pytest.mark.slow),  # 46 s cold; its losses are tested in test_maac
    pytest.param("dreamer", marks=pytest.mark.slow),
    pytest.param("maxent_dreamer", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", AGENTS)
def test_update_agrees_with_and_without_jit(name):
    update, learner, batch = _case(name)
    key = jax.random.PRNGKey(3)
    jitted = jax.jit(update)(learner, batch, key)
    with jax.disable_jit():
        eager = update(learner, batch, key)
    new_jit, metrics_jit = jitted
    new_eager, metrics_eager = eager
    assert set(metrics_jit) == set(metrics_eager) and metrics_jit
    for k in metrics_jit:
        np.testing.assert_allclose(
            np.asarray(metrics_eager[k], np.float64),
            np.asarray(metrics_jit[k], np.float64),
            rtol=RTOL,
            atol=ATOL,
            err_msg=k,
        )
    paths_jit = jax.tree_util.tree_leaves_with_path(new_jit)
    paths_eager = jax.tree_util.tree_leaves_with_path(new_eager)
    assert [p for p, _ in paths_jit] == [p for p, _ in paths_eager]
    moved = 0
    for (path, a), (_, b), before in zip(
        paths_jit, paths_eager, jax.tree_util.tree_leaves(learner), strict=True
    ):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, jax.tree_util.keystr(path)
        assert np.all(np.isfinite(a)), jax.tree_util.keystr(path)
        np.testing.assert_allclose(
            b.astype(np.float64),
            a.astype(np.float64),
            rtol=RTOL,
            atol=ATOL,
            err_msg=jax.tree_util.keystr(path),
        )
        moved += int(not np.array_equal(a, np.asarray(before)))
    assert moved > 0  # the update changed parameters: the comparison is not vacuous

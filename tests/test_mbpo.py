"""MBPO pieces: the rollout-length schedule, the real/model batch mix, model
buffer sizing, and rollouts that stop (and restart) at termination."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memrl.agents import mbpo, model_based
from memrl.replay import buffer
from memrl.types import Transition

Spec = collections.namedtuple("Spec", "observation_size action_size")


def _tiny(**kw):
    base = dict(
        hidden_sizes=(8,),
        batch_size=20,
        real_ratio=0.25,
        buffer_size=64,
        rollout_batch_size=6,
        rollout_max_length=3,
        epoch_length=100,
        periodic_every=50,
        model_members=2,
        model_elites=1,
        model_hidden_sizes=(8,),
        model_max_epochs=2,
        model_error_horizon=0,
    )
    return mbpo.Config(**{**base, **kw})


def test_rollout_length_schedule_matches_mbpo_formula():
    config = mbpo.Config(
        rollout_min_epoch=20, rollout_max_epoch=100, rollout_min_length=1, rollout_max_length=15
    )
    for epoch, want in [(0, 1), (20, 1), (60, 8), (100, 15), (300, 15)]:
        got = int(mbpo.rollout_length(config, jnp.int32(epoch * 1000)))
        # MBPO: int(min(max(min_len + (e - e0)/(e1 - e0) * (max_len - min_len), min_len), max_len))
        ref = int(min(max(1 + (epoch - 20) / 80 * 14, 1), 15))
        assert got == ref == want


def test_model_buffer_holds_retained_epochs_of_longest_rollouts():
    config = _tiny(model_retain_epochs=2)
    # 6 rollouts x 3 steps x (100 / 50) trainings per epoch x 2 epochs.
    assert mbpo.model_buffer_size(config) == 72


def _state(config, obs_size=3, action_size=2):
    state = mbpo.init(jax.random.PRNGKey(0), Spec(obs_size, action_size), config)
    real = Transition(
        obs=jnp.ones((40, obs_size)),
        action=jnp.zeros((40, action_size)),
        reward=jnp.ones(40),
        discount=jnp.ones(40),
        next_obs=jnp.ones((40, obs_size)),
    )
    return state.replace(env_buffer=buffer.add(state.env_buffer, real))


def test_batches_mix_real_and_model_data_by_real_ratio():
    config = _tiny()
    state = _state(config)
    fake = Transition(
        obs=-jnp.ones((30, 3)),
        action=jnp.zeros((30, 2)),
        reward=-jnp.ones(30),
        discount=jnp.ones(30),
        next_obs=-jnp.ones((30, 3)),
    )
    state = state.replace(model_buffer=buffer.add(state.model_buffer, fake))
    batch = mbpo.sample_batch(state, jax.random.PRNGKey(1))
    assert batch.reward.shape == (20,)
    assert int(jnp.sum(batch.reward > 0)) == 5  # round(20 * 0.25) real rows


def test_rollouts_restart_from_real_states_after_termination(monkeypatch):
    config = _tiny()
    state = _state(config)
    # Every predicted state terminates: each of the 3 steps must start again
    # from real states (all ones), never from a model prediction.
    monkeypatch.setattr(
        model_based.termination, "for_env", lambda name: lambda o: jnp.ones(o.shape[:-1], bool)
    )
    model_buffer, generated = mbpo.rollout(state, jax.random.PRNGKey(2), jnp.int32(3))
    assert int(generated) == 18 and int(model_buffer.size) == 18
    stored = model_buffer.data
    np.testing.assert_array_equal(np.asarray(stored.obs[:18]), 1.0)
    np.testing.assert_array_equal(np.asarray(stored.discount[:18]), 0.0)

    # Without termination, step 2 starts from step 1's predictions.
    monkeypatch.setattr(
        model_based.termination, "for_env", lambda name: lambda o: jnp.zeros(o.shape[:-1], bool)
    )
    model_buffer, _ = mbpo.rollout(state, jax.random.PRNGKey(2), jnp.int32(2))
    np.testing.assert_allclose(
        np.asarray(model_buffer.data.obs[6:12]), np.asarray(model_buffer.data.next_obs[:6])
    )


def test_schedules_that_learn_before_the_first_model_fit_are_rejected():
    """A warm-up that is not a multiple of the model period would start SAC
    updates on an empty D_model (MBPO) or an untrained model (MEMR)."""
    from memrl.agents import memr

    mbpo.validate(mbpo.Config(warmup_steps=1000, periodic_every=250))
    with pytest.raises(
        ValueError, match=r"warmup_steps \(1000\) must be a multiple of periodic_every \(300\)"
    ):
        mbpo.validate(mbpo.Config(warmup_steps=1000, periodic_every=300))
    memr.validate(memr.Config(warmup_steps=1000, periodic_every=250, rollout_every=50))
    with pytest.raises(ValueError, match="rollout_every"):
        memr.validate(memr.Config(warmup_steps=1000, periodic_every=250, rollout_every=3))
    with pytest.raises(ValueError, match="periodic_every"):
        memr.validate(memr.Config(warmup_steps=1000, periodic_every=400))

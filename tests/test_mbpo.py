"""MBPO pieces against the authors' code (github.com/jannerm/mbpo, re-written
here as NumPy oracles): the rollout-length schedule over epochs counted from
the end of the exploration steps, the model pool that batches come from, the
real/model batch mix, and rollouts that stop (and restart) at termination."""

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


def _mbpo_rollout_length(schedule, epoch):
    """The authors' ``_set_rollout_length`` (mbpo/algorithms/mbpo.py l. 337-346)."""
    min_epoch, max_epoch, min_length, max_length = schedule
    if epoch <= min_epoch:
        return int(min_length)
    dx = min((epoch - min_epoch) / (max_epoch - min_epoch), 1)
    return int(dx * (max_length - min_length) + min_length)


@pytest.mark.parametrize("env", ["hopper", "ant", "humanoid"])
def test_rollout_length_follows_mbpo_epochs_counted_from_the_end_of_exploration(env):
    """MBPO fits and rolls out when ``timestep % 250 == 0`` inside epoch ``e``,
    and its epochs start after the 5000 exploration steps: the fits of epoch
    ``e`` come after ``5000 + 1000 e + {0, 250, 500, 750}`` env steps. The
    runner calls ``periodic`` with the step count at the start of the step
    whose end is that fit (``done - 1`` with one env)."""
    config = mbpo.Config.for_env(env)
    schedule = (
        config.rollout_min_epoch,
        config.rollout_max_epoch,
        config.rollout_min_length,
        config.rollout_max_length,
    )
    done = 5000 + 250 * np.arange(4 * 320)
    want = [_mbpo_rollout_length(schedule, (d - 5000) // 1000) for d in done]
    epoch = mbpo.mbpo_epoch(config, jnp.asarray(done - 1, jnp.int32))
    np.testing.assert_array_equal(np.asarray(epoch), (done - 5000) // 1000)
    np.testing.assert_array_equal(np.asarray(mbpo.rollout_length(config, epoch)), want)


def test_rollout_length_by_hand_on_hopper():
    config = mbpo.Config.for_env("hopper")  # [20, 100, 1, 15], 5000 warm-up steps

    def k(done_steps):
        step = jnp.int32(done_steps - 1)
        return int(mbpo.rollout_length(config, mbpo.mbpo_epoch(config, step)))

    assert k(5000) == 1  # epoch 0
    assert k(25_750) == 1  # epoch 20
    # Epoch 25: 1 + 5/80 * 14 = 1.875 -> 1 (counting epochs from step 0, as
    # before, gave epoch 30 -> 2).
    assert k(30_000) == 1
    assert k(35_000) == 2  # epoch 30: 1 + 10/80 * 14 = 2.75
    assert k(65_250) == 8  # epoch 60: 1 + 40/80 * 14 = 8
    assert k(104_750) == 14  # epoch 99: 1 + 79/80 * 14 = 14.825
    assert k(105_000) == 15 and k(400_000) == 15  # epoch >= 100


def _mbpo_pool_oracle(config, rounds):
    """The ids MBPO's model pool holds after each round: before a round the pool
    is sized ``retain x k x n x rounds per epoch`` for that round's ``k``
    (``_reallocate_model_pool``), then the round's ``k x n`` transitions are
    appended and the oldest beyond the size dropped (FIFO). Transition id:
    ``100 x round + step in the rollout``."""
    n = config.rollout_batch_size
    per_epoch = config.epoch_length / config.periodic_every
    schedule = (
        config.rollout_min_epoch,
        config.rollout_max_epoch,
        config.rollout_min_length,
        config.rollout_max_length,
    )
    pool, held = [], []
    for r, done in enumerate(rounds):
        k = _mbpo_rollout_length(schedule, (done - config.warmup_steps) // config.epoch_length)
        size = int(config.model_retain_epochs * k * n * per_epoch)
        for i in range(k):
            pool += [100 * r + i] * n
        pool = pool[-size:]
        held.append((k, collections.Counter(pool)))
    return held


@pytest.mark.parametrize("retain", [1, 2])
def test_batches_come_only_from_mbpos_model_pool(monkeypatch, retain):
    """Rollouts of known length ``k`` across epochs (k = 1, 1, 1, 1, 2, 2, 3,
    ...): after each round, the transitions that ``sample_batch``'s model part
    can draw are exactly those MBPO's pool holds (NumPy oracle above): while
    ``k`` stays 1, the rollouts of the last ``retain`` epochs (2 rounds per
    epoch), not the capacity's worth of older ones."""
    n = 3
    config = _tiny(
        rollout_batch_size=n,
        rollout_min_epoch=1,
        rollout_max_epoch=3,
        rollout_min_length=1,
        rollout_max_length=3,
        model_retain_epochs=retain,
        warmup_steps=100,
        real_ratio=0.0,
        batch_size=64,
    )
    # Storage for the pool at the longest rollouts: retain x 3 x 3 x 2.
    assert mbpo.model_buffer_size(config) == retain * 18
    spec = Spec(2, 1)
    state = mbpo.init(jax.random.PRNGKey(0), spec, config)

    def fake_step(learner, model, obs, key, env_name):
        # obs = (round, step in the rollout); reward = the transition's id.
        rows = obs.shape[0]
        transition = Transition(
            obs=obs,
            action=jnp.zeros((rows, 1)),
            reward=100 * obs[:, 0] + obs[:, 1],
            discount=jnp.ones(rows),
            next_obs=obs + jnp.asarray([0.0, 1.0]),
        )
        return model_based.Rollout(transition, jnp.zeros(rows, bool))

    monkeypatch.setattr(model_based, "model_step", fake_step)
    monkeypatch.setattr(model_based, "train_model", lambda model, buf, key, cfg: (model, {}))
    draw = jax.jit(lambda s, k: mbpo.sample_batch(s, k).reward)

    rounds = 100 + 50 * np.arange(10)  # fits after these env steps: epochs 0, 0, 1, 1, ...
    oracle = _mbpo_pool_oracle(config, rounds)
    for r, done in enumerate(rounds):
        starts = Transition(
            obs=jnp.tile(jnp.asarray([[float(r), 0.0]]), (8, 1)),
            action=jnp.zeros((8, 1)),
            reward=jnp.zeros(8),
            discount=jnp.ones(8),
            next_obs=jnp.zeros((8, 2)),
        )
        one = jax.tree_util.tree_map(lambda x: x[0], starts)
        state = state.replace(env_buffer=buffer.add(buffer.init(one, 8), starts))
        state, metrics = mbpo.periodic(state, jax.random.PRNGKey(r), jnp.int32(done - 1))
        k, held = oracle[r]
        assert int(metrics["rollout/length"]) == k
        drawn = np.concatenate(
            [np.asarray(draw(state, key)) for key in jax.random.split(jax.random.PRNGKey(r), 40)]
        )
        got = collections.Counter(np.rint(drawn).astype(int).tolist())
        assert set(got) == set(held), (r, sorted(got), sorted(held))
        # Uniform over the pool's transitions: each id's share matches its
        # multiplicity (40 x 64 draws; 5 sigma of a binomial).
        total = sum(held.values())
        for i, count in held.items():
            p = count / total
            assert abs(got[i] / len(drawn) - p) <= 5 * np.sqrt(p * (1 - p) / len(drawn))
    # While k = 1 (rounds 0-3), the pool held exactly the last `retain` epochs.
    assert {i // 100 for i in oracle[3][1]} == ({2, 3} if retain == 1 else {0, 1, 2, 3})


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
    state = state.replace(
        model_buffer=buffer.add(state.model_buffer, fake), model_pool=jnp.int32(30)
    )
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


@pytest.mark.slow
def test_learns_pendulum(tmp_path):
    """Opt-in: mean evaluation return >= -400 after 10^4 pendulum steps with
    the CPU settings of ``Config.for_env('pendulum')`` (uniform random actions
    score about -1200)."""
    from memrl.training import runner

    run = runner.RunConfig(
        env="pendulum", total_steps=10_000, eval_every=1000, logdir=str(tmp_path), progress=False
    )
    rows = runner.train(mbpo, mbpo.Config.for_env("pendulum"), run)
    assert rows[-1]["eval_return"] >= -400.0

"""Known termination rules against hand-made observations, and (slow) against
brax's own ``done`` on random rollouts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memrl import envs
from memrl.envs import termination


def _obs(size, **entries):
    x = np.zeros(size, np.float32)
    for index, value in entries.items():
        x[int(index[1:])] = value
    return jnp.asarray(x)


@pytest.mark.parametrize(
    "name,size,entries,done",
    [
        ("hopper", 11, {"i0": 1.25, "i1": 0.0}, False),
        ("hopper", 11, {"i0": 0.69, "i1": 0.0}, True),
        ("hopper", 11, {"i0": 1.25, "i1": 0.25}, True),
        ("hopper", 11, {"i0": 1.25, "i5": 150.0}, True),
        ("walker2d", 17, {"i0": 1.25, "i1": 0.5}, False),
        ("walker2d", 17, {"i0": 2.1, "i1": 0.0}, True),
        ("walker2d", 17, {"i0": 1.2, "i1": -1.1}, True),
        ("ant", 27, {"i0": 0.5}, False),
        ("ant", 27, {"i0": 0.1}, True),
        ("ant", 27, {"i0": 1.1}, True),
        ("humanoid", 244, {"i0": 1.4}, False),
        ("humanoid", 244, {"i0": 0.9}, True),
        ("halfcheetah", 17, {"i0": -50.0}, False),
    ],
)
def test_rules_on_hand_made_observations(name, size, entries, done):
    assert bool(termination.for_env(name)(_obs(size, **entries))) is done


def test_non_finite_prediction_terminates_and_batches():
    obs = jnp.stack([_obs(27, i0=0.5), _obs(27, i0=0.5).at[3].set(jnp.nan)])
    np.testing.assert_array_equal(np.asarray(termination.ant(obs)), [False, True])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hopper", "walker2d"])
def test_rules_match_brax_done(name):
    env = envs.make(name)
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    rng = np.random.default_rng(0)
    agree = 0
    for episode in range(3):
        state = reset(jax.random.PRNGKey(episode))
        for _ in range(200):
            action = jnp.asarray(rng.uniform(-1, 1, env.action_size), jnp.float32)
            state = step(state, action)
            assert bool(termination.for_env(name)(state.obs)) == bool(state.done)
            agree += 1
            if state.done:
                break
    assert agree > 10

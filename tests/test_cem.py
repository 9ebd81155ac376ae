"""CEM: improves a known quadratic objective, keeps to the box, elite count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memrl.planning import cem

TARGET = jnp.array([[0.3, -0.6], [0.9, 0.1], [-0.2, 0.5]])  # [T = 3, A = 2]


def _objective(x, key):
    del key
    return -jnp.sum((x - TARGET) ** 2, axis=(1, 2))


@pytest.mark.parametrize("num_candidates", [64, 256])
def test_cem_improves_a_quadratic_objective(num_candidates):
    config = cem.CEMConfig(num_iterations=8, elite_fraction=0.1)
    initial = jax.random.uniform(
        jax.random.PRNGKey(0), (num_candidates, 3, 2), minval=-1.0, maxval=1.0
    )
    result = jax.jit(lambda x, k: cem.optimize(_objective, x, k, config))(
        initial, jax.random.PRNGKey(1)
    )
    start = float(jnp.max(_objective(initial, None)))
    final = float(_objective(result.mean[None], None)[0])
    assert final > start
    assert final > -0.05  # close to the optimum 0
    np.testing.assert_allclose(np.asarray(result.mean), np.asarray(TARGET), atol=0.15)
    # Elite means improve monotonically up to noise; the last beats the first.
    assert float(result.mean_scores[-1]) > float(result.mean_scores[0])
    assert float(result.best_score) >= float(result.mean_scores[-1]) - 1e-6
    assert result.mean_scores.shape == (8,)


def test_cem_respects_the_box_when_the_optimum_lies_outside():
    config = cem.CEMConfig(num_iterations=5, elite_fraction=0.1, lower=-1.0, upper=1.0)

    def objective(x, key):
        return -jnp.sum((x - 3.0) ** 2, axis=(1, 2))

    initial = cem.gaussian_population(
        jax.random.PRNGKey(2), jnp.zeros((2, 1)), jnp.ones((2, 1)), 128, config
    )
    result = jax.jit(lambda x, k: cem.optimize(objective, x, k, config))(
        initial, jax.random.PRNGKey(3)
    )
    assert float(jnp.max(result.best)) <= 1.0
    np.testing.assert_allclose(np.asarray(result.mean), 1.0, atol=0.05)


def test_num_elites():
    assert cem.num_elites(1024, 0.1) == 102
    assert cem.num_elites(5, 0.1) == 1

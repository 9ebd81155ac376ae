"""Checkpoints round-trip every leaf, including the zero-size arrays MJX
states carry (orbax refuses to save those)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from memrl.training.checkpoint import Checkpointer


def test_round_trip_with_zero_size_leaves(tmp_path):
    sharding = NamedSharding(Mesh(np.asarray(jax.devices()[:1]), ("seed",)), PartitionSpec("seed"))
    state = {"a": jnp.ones((1, 3)), "empty": jnp.zeros((1, 0)), "b": (jnp.arange(2)[None],)}
    state = jax.device_put(state, sharding)
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save(5, state, {"wall_time": 1.5, "counts": {"count/x": [3]}})
    abstract = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), state
    )
    restored, step, extra = ckpt.restore(abstract)
    ckpt.close()
    assert step == 5 and extra["wall_time"] == 1.5 and extra["counts"] == {"count/x": [3]}
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(state)
    leaves = zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state), strict=True)
    for got, want in leaves:
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

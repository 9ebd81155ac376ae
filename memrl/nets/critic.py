"""Q and V networks. Twin Q is one vmapped network, not a Python list."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from memrl.nets.mlp import MLP


class QNetwork(nn.Module):
    """``(s, a) -> Q`` for ``num_critics`` independent heads, stacked on axis 0.

    The heads share nothing but are computed as one ``nn.vmap``-ed MLP so that
    XLA sees batched matmuls (twin Q of TD3/SAC: ``num_critics = 2``).

    Attributes:
      hidden_sizes: MLP widths.
      num_critics: number of independent Q functions.
      activation: hidden activation name.

    Returns:
      Q values of shape ``[num_critics, ...]``.
    """

    hidden_sizes: Sequence[int] = (256, 256)
    num_critics: int = 2
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([obs, action], axis=-1)
        ensemble = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_critics,
        )
        q = ensemble(self.hidden_sizes, 1, self.activation)(x)
        return q[..., 0]


class VNetwork(nn.Module):
    """``s -> V(s)``.

    Attributes:
      hidden_sizes: MLP widths.
      activation: hidden activation name.
    """

    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP(self.hidden_sizes, 1, self.activation)(obs)[..., 0]

"""Multi-layer perceptron used by every network in memrl."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "swish": nn.swish,
    "tanh": jnp.tanh,
    "elu": nn.elu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Looks up an activation by name; raises ValueError listing valid names."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """Dense layers with an activation between them and none after the last.

    Attributes:
      hidden_sizes: widths of the hidden layers.
      output_size: width of the output layer.
      activation: name of the hidden activation (see ``ACTIVATIONS``).
      layer_norm: apply LayerNorm after each hidden Dense (MEMR's model nets).
      output_scale: scale of the variance-scaling init of the last layer.
    """

    hidden_sizes: Sequence[int]
    output_size: int
    activation: str = "relu"
    layer_norm: bool = False
    output_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation(self.activation)
        for width in self.hidden_sizes:
            x = nn.Dense(width, kernel_init=nn.initializers.lecun_uniform())(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x)
        init = nn.initializers.variance_scaling(self.output_scale, "fan_in", "uniform")
        return nn.Dense(self.output_size, kernel_init=init)(x)

"""Networks and learner state of S2VG, MEMB and SVG(1): the five flax modules
(policy pi_theta, twin Q_phi, V_psi, dynamics f_omega, reward r_hat_varphi),
the ``Learner`` that holds their parameters and Adam states, and the policy
and V as plain functions of their parameters.

Part of the value-gradient family (file map in ``memrl.agents.value_gradient``).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct as struct
import jax
import optax

from memrl.agents.value_gradient_config import Config
from memrl.nets import policy as policy_lib
from memrl.nets import reparam_model
from memrl.nets.critic import QNetwork, VNetwork

PyTree = Any
# (obs [..., O], action [..., A]) -> (next_obs [..., O], reward [...]).
StepFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
# (policy params, obs [..., O], eta [..., A]) -> (action [..., A], log pi [...]).
PolicyFn = Callable[[PyTree, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


class Networks(NamedTuple):
    """The five flax modules."""

    policy: policy_lib.TanhGaussianPolicy
    critic: QNetwork
    value: VNetwork
    dynamics: reparam_model.ReparamModel
    reward: reparam_model.ReparamModel


def networks(config: Config, obs_size: int, action_size: int) -> Networks:
    hidden, act = tuple(config.hidden_sizes), config.activation
    model_hidden = tuple(config.model_hidden_sizes)
    return Networks(
        policy=policy_lib.TanhGaussianPolicy(action_size, hidden, act),
        critic=QNetwork(hidden, 2, act),
        value=VNetwork(hidden, act),
        dynamics=reparam_model.ReparamModel(obs_size, model_hidden, act),
        reward=reparam_model.ReparamModel(1, model_hidden, act),
    )


@struct.dataclass
class Learner:
    """Everything the updates change.

    Attributes:
      policy: tanh-Gaussian policy parameters (theta).
      critic: twin-Q parameters (phi_0, phi_1), stacked; ``None`` for SVG.
      value: V parameters (psi).
      target_value: Polyak-averaged V (psi bar).
      model: ``{'dynamics': omega, 'reward': varphi}``.
      policy_opt, critic_opt, value_opt, model_opt: Adam states.
      config: the static ``Config``.
      obs_size, action_size: static sizes.
    """

    policy: PyTree
    critic: PyTree
    value: PyTree
    target_value: PyTree
    model: PyTree
    policy_opt: optax.OptState
    critic_opt: optax.OptState
    value_opt: optax.OptState
    model_opt: optax.OptState
    config: Config = struct.field(pytree_node=False)
    obs_size: int = struct.field(pytree_node=False)
    action_size: int = struct.field(pytree_node=False)

    @property
    def nets(self) -> Networks:
        return networks(self.config, self.obs_size, self.action_size)


def policy_fn(learner: Learner) -> PolicyFn:
    """``(theta, s, eta) -> (a, log pi(a|s))`` with ``a = tanh(mu + sigma eta)``."""
    pi = learner.nets.policy

    def apply(params, obs, eta):
        return policy_lib.squash_with_log_prob(pi.apply(params, obs), eta)

    return apply


def value_fn(learner: Learner, params: PyTree | None = None) -> Callable[[jax.Array], jax.Array]:
    """``s -> V_psi(s)`` (the online V unless ``params`` is given)."""
    v = learner.nets.value
    params = learner.value if params is None else params
    return lambda obs: v.apply(params, obs)

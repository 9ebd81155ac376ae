"""Pieces shared by the Dyna-style agents (MBPO, MEMR, MAAC): the config fields
of the learned ensemble, model training on the real-data buffer, and policy
rollouts through the model.

No ``from __future__ import annotations`` here: ml_collections reads the
Config field types at runtime to parse ``--config.<field>`` flags.
"""

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from memrl.agents import sac
from memrl.diagnostics import model_error
from memrl.envs import termination
from memrl.nets import dynamics
from memrl.replay import buffer as buffer_lib
from memrl.types import Transition


@dataclasses.dataclass(unsafe_hash=True)
class ModelConfig(sac.Config):
    """SAC settings plus the probabilistic ensemble's (flat, so each is a flag).

    Attributes:
      env_name: the task; selects the known termination rule for rollouts
        (``memrl.envs.termination``). Set by ``for_env``.
      model_members: ensemble size.
      model_elites: members used for rollouts (lowest holdout MSE).
      model_hidden_sizes: hidden widths of each member.
      model_activation: hidden activation.
      model_layer_norm: LayerNorm after each hidden layer.
      model_learning_rate: Adam step size of the model.
      model_weight_decay: L2 coefficient on the model's kernels.
      model_batch_size: model minibatch size.
      model_max_epochs: most epochs per model training.
      model_patience: early stop after this many epochs without improvement.
      model_holdout_fraction: validation fraction of the real data.
      model_normalize_targets: standardize the (delta, reward) targets.
      model_error_horizon: k of the k-step model error logged before each
        model fit (``memrl.diagnostics.model_error``); 0 turns it off.
      periodic_every: model training period in environment steps.
    """

    env_name: str = ""
    model_members: int = 7
    model_elites: int = 5
    model_hidden_sizes: tuple[int, ...] = (200, 200, 200, 200)
    model_activation: str = "swish"
    model_layer_norm: bool = False
    model_learning_rate: float = 1e-3
    model_weight_decay: float = 5e-5
    model_batch_size: int = 256
    model_max_epochs: int = 100
    model_patience: int = 5
    model_holdout_fraction: float = 0.2
    model_normalize_targets: bool = False
    model_error_horizon: int = 5
    periodic_every: int = 250


def validate_schedule(config: ModelConfig, periods: dict[str, int]) -> None:
    """Raises ValueError unless ``warmup_steps`` is a multiple of each period.

    Learning starts at ``warmup_steps``; the first model fit (and rollout
    round) comes at the first multiple of its period from there on. Were the
    warm-up not a multiple, the first updates would sample a model buffer
    still empty (MBPO: all-zero transitions) or roll out an untrained model
    (MEMR).

    Args:
      config: the agent's config.
      periods: ``{field name: period in env steps}``.
    """
    for name, period in periods.items():
        if period < 1:
            raise ValueError(f"{name} must be >= 1, got {period}")
        if config.warmup_steps % period:
            raise ValueError(
                f"warmup_steps ({config.warmup_steps}) must be a multiple of {name} "
                f"({period}): learning would start before the first model fit"
            )


def ensemble_config(config: ModelConfig) -> dynamics.EnsembleConfig:
    """The ``EnsembleConfig`` the flat ``model_*`` fields describe."""
    return dynamics.EnsembleConfig(
        num_members=config.model_members,
        num_elites=config.model_elites,
        hidden_sizes=tuple(config.model_hidden_sizes),
        activation=config.model_activation,
        layer_norm=config.model_layer_norm,
        learning_rate=config.model_learning_rate,
        weight_decay=config.model_weight_decay,
        batch_size=config.model_batch_size,
        max_epochs=config.model_max_epochs,
        patience=config.model_patience,
        holdout_fraction=config.model_holdout_fraction,
        normalize_targets=config.model_normalize_targets,
    )


def init_model(key: jax.Array, env_spec: Any, config: ModelConfig) -> dynamics.ModelState:
    return dynamics.init(
        key, env_spec.observation_size, env_spec.action_size, ensemble_config(config)
    )


def train_model(
    model: dynamics.ModelState,
    env_buffer: buffer_lib.BufferState,
    key: jax.Array,
    config: ModelConfig,
) -> tuple[dynamics.ModelState, dict]:
    """Measures the model on the real transitions gathered since its last fit
    (held out from it), then fits it to every real transition stored so far."""
    k_error, k_train = jax.random.split(key)
    metrics = {}
    horizon = config.model_error_horizon
    if horizon and config.num_envs == 1:
        window = model_error.recent(env_buffer, config.periodic_every)

        def step_fn(obs, action, k):
            return dynamics.step(model, obs, action, k)[0]

        metrics = model_error.prediction_error(step_fn, window, k_error, horizon)
    model, train_metrics = dynamics.train(model, env_buffer.data, env_buffer.size, k_train)
    return model, {**metrics, **train_metrics}


class Rollout(NamedTuple):
    """One model step for a batch of start states.

    Attributes:
      transition: ``Transition`` with leading axis ``B``; ``discount`` is 0
        where the known termination rule fires on the predicted next state.
      done: ``[B]`` bool, the rows that terminated.
    """

    transition: Transition
    done: jax.Array


def model_step(
    learner: sac.Learner,
    model: dynamics.ModelState,
    obs: jax.Array,
    key: jax.Array,
    env_name: str,
) -> Rollout:
    """``a ~ pi(.|s)``, ``(s', r) ~ p_theta(.|s, a)`` from a random elite per row."""
    k_act, k_model = jax.random.split(key)
    action = sac.act(learner, obs, k_act)
    next_obs, reward = dynamics.step(model, obs, action, k_model)
    done = termination.for_env(env_name)(next_obs)
    transition = Transition(
        obs=obs,
        action=action,
        reward=reward,
        discount=1.0 - done.astype(jnp.float32),
        next_obs=next_obs,
    )
    return Rollout(transition, done)


def mix_batches(real: Transition, model: Transition) -> Transition:
    """Concatenates a real and a model batch along the batch axis."""
    return jax.tree_util.tree_map(lambda r, m: jnp.concatenate([r, m], axis=0), real, model)

"""Model-based policy optimization (Janner et al. 2019, "When to Trust Your
Model"), MEMR's baseline.

Algorithm 2 of the MBPO paper, with DESIGN.md Sec. 6's settings:

* every ``periodic_every`` (250) environment steps: train the ensemble on
  ``D_env`` (``model_based.train_model``), then branch ``rollout_batch_size``
  rollouts of length ``k`` from states drawn uniformly from ``D_env`` under
  the current policy, and add every model transition to ``D_model``;
* ``k`` follows MBPO's linear schedule ``[min_epoch, max_epoch, min_len,
  max_len]`` over epochs of ``epoch_length`` steps, epochs counted from the
  end of the ``warmup_steps`` initial random steps (``mbpo_epoch``);
* ``D_model`` is MBPO's model pool: batches are drawn uniformly from its newest
  ``model_retain_epochs x k x rollout_batch_size x (epoch_length /
  periodic_every)`` transitions, ``k`` the current rollout length
  (``model_pool_size``);
* after each environment step: ``updates_per_step`` SAC updates on batches
  mixing ``real_ratio`` real and ``1 - real_ratio`` model transitions.

What the authors' code does (github.com/jannerm/mbpo at ac694ff, the file
``mbpo/algorithms/mbpo.py`` unless named):

* Epochs. ``_train`` (l. 185-199) runs the ``n_initial_exploration_steps``
  (5000 for MBPO, ``examples/development/base.py`` l. 54) before its epoch
  loop, and ``self._epoch`` starts at 0 there
  (``softlearning/algorithms/rl_algorithm.py`` l. 77): epoch ``e`` is the
  environment steps ``[5000 + 1000 e, 5000 + 1000 (e + 1))``. The model is
  fitted and rolled out when ``timestep % model_train_freq == 0`` (l. 217),
  before that step's sample, and ``_set_rollout_length`` (l. 337-346) reads
  this ``self._epoch``. ``mbpo_epoch`` counts the same way.
* Model pool. Before every rollout round, ``_reallocate_model_pool``
  (l. 351-373) sizes the pool to ``retain_epochs x k x rollout_batch_size x
  epoch_length / model_train_freq`` for the current ``k`` (l. 355-357), a FIFO
  ``SimpleReplayPool`` that ``_training_batch`` (l. 424-441) samples
  uniformly. While ``k = 1`` it therefore holds one epoch of rollouts (4
  rounds) with ``retain_epochs = 1``; when ``k`` grows, the larger pool also
  keeps older, shorter rollouts. Here ``D_model`` is a circular buffer of
  static size (the pool at the largest ``k``) and ``sample_model`` draws only
  from its newest ``model_pool_size`` rows, the same set. One difference: on a
  resize the authors copy the old pool in storage order
  (``softlearning/replay_pools/flexible_replay_pool.py`` l. 142-146), not in
  order of age, so after a wrapped pool is resized their eviction order is no
  longer oldest-first; here it always is.

Shapes stay static under ``jit``: rollouts always run ``rollout_max_length``
steps inside a ``fori_loop`` with a traced trip count ``k``. A rollout whose
predicted state terminates (known rule, ``memrl.envs.termination``) stores
that terminal transition and restarts from a fresh real state, so every
stored transition is valid and every round adds exactly ``k x
rollout_batch_size`` transitions (MBPO instead drops terminated rollouts,
``_rollout_model`` l. 397-402, which makes that number data-dependent and
lets its pool hold more rounds).
"""

# No `from __future__ import annotations`: ml_collections reads Config types.
import dataclasses
from typing import Any

import flax.struct as struct
import jax
import jax.numpy as jnp

from memrl.agents import model_based, sac
from memrl.nets import dynamics
from memrl.replay import buffer as buffer_lib
from memrl.types import Transition

# MBPO's per-task settings (paper App. C and the authors' configs):
# (rollout schedule [min_epoch, max_epoch, min_len, max_len], target entropy,
#  updates per step).
_TASKS = {
    "halfcheetah": ((20, 100, 1, 1), -3.0, 40),
    # The paper's App. C: 1 -> 15 over epochs 20 -> 100. The authors' config
    # (examples/config/hopper/0.py l. 31) has [20, 150, 1, 15]:
    # --config.rollout_max_epoch=150 runs that.
    "hopper": ((20, 100, 1, 15), -1.0, 20),
    "walker2d": ((20, 100, 1, 1), -3.0, 20),
    "ant": ((20, 100, 1, 25), -4.0, 20),
    "humanoid": ((20, 300, 1, 25), -2.0, 20),
}


# Environment steps of the paper's runs (the x-axes of Janner et al. 2019,
# Fig. 2; the authors' configs set far longer n_epochs and stop by hand).
_RUN_LENGTH = {
    "halfcheetah": 400_000,
    "hopper": 125_000,
    "walker2d": 300_000,
    "ant": 300_000,
    "humanoid": 300_000,
}


@dataclasses.dataclass(unsafe_hash=True)
class Config(model_based.ModelConfig):
    """MBPO settings; defaults from Janner et al. 2019 (App. C) and its code.

    Attributes:
      updates_per_step: SAC updates per environment step (G = 20).
      real_ratio: fraction of each SAC batch drawn from real data (0.05).
      rollout_batch_size: rollouts branched at each model training (10^5).
      rollout_min_epoch, rollout_max_epoch, rollout_min_length,
        rollout_max_length: the linear rollout-length schedule, over epochs
        counted from the end of the warm-up (``mbpo_epoch``).
      epoch_length: environment steps per epoch (1000).
      model_retain_epochs: epochs of rollouts that batches are drawn from:
        ``D_model`` is sampled over its newest ``model_pool_size`` rows (1).
      warmup_steps: initial uniform-random steps (5000; MBPO's
        ``n_initial_exploration_steps``).
    """

    updates_per_step: int = 20
    real_ratio: float = 0.05
    rollout_batch_size: int = 100_000
    rollout_min_epoch: int = 20
    rollout_max_epoch: int = 100
    rollout_min_length: int = 1
    rollout_max_length: int = 1
    epoch_length: int = 1000
    model_retain_epochs: int = 1
    warmup_steps: int = 5000

    def run_length(self) -> int | None:
        """Environment steps of the paper's runs (Fig. 2), None elsewhere."""
        return _RUN_LENGTH.get(self.env_name)

    @classmethod
    def for_env(cls, env_name: str) -> "Config":
        """MBPO's per-task table; small-scale settings for classic control."""
        if env_name in _TASKS:
            (e0, e1, k0, k1), entropy, g = _TASKS[env_name]
            return cls(
                env_name=env_name,
                rollout_min_epoch=e0,
                rollout_max_epoch=e1,
                rollout_min_length=k0,
                rollout_max_length=k1,
                target_entropy=entropy,
                updates_per_step=g,
            )
        # Not in the paper: sized so a CPU run finishes in minutes.
        return cls(
            env_name=env_name,
            warmup_steps=1000,
            updates_per_step=10,
            rollout_batch_size=5000,
            buffer_size=100_000,
            model_members=5,
            model_elites=3,
            model_hidden_sizes=(200, 200, 200),
            model_max_epochs=20,
            real_ratio=0.1,
        )


@struct.dataclass
class AgentState:
    """SAC learner, the ensemble, and the two buffers MBPO owns.

    Attributes:
      learner: SAC parameters and optimizer states.
      model: the ensemble (``memrl.nets.dynamics.ModelState``).
      env_buffer: ``D_env``, real transitions.
      model_buffer: ``D_model``, model transitions (storage for the pool at
        the longest rollouts, ``model_buffer_size``).
      model_pool: int32 scalar, MBPO's model-pool size for the latest
        rollout length (``model_pool_size``): batches come from this many
        newest rows of ``model_buffer`` (0 before the first rollouts).
    """

    learner: sac.Learner
    model: dynamics.ModelState
    env_buffer: buffer_lib.BufferState
    model_buffer: buffer_lib.BufferState
    model_pool: jax.Array


def validate(config: Config) -> None:
    """Raises ValueError on schedules that learn before the first model fit."""
    model_based.validate_schedule(config, {"periodic_every": config.periodic_every})


def model_pool_size(config: Config, length: jax.Array | int) -> jax.Array | int:
    """MBPO's model-pool size for rollouts of ``length`` steps: ``retain_epochs
    x k x rollout_batch_size x rounds per epoch`` transitions, i.e. the
    rollouts of the last ``model_retain_epochs`` epochs while ``k`` is constant
    (authors' ``_reallocate_model_pool``, mbpo/algorithms/mbpo.py l. 355-357)."""
    per_epoch = max(config.epoch_length // config.periodic_every, 1)
    return config.model_retain_epochs * length * config.rollout_batch_size * per_epoch


def model_buffer_size(config: Config) -> int:
    """Capacity of ``D_model``: the model pool at the longest rollouts of the
    schedule (static; ``sample_model`` reads only ``model_pool`` rows of it)."""
    longest = max(config.rollout_min_length, config.rollout_max_length, 1)
    return model_pool_size(config, longest)


def init(key: jax.Array, env_spec: Any, config: Config) -> AgentState:
    k_learner, k_model = jax.random.split(key)
    obs_size, action_size = env_spec.observation_size, env_spec.action_size
    example = sac.example_transition(obs_size, action_size)
    return AgentState(
        learner=sac.init_learner(k_learner, obs_size, action_size, config),
        model=model_based.init_model(k_model, env_spec, config),
        env_buffer=buffer_lib.init(example, config.buffer_size),
        model_buffer=buffer_lib.init(example, model_buffer_size(config)),
        model_pool=jnp.zeros((), jnp.int32),
    )


def act(state: AgentState, obs: jax.Array, key: jax.Array, deterministic: bool = False):
    return sac.act(state.learner, obs, key, deterministic)


update = sac.update


def mbpo_epoch(config: Config, step: jax.Array) -> jax.Array:
    """MBPO's epoch of the model fit that ``periodic`` runs at ``step``.

    The runner calls ``periodic(state, key, step)`` after the iteration that
    starts at ``step`` (``memrl.training.loop``), so the fit comes after
    ``step + num_envs x action_repeat`` environment steps. MBPO counts its
    epochs from the end of the initial exploration (the warm-up): epoch ``e``
    holds the fits after ``warmup + e x epoch_length + {0, 250, 500, 750}``
    steps (mbpo/algorithms/mbpo.py l. 185-217, see the module docstring).

    Returns:
      int32 scalar, 0 for the first fit after the warm-up.
    """
    done = step + config.num_envs * getattr(config, "action_repeat", 1)
    return (done - config.warmup_steps) // config.epoch_length


def rollout_length(config: Config, epoch: jax.Array) -> jax.Array:
    """MBPO's schedule (``_set_rollout_length``, mbpo/algorithms/mbpo.py
    l. 337-346): ``k = int(min_len + min((e - min_epoch) / (max_epoch -
    min_epoch), 1) (max_len - min_len))`` for ``e > min_epoch``, ``min_len``
    before; computed in integers, so ``k`` is the exact floor (int32 scalar).

    Args:
      config: the schedule's fields.
      epoch: MBPO's epoch (``mbpo_epoch``), counted from the end of the warm-up.
    """
    span = max(config.rollout_max_epoch - config.rollout_min_epoch, 1)
    elapsed = jnp.clip(jnp.asarray(epoch, jnp.int32) - config.rollout_min_epoch, 0, span)
    grow = config.rollout_max_length - config.rollout_min_length
    return (config.rollout_min_length + (elapsed * grow) // span).astype(jnp.int32)


def rollout(
    state: AgentState, key: jax.Array, length: jax.Array
) -> tuple[buffer_lib.BufferState, jax.Array]:
    """Branches ``rollout_batch_size`` rollouts of ``length`` steps from real
    states and appends them to ``D_model``; returns the buffer and the number
    of model transitions generated."""
    config = state.learner.config
    n = config.rollout_batch_size
    k_start, k_loop = jax.random.split(key)
    obs = buffer_lib.sample(state.env_buffer, k_start, n).obs

    def body(i, carry):
        obs, model_buffer = carry
        k_step, k_restart = jax.random.split(jax.random.fold_in(k_loop, i))
        out = model_based.model_step(state.learner, state.model, obs, k_step, config.env_name)
        model_buffer = buffer_lib.add(model_buffer, out.transition)
        fresh = buffer_lib.sample(state.env_buffer, k_restart, n).obs
        obs = jnp.where(out.done[:, None], fresh, out.transition.next_obs)
        return obs, model_buffer

    _, model_buffer = jax.lax.fori_loop(0, length, body, (obs, state.model_buffer))
    return model_buffer, length * n


def periodic(state: AgentState, key: jax.Array, step: jax.Array) -> tuple[AgentState, dict]:
    """Trains the model on ``D_env``, then fills ``D_model`` with new rollouts."""
    k_train, k_roll = jax.random.split(key)
    model, metrics = model_based.train_model(
        state.model, state.env_buffer, k_train, state.learner.config
    )
    state = state.replace(model=model)
    config = state.learner.config
    length = rollout_length(config, mbpo_epoch(config, step))
    model_buffer, generated = rollout(state, k_roll, length)
    pool = jnp.asarray(model_pool_size(config, length), jnp.int32)
    metrics = {
        **metrics,
        "rollout/length": length.astype(jnp.float32),
        "count/model_rollouts": generated.astype(jnp.int32),
    }
    return state.replace(model_buffer=model_buffer, model_pool=pool), metrics


def sample_model(state: AgentState, key: jax.Array, batch_size: int) -> Transition:
    """``batch_size`` transitions drawn uniformly, with replacement, from the
    newest ``min(size, model_pool)`` rows of ``D_model``: MBPO's model pool
    (all-zero rows while ``D_model`` is empty)."""
    buf = state.model_buffer
    pool = jnp.maximum(jnp.minimum(buf.size, state.model_pool), 1)
    age = jax.random.randint(key, (batch_size,), 0, pool)
    return buffer_lib.gather(buf, (buf.cursor - 1 - age) % buf.capacity)


def sample_batch(state: AgentState, key: jax.Array) -> Transition:
    """``real_ratio`` of the batch from ``D_env``, the rest from ``D_model``."""
    config = state.learner.config
    n_real = int(round(config.batch_size * config.real_ratio))
    k_real, k_model = jax.random.split(key)
    real = buffer_lib.sample(state.env_buffer, k_real, n_real)
    model = sample_model(state, k_model, config.batch_size - n_real)
    return model_based.mix_batches(real, model)


def train_step(
    state: AgentState, transition: Transition, key: jax.Array, step: jax.Array
) -> tuple[AgentState, dict]:
    """Stores the real transition; past the warm-up, ``updates_per_step`` SAC
    updates on mixed real/model batches."""
    config = state.learner.config
    state = state.replace(env_buffer=buffer_lib.add(state.env_buffer, transition))
    learner, metrics = sac.repeated_updates(
        state.learner,
        lambda k: (sample_batch(state, k), None),
        key,
        config.updates_per_step,
        step >= config.warmup_steps,
    )
    return state.replace(learner=learner), metrics

"""The compiled pieces of the runner: one chunk of environment steps with their
updates, and a deterministic evaluation, both per seed (``runner.per_seed`` maps
them over the seed axis).

Data flow of one step (inside ``lax.scan``)::

    obs --act (or uniform warm-up)--> action --env.step--> next state
        --Transition(obs, action, reward, discount, terminal_obs)-->
        agent.train_step(state, transition, key, step)   # store, sample, update
        agent.periodic(state, key, step) every ``periodic_every`` steps once the
        warm-up is over (model training and rollouts in MBPO/MEMR/MAAC)
        coverage histogram += the reached true states (pendulum, mountain_car)

Metric conventions (``train_step`` returns the same keys every step):

- ``count/*`` keys (``count/policy_updates``, ``count/model_rollouts``) are
  summed over the chunk; the host accumulates them into cumulative columns.
- Every other ``train_step`` metric ``k`` is averaged over the steps past the
  warm-up that computed it. A metric computed on only some steps (MEMR's
  rollouts every ``rollout_every`` steps, any update behind a ``lax.cond``)
  comes with a scalar bool companion ``computed/<k>``
  (``memrl.agents.common.computed_when``): ``k`` is averaged over the steps
  past the warm-up where its companion is true, so the placeholder values of
  skipped steps (zeros) never enter the mean. A metric without a companion
  counts as computed on every step. Companions are not logged.
- ``ChunkMetrics.agent_steps[k]`` is the number of steps behind each mean; the
  host weights chunk means by it. Where no step of a chunk computed ``k`` its
  mean is NaN with weight 0, and where no step of a whole log window did, the
  ``metrics.csv`` cell is empty (as before the warm-up ends), never 0 and
  never a NaN: a NaN that reaches the runner's non-finite check therefore
  always comes from a step that computed it (divergence), and is reported.
- ``periodic`` metrics keep their latest value.

``step`` (the global env-step count) is an unbatched scalar: every ``lax.cond``
on it (warm-up, periodic work, the agent's own schedules) stays a real branch
even where several seeds share a device and are ``vmap``-ed, instead of
running both sides.
"""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any, NamedTuple

import brax.envs.base as brax_base
import jax
import jax.numpy as jnp

from memrl.agents.common import COMPUTED
from memrl.diagnostics import coverage as coverage_lib
from memrl.types import Transition

PyTree = Any


class RunnerState(NamedTuple):
    """Per-seed state of a run (the runner adds a leading seed axis).

    Attributes:
      agent: the agent's state (learner and its buffers).
      env: the batched training-environment state (``num_envs`` rows).
      key: the run's PRNG key, split once per step.
      periodic_metrics: the latest metrics of ``agent.periodic``.
      carry: the recurrent policy state of each training env (leading axis
        ``num_envs``; ``()`` for agents without ``init_carry``).
      coverage: the cumulative int32 histogram of visited true states
        (``memrl.diagnostics.coverage``; ``()`` for envs without a grid).
    """

    agent: PyTree
    env: brax_base.State
    key: jax.Array
    periodic_metrics: dict
    carry: PyTree = ()
    coverage: PyTree = ()


class ChunkMetrics(NamedTuple):
    """Per-seed summaries of one chunk.

    Attributes:
      agent: each ``train_step`` metric averaged over the steps past the
        warm-up that computed it (NaN where none did; module docstring).
      counts: ``count/*`` metrics summed over the chunk.
      periodic: the latest ``periodic`` metrics.
      learned_steps: number of steps past the warm-up.
      agent_steps: per metric of ``agent``, the int32 number of steps behind
        its mean (its weight when chunks are combined).
      episode_return_sum: summed returns of training episodes that ended.
      episodes: number of training episodes that ended.
      coverage: ``coverage/entropy`` and ``coverage/cells`` of the state
        histogram at the end of the chunk (``{}`` for envs without a grid).
    """

    agent: dict
    counts: dict
    periodic: dict
    learned_steps: jax.Array
    episode_return_sum: jax.Array
    episodes: jax.Array
    coverage: dict
    agent_steps: dict


def init_state(
    agent: ModuleType,
    config: Any,
    env_spec: Any,
    train_env: Any,
    key: jax.Array,
    grid: coverage_lib.Grid | None = None,
):
    """A fresh ``RunnerState`` for one seed; with a coverage ``grid``, an empty
    state histogram (the reset observations are not counted)."""
    k_agent, k_env, k_run = jax.random.split(key, 3)
    agent_state = agent.init(k_agent, env_spec, config)
    shapes = jax.eval_shape(agent.periodic, agent_state, k_run, jnp.int32(0))[1]
    env_state = train_env.reset(k_env)
    carry = ()
    if is_recurrent(agent):
        carry = agent.init_carry(agent_state, env_state.reward.shape[0])
    return RunnerState(
        agent=agent_state,
        env=env_state,
        key=k_run,
        periodic_metrics=_zeros(shapes),
        carry=carry,
        coverage=() if grid is None else coverage_lib.init(grid),
    )


def is_recurrent(agent: ModuleType) -> bool:
    """Whether ``agent`` carries a policy state between steps (has ``init_carry``)."""
    return hasattr(agent, "init_carry")


def wants_is_first(agent: ModuleType) -> bool:
    """Whether ``agent.train_step`` takes ``is_first`` (sequence-replay agents)."""
    return "is_first" in inspect.signature(agent.train_step).parameters


def reset_carry(agent: ModuleType, agent_state: PyTree, carry: PyTree, done: jax.Array):
    """``carry`` with the rows of finished episodes (``done [num_envs]``) set to
    ``agent.init_carry``: the next observation starts an episode."""
    fresh = agent.init_carry(agent_state, done.shape[0])

    def pick(new, old):
        mask = jnp.reshape(done.astype(bool), done.shape + (1,) * (old.ndim - 1))
        return jnp.where(mask, new, old)

    return jax.tree_util.tree_map(pick, fresh, carry)


def _zeros(shapes: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _split_counts(metrics: dict) -> tuple[dict, dict]:
    counts = {k: v for k, v in metrics.items() if k.startswith("count/")}
    return {k: v for k, v in metrics.items() if k not in counts}, counts


def masked_means(metrics: dict, learned: jax.Array) -> tuple[dict, dict]:
    """Means over a chunk of ``[T]`` per-step metrics under the ``computed/``
    contract (module docstring).

    Args:
      metrics: ``train_step`` metrics without ``count/`` keys, each ``[T]``,
        with their optional bool ``computed/<k>`` companions ``[T]``.
      learned: ``[T]`` bool, the steps past the warm-up.

    Returns:
      ``(means, steps)``: per metric ``k`` (companions dropped) the float32
      mean over the steps that are ``learned`` and computed ``k`` (NaN where
      there are none), and the int32 number of those steps.
    """
    means, steps = {}, {}
    for k, v in metrics.items():
        if k.startswith(COMPUTED):
            continue
        w = learned
        if COMPUTED + k in metrics:
            w = w & metrics[COMPUTED + k].astype(bool)
        n = jnp.sum(w, dtype=jnp.int32)
        total = jnp.sum(jnp.where(w, v.astype(jnp.float32), 0.0))
        means[k] = jnp.where(n > 0, total / jnp.maximum(n, 1).astype(jnp.float32), jnp.nan)
        steps[k] = n
    return means, steps


def visited_states(env_state: brax_base.State) -> jax.Array:
    """The true observation each training env reached in the step that produced
    ``env_state`` (``[num_envs, D]``), for the coverage histogram.

    With state observations this is ``info['terminal_obs']``: the state the
    step reached, before the auto-reset, so terminal states (mountain car's
    goal) count and the next episode's start state does not. With
    ``--obs=pixels`` the observation is an image and the true one is
    ``info['state']`` (``memrl.envs.pixels``), which the auto-reset has
    already replaced by the next episode's first observation on steps that
    end an episode: there the start state counts instead of the terminal one.
    """
    if "state" in env_state.info:
        return env_state.info["state"]
    return env_state.info["terminal_obs"]


def make_chunk(
    agent: ModuleType,
    config: Any,
    train_env: Any,
    action_size: int,
    length: int,
    grid: coverage_lib.Grid | None = None,
):
    """Returns ``chunk(state, step0) -> (state, ChunkMetrics)`` advancing ``length``
    iterations of one seed. An iteration is one agent step of each of the
    ``num_envs`` environments, ``num_envs * action_repeat`` environment frames;
    ``step`` and every schedule (``warmup_steps``, ``periodic_every``) count
    frames.

    Recurrent agents (``init_carry``) get their carry in ``act`` and back from
    it; the runner resets a row to ``init_carry`` where its episode ends, and
    holds every row at ``init_carry`` during the uniform warm-up (the first
    policy step after the warm-up starts from the initial carry, as at an
    episode start). Agents whose ``train_step`` takes ``is_first`` get
    ``[num_envs]`` flags marking transitions whose ``obs`` starts an episode.
    """
    num_envs = config.num_envs
    frames = num_envs * getattr(config, "action_repeat", 1)
    warmup = config.warmup_steps
    period = getattr(config, "periodic_every", 0)
    recurrent = is_recurrent(agent)
    first_flags = wants_is_first(agent)

    def explore(state: RunnerState, obs: jax.Array, key: jax.Array, step: jax.Array):
        def uniform(_):
            action = jax.random.uniform(key, (num_envs, action_size), minval=-1.0, maxval=1.0)
            if recurrent:
                return action, agent.init_carry(state.agent, num_envs)
            return action

        def policy(_):
            if recurrent:
                action, carry = agent.act(state.agent, obs, key, carry=state.carry)
                return action.astype(jnp.float32), carry
            return agent.act(state.agent, obs, key).astype(jnp.float32)

        return jax.lax.cond(step < warmup, uniform, policy, None)

    def body(state: RunnerState, t: jax.Array):
        step = t * frames
        key, k_act, k_train, k_periodic = jax.random.split(state.key, 4)
        env_state = state.env
        carry = state.carry
        if recurrent:
            action, carry = explore(state, env_state.obs, k_act, step)
        else:
            action = explore(state, env_state.obs, k_act, step)
        next_env = train_env.step(env_state, action)
        done = next_env.done
        discount = 1.0 - done * (1.0 - next_env.info["truncation"])
        transition = Transition(
            obs=env_state.obs,
            action=action,
            reward=next_env.reward,
            discount=discount,
            next_obs=next_env.info["terminal_obs"],
        )
        if first_flags:
            is_first = env_state.info["steps"] == 0
            agent_state, metrics = agent.train_step(
                state.agent, transition, k_train, step, is_first=is_first
            )
        else:
            agent_state, metrics = agent.train_step(state.agent, transition, k_train, step)
        if recurrent:
            carry = reset_carry(agent, agent_state, carry, done)
        metrics, counts = _split_counts(metrics)
        periodic_metrics = state.periodic_metrics
        if period:
            # Due after the step that completes a multiple of the period, from
            # the end of the warm-up on.
            done_steps = step + frames
            due = (done_steps % period < frames) & (done_steps >= warmup)

            def skip(s, k, t):
                return s, periodic_metrics

            agent_state, new = jax.lax.cond(
                due, agent.periodic, skip, agent_state, k_periodic, step
            )
            periodic_metrics, periodic_counts = _split_counts(new)
            new_counts = jax.tree_util.tree_map(lambda c: c * due, periodic_counts)
            counts = {**counts, **new_counts}
            periodic_metrics = {**periodic_metrics, **periodic_counts}
        hist = state.coverage
        if grid is not None:
            hist = coverage_lib.add(hist, grid.coordinates(visited_states(next_env)), grid)
        ep = next_env.info["episode_metrics"]["sum_reward"]
        out = (metrics, counts, jnp.sum(ep * done), jnp.sum(done), step >= warmup)
        next_state = RunnerState(
            agent=agent_state,
            env=next_env,
            key=key,
            periodic_metrics=periodic_metrics,
            carry=carry,
            coverage=hist,
        )
        return next_state, out

    def chunk(state: RunnerState, step0: jax.Array):
        ts = step0 // frames + jnp.arange(length, dtype=jnp.int32)
        state, (metrics, counts, ret, episodes, learned) = jax.lax.scan(body, state, ts)
        mean, steps = masked_means(metrics, learned)
        n = jnp.sum(learned.astype(jnp.float32))
        totals = jax.tree_util.tree_map(lambda c: jnp.sum(c, axis=0), counts)
        periodic, _ = _split_counts(state.periodic_metrics)
        cover = {} if grid is None else coverage_lib.summary(state.coverage)
        return state, ChunkMetrics(
            mean, totals, periodic, n, jnp.sum(ret), jnp.sum(episodes), cover, steps
        )

    return chunk


def make_evaluate(agent: ModuleType, eval_env: Any, episode_length: int):
    """Returns ``evaluate(agent_state, key) -> [num_episodes] returns`` with
    deterministic actions over ``episode_length`` agent steps; rewards after an
    episode's end are masked. A recurrent agent starts every episode from
    ``init_carry``.
    """
    recurrent = is_recurrent(agent)

    def evaluate(agent_state: PyTree, key: jax.Array) -> jax.Array:
        k_reset, k_act = jax.random.split(key)
        env_state = eval_env.reset(k_reset)
        zeros = jnp.zeros_like(env_state.reward)
        carry = agent.init_carry(agent_state, zeros.shape[0]) if recurrent else ()

        def body(loop, k):
            env_state, total, alive, carry = loop
            if recurrent:
                action, carry = agent.act(
                    agent_state, env_state.obs, k, deterministic=True, carry=carry
                )
            else:
                action = agent.act(agent_state, env_state.obs, k, deterministic=True)
            env_state = eval_env.step(env_state, action.astype(jnp.float32))
            total = total + alive * env_state.reward
            alive = alive * (1.0 - env_state.done)
            return (env_state, total, alive, carry), None

        keys = jax.random.split(k_act, episode_length)
        start = (env_state, zeros, jnp.ones_like(zeros), carry)
        (_, total, _, _), _ = jax.lax.scan(body, start, keys)
        return total

    return evaluate

"""Environment wrappers: fresh auto-reset, action rescaling, training/eval stacks.

Batching and time limits reuse brax's ``VmapWrapper`` and ``EpisodeWrapper``
(``brax.envs.wrappers.training``). The auto-reset is our own: brax's
``AutoResetWrapper`` restarts every episode from one cached first state, which
would make all episodes of an env start identically; ours draws a fresh start
state from a per-env PRNG key and keeps the true final observation.

Speed: with one environment the training stack is not vmapped at all
(``AddBatchAxis`` instead of a ``VmapWrapper`` of size 1), so the auto-reset's
``lax.cond`` is a real branch and the fresh start state is computed only when
an episode ends. In benchmarks/sac_speed.py's setting (inverted_pendulum, one
env, the runner's unbatched one-seed path) the two together save about 2-4%
of the CPU cycles of a SAC step.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State, Wrapper
from brax.envs.wrappers.training import EpisodeWrapper, VmapWrapper

# info entries owned by the time-limit/auto-reset machinery: they describe the
# step that just happened and are kept, not replaced, when an episode restarts.
_KEPT_INFO = ("truncation", "episode_done", "episode_metrics", "reset_key", "terminal_obs")


def _select(done: jax.Array, on_done, otherwise):
    """``where(done, on_done, otherwise)`` over pytrees; ``done`` is ``[*batch]``."""

    def pick(x, y):
        cond = jnp.reshape(done, done.shape + (1,) * (jnp.ndim(x) - done.ndim))
        return jnp.where(cond, x, y)

    return jax.tree.map(pick, on_done, otherwise)


class AutoResetWrapper(Wrapper):
    """Restarts finished episodes from a fresh random start state.

    Works on unbatched or batched states (``done`` of shape ``[*batch]``); in
    ``wrap_for_training`` it runs per env, inside the vmap. Each step:

    * ``info['reset_key']`` (shape ``[*batch, 2]``) is split; one half draws a
      new start state ``env.reset(key)``, the other is kept for the next step.
      Unbatched (``done`` a scalar) the reset sits in a ``lax.cond`` and runs
      only when the episode ends; under ``vmap`` that cond, like the batched
      form's ``jnp.where``, computes the reset every step and selects.
    * ``info['terminal_obs']`` holds the true next observation of the step
      (before any reset), equal to ``obs`` when the episode goes on; build
      transitions as ``(obs_t, a_t, r_t, terminal_obs_t)``.
    * Where ``done``, ``pipeline_state``, ``obs`` and the env's own ``info``
      entries (including ``steps``, reset to 0) come from the new start state,
      while ``reward``, ``done``, ``metrics``, ``info['truncation']`` and
      ``info['episode_metrics']`` still describe the step that ended the
      episode. ``done`` is cleared before the next step.
    """

    def reset(self, rng: jax.Array) -> State:
        keep_key, init_key = _split(rng)
        state = self.env.reset(init_key)
        state.info["reset_key"] = keep_key
        state.info["terminal_obs"] = state.obs
        return state

    def step(self, state: State, action: jax.Array) -> State:
        next_key, reset_key = _split(state.info["reset_key"])
        # The previous step may have ended an episode (done=1 kept visible);
        # the env must not see that flag.
        state = state.replace(done=jnp.zeros_like(state.done))
        state = self.env.step(state, action)
        terminal_obs = state.obs
        done = state.done.astype(bool)
        if done.ndim == 0:
            state = jax.lax.cond(
                done, lambda s: self._restart(s, reset_key, done), lambda s: s, state
            )
        else:
            state = self._restart(state, reset_key, done)
        info = dict(state.info)
        info["reset_key"] = next_key
        info["terminal_obs"] = terminal_obs
        return state.replace(info=info)

    def _restart(self, state: State, key: jax.Array, done: jax.Array) -> State:
        """``state`` with a fresh start state from ``reset(key)`` where ``done``,
        keeping the entries that describe the step just taken."""
        fresh = self.env.reset(key)
        info = dict(state.info)
        for name, value in fresh.info.items():
            if name not in _KEPT_INFO:
                info[name] = _select(done, value, state.info[name])
        return state.replace(
            pipeline_state=_select(done, fresh.pipeline_state, state.pipeline_state),
            obs=_select(done, fresh.obs, state.obs),
            info=info,
        )


def _split(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Splits raw ``uint32[*batch, 2]`` keys into two arrays of keys."""
    flat = jnp.reshape(key, (-1, 2))
    pairs = jax.vmap(jax.random.split)(flat)  # [n, 2, 2]
    first = jnp.reshape(pairs[:, 0], key.shape)
    second = jnp.reshape(pairs[:, 1], key.shape)
    return first, second


class RescaleAction(Wrapper):
    """Maps actions from ``[-1, 1]`` affinely onto ``[low, high]``.

    ``a_env = low + (a + 1) / 2 * (high - low)``. Actions outside ``[-1, 1]``
    are mapped by the same affine map, not clipped (the wrapped env decides).

    Args:
      env: environment whose ``step`` takes actions in ``[low, high]``.
      low: scalar or ``[action_size]`` lower bounds.
      high: scalar or ``[action_size]`` upper bounds.
    """

    def __init__(self, env: Env, low, high):
        super().__init__(env)
        self.low = jnp.asarray(low, jnp.float32)
        self.high = jnp.asarray(high, jnp.float32)

    def step(self, state: State, action: jax.Array) -> State:
        scaled = self.low + (action + 1.0) * 0.5 * (self.high - self.low)
        return self.env.step(state, scaled.astype(action.dtype))


class AddBatchAxis(Wrapper):
    """``VmapWrapper(env, batch_size=1)`` without the ``vmap``: the same states,
    with a leading axis of size 1, computed by the unbatched env.

    ``reset`` uses the key ``VmapWrapper`` would give its only env, so both
    produce the same trajectories; inside, ``lax.cond`` on the unbatched
    ``done`` stays a real branch.
    """

    def reset(self, rng: jax.Array) -> State:
        (key,) = jax.random.split(rng, 1)
        return jax.tree.map(lambda x: x[None], self.env.reset(key))

    def step(self, state: State, action: jax.Array) -> State:
        state = jax.tree.map(lambda x: x[0], state)
        return jax.tree.map(lambda x: x[None], self.env.step(state, action[0]))


class ActionRepeat(Wrapper):
    """Repeats each action ``repeat`` times (Dreamer's action repeat, 2 on the
    DeepMind Control Suite) and returns the summed reward.

    Once a frame ends the episode (``done``), the remaining repeats change
    nothing: the state is frozen and their rewards are not added, so a
    terminal state is never stepped past. brax's ``EpisodeWrapper`` has an
    ``action_repeat`` of its own, but it keeps stepping after a termination
    inside the repeat; this wrapper is used instead.

    Args:
      env: unbatched or batched env.
      repeat: frames per agent step (>= 1).
    """

    def __init__(self, env: Env, repeat: int):
        super().__init__(env)
        if repeat < 1:
            raise ValueError(f"action repeat must be >= 1, got {repeat}")
        self.repeat = int(repeat)

    def step(self, state: State, action: jax.Array) -> State:
        def frame(carry, _):
            state, total, done = carry
            nxt = self.env.step(state, action)
            total = total + (1.0 - done) * nxt.reward
            nxt = _select(done.astype(bool), state, nxt)
            return (nxt, total, jnp.maximum(done, nxt.done)), None

        start = (state, jnp.zeros_like(state.reward), state.done)
        (state, total, done), _ = jax.lax.scan(frame, start, None, length=self.repeat)
        return state.replace(reward=total, done=done)


def agent_steps(episode_length: int, action_repeat: int) -> int:
    """Agent steps in an episode of ``episode_length`` frames (rounded up)."""
    return -(-episode_length // action_repeat)


def _time_limited(env: Env, episode_length: int, action_repeat: int, render=None) -> Env:
    if action_repeat > 1:
        env = ActionRepeat(env, action_repeat)
    if render is not None:
        env = render(env)
    return EpisodeWrapper(env, agent_steps(episode_length, action_repeat), action_repeat=1)


def wrap_for_training(
    env: Env,
    episode_length: int,
    num_envs: int,
    action_repeat: int = 1,
    render: Callable[[Env], Env] | None = None,
) -> Env:
    """Batched env with time limit and fresh auto-reset, for data collection.

    Order: ``VmapWrapper(AutoResetWrapper(EpisodeWrapper(render(ActionRepeat(env)))),
    num_envs)``: each agent step runs ``action_repeat`` frames, the time limit
    sets ``done``/``truncation``, the auto-reset acts per env on them, and the
    vmap is outermost so ``reset`` takes ONE key and splits it into
    ``num_envs``. With ``num_envs == 1`` ``AddBatchAxis`` replaces the
    ``VmapWrapper`` (same states, no ``vmap``); with ``action_repeat == 1``
    there is no ``ActionRepeat``.

    ``info['steps']`` counts agent steps since the episode began: 0 marks an
    observation that starts an episode (``is_first``).

    Args:
      env: unbatched env.
      episode_length: time limit in frames (``ceil(episode_length /
        action_repeat)`` agent steps).
      num_envs: batch size (leading axis of every state leaf).
      action_repeat: frames per agent step.
      render: ``env -> env`` applied above ``ActionRepeat`` (image
        observations, ``memrl.envs.pixels.wrapper``), so that one agent step
        renders once.

    Returns:
      The wrapped env; ``reset(key)`` gives states with leading axis ``num_envs``.
    """
    env = _time_limited(env, episode_length, action_repeat, render)
    env = AutoResetWrapper(env)
    if num_envs == 1:
        return AddBatchAxis(env)
    return VmapWrapper(env, batch_size=num_envs)


def wrap_for_eval(
    env: Env,
    episode_length: int,
    num_episodes: int,
    action_repeat: int = 1,
    render: Callable[[Env], Env] | None = None,
) -> Env:
    """Batched env with a time limit and no auto-reset, for evaluation.

    ``VmapWrapper(EpisodeWrapper(ActionRepeat(env)), num_episodes)``: each of
    the ``num_episodes`` envs runs one episode; after ``done`` the env keeps
    stepping, so callers mask rewards after the first ``done``.

    Args:
      env: unbatched env.
      episode_length: time limit in frames.
      num_episodes: batch size.
      action_repeat: frames per agent step.
      render: as for ``wrap_for_training``.

    Returns:
      The wrapped env; ``reset(key)`` takes one key.
    """
    env = _time_limited(env, episode_length, action_repeat, render)
    return VmapWrapper(env, batch_size=num_episodes)

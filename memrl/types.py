"""Data types shared by agents, buffers and the runner."""

from __future__ import annotations

from typing import NamedTuple

import jax


class Transition(NamedTuple):
    """One environment step, as stored in replay.

    Attributes:
      obs: ``s_t``, shape ``[..., obs_size]``.
      action: ``a_t`` in ``[-1, 1]``, shape ``[..., action_size]``.
      reward: ``r_t``, shape ``[...]``.
      discount: 0 where ``s_{t+1}`` is terminal, 1 otherwise (a time-limit
        truncation keeps 1: the episode was cut, the MDP did not end). The
        agent's gamma multiplies it.
      next_obs: the true ``s_{t+1}`` (before any automatic reset).
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    discount: jax.Array
    next_obs: jax.Array


class SequenceStep(NamedTuple):
    """One row of sequence replay in Dreamer's layout: the observation o_t together with the
    action a_{t-1} and reward r_{t-1} of the step that led to it (zeros at an episode's first
    row), the continuation flag of that step (0 where o_t is terminal, 1 otherwise; a time-limit
    truncation keeps 1), and is_first (o_t starts an episode).

    Attributes:
      obs: ``o_t``, shape ``[..., *obs_shape]`` (uint8 pixels stay uint8).
      action: ``a_{t-1}`` in ``[-1, 1]``, shape ``[..., action_size]``; zeros where
        ``is_first``.
      reward: ``r_{t-1}``, shape ``[...]``; zero where ``is_first``.
      discount: 0 where ``o_t`` is terminal, 1 otherwise, shape ``[...]``.
      is_first: bool, ``o_t`` starts an episode, shape ``[...]``.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    discount: jax.Array
    is_first: jax.Array

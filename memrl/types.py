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

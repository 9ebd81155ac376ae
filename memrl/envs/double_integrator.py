"""The double integrator of MAAC Sec. 5.2, with its exact expected return.

MAAC (Clavera et al., 2020, Sec. 5.2 "Gradient error") measures the error of
policy-gradient estimators on a double integrator, "since the transitions are
linear and the cost is quadratic for a linear policy, we can obtain the analytic
gradient of the expected return". The paper gives no constants; the defaults
here are those of the authors' environment (``DoubleIntegratorEnv`` in
iclavera/meta-mb, ``meta_mb/envs/mb_envs/double_integral.py``):

* state ``s = [position, velocity]``, action ``a`` = acceleration (1-d);
* forward-Euler dynamics with ``dt = 0.05``::

      s' = A s + B a,   A = [[1, dt], [0, 1]],   B = [[0], [dt]]

* reward ``r(s, a) = -(s^T Q s + a^T R a)`` with ``Q = 0.5 I``, ``R = 0.5``
  (their ``-0.5 (p^2 + v^2 + a^2)``), on the pre-step state;
* 200-step episodes, never terminating;
* start states ``s0 ~ U[-2, 2]^2`` (their batched ``vec_reset``).

Actions nominally lie in ``[-1, 1]`` (the authors' action space) but are NOT
clipped: the problem must stay linear-quadratic for ``expected_return`` to be
exact, and the quadratic action cost already keeps actions small.

``expected_return`` propagates the first two moments of the state under a linear
Gaussian policy ``a = K s + sigma * eps``. With linear dynamics and quadratic
reward, the expected return depends on the start distribution only through its
mean and covariance, so the result is exact for the uniform start above
(``init_moments``) as well as for Gaussian starts.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State

DT = 0.05
STATE_COST = 0.5
ACTION_COST = 0.5
INIT_RANGE = 2.0
EPISODE_LENGTH = 200


class LQParams(NamedTuple):
    """Matrices of the linear-quadratic problem.

    Attributes:
      A: ``[2, 2]`` state transition matrix.
      B: ``[2, 1]`` control matrix.
      Q: ``[2, 2]`` state cost matrix (symmetric PSD).
      R: ``[1, 1]`` action cost matrix (symmetric PD).
    """

    A: jax.Array
    B: jax.Array
    Q: jax.Array
    R: jax.Array


def make_params(
    dt: float = DT, state_cost: float = STATE_COST, action_cost: float = ACTION_COST
) -> LQParams:
    """Builds the double-integrator matrices (dtype: JAX's default float).

    Args:
      dt: Euler time step.
      state_cost: ``Q = state_cost * I``.
      action_cost: ``R = action_cost * I``.

    Returns:
      The ``LQParams``.
    """
    return LQParams(
        A=jnp.array([[1.0, dt], [0.0, 1.0]]),
        B=jnp.array([[0.0], [dt]]),
        Q=state_cost * jnp.eye(2),
        R=action_cost * jnp.eye(1),
    )


def init_moments(init_range: float = INIT_RANGE) -> tuple[jax.Array, jax.Array]:
    """Mean ``[2]`` and covariance ``[2, 2]`` of the start state ``U[-r, r]^2``."""
    return jnp.zeros(2), (init_range**2 / 3.0) * jnp.eye(2)


def dynamics(s: jax.Array, a: jax.Array, params: LQParams | None = None) -> jax.Array:
    """Next state ``A s + B a``.

    Args:
      s: ``[..., 2]`` states.
      a: ``[..., 1]`` actions (not clipped).
      params: matrices; ``make_params()`` when None.

    Returns:
      ``[..., 2]`` next states.
    """
    p = make_params() if params is None else params
    return s @ p.A.T + a @ p.B.T


def reward(s: jax.Array, a: jax.Array, params: LQParams | None = None) -> jax.Array:
    """Reward ``-(s^T Q s + a^T R a)`` of ``[..., 2]`` states and ``[..., 1]`` actions."""
    p = make_params() if params is None else params
    state_cost = jnp.einsum("...i,ij,...j->...", s, p.Q, s)
    action_cost = jnp.einsum("...i,ij,...j->...", a, p.R, a)
    return -(state_cost + action_cost)


def expected_return(
    K: jax.Array,
    log_std: jax.Array,
    horizon: int,
    init_mean: jax.Array,
    init_cov: jax.Array,
    gamma: float = 1.0,
    params: LQParams | None = None,
) -> jax.Array:
    """Exact expected return of a linear Gaussian policy on the double integrator.

    Policy ``a_t = K s_t + sigma * eps_t``, ``eps_t ~ N(0, I)``,
    ``sigma = exp(log_std)``; start ``s_0`` with mean ``init_mean`` and covariance
    ``init_cov``. Returns ``J = sum_{t=0}^{horizon-1} gamma^t E[r(s_t, a_t)]``
    using, with ``mu_t = E[s_t]``, ``S_t = Cov[s_t]``, ``D = diag(sigma^2)``::

        E[s^T Q s] = tr(Q S_t) + mu_t^T Q mu_t
        E[a^T R a] = tr(R (K S_t K^T + D)) + mu_t^T K^T R K mu_t
        mu_{t+1}   = (A + B K) mu_t
        S_{t+1}    = (A + B K) S_t (A + B K)^T + B D B^T

    so ``jax.grad(expected_return)`` w.r.t. ``K`` (and ``log_std``) is the
    analytic policy gradient of MAAC Sec. 5.2.

    Args:
      K: ``[1, 2]`` feedback gain.
      log_std: ``[1]`` (or scalar) log standard deviation of the action noise.
      horizon: number of steps (static Python int).
      init_mean: ``[2]`` mean of ``s_0``.
      init_cov: ``[2, 2]`` covariance of ``s_0`` (zeros for a fixed start).
      gamma: discount factor.
      params: matrices; ``make_params()`` when None.

    Returns:
      Scalar expected (discounted) return.
    """
    p = make_params() if params is None else params
    noise_var = jnp.broadcast_to(jnp.exp(2.0 * jnp.asarray(log_std)), (p.B.shape[1],))
    D = jnp.diag(noise_var)
    closed_loop = p.A + p.B @ K
    process_cov = p.B @ D @ p.B.T

    def step(carry, _):
        mu, cov, discount, total = carry
        state_cost = jnp.trace(p.Q @ cov) + mu @ p.Q @ mu
        a_mean = K @ mu
        a_cov = K @ cov @ K.T + D
        action_cost = jnp.trace(p.R @ a_cov) + a_mean @ p.R @ a_mean
        total = total - discount * (state_cost + action_cost)
        mu = closed_loop @ mu
        cov = closed_loop @ cov @ closed_loop.T + process_cov
        return (mu, cov, discount * gamma, total), None

    mu0 = jnp.asarray(init_mean, dtype=closed_loop.dtype)
    cov0 = jnp.asarray(init_cov, dtype=closed_loop.dtype)
    one = jnp.ones((), closed_loop.dtype)
    carry = (mu0, cov0, one, jnp.zeros((), closed_loop.dtype))
    (_, _, _, total), _ = jax.lax.scan(step, carry, None, length=horizon)
    return total


class DoubleIntegrator(Env):
    """MAAC Sec. 5.2 double integrator as a brax ``Env``.

    ``state.pipeline_state`` and ``state.obs`` both hold ``s = [position,
    velocity]``; ``done`` is always 0. Actions (accelerations) are used
    unclipped; see the module docstring.

    Args:
      dt: Euler time step (authors' code: 0.05).
      state_cost: ``Q = state_cost * I`` (authors' code: 0.5).
      action_cost: ``R = action_cost * I`` (authors' code: 0.5).
      init_range: start states are drawn from ``U[-init_range, init_range]^2``.
    """

    def __init__(
        self,
        dt: float = DT,
        state_cost: float = STATE_COST,
        action_cost: float = ACTION_COST,
        init_range: float = INIT_RANGE,
    ):
        values = dict(dt=dt, state_cost=state_cost, action_cost=action_cost, init_range=init_range)
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"double_integrator: {key} must be a number, got {value!r}")
            if value < 0 or (key == "dt" and value == 0):
                raise ValueError(f"double_integrator: {key} must be positive, got {value!r}")
        self._dt = float(dt)
        self._state_cost = float(state_cost)
        self._action_cost = float(action_cost)
        self.init_range = float(init_range)

    @property
    def params(self) -> LQParams:
        """The ``LQParams`` of this environment."""
        return make_params(self._dt, self._state_cost, self._action_cost)

    def reset(self, rng: jax.Array) -> State:
        """Samples ``s_0 ~ U[-init_range, init_range]^2``."""
        s = jax.random.uniform(rng, (2,), minval=-self.init_range, maxval=self.init_range)
        zero = jnp.zeros((), jnp.float32)
        return State(pipeline_state=s, obs=s, reward=zero, done=zero)

    def step(self, state: State, action: jax.Array) -> State:
        """Applies acceleration ``action`` (shape ``[1]``, unclipped)."""
        params = self.params
        s = state.pipeline_state
        r = reward(s, action, params)
        s_next = dynamics(s, action, params).astype(s.dtype)
        return state.replace(
            pipeline_state=s_next,
            obs=s_next,
            reward=r.astype(jnp.float32),
            done=jnp.zeros((), jnp.float32),
        )

    @property
    def observation_size(self) -> int:
        return 2

    @property
    def action_size(self) -> int:
        return 1

    @property
    def backend(self) -> str:
        return "jax"

    @property
    def dt(self) -> float:
        return self._dt

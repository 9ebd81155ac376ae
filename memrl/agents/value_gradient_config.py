"""Settings of S2VG, MEMB and SVG(1): the ``Config`` dataclass and the papers'
per-task table (S2VG Table 2, MEMB Table 2 in App. C).

Part of the value-gradient family (file map in ``memrl.agents.value_gradient``).

No ``from __future__ import annotations`` here: ml_collections reads Config
field types at runtime.
"""

import dataclasses
from typing import Any, ClassVar

# S2VG Table 2 and MEMB Table 2 (App. C); the two tables agree on the five
# tasks they share, MEMB adds swimmer and reacher. Policy learning rate 3e-4
# and (256, 256) policy/value networks everywhere. The text extraction of the
# tables is garbled; merged cells read as spanning to the next filled cell.
PAPER_TABLE: dict[str, dict[str, Any]] = {
    "pendulum": dict(
        epochs=50,
        value_learning_rate=3e-4,
        model_learning_rate=3e-4,
        alpha=0.2,
        model_hidden_sizes=(32, 16),
        updates_per_step=5,
    ),
    "inverted_pendulum": dict(
        epochs=40,
        value_learning_rate=3e-4,
        model_learning_rate=3e-4,
        alpha=0.1,
        model_hidden_sizes=(32, 16),
        updates_per_step=1,
    ),
    "halfcheetah": dict(
        epochs=200,
        value_learning_rate=1e-3,
        model_learning_rate=3e-4,
        alpha=0.4,
        model_hidden_sizes=(256, 128),
        updates_per_step=5,
    ),
    "hopper": dict(
        epochs=200,
        value_learning_rate=1e-3,
        model_learning_rate=1e-4,
        alpha=0.4,
        model_hidden_sizes=(256, 128),
        updates_per_step=5,
    ),
    "walker2d": dict(
        epochs=300,
        value_learning_rate=3e-4,
        model_learning_rate=1e-4,
        alpha=0.4,
        model_hidden_sizes=(256, 256),
        updates_per_step=3,
    ),
    "swimmer": dict(
        epochs=180,
        value_learning_rate=3e-4,
        model_learning_rate=1e-4,
        alpha=0.2,
        model_hidden_sizes=(256, 128),
        updates_per_step=5,
    ),
    "reacher": dict(
        epochs=50,
        epoch_length=50,
        value_learning_rate=3e-4,
        model_learning_rate=1e-4,
        alpha=0.2,
        model_hidden_sizes=(256, 128),
        updates_per_step=5,
    ),
}

# Uniform-random steps during which the model trains alone (MEMB code:
# start_steps 1000, actor-critic from epoch train_model_epoch + 1).
_WARMUP = {"pendulum": 1000, "inverted_pendulum": 1000, "reacher": 500}


@dataclasses.dataclass(unsafe_hash=True)
class Config:
    """Settings shared by S2VG, MEMB and SVG; defaults are the MEMB authors' code
    (HalfCheetah), ``for_env`` gives the papers' Table 2.

    Treat as immutable: derive variants with ``dataclasses.replace``.

    Attributes:
      hidden_sizes: policy, Q and V MLP widths ((256, 256), Table 2).
      activation: hidden activation of every network (ReLU, Table 2).
      model_hidden_sizes: widths of the dynamics and of the reward network
        (Table 2 "Model network architecture").
      model_predicts_delta: the dynamics network predicts ``s' - s`` instead of
        the absolute ``s'`` (not in the papers; the authors predict ``s'``).
      policy_learning_rate: Adam step size of the policy (3e-4).
      value_learning_rate: Adam step size of Q and V (Table 2 "Value").
      model_learning_rate: Adam step size of both models (Table 2 "Model").
      alpha: fixed entropy temperature (Table 2 "Alpha"); 0 removes the entropy
        term (MEMB App. B.1, then use ``exploration_noise``).
      gamma: discount.
      tau: Polyak coefficient of the target V (code: polyak 0.995).
      batch_size: minibatch size of every update (code: 100).
      buffer_size: real replay capacity.
      updates_per_step: ``m``, actor-critic updates per environment step
        (Algorithm 1 step 3, Table 2 "Train actor-critic times").
      horizon: ``H`` of the value expansion for Q (S2VG eq. 7; 1 = real
        one-step TD, the papers' choice; 2 and 5 are their ablations).
      soft_expansion: with ``H >= 2``, the Q targets add the entropy bonus
        ``-alpha gamma^k log pi(a_k|s_k)`` of each imagined step, as the soft
        Q and V (eq. 4-5) that the bootstrap ``V_psi_bar`` and the V target
        (eq. 8) follow require; False gives eq. 7 as printed (rewards only).
        The two differ by about ``alpha`` times the discounted entropies of
        the imagined states (derivation in
        ``memrl.returns.value_expansion_targets``); equal for ``H = 1``.
      exploration_noise: std of Gaussian noise added to sampled actions in
        ``act`` (MEMB App. B.1: with ``alpha = 0`` "we add the noise in policy
        for the exploration"); 0 = none.
      true_model: use the environment's own differentiable step instead of the
        learned model for imagined transitions and the policy gradient (MEMB
        App. B.3, Fig. 4). Pendulum only (see ``true_step``); the learned
        model is still trained so that its error stays comparable.
      env_name: the task (set by ``for_env``; needed by ``true_model``).
      epochs: training epochs of Table 2 (informational: total steps are
        ``epochs * epoch_length``; the runner's ``--total_steps`` decides).
      epoch_length: environment steps per epoch (Table 2: 1000; reacher 50).
      model_error_horizon: ``k`` of the k-step model error logged by
        ``periodic`` (MEMB App. B.2); 0 turns ``periodic`` off.
      warmup_steps: uniform-random steps at the start; the model trains alone
        during them, actor-critic updates start after.
      num_envs: parallel environments per seed.
      periodic_every: period of the model-error measurement (one epoch).
    """

    PAPER_ENVS: ClassVar[tuple[str, ...]] = tuple(PAPER_TABLE)

    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    model_hidden_sizes: tuple[int, ...] = (256, 128)
    model_predicts_delta: bool = False
    policy_learning_rate: float = 3e-4
    value_learning_rate: float = 1e-3
    model_learning_rate: float = 3e-4
    alpha: float = 0.4
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 100
    buffer_size: int = 1_000_000
    updates_per_step: int = 5
    horizon: int = 1
    soft_expansion: bool = True
    exploration_noise: float = 0.0
    true_model: bool = False
    env_name: str = ""
    epochs: int = 200
    epoch_length: int = 1000
    model_error_horizon: int = 5
    warmup_steps: int = 5000
    num_envs: int = 1
    periodic_every: int = 1000

    def run_length(self) -> int | None:
        """Table 2's run, ``epochs * epoch_length`` environment steps, for the
        paper's tasks (``PAPER_ENVS``); None elsewhere."""
        if self.env_name in self.PAPER_ENVS:
            return self.epochs * self.epoch_length
        return None

    @classmethod
    def for_env(cls, env_name: str) -> "Config":
        """Table 2 of the paper for the tasks in ``PAPER_ENVS``; the defaults
        (HalfCheetah's settings) elsewhere."""
        settings: dict[str, Any] = dict(env_name=env_name)
        settings["warmup_steps"] = _WARMUP.get(env_name, 5000)
        if env_name in cls.PAPER_ENVS:
            settings.update(PAPER_TABLE[env_name])
            settings["periodic_every"] = settings.get("epoch_length", 1000)
        return cls(**settings)

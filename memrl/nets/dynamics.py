"""Bootstrap ensemble of probabilistic dynamics models, as one vmapped network.

The model of MBPO (Janner et al., 2019, Sec. 5, "predictive model"), built on
PETS (Chua et al., 2018, Sec. 4), and used the same way by MEMR (Zhang et
al., Sec. 3.2, Algorithm 1 line 5 and App. D: a "predictive model p_theta"
trained on D_env by maximum likelihood every 250 steps) and MAAC (Clavera et
al., Sec. 4.3, "Model learning": a bootstrap ensemble {f_phi_1..f_phi_M} of
Gaussians with diagonal covariance, trained by maximum likelihood with early
stopping on a validation set; f_phi denotes the member U ~ Uniform[M]).

Each of the ``E`` members maps a normalized ``(s, a)`` to the mean and
log-variance of a diagonal Gaussian over the normalized target
``y = (s' - s, r)`` (the state change, and the reward when
``config.predict_reward``). All members are one flax module under ``nn.vmap``,
so their parameters carry a leading member axis ``E`` and the whole ensemble
runs as one batched computation.

Shapes: ``O`` observation size, ``A`` action size, ``D = O + 1`` (or ``O``
without reward) target size, ``E`` members, ``K`` elites, ``B`` batch, ``C``
capacity of the training data.

Example::

    config = EnsembleConfig.mbpo()
    model = dynamics.init(key, obs_size, action_size, config)
    model, metrics = jax.jit(dynamics.train)(model, buffer.data, buffer.size, key)
    next_obs, reward = dynamics.step(model, obs, action, key)

Differences from the authors' code, by choice: the log-variance bounds are
per member (PETS/MBPO share one pair across the ensemble); one weight-decay
coefficient for all kernels (MBPO uses 2.5e-5 ... 1e-4 by layer); MEMR's
separate reward network is replaced by the reward output of the same model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct, traverse_util

from memrl.nets import mlp

PyTree = Any

# Standard deviations below this are treated as constant features (scale 1),
# so a dimension that never varied in the data is not blown up at test time.
_MIN_STD = 1e-6


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """Hyper-parameters of the ensemble and of its training.

    Defaults are MBPO's (Janner et al., 2019, Sec. 5, and the authors' code);
    see ``mbpo``, ``memr`` and ``maac`` for each paper's settings.

    Attributes:
      num_members: ensemble size E (MBPO 7, MEMR 5, MAAC 8).
      num_elites: K members with the lowest holdout MSE, the only ones ``step``
        samples from (MBPO 5; MAAC samples all members, K = E).
      hidden_sizes: widths of each member's hidden layers (MBPO 4x200).
      activation: hidden activation name, see ``memrl.nets.mlp.ACTIVATIONS``
        (MBPO 'swish', MEMR 'relu').
      layer_norm: LayerNorm after each hidden layer (MEMR's code).
      learning_rate: Adam step size.
      weight_decay: coefficient c of the L2 penalty ``c/2 * sum(W**2)`` over
        the Dense kernels, added to each member's loss (PETS/MBPO's "weight
        decay", not decoupled AdamW decay).
      batch_size: minibatch size per member per gradient step.
      max_epochs: most passes over the bootstrap data per ``train`` call.
      patience: stop after this many consecutive epochs in which no member's
        holdout MSE improved by more than ``improvement_threshold``
        (relative); MBPO uses 5.
      improvement_threshold: relative improvement that counts (MBPO 0.01).
      holdout_fraction: fraction of the valid rows held out for validation.
      max_holdout: cap on the number of holdout rows (MBPO 5000).
      predict_reward: the model also predicts the reward (MAAC uses the true
        reward function and may turn this off).
      normalize_targets: standardize the targets ``(s' - s, r)`` by their
        training mean and std (MEMR: "normalized state deltas"); MBPO fits
        the raw targets.
      init_max_logvar: initial upper soft bound of the log-variance (PETS 0.5).
      init_min_logvar: initial lower soft bound (PETS -10).
      logvar_bound_coef: weight of the bound regularizer
        ``coef * (sum(max_logvar) - sum(min_logvar))`` (PETS 0.01).
    """

    num_members: int = 7
    num_elites: int = 5
    hidden_sizes: tuple[int, ...] = (200, 200, 200, 200)
    activation: str = "swish"
    layer_norm: bool = False
    learning_rate: float = 1e-3
    weight_decay: float = 5e-5
    batch_size: int = 256
    max_epochs: int = 100
    patience: int = 5
    improvement_threshold: float = 0.01
    holdout_fraction: float = 0.2
    max_holdout: int = 5000
    predict_reward: bool = True
    normalize_targets: bool = True
    init_max_logvar: float = 0.5
    init_min_logvar: float = -10.0
    logvar_bound_coef: float = 0.01

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        mlp.activation(self.activation)  # Raises ValueError on an unknown name.
        if self.num_members < 1:
            raise ValueError(f"num_members must be positive, got {self.num_members}")
        if not 1 <= self.num_elites <= self.num_members:
            raise ValueError(
                f"num_elites must be in [1, num_members={self.num_members}], got {self.num_elites}"
            )
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("batch_size, max_epochs and patience must be positive")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.max_holdout < 1:
            raise ValueError(f"max_holdout must be positive, got {self.max_holdout}")
        if self.init_min_logvar >= self.init_max_logvar:
            raise ValueError("init_min_logvar must be below init_max_logvar")

    @classmethod
    def mbpo(cls, **overrides) -> EnsembleConfig:
        """MBPO (Janner et al., 2019): 7 members, 5 elites, 4x200 swish, raw targets."""
        return cls(**{"normalize_targets": False, **overrides})

    @classmethod
    def memr(cls, **overrides) -> EnsembleConfig:
        """MEMR (authors' code): 5 members, 4x512 ReLU + LayerNorm, batch 512,
        at most 100 epochs, patience 5, 10% validation, normalized deltas."""
        settings = dict(
            num_members=5,
            num_elites=5,
            hidden_sizes=(512, 512, 512, 512),
            activation="relu",
            layer_norm=True,
            batch_size=512,
            holdout_fraction=0.1,
        )
        return cls(**{**settings, **overrides})

    @classmethod
    def maac(cls, **overrides) -> EnsembleConfig:
        """MAAC (authors' code): 8 members, 4x200, lr 1e-3, batch 256, learned
        log-variance bounds; a member is drawn uniformly from all 8 (Sec. 4.3)."""
        return cls(**{"num_members": 8, "num_elites": 8, **overrides})


@struct.dataclass
class ModelState:
    """Everything the ensemble needs to predict and to keep training.

    Attributes:
      params: flax parameters, every leaf with leading axis ``E``.
      opt_state: Adam state, kept across ``train`` calls.
      input_mean: ``[O + A]`` mean of the training inputs ``(s, a)``.
      input_std: ``[O + A]`` their std (1 where constant).
      target_mean: ``[D]`` mean of the training targets (0 when not normalized).
      target_std: ``[D]`` their std (1 when not normalized).
      elites: ``[K]`` int32 member indices, best holdout MSE first.
      config: the ``EnsembleConfig`` (static).
      obs_size: ``O`` (static).
      action_size: ``A`` (static).
    """

    params: PyTree
    opt_state: PyTree
    input_mean: jax.Array
    input_std: jax.Array
    target_mean: jax.Array
    target_std: jax.Array
    elites: jax.Array
    config: EnsembleConfig = struct.field(pytree_node=False)
    obs_size: int = struct.field(pytree_node=False)
    action_size: int = struct.field(pytree_node=False)

    @property
    def target_size(self) -> int:
        return self.obs_size + int(self.config.predict_reward)


class Prediction(NamedTuple):
    """Every member's Gaussian over the next state and reward, de-normalized.

    Attributes:
      next_obs_mean: ``[E, B, O]``, ``s + mean of (s' - s)``.
      next_obs_var: ``[E, B, O]`` aleatoric variance of ``s'``.
      reward_mean: ``[E, B]`` (zeros when the model predicts no reward).
      reward_var: ``[E, B]`` (zeros when the model predicts no reward).
    """

    next_obs_mean: jax.Array
    next_obs_var: jax.Array
    reward_mean: jax.Array
    reward_var: jax.Array


class LossInfo(NamedTuple):
    """Per-member diagnostics of ``nll_loss``, each ``[E]``.

    Attributes:
      nll: the weighted mean of ``(mu - y)**2 * exp(-logvar) + logvar``.
      mse: the weighted mean of ``(mu - y)**2``.
    """

    nll: jax.Array
    mse: jax.Array


class Split(NamedTuple):
    """A random split of the valid rows ``[0, size)`` of the training data.

    Attributes:
      perm: ``[C]`` int32, the valid rows in random order, then the invalid ones.
        ``perm[:num_holdout]`` are the holdout rows, ``perm[num_holdout:size]``
        the training rows.
      num_holdout: int32 scalar.
      num_train: int32 scalar, ``size - num_holdout``.
    """

    perm: jax.Array
    num_holdout: jax.Array
    num_train: jax.Array


class _Member(nn.Module):
    """One probabilistic model: MLP to mean and soft-bounded log-variance.

    The bounds are PETS's (Chua et al., 2018, appendix and code): with learned
    ``max_logvar`` and ``min_logvar``,
    ``l = max - softplus(max - raw)``, then ``logvar = min + softplus(l - min)``,
    which keeps ``logvar`` inside ``(min, max)`` smoothly.
    """

    hidden_sizes: tuple[int, ...]
    target_size: int
    activation: str
    layer_norm: bool
    init_max_logvar: float
    init_min_logvar: float

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = mlp.MLP(
            hidden_sizes=self.hidden_sizes,
            output_size=2 * self.target_size,
            activation=self.activation,
            layer_norm=self.layer_norm,
            name="mlp",
        )(x)
        mean, raw_logvar = jnp.split(out, 2, axis=-1)
        shape = (self.target_size,)
        max_logvar = self.param("max_logvar", nn.initializers.constant(self.init_max_logvar), shape)
        min_logvar = self.param("min_logvar", nn.initializers.constant(self.init_min_logvar), shape)
        logvar = max_logvar - jax.nn.softplus(max_logvar - raw_logvar)
        logvar = min_logvar + jax.nn.softplus(logvar - min_logvar)
        return mean, logvar


# Members share nothing: parameters gain a leading axis, each with its own init.
_Ensemble = nn.vmap(
    _Member,
    in_axes=0,
    out_axes=0,
    variable_axes={"params": 0},
    split_rngs={"params": True},
)


def _network(config: EnsembleConfig, target_size: int) -> nn.Module:
    return _Ensemble(
        hidden_sizes=config.hidden_sizes,
        target_size=target_size,
        activation=config.activation,
        layer_norm=config.layer_norm,
        init_max_logvar=config.init_max_logvar,
        init_min_logvar=config.init_min_logvar,
    )


def _optimizer(config: EnsembleConfig) -> optax.GradientTransformation:
    return optax.adam(config.learning_rate)


def init(key: jax.Array, obs_size: int, action_size: int, config: EnsembleConfig) -> ModelState:
    """Fresh ensemble with identity normalizers and elites ``0..K-1``.

    Args:
      key: PRNG key for the parameters.
      obs_size: ``O``.
      action_size: ``A``.
      config: an ``EnsembleConfig``.
    """
    target_size = obs_size + int(config.predict_reward)
    in_size = obs_size + action_size
    dummy = jnp.zeros((config.num_members, 1, in_size), jnp.float32)
    params = _network(config, target_size).init(key, dummy)["params"]
    return ModelState(
        params=params,
        opt_state=_optimizer(config).init(params),
        input_mean=jnp.zeros((in_size,), jnp.float32),
        input_std=jnp.ones((in_size,), jnp.float32),
        target_mean=jnp.zeros((target_size,), jnp.float32),
        target_std=jnp.ones((target_size,), jnp.float32),
        elites=jnp.arange(config.num_elites, dtype=jnp.int32),
        config=config,
        obs_size=obs_size,
        action_size=action_size,
    )


def forward(
    params: PyTree, config: EnsembleConfig, inputs: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Runs every member on its own batch of normalized inputs.

    Args:
      params: ensemble parameters with leading axis ``M`` (all ``E`` members, or
        a gathered subset such as the elites).
      config: the ``EnsembleConfig``.
      inputs: ``[M, B, O + A]`` normalized ``(s, a)``.

    Returns:
      ``(mean, logvar)``, each ``[M, B, D]``, in normalized target space.
    """
    target_size = params["max_logvar"].shape[-1]
    return _network(config, target_size).apply({"params": params}, inputs)


def _kernel_sq_norm(params: PyTree) -> jax.Array:
    """``[E]`` sum of squared Dense kernels of each member."""
    flat = traverse_util.flatten_dict(params)
    kernels = [v for k, v in flat.items() if k[-1] == "kernel"]
    return sum(jnp.sum(jnp.square(w), axis=tuple(range(1, w.ndim))) for w in kernels)


def nll_loss(
    params: PyTree,
    config: EnsembleConfig,
    inputs: jax.Array,
    targets: jax.Array,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, LossInfo]:
    """PETS/MBPO training loss of the ensemble: Gaussian NLL plus regularizers.

    For member ``e`` with predicted mean ``mu`` and log-variance ``lv``
    (``forward``) on rows ``b`` with weight ``w_b`` and target dims ``d``::

        nll_e = sum_b w_b * mean_d[(mu_bd - y_bd)**2 * exp(-lv_bd) + lv_bd] / max(sum_b w_b, 1)

    which is twice the Gaussian negative log-likelihood per dimension minus
    ``log(2 pi)`` (the form in PETS's and MBPO's code). The loss is

        loss = sum_e [nll_e + coef * (sum(max_logvar_e) - sum(min_logvar_e))
                      + weight_decay / 2 * sum(kernels_e**2)]

    Members share no parameters, so each gets the gradient of its own term.

    Args:
      params: ensemble parameters (leading axis ``E``).
      config: the ``EnsembleConfig``.
      inputs: ``[E, B, O + A]`` normalized inputs (each member its own rows).
      targets: ``[E, B, D]`` normalized targets.
      weights: optional ``[E, B]`` row weights (0 masks a row out); default 1.

    Returns:
      ``(loss, LossInfo)`` with the scalar loss and per-member ``nll``, ``mse``.
    """
    chex.assert_rank([inputs, targets], 3)
    mean, logvar = forward(params, config, inputs)
    sq_err = jnp.square(mean - targets)
    row_nll = jnp.mean(sq_err * jnp.exp(-logvar) + logvar, axis=-1)
    row_mse = jnp.mean(sq_err, axis=-1)
    if weights is None:
        weights = jnp.ones(row_nll.shape, row_nll.dtype)
    denom = jnp.maximum(jnp.sum(weights, axis=-1), 1.0)
    # `where` rather than a product, so a masked row can never inject NaN.
    nll = jnp.sum(jnp.where(weights > 0, weights * row_nll, 0.0), axis=-1) / denom
    mse = jnp.sum(jnp.where(weights > 0, weights * row_mse, 0.0), axis=-1) / denom
    bounds = jnp.sum(params["max_logvar"], axis=-1) - jnp.sum(params["min_logvar"], axis=-1)
    reg = config.logvar_bound_coef * bounds + 0.5 * config.weight_decay * _kernel_sq_norm(params)
    return jnp.sum(nll + reg), LossInfo(nll=nll, mse=mse)


def _raw_targets(predict_reward: bool, obs, reward, next_obs) -> jax.Array:
    delta = next_obs - obs
    if not predict_reward:
        return delta
    return jnp.concatenate([delta, jnp.reshape(reward, reward.shape[: obs.ndim - 1] + (1,))], -1)


def _normalized_inputs(state: ModelState, obs: jax.Array, action: jax.Array) -> jax.Array:
    return (jnp.concatenate([obs, action], axis=-1) - state.input_mean) / state.input_std


def _static_holdout(capacity: int, config: EnsembleConfig) -> int:
    """Static number of holdout slots, an upper bound on ``num_holdout``."""
    return max(1, min(config.max_holdout, int(config.holdout_fraction * capacity), capacity))


def holdout_split(key: jax.Array, size: jax.Array, capacity: int, config: EnsembleConfig) -> Split:
    """Random holdout/training split of rows ``[0, size)`` with static shapes.

    ``num_holdout = clip(floor(holdout_fraction * size), 1, H)`` with the static
    ``H = min(max_holdout, floor(holdout_fraction * capacity))``, and at most
    ``size - 1`` so that one training row remains (``size`` must be >= 2).

    Args:
      key: PRNG key.
      size: int scalar, number of valid rows (may be traced).
      capacity: ``C``, the static number of rows of the data arrays.
      config: the ``EnsembleConfig``.
    """
    size = jnp.asarray(size, jnp.int32)
    valid = jnp.arange(capacity) < size
    sort_keys = jnp.where(valid, jax.random.uniform(key, (capacity,)), 2.0)
    perm = jnp.argsort(sort_keys).astype(jnp.int32)
    h = _static_holdout(capacity, config)
    wanted = jnp.floor(config.holdout_fraction * size.astype(jnp.float32)).astype(jnp.int32)
    num_holdout = jnp.minimum(jnp.clip(wanted, 1, h), jnp.maximum(size - 1, 1))
    return Split(perm=perm, num_holdout=num_holdout, num_train=size - num_holdout)


def _masked_moments(x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and std over the rows of ``x [C, F]`` where ``mask``; std floored to 1."""
    count = jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)
    x = jnp.where(mask[:, None], x, 0.0)
    mean = jnp.sum(x, axis=0) / count
    var = jnp.sum(jnp.where(mask[:, None], jnp.square(x - mean), 0.0), axis=0) / count
    std = jnp.sqrt(var)
    return mean, jnp.where(std < _MIN_STD, 1.0, std)


class _EpochCarry(NamedTuple):
    params: PyTree
    opt_state: PyTree
    best_params: PyTree
    best_mse: jax.Array  # [E] best holdout MSE so far.
    epochs_since_improvement: jax.Array
    epoch: jax.Array
    train_nll: jax.Array  # Mean training NLL of the last epoch.
    key: jax.Array


def train(
    state: ModelState, data: Any, size: jax.Array, key: jax.Array
) -> tuple[ModelState, dict[str, jax.Array]]:
    """Fits the ensemble to rows ``[0, size)`` of ``data`` by maximum likelihood.

    MBPO's procedure (Janner et al., 2019, and the authors' code), all in ``jit``:

    1. ``holdout_split(jax.random.fold_in(key, 0), size, C, config)`` holds out
       a random fraction of the valid rows; input (and target) normalizers are
       refit on the training rows.
    2. Each member draws its bootstrap sample: ``num_train`` training rows with
       replacement (MAAC Sec. 4.3, PETS Sec. 4.1), fixed for this call.
    3. Epochs run in a ``lax.while_loop``; in each, every member takes Adam
       steps on ``nll_loss`` over its bootstrap rows in a fresh random order,
       ``ceil(num_train / batch_size)`` minibatches (a ``fori_loop`` with a
       traced trip count; the last minibatch is masked to its valid part).
    4. After each epoch the holdout MSE (normalized targets) of every member
       is measured; a member whose MSE fell by more than
       ``improvement_threshold`` relative to its best so far has its
       parameters snapshotted. Training stops after ``max_epochs``, or after
       ``patience`` consecutive epochs in which no member improved.
    5. Each member ends with its best snapshot; the elites are the ``K``
       members with the lowest snapshot holdout MSE, best first.

    Shapes stay static: the loops work on index arrays into the full
    capacity-sized data, and rows beyond ``size`` never enter a loss or a
    statistic (their contents, NaN included, do not matter). ``opt_state``
    persists across calls, as in MBPO.

    Args:
      state: the current ``ModelState``.
      data: pytree with fields ``obs [C, O]``, ``action [C, A]``,
        ``reward [C]`` and ``next_obs [C, O]`` (e.g. a ``memrl.types.Transition``
        stored in a replay buffer; other fields are ignored).
      size: int scalar, the number of valid rows (at least 2).
      key: PRNG key.

    Returns:
      ``(state, metrics)``; metrics ``model/train_nll`` (members' mean NLL over
      the last epoch's minibatches), ``model/val_nll`` and ``model/val_mse``
      (holdout, mean over the elites, normalized targets), ``model/epochs``,
      ``model/num_train``, ``model/num_holdout``.
    """
    config = state.config
    e, bsz = config.num_members, config.batch_size
    obs, action, next_obs = data.obs, data.action, data.next_obs
    reward = data.reward
    capacity = obs.shape[0]
    chex.assert_shape([obs, next_obs], (capacity, state.obs_size))
    chex.assert_shape(action, (capacity, state.action_size))
    chex.assert_shape(reward, (capacity,))
    size = jnp.asarray(size, jnp.int32)

    split = holdout_split(jax.random.fold_in(key, 0), size, capacity, config)
    n_hold, n_train = split.num_holdout, split.num_train
    n_train_safe = jnp.maximum(n_train, 1)

    # Normalizers from the training rows only.
    rank = jnp.zeros((capacity,), jnp.int32).at[split.perm].set(jnp.arange(capacity))
    is_train = (rank >= n_hold) & (rank < size)
    in_mean, in_std = _masked_moments(jnp.concatenate([obs, action], -1), is_train)
    target_size = state.target_size
    if config.normalize_targets:
        all_targets = _raw_targets(config.predict_reward, obs, reward, next_obs)
        tg_mean, tg_std = _masked_moments(all_targets, is_train)
    else:
        tg_mean = jnp.zeros((target_size,), jnp.float32)
        tg_std = jnp.ones((target_size,), jnp.float32)
    state = state.replace(
        input_mean=in_mean, input_std=in_std, target_mean=tg_mean, target_std=tg_std
    )

    def rows_to_batch(rows):
        """Normalized (inputs, targets) of the given valid row indices."""
        o, nx = obs[rows], next_obs[rows]
        x = _normalized_inputs(state, o, action[rows])
        y = (_raw_targets(config.predict_reward, o, reward[rows], nx) - tg_mean) / tg_std
        return x, y

    # Holdout rows: static H slots, masked beyond num_holdout; masked slots
    # point at a valid row so that no garbage is ever computed.
    h = _static_holdout(capacity, config)
    hold_mask = jnp.arange(h) < n_hold
    hold_rows = jnp.where(hold_mask, split.perm[:h], split.perm[0])
    hold_x, hold_y = rows_to_batch(hold_rows)
    hold_x = jnp.broadcast_to(hold_x, (e,) + hold_x.shape)
    hold_y = jnp.broadcast_to(hold_y, (e,) + hold_y.shape)
    hold_w = jnp.broadcast_to(hold_mask.astype(jnp.float32), (e, h))

    def evaluate(params) -> LossInfo:
        return nll_loss(params, config, hold_x, hold_y, hold_w)[1]

    # Bootstrap: member m's j-th sample is training row perm[n_hold + u[m, j]].
    # All C slots hold valid rows; only the first num_train are used.
    boot_key = jax.random.fold_in(key, 1)
    draws = jax.random.randint(boot_key, (e, capacity), 0, n_train_safe)
    boot_rows = split.perm[n_hold + draws]
    num_batches = (n_train + bsz - 1) // bsz
    padded = -(-capacity // bsz) * bsz
    optimizer = _optimizer(config)
    grad_fn = jax.value_and_grad(nll_loss, has_aux=True)

    def run_epoch(carry: _EpochCarry) -> _EpochCarry:
        key, order_key = jax.random.split(carry.key)
        # One shuffle of bootstrap positions per epoch, shared by the members
        # (their samples are independent already); unused positions go last.
        order_keys = jax.random.uniform(order_key, (padded,))
        order = jnp.argsort(jnp.where(jnp.arange(padded) < n_train, order_keys, 2.0))

        def minibatch(j, inner):
            params, opt_state, nll_sum = inner
            pos = jax.lax.dynamic_slice(order, (j * bsz,), (bsz,))
            weights = (j * bsz + jnp.arange(bsz) < n_train).astype(jnp.float32)
            rows = jnp.take(boot_rows, pos, axis=1, mode="clip")  # [E, B]
            x, y = rows_to_batch(rows)
            w = jnp.broadcast_to(weights, (e, bsz))
            (_, info), grads = grad_fn(params, config, x, y, w)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return params, opt_state, nll_sum + jnp.mean(info.nll)

        params, opt_state, nll_sum = jax.lax.fori_loop(
            0, num_batches, minibatch, (carry.params, carry.opt_state, jnp.zeros(()))
        )
        mse = evaluate(params).mse
        improved = mse < carry.best_mse * (1.0 - config.improvement_threshold)

        def keep_best(new, old):
            return jnp.where(improved.reshape((e,) + (1,) * (new.ndim - 1)), new, old)

        return _EpochCarry(
            params=params,
            opt_state=opt_state,
            best_params=jax.tree_util.tree_map(keep_best, params, carry.best_params),
            best_mse=jnp.where(improved, mse, carry.best_mse),
            epochs_since_improvement=jnp.where(
                jnp.any(improved), 0, carry.epochs_since_improvement + 1
            ),
            epoch=carry.epoch + 1,
            train_nll=nll_sum / jnp.maximum(num_batches, 1),
            key=key,
        )

    def keep_going(carry: _EpochCarry) -> jax.Array:
        return (carry.epoch < config.max_epochs) & (
            carry.epochs_since_improvement < config.patience
        )

    zero = jnp.zeros((), jnp.int32)
    carry = jax.lax.while_loop(
        keep_going,
        run_epoch,
        _EpochCarry(
            params=state.params,
            opt_state=state.opt_state,
            best_params=state.params,
            best_mse=jnp.full((e,), jnp.inf, jnp.float32),
            epochs_since_improvement=zero,
            epoch=zero,
            train_nll=jnp.zeros((), jnp.float32),
            key=jax.random.fold_in(key, 2),
        ),
    )
    elites = jnp.argsort(carry.best_mse)[: config.num_elites].astype(jnp.int32)
    final = evaluate(carry.best_params)
    state = state.replace(params=carry.best_params, opt_state=carry.opt_state, elites=elites)
    metrics = {
        "model/train_nll": carry.train_nll,
        "model/val_nll": jnp.mean(final.nll[elites]),
        "model/val_mse": jnp.mean(final.mse[elites]),
        "model/epochs": carry.epoch,
        "model/num_train": n_train,
        "model/num_holdout": n_hold,
    }
    return state, metrics


def _member_gaussians(
    state: ModelState, params: PyTree, obs: jax.Array, action: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """De-normalized target mean and variance ``[M, B, D]`` of the members in
    ``params`` (leading axis ``M``); ``obs``/``action`` are ``[B, .]`` or ``[M, B, .]``."""
    m = jax.tree_util.tree_leaves(params)[0].shape[0]
    x = _normalized_inputs(state, obs, action)
    if x.ndim == 2:
        x = jnp.broadcast_to(x, (m,) + x.shape)
    chex.assert_rank(x, 3)
    mean, logvar = forward(params, state.config, x)
    return mean * state.target_std + state.target_mean, jnp.exp(logvar) * jnp.square(
        state.target_std
    )


def _split_targets(state: ModelState, obs: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(next_obs, reward)`` from a target-space vector ``y [..., D]``."""
    next_obs = obs + y[..., : state.obs_size]
    if state.config.predict_reward:
        return next_obs, y[..., state.obs_size]
    return next_obs, jnp.zeros(y.shape[:-1], y.dtype)


def predict(state: ModelState, obs: jax.Array, action: jax.Array) -> Prediction:
    """Every member's predictive Gaussian (for STEVE-style per-member targets).

    Args:
      state: a ``ModelState``.
      obs: ``[B, O]`` (all members see the same rows) or ``[E, B, O]``.
      action: ``[B, A]`` or ``[E, B, A]``, matching ``obs``.

    Returns:
      A ``Prediction`` with ``[E, B, ...]`` fields.
    """
    mean, var = _member_gaussians(state, state.params, obs, action)
    next_obs_mean, reward_mean = _split_targets(state, obs, mean)
    next_obs_var = var[..., : state.obs_size]
    reward_var = (
        var[..., state.obs_size] if state.config.predict_reward else jnp.zeros_like(reward_mean)
    )
    return Prediction(next_obs_mean, next_obs_var, reward_mean, reward_var)


def step_all(
    state: ModelState, obs: jax.Array, action: jax.Array, eps: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Reparameterized sample from every member: ``y = mu_e + sigma_e * eps_e``.

    Differentiable with respect to ``obs``, ``action`` and the parameters.

    Args:
      state: a ``ModelState``.
      obs: ``[B, O]`` or ``[E, B, O]`` (one trajectory per member).
      action: ``[B, A]`` or ``[E, B, A]``.
      eps: ``[E, B, D]`` standard normal noise (zeros give the means).

    Returns:
      ``(next_obs [E, B, O], reward [E, B])``.
    """
    mean, var = _member_gaussians(state, state.params, obs, action)
    chex.assert_equal_shape([mean, eps])
    return _split_targets(state, obs, mean + jnp.sqrt(var) * eps)


def _select_and_sample(state, obs, mean, var, member, eps):
    """Row ``b`` from member ``member[b]`` of ``mean/var [M, B, D]``."""
    chex.assert_shape(member, (obs.shape[0],))
    chex.assert_shape(eps, (obs.shape[0], mean.shape[-1]))
    pick = lambda x: jnp.take_along_axis(x, member[None, :, None], axis=0)[0]
    return _split_targets(state, obs, pick(mean) + jnp.sqrt(pick(var)) * eps)


def step_with(
    state: ModelState,
    obs: jax.Array,
    action: jax.Array,
    member: jax.Array,
    eps: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Reparameterized step with a chosen member per row (MAAC Sec. 4.3).

    ``(s' - s, r) = mu_{member[b]}(s_b, a_b) + sigma_{member[b]}(s_b, a_b) * eps_b``,
    differentiable with respect to ``obs`` and ``action`` (MAAC's pathwise
    policy gradient through the model, Sec. 4.1-4.3). Keeping ``member``
    fixed along a rollout gives each row one model, as MAAC does; draw it
    with ``sample_elites``. All ``E`` members are evaluated, then selected.

    Args:
      state: a ``ModelState``.
      obs: ``[B, O]``.
      action: ``[B, A]``.
      member: ``[B]`` int member indices in ``[0, E)``.
      eps: ``[B, D]`` standard normal noise (zeros give the selected means).

    Returns:
      ``(next_obs [B, O], reward [B])``; reward is 0 without a reward output.
    """
    chex.assert_rank([obs, action], 2)
    mean, var = _member_gaussians(state, state.params, obs, action)
    return _select_and_sample(state, obs, mean, var, member, eps)


def sample_elites(state: ModelState, key: jax.Array, batch_size: int) -> jax.Array:
    """``[batch_size]`` int32 member indices drawn uniformly among the elites."""
    slots = jax.random.randint(key, (batch_size,), 0, state.config.num_elites)
    return state.elites[slots]


def step(
    state: ModelState, obs: jax.Array, action: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Samples ``(s', r)``: each row from a uniformly drawn elite (MBPO, MAAC).

    Only the ``K`` elites are evaluated. Equivalent in distribution to
    ``step_with(state, obs, action, sample_elites(state, k1, B), eps)`` with
    ``eps ~ N(0, I)``.

    Args:
      state: a ``ModelState``.
      obs: ``[B, O]``.
      action: ``[B, A]``.
      key: PRNG key.

    Returns:
      ``(next_obs [B, O], reward [B])``; reward is 0 without a reward output.
    """
    chex.assert_rank([obs, action], 2)
    member_key, noise_key = jax.random.split(key)
    b = obs.shape[0]
    elite_params = jax.tree_util.tree_map(lambda p: p[state.elites], state.params)
    mean, var = _member_gaussians(state, elite_params, obs, action)
    slot = jax.random.randint(member_key, (b,), 0, state.config.num_elites)
    eps = jax.random.normal(noise_key, (b, state.target_size), mean.dtype)
    return _select_and_sample(state, obs, mean, var, slot, eps)

"""Dreamer v1's world model: RSSM, encoders, decoders, heads and the model loss.

Follows Hafner et al. 2020 (Dream to Control) as implemented in the authors'
code (danijar/dreamer ``models.py`` and ``dreamer.py``), and the loss of paper
004 (MaxEnt Dreamer) eq. 3-4. Sizes (DESIGN Sec. 6): stochastic state 30 with
std softplus(x) + 0.1, GRU deterministic state 200, hidden 200, ELU; CNN
encoder with depth 32 -> 1024 features; transposed-CNN decoder -> 64x64x3
mean of a unit-variance Normal; reward head 2x400, value head 3x400,
continuation (pcont) head 3x400 read as Bernoulli logits.

Data layout (Dreamer's): ``action[t]`` is the action that led to observation
``t`` (zeros at an episode start) and ``is_first[t]`` marks episode starts, so
step ``t`` of ``observe`` is ``obs_step(post[t-1], action[t], embed[t])``.

Differences from the authors' code, none of them in the maths:
- Dense, conv and GRU input kernels use Keras's default Glorot-uniform init
  (flax's default is LeCun-normal); flax's ``nn.GRUCell`` is the same
  "reset after" GRU as Keras's TF2 ``GRUCell`` except that it has no bias on
  the recurrent reset/update gates (Keras has two bias vectors).
- The transposed convs (``memrl.nets.conv``) index the kernel differently
  from Keras's ``Conv2DTranspose`` (a spatial flip): a reparameterisation.
- Sampling noise comes from explicit keys (one per step), so the same key
  gives the same samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import chex
import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from memrl import divergences
from memrl.nets.conv import Conv, ConvTranspose
from memrl.nets.mlp import activation as get_activation

# Keras's default kernel init (the authors' code uses Keras layers).
_INIT = nn.initializers.glorot_uniform()

Params = chex.ArrayTree
PolicyFn = Callable[[jax.Array, jax.Array], jax.Array]


class RSSMState(NamedTuple):
    """A state of the RSSM; every leaf is [..., size].

    Attributes:
      mean: mean of the stochastic state's diagonal Gaussian, [..., stoch].
      std: its standard deviation (>= min_std, zero in the initial state).
      stoch: the sampled stochastic state z, [..., stoch].
      deter: the deterministic GRU state h, [..., deter].
    """

    mean: jax.Array
    std: jax.Array
    stoch: jax.Array
    deter: jax.Array


def feature(state: RSSMState) -> jax.Array:
    """The model feature concat([stoch, deter], -1) (Dreamer's ``get_feat``)."""
    return jnp.concatenate([state.stoch, state.deter], axis=-1)


def distribution(state: RSSMState) -> distrax.MultivariateNormalDiag:
    """The diagonal Gaussian over the stochastic state (Dreamer's ``get_dist``)."""
    return distrax.MultivariateNormalDiag(state.mean, state.std)


class RSSM(nn.Module):
    """Recurrent state-space model (Dreamer v1).

    ``setup`` defines the layers once so ``img_step``, ``obs_step`` and
    ``__call__`` (= ``obs_step``, used by ``init``) share parameters. Agents
    normally use the module-level ``observe``, ``imagine`` and
    ``imagine_with_actions``, which take this module and its params.

    Attributes:
      stoch_size: size of the stochastic state z.
      deter_size: size of the GRU state h.
      hidden_size: width of the Dense layers around the GRU.
      min_std: added to softplus(raw std).
      activation: hidden activation (see ``memrl.nets.mlp.ACTIVATIONS``).
    """

    stoch_size: int = 30
    deter_size: int = 200
    hidden_size: int = 200
    min_std: float = 0.1
    activation: str = "elu"

    def setup(self):
        self.img1 = nn.Dense(self.hidden_size, kernel_init=_INIT)
        self.cell = nn.GRUCell(self.deter_size, kernel_init=_INIT)
        self.img2 = nn.Dense(self.hidden_size, kernel_init=_INIT)
        self.img3 = nn.Dense(2 * self.stoch_size, kernel_init=_INIT)
        self.obs1 = nn.Dense(self.hidden_size, kernel_init=_INIT)
        self.obs2 = nn.Dense(2 * self.stoch_size, kernel_init=_INIT)

    def initial(self, batch_shape: Sequence[int], dtype=jnp.float32) -> RSSMState:
        """The all-zero state with leaves [*batch_shape, size] (no params needed)."""
        batch_shape = tuple(batch_shape)
        stoch = jnp.zeros(batch_shape + (self.stoch_size,), dtype)
        return RSSMState(stoch, stoch, stoch, jnp.zeros(batch_shape + (self.deter_size,), dtype))

    def _gaussian(self, raw: jax.Array, deter: jax.Array, key: jax.Array) -> RSSMState:
        mean, raw_std = jnp.split(raw, 2, axis=-1)
        std = nn.softplus(raw_std) + self.min_std
        stoch = mean + std * jax.random.normal(key, mean.shape, mean.dtype)
        return RSSMState(mean, std, stoch, deter)

    def img_step(self, prev_state: RSSMState, prev_action: jax.Array, key: jax.Array) -> RSSMState:
        """The prior p(z_t | h_t), h_t = GRU(h_{t-1}, f(z_{t-1}, a)).

        Args:
          prev_state: state at t-1, leaves [..., size].
          prev_action: the action taken at t-1 (Dreamer's ``action[t]``), [..., A].
          key: PRNG key for the sample of z_t.

        Returns:
          The prior state at t.
        """
        act = get_activation(self.activation)
        x = jnp.concatenate([prev_state.stoch, prev_action], axis=-1)
        x = act(self.img1(x))
        deter, x = self.cell(prev_state.deter, x)
        x = act(self.img2(x))
        return self._gaussian(self.img3(x), deter, key)

    def obs_step(
        self, prev_state: RSSMState, prev_action: jax.Array, embed: jax.Array, key: jax.Array
    ) -> tuple[RSSMState, RSSMState]:
        """The posterior q(z_t | h_t, o_t) and the prior p(z_t | h_t).

        Args:
          prev_state: (posterior) state at t-1, leaves [..., size].
          prev_action: the action that led to o_t, [..., A].
          embed: encoder output for o_t, [..., E].
          key: PRNG key (split for the prior's and the posterior's samples).

        Returns:
          ``(post, prior)``; both share the same ``deter``.
        """
        key_prior, key_post = jax.random.split(key)
        prior = self.img_step(prev_state, prev_action, key_prior)
        act = get_activation(self.activation)
        x = jnp.concatenate([prior.deter, embed], axis=-1)
        x = act(self.obs1(x))
        post = self._gaussian(self.obs2(x), prior.deter, key_post)
        return post, prior

    def __call__(
        self, prev_state: RSSMState, prev_action: jax.Array, embed: jax.Array, key: jax.Array
    ) -> tuple[RSSMState, RSSMState]:
        """Same as ``obs_step``; it touches every layer, so ``init`` uses it."""
        return self.obs_step(prev_state, prev_action, embed, key)


def init_rssm(rssm: RSSM, key: jax.Array, embed_size: int, action_size: int) -> Params:
    """Initialises all RSSM parameters (through one ``obs_step`` on a batch of 1)."""
    key_params, key_noise = jax.random.split(key)
    state = rssm.initial((1,))
    return rssm.init(
        key_params, state, jnp.zeros((1, action_size)), jnp.zeros((1, embed_size)), key_noise
    )


def _where_first(is_first: jax.Array, reset, value):
    """Per batch element: ``reset`` where ``is_first`` else ``value`` (pytrees)."""
    return jax.tree.map(
        lambda r, v: jnp.where(is_first.reshape(is_first.shape + (1,) * (v.ndim - 1)), r, v),
        reset,
        value,
    )


def observe(
    rssm: RSSM,
    params: Params,
    embed: jax.Array,
    action: jax.Array,
    is_first: jax.Array,
    key: jax.Array,
    state: RSSMState | None = None,
) -> tuple[RSSMState, RSSMState]:
    """Posterior and prior states along sequences (one ``lax.scan`` over time).

    Step t computes ``obs_step(post[t-1], action[t], embed[t])``, with
    ``post[-1] = state`` (the initial zeros by default). Where ``is_first[t]``
    the previous state and action are replaced by the initial zeros before the
    step, so a chunk may span episode boundaries.

    Args:
      rssm: the module.
      params: its parameters.
      embed: encoder outputs, [T, B, E].
      action: ``action[t]`` led to observation t (zeros at episode starts), [T, B, A].
      is_first: episode-start flags, [T, B] (bool or 0/1).
      key: PRNG key; step t uses ``jax.random.split(key, T)[t]``.
      state: state before step 0, leaves [B, size]; None for the initial zeros.

    Returns:
      ``(post, prior)`` with leaves [T, B, size].
    """
    chex.assert_rank([embed, action, is_first], [3, 3, 2])
    chex.assert_equal_shape_prefix([embed, action, is_first], 2)
    num_steps, batch = is_first.shape
    initial = rssm.initial((batch,), embed.dtype)
    if state is None:
        state = initial
    keys = jax.random.split(key, num_steps)

    def step(prev_post, inputs):
        embed_t, action_t, first_t, key_t = inputs
        first_t = first_t.astype(bool)
        prev_post = _where_first(first_t, initial, prev_post)
        action_t = _where_first(first_t, jnp.zeros_like(action_t), action_t)
        post, prior = rssm.apply(params, prev_post, action_t, embed_t, key_t, method=RSSM.obs_step)
        return post, (post, prior)

    _, (post, prior) = jax.lax.scan(step, state, (embed, action, is_first, keys))
    return post, prior


def imagine(
    rssm: RSSM,
    params: Params,
    policy_fn: PolicyFn,
    start: RSSMState,
    horizon: int,
    key: jax.Array,
) -> tuple[RSSMState, jax.Array]:
    """Prior rollouts under a policy (Dreamer v1 ``_imagine_ahead``).

    From ``s_0 = start``: ``a_k = policy_fn(feature(s_k), key)``,
    ``s_{k+1} = img_step(s_k, a_k)`` for k = 0..horizon-1. Gradients flow
    through the actions and ``img_step``, so an actor can differentiate the
    imagined features; apply ``stop_gradient`` inside ``policy_fn`` (Dreamer
    stops the actor's input features) or to ``start`` where wanted.

    Args:
      rssm: the module.
      params: its parameters.
      policy_fn: ``(feature [N, F], key) -> action [N, A]``.
      start: start states, leaves [N, size] (Dreamer: every posterior state
        of the batch, flattened).
      horizon: number of imagined steps H (static).
      key: PRNG key.

    Returns:
      ``(states, actions)``: states s_1..s_H with leaves [H, N, size] (the
      start not included) and ``actions[k] = a_k``, the action that led to
      ``states[k]``, [H, N, A].
    """
    keys = jax.random.split(key, horizon)

    def step(prev, key_t):
        key_action, key_img = jax.random.split(key_t)
        action = policy_fn(feature(prev), key_action)
        state = rssm.apply(params, prev, action, key_img, method=RSSM.img_step)
        return state, (state, action)

    _, (states, actions) = jax.lax.scan(step, start, keys)
    return states, actions


def imagine_with_actions(
    rssm: RSSM, params: Params, start: RSSMState, actions: jax.Array, key: jax.Array
) -> RSSMState:
    """Open-loop prior rollouts: ``s_{k+1} = img_step(s_k, actions[k])``.

    Args:
      start: leaves [N, size].
      actions: [H, N, A].
      key: PRNG key; step k uses ``jax.random.split(key, H)[k]``.

    Returns:
      States s_1..s_H with leaves [H, N, size].
    """
    chex.assert_rank(actions, 3)
    keys = jax.random.split(key, actions.shape[0])

    def step(prev, inputs):
        action, key_t = inputs
        state = rssm.apply(params, prev, action, key_t, method=RSSM.img_step)
        return state, state

    _, states = jax.lax.scan(step, start, (actions, keys))
    return states


def preprocess_image(image: jax.Array) -> jax.Array:
    """uint8 pixels -> float32 in [-0.5, 0.5] (Dreamer: ``image / 255 - 0.5``)."""
    return image.astype(jnp.float32) / 255.0 - 0.5


class MLPEncoder(nn.Module):
    """Vector observations -> embedding; every layer is followed by the activation.

    Attributes:
      hidden_sizes: layer widths; the embedding size is the last one.
      activation: activation name (ELU as in Dreamer's dense nets).
    """

    hidden_sizes: Sequence[int] = (400, 400)
    activation: str = "elu"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        x = obs
        for width in self.hidden_sizes:
            x = act(nn.Dense(width, kernel_init=_INIT)(x))
        return x


class MLPDecoder(nn.Module):
    """Feature -> mean of a unit-variance Normal over a vector observation.

    Attributes:
      output_size: observation size.
      hidden_sizes: hidden widths.
      activation: hidden activation.
    """

    output_size: int
    hidden_sizes: Sequence[int] = (400, 400)
    activation: str = "elu"

    @nn.compact
    def __call__(self, feat: jax.Array) -> jax.Array:
        x = MLPEncoder(self.hidden_sizes, self.activation)(feat)
        return nn.Dense(self.output_size, kernel_init=_INIT)(x)


class ConvEncoder(nn.Module):
    """64x64x3 images -> 1024 features (Dreamer v1 with depth 32).

    Four convs, kernel 4, stride 2, VALID, depths (1, 2, 4, 8) x depth, ReLU:
    spatial 64 -> 31 -> 14 -> 6 -> 2, so the output has 2*2*8*depth features.

    Attributes:
      depth: channel multiplier.
      activation: activation after every conv.
    """

    depth: int = 32
    activation: str = "relu"

    @nn.compact
    def __call__(self, image: jax.Array) -> jax.Array:
        """[..., H, W, C] preprocessed images -> [..., features]."""
        act = get_activation(self.activation)
        lead = image.shape[:-3]
        x = image.reshape((-1,) + image.shape[-3:])
        for mult in (1, 2, 4, 8):
            conv = Conv(mult * self.depth, (4, 4), strides=(2, 2), kernel_init=_INIT)
            x = act(conv(x))
        return x.reshape(lead + (-1,))


class ConvDecoder(nn.Module):
    """Feature -> mean of a unit-variance Normal over 64x64x3 images (Dreamer v1).

    Dense(32 depth) -> [1, 1, 32 depth] -> transposed convs with kernels
    5, 5, 6, 6, stride 2, VALID (spatial 1 -> 5 -> 13 -> 30 -> 64) and depths
    4, 2, 1 x depth then the image channels; ReLU except after the last.
    The transposed convs are ``memrl.nets.conv.ConvTranspose`` (the same
    function as flax's, with kernel gradients about 20x faster on CPU).

    Attributes:
      depth: channel multiplier.
      activation: activation between the transposed convs.
      shape: image shape; only 64x64 spatial size is produced by this stack.
    """

    depth: int = 32
    activation: str = "relu"
    shape: tuple[int, int, int] = (64, 64, 3)

    @nn.compact
    def __call__(self, feat: jax.Array) -> jax.Array:
        """[..., F] -> [..., 64, 64, C] image means."""
        act = get_activation(self.activation)
        lead = feat.shape[:-1]
        x = nn.Dense(32 * self.depth, kernel_init=_INIT)(feat)
        x = x.reshape((-1, 1, 1, 32 * self.depth))
        layers = ((4 * self.depth, 5), (2 * self.depth, 5), (self.depth, 6))
        for channels, kernel in layers:
            deconv = ConvTranspose(channels, (kernel, kernel), strides=(2, 2), kernel_init=_INIT)
            x = act(deconv(x))
        x = ConvTranspose(self.shape[-1], (6, 6), strides=(2, 2), kernel_init=_INIT)(x)
        if x.shape[1:] != tuple(self.shape):
            raise ValueError(f"decoder produces {x.shape[1:]}, not {self.shape}")
        return x.reshape(lead + tuple(self.shape))


class DenseHead(nn.Module):
    """ELU MLP (layers x units) -> one scalar per feature.

    Dreamer v1: reward ``DenseHead(layers=2)`` (mean of a unit Normal),
    value ``DenseHead(layers=3)``, and the optional continuation (pcont) head
    ``DenseHead(layers=3)`` whose output is read as Bernoulli logits (see
    ``continuation_log_prob``).

    Attributes:
      layers: number of hidden layers.
      units: hidden width.
      activation: hidden activation.
    """

    layers: int = 2
    units: int = 400
    activation: str = "elu"

    @nn.compact
    def __call__(self, feat: jax.Array) -> jax.Array:
        """[..., F] -> [...]."""
        sizes = (self.units,) * self.layers
        return MLPDecoder(1, sizes, self.activation)(feat)[..., 0]


def reconstruction_log_prob(
    pred_mean: jax.Array, target: jax.Array, event_ndims: int = 1
) -> jax.Array:
    """log N(target; pred_mean, I), summed over the last ``event_ndims`` axes.

    ``log p = -1/2 sum (target - pred_mean)^2 - (n/2) log(2 pi)`` with n the
    number of event elements, so maximising it is minimising the summed
    squared error: this is how paper 004 eq. 3 becomes eq. 4's MSE.

    Args:
      pred_mean: predicted means, [..., *event].
      target: targets, same shape.
      event_ndims: 3 for images (H, W, C), 1 for vectors, 0 for scalars.

    Returns:
      [...] log densities.
    """
    chex.assert_equal_shape([pred_mean, target])
    log_prob = -0.5 * jnp.square(target - pred_mean) - 0.5 * math.log(2.0 * math.pi)
    return jnp.sum(log_prob, axis=tuple(range(log_prob.ndim - event_ndims, log_prob.ndim)))


def continuation_log_prob(logits: jax.Array, target: jax.Array) -> jax.Array:
    """Bernoulli log-likelihood with a soft target in [0, 1] (Dreamer's pcont).

    ``target log sigmoid(l) + (1 - target) log sigmoid(-l)``, as TFP's
    Bernoulli.log_prob evaluates a non-binary target such as gamma * discount.
    """
    chex.assert_equal_shape([logits, target])
    return target * jax.nn.log_sigmoid(logits) + (1.0 - target) * jax.nn.log_sigmoid(-logits)


def model_loss(
    post: RSSMState,
    prior: RSSMState,
    obs_mean: jax.Array,
    obs: jax.Array,
    reward_mean: jax.Array,
    reward: jax.Array,
    *,
    cont_logits: jax.Array | None = None,
    discount: jax.Array | None = None,
    gamma: float = 0.99,
    pcont_scale: float = 10.0,
    kl_scale: float = 1.0,
    nats: float = 3.0,
    fixed_prior: bool = False,
    jeffreys_scale: float = 0.1,
    reward_smooth_l1: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Dreamer's world-model loss (paper 004 eq. 3-4; Dreamer v1 ``_train``).

    Eq. 3 (actions in the conditioning left implicit as in the paper):

        L = E[ sum_i -( ln p(o_i | h_i, z_i) + ln p(r_i | h_i, z_i)
                        - beta KL(q(z_i | h_i, o_i) || p(z_i | h_i)) ) ]

    (eq. 3 writes the KL at index i+1 with the posterior conditioned on
    z_i, h_i, o_{i+1}: the same term one step later). With unit-variance
    Normal decoders each log-likelihood is minus half a summed squared error
    plus a constant (``reconstruction_log_prob``), which is eq. 4's MSE form.

    As in the authors' code, each term is a mean over the B sequences and the
    T steps instead of eq. 3's sum over i: every term is eq. 3's per-sequence
    sum divided by T (the same minimiser). Here post[t], prior[t] are the
    ``observe`` outputs for step t, o_t = ``obs[t]`` and r_t = ``reward[t]``
    is the reward that came with o_t. beta = ``kl_scale``, and the free nats
    apply once, to the B,T-mean KL: ``kl_scale * max(mean_{b,t} KL, nats)``
    (``divergences.free_nats``), not per step or per sequence. With a
    continuation head it adds ``pcont_scale * mean ln Bernoulli(gamma *
    discount | logits)`` to the likelihoods (the authors' target is
    ``discount * data['discount']``).

    Revised Dreamer (paper 004 Sec. 4.2), by flag:

    * ``fixed_prior``: the divergence term becomes

          kl_scale * KL(q(z_t | h_t, o_t) || N(0, I))
          + jeffreys_scale * D_J(q(z_t | h_t, o_t), p(z_t | h_t)),

      ``D_J(P, Q) = KL(P || Q) + KL(Q || P)`` (paper: both coefficients
      0.1). The learned prior p(z_t | h_t) is still trained (through D_J)
      and still drives imagination. The paper does not say how free nats
      combine with these terms; memrl keeps Dreamer's rule and applies
      ``max(mean, nats)`` to each divergence's batch mean before scaling.
    * ``reward_smooth_l1``: the reward term is the Smooth L1 (Huber, delta
      1) loss ``mean l(reward_mean - reward)`` with ``l(x) = x^2 / 2`` for
      ``|x| <= 1`` and ``|x| - 1/2`` beyond, in place of the Gaussian NLL
      (the two agree up to a constant for errors below 1).

    Args:
      post, prior: from ``observe``, leaves [T, B, size].
      obs_mean: decoder means, [T, B, *event] (image: 64, 64, 3; vector: D).
      obs: targets (preprocessed images or vectors), same shape.
      reward_mean: reward-head outputs, [T, B].
      reward: rewards, [T, B].
      cont_logits: continuation-head logits [T, B], or None (Dreamer's default).
      discount: env discounts (0 at termination) [T, B]; needed with cont_logits.
      gamma: discount factor multiplying the continuation target.
      pcont_scale: weight of the continuation likelihood (Dreamer: 10).
      kl_scale: beta (Dreamer: 1).
      nats: free nats (Dreamer: 3).
      fixed_prior: Revised Dreamer's N(0, I) + Jeffreys divergence term.
      jeffreys_scale: weight of the Jeffreys divergence with ``fixed_prior``.
      reward_smooth_l1: Revised Dreamer's Smooth L1 reward loss.

    Returns:
      ``(loss, metrics)``: a scalar and a flat dict of ``model/*`` scalars.
    """
    chex.assert_rank([reward_mean, reward], 2)
    chex.assert_equal_shape([reward_mean, reward])
    event_ndims = obs.ndim - reward.ndim
    obs_log_prob = jnp.mean(reconstruction_log_prob(obs_mean, obs, event_ndims))
    if reward_smooth_l1:
        reward_log_prob = -jnp.mean(optax.huber_loss(reward_mean, reward, delta=1.0))
    else:
        reward_log_prob = jnp.mean(reconstruction_log_prob(reward_mean, reward, 0))
    kl = divergences.kl_diag_gaussian(post.mean, post.std, prior.mean, prior.std)
    metrics = {}
    if fixed_prior:
        kl_fixed = divergences.kl_to_standard_normal(post.mean, post.std)
        jeffreys = divergences.jeffreys_diag_gaussian(post.mean, post.std, prior.mean, prior.std)
        kl_loss = kl_scale * divergences.free_nats(kl_fixed, nats) + jeffreys_scale * (
            divergences.free_nats(jeffreys, nats)
        )
        metrics["model/kl_fixed_prior"] = jnp.mean(kl_fixed)
        metrics["model/jeffreys"] = jnp.mean(jeffreys)
    else:
        kl_loss = kl_scale * divergences.free_nats(kl, nats)
    likelihood = obs_log_prob + reward_log_prob
    if cont_logits is not None:
        if discount is None:
            raise ValueError("model_loss: cont_logits needs discount")
        cont_log_prob = jnp.mean(continuation_log_prob(cont_logits, gamma * discount))
        likelihood = likelihood + pcont_scale * cont_log_prob
        metrics["model/cont_nll"] = -cont_log_prob
    loss = kl_loss - likelihood
    metrics.update(
        {
            "model/loss": loss,
            "model/obs_nll": -obs_log_prob,
            "model/reward_nll": -reward_log_prob,
            "model/kl": jnp.mean(kl),
            "model/kl_loss": kl_loss,
            "model/prior_entropy": jnp.mean(distribution(prior).entropy()),
            "model/post_entropy": jnp.mean(distribution(post).entropy()),
        }
    )
    return loss, metrics

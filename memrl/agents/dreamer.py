"""Dreamer (Hafner et al. 2020, "Dream to Control"), as in the authors' v1 code
(danijar/dreamer) and as summarized by paper 004 (MaxEnt Dreamer, Sec. 2.2).

Algorithm (Dreamer, Algorithm 1), as the runner drives it:

* every environment step (``train_step``): store the step in sequence replay
  (``memrl.replay.sequence``; Dreamer's layout, ``memrl.types.SequenceStep``);
* every ``periodic_every`` frames (``periodic``): ``train_steps`` updates, each
  on ``batch_size`` sequences of ``batch_length`` steps (``update``):

  1. world model (``model_loss``): the RSSM posterior over the batch, and
     paper 004 eq. 3-4: reconstruction + reward (+ continuation) likelihoods
     and ``beta KL(post || prior)`` with Dreamer's free nats;
  2. actor (``actor_loss``): from every posterior state, ``horizon`` prior
     steps under the actor; maximize the lambda-returns (paper 004 eq. 5,
     ``memrl.returns.lambda_returns``) by backpropagating through the learned
     dynamics and the reparameterized actions;
  3. value (``value_loss``): regress ``V`` onto the stop-gradient returns.

  All three losses use the parameters from before the update and are applied
  together, as the authors' three gradient tapes do.
* acting (``act``): filter the observation into the RSSM state (``obs_step``
  from the carried state and previous action), sample the actor, add
  Gaussian exploration noise. The runner carries ``(latent, action)`` between
  steps and resets it where an episode starts (``init_carry``).
"""

# No `from __future__ import annotations` here: ml_collections reads Config field
# types at runtime to parse --config.<field> flags.
import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from memrl import returns as returns_lib
from memrl.nets import policy as policy_lib
from memrl.nets import world_model as wm
from memrl.nets.conv import map_in_chunks, resolve_impl
from memrl.replay import sequence as sequence_lib
from memrl.types import SequenceStep, Transition

PyTree = Any


@dataclasses.dataclass(unsafe_hash=True)
class Config:
    """Dreamer settings. Defaults are the authors' v1 code (danijar/dreamer
    ``define_config``, ``dreamer.py``, ``models.py``) unless stated.

    Treat as immutable: derive variants with ``dataclasses.replace``.

    Attributes:
      stoch_size: stochastic state z (``stoch_size = 30``).
      deter_size: deterministic GRU state h (``deter_size = 200``).
      hidden_size: RSSM hidden layers (the authors pass ``deter_size``: 200).
      min_std: lower bound of z's std, ``softplus + 0.1`` (``RSSM._min_std``).
      units: width of the dense heads and actor (``num_units = 400``).
      reward_layers: reward head layers (``DenseDecoder((), 2, ...)``).
      value_layers: value head layers (3).
      actor_layers: actor layers (``ActionDecoder(..., 4, ...)``).
      cont_layers: continuation head layers (3).
      activation: dense activation (``dense_act = 'elu'``).
      cnn_depth: conv encoder/decoder depth for images (``cnn_depth = 32``;
        ReLU, ``cnn_act``).
      encoder_sizes: MLP encoder/decoder widths for vector observations
        (memrl's choice: the authors' code only has images; two ELU layers of
        ``units``).
      pcont: learn a continuation (termination) head and use it for the
        imagined discounts (``pcont = False``).
      pcont_scale: weight of its likelihood (``pcont_scale = 10``).
      free_nats: free nats of the mean KL (``free_nats = 3``).
      kl_scale: beta of paper 004 eq. 3 (``kl_scale = 1``).
      model_lr, actor_lr, value_lr: Adam step sizes (6e-4, 8e-5, 8e-5).
      adam_eps: Adam epsilon (TF2 Keras Adam default 1e-7).
      grad_clip: global-norm clipping of each module's gradient (100).
      batch_size: sequences per update (50).
      batch_length: steps per sequence (50).
      horizon: imagination horizon H (15).
      gamma: discount (``discount = 0.99``).
      lambda_: lambda of the returns (``disclam = 0.95``).
      action_init_std: actor std at zero output (5).
      expl_amount: std of the additive Gaussian exploration noise (0.3).
      train_steps: updates per training phase (``train_steps = 100``; the
        authors' first phase has ``pretrain = 100``, the same).
      periodic_every: frames between training phases (``train_every = 1000``).
      warmup_steps: prefill frames with uniform random actions (``prefill =
        5000``).
      action_repeat: frames per agent step (``action_repeat = 2``);
        ``env_steps`` count frames.
      buffer_size: replay capacity in rows (steps) over all envs (memrl: 10^6;
        the authors keep every episode).
      num_envs: parallel environments per seed (``envs = 1``).
      mode_samples: samples of the actor's sample-based mode used for
        deterministic (evaluation) actions (``SampleDist(samples=100)``).
      image_chunk: on CPU, the conv encoder and decoder of the world-model
        loss run over this many images at a time, each chunk recomputed in
        the backward pass (``memrl.nets.conv.map_in_chunks``: the same
        values with bounded temporaries; an update at the paper's sizes
        took 43 s on the whole batch and 18 s in chunks, 2 cores); 0 is the
        whole batch at once. Accelerators always take the whole batch
        (memrl's choice, not the authors').

    Revised Dreamer (paper 004 Sec. 4.2; ``REVISED`` turns them all on; off
    by default, which is the authors' Dreamer):

      pcont: the termination model (above). The imagined discounts become
        ``c_t = P(continue | s_t)`` as predicted (the head learns the target
        ``gamma * discount``, so its probability already holds gamma), in the
        lambda-returns and in the weights ``prod_{k<t} c_k``.
      first_state_grad: the actor maximizes only the return of the first
        imagined step of each sequence (the decision taken at the posterior
        start), not the mean over all imagined steps.
      observe_before_act: act on the posterior ``q(z_t | h_t, o_t)`` (True:
        the authors' code, and Revised Dreamer's block rearrangement) or on
        the prior ``p(z_t | h_t)``, so that ``o_t`` enters the state only
        after ``a_t`` is taken and an episode's first observation is never
        seen before acting (False: the order paper 004 Sec. 4.2 describes
        for the original architecture). The authors' v1 code already
        encodes ``o_0`` before its first action (zero state and action at a
        reset, then ``obs_step``), so the rearrangement changes nothing
        relative to that code; False reproduces the paper's baseline.
      fixed_prior: the KL term becomes ``kl_scale KL(q || N(0, I)) +
        jeffreys_scale D_J(q, p)`` (``world_model.model_loss``); the
        learned prior still drives imagination.
      jeffreys_scale: weight of the Jeffreys divergence (paper: 0.1; the
        paper's Revised Dreamer also sets ``kl_scale = 0.1``).
      q_critic: learn ``Q(s, a)`` instead of ``V(s)``; inside the returns
        ``V(s) = E_{a ~ pi} Q(s, a)`` is estimated with the reparameterized
        action the actor takes at ``s`` (one sample).
      smooth_l1: Smooth L1 (Huber, delta 1) losses for the critic and the
        reward head instead of squared errors.
      decoder_stoch_only: the observation decoder reads only ``z``, not
        ``(z, h)``.
      random_action_prob: probability of a uniform random action while
        exploring (paper: "a probability to make a random action", value not
        given; Revised Dreamer in memrl uses 0.1).
    """

    stoch_size: int = 30
    deter_size: int = 200
    hidden_size: int = 200
    min_std: float = 0.1
    units: int = 400
    reward_layers: int = 2
    value_layers: int = 3
    actor_layers: int = 4
    cont_layers: int = 3
    activation: str = "elu"
    cnn_depth: int = 32
    encoder_sizes: tuple[int, ...] = (400, 400)
    pcont: bool = False
    pcont_scale: float = 10.0
    free_nats: float = 3.0
    kl_scale: float = 1.0
    model_lr: float = 6e-4
    actor_lr: float = 8e-5
    value_lr: float = 8e-5
    adam_eps: float = 1e-7
    grad_clip: float = 100.0
    batch_size: int = 50
    batch_length: int = 50
    horizon: int = 15
    gamma: float = 0.99
    lambda_: float = 0.95
    action_init_std: float = 5.0
    expl_amount: float = 0.3
    train_steps: int = 100
    periodic_every: int = 1000
    warmup_steps: int = 5000
    action_repeat: int = 2
    buffer_size: int = 1_000_000
    num_envs: int = 1
    mode_samples: int = 100
    image_chunk: int = 50
    first_state_grad: bool = False
    observe_before_act: bool = True
    fixed_prior: bool = False
    jeffreys_scale: float = 0.1
    q_critic: bool = False
    smooth_l1: bool = False
    decoder_stoch_only: bool = False
    random_action_prob: float = 0.0

    @classmethod
    def for_env(cls, env_name: str, obs: str = "state") -> "Config":
        """Per-environment settings: the authors' defaults, except on the
        classic-control tasks and the replay size for images.

        Images (``obs='pixels'``): the replay ring holds ``buffer_size =
        100_000`` steps (1.2 GB of 64x64x3 uint8 per seed), where the authors
        keep every episode on disk; 1M steps would need 12 GB of device
        memory. Pendulum, the double integrator and mountain car from pixels
        get the CPU-sized configuration below with a conv depth of 8 (the
        authors' 32 costs about 3 s per update of 512 images on 2 CPU cores),
        16 x 32 sequences and 50 updates per 500 frames (see
        ``CPU_PIXELS``).

        Pendulum and the double integrator get a CPU-sized configuration
        (smaller batch, widths and states: one update takes about 0.1 s on
        2 CPU cores, against 4-5 s at the paper's sizes), 1000 prefill
        frames, and 100 updates per 500 frames. Two settings differ for a reason beyond size, both
        measured on pendulum (30k frames, one seed each):

        * ``free_nats=1``: with a 3-dimensional observation the mean KL stays
          below Dreamer's 3 free nats (2.4-2.6 nats measured), so
          ``max(KL, 3)`` gives the prior no gradient at all and imagination
          samples an untrained prior. With 3 free nats and noise 0.3 the
          eval return was still -1240 at 20k frames.
        * ``expl_amount=0.1``: with 1 free nat, noise 0.3 stayed near
          -1050 at 16k frames where noise 0.1 reached -340 by 10k.
        """
        if obs == "pixels":
            base = cls.for_env(env_name)
            if env_name in CLASSIC:
                return dataclasses.replace(base, **CPU_PIXELS)
            return dataclasses.replace(base, buffer_size=100_000)
        if env_name in CLASSIC:
            return cls(
                stoch_size=16,
                deter_size=64,
                hidden_size=64,
                units=64,
                encoder_sizes=(64, 64),
                batch_size=16,
                batch_length=32,
                model_lr=1e-3,
                actor_lr=2e-4,
                value_lr=2e-4,
                free_nats=1.0,
                expl_amount=0.1,
                train_steps=100,
                periodic_every=500,
                warmup_steps=1000,
            )
        return cls()


CLASSIC = ("pendulum", "double_integrator", "mountain_car")
OBSERVATIONS = ("state", "pixels")  # the runner's --obs values Dreamer learns from

# Pendulum-sized Dreamer from 64x64 images on a CPU (Config.for_env(..., 'pixels')).
CPU_PIXELS = dict(cnn_depth=8, train_steps=50, buffer_size=50_000)

# Revised Dreamer (paper 004 Sec. 4.2 and 5.1): every modification on, the
# stochastic state 128 and both divergence coefficients 0.1.
REVISED = dict(
    pcont=True,
    first_state_grad=True,
    observe_before_act=True,
    fixed_prior=True,
    kl_scale=0.1,
    jeffreys_scale=0.1,
    stoch_size=128,
    q_critic=True,
    smooth_l1=True,
    decoder_stoch_only=True,
    random_action_prob=0.1,
)


def revised(config: Config) -> Config:
    """``config`` with Revised Dreamer's modifications (``REVISED``)."""
    return dataclasses.replace(config, **REVISED)


class Networks(NamedTuple):
    """The flax modules of Dreamer."""

    encoder: Any
    rssm: wm.RSSM
    decoder: Any
    reward: wm.DenseHead
    cont: wm.DenseHead | None
    actor: policy_lib.TanhNormalActor
    value: wm.DenseHead


def is_image(obs_shape: tuple[int, ...]) -> bool:
    """Image observations are ``[H, W, C]``; vectors ``[D]``."""
    return len(obs_shape) == 3


def networks(config: Config, obs_shape: tuple[int, ...], action_size: int) -> Networks:
    """The modules for ``config``: a CNN encoder/decoder for images, MLPs for vectors."""
    if is_image(obs_shape):
        encoder = wm.ConvEncoder(depth=config.cnn_depth)
        decoder = wm.ConvDecoder(depth=config.cnn_depth, shape=tuple(obs_shape))
    else:
        sizes = tuple(config.encoder_sizes)
        encoder = wm.MLPEncoder(sizes, config.activation)
        decoder = wm.MLPDecoder(obs_shape[0], sizes, config.activation)
    head = lambda layers: wm.DenseHead(layers, config.units, config.activation)  # noqa: E731
    return Networks(
        encoder=encoder,
        rssm=wm.RSSM(
            stoch_size=config.stoch_size,
            deter_size=config.deter_size,
            hidden_size=config.hidden_size,
            min_std=config.min_std,
            activation=config.activation,
        ),
        decoder=decoder,
        reward=head(config.reward_layers),
        cont=head(config.cont_layers) if config.pcont else None,
        actor=policy_lib.TanhNormalActor(
            action_size,
            layers=config.actor_layers,
            units=config.units,
            activation=config.activation,
            init_std=config.action_init_std,
        ),
        value=head(config.value_layers),
    )


@struct.dataclass
class Learner:
    """Everything ``update`` changes.

    Attributes:
      model: world-model parameters ``{'encoder', 'rssm', 'decoder', 'reward'}``
        (plus ``'cont'`` with ``pcont``), optimized together.
      actor: actor parameters.
      value: value parameters (no target network, as in Dreamer v1).
      model_opt, actor_opt, value_opt: optimizer states.
      config: the static ``Config``.
      obs_shape: static observation shape.
      action_size: static action dimension.
    """

    model: PyTree
    actor: PyTree
    value: PyTree
    model_opt: optax.OptState
    actor_opt: optax.OptState
    value_opt: optax.OptState
    config: Config = struct.field(pytree_node=False)
    obs_shape: tuple = struct.field(pytree_node=False)
    action_size: int = struct.field(pytree_node=False)

    @property
    def nets(self) -> Networks:
        return networks(self.config, self.obs_shape, self.action_size)


@struct.dataclass
class AgentState:
    """Learner plus the sequence replay Dreamer owns."""

    learner: Learner
    buffer: sequence_lib.SequenceBufferState


class Carry(NamedTuple):
    """The policy state carried between environment steps (leading axis = envs).

    Attributes:
      latent: the RSSM posterior after the last observation.
      action: the action last taken (with exploration noise), zeros at an
        episode start.
    """

    latent: wm.RSSMState
    action: jax.Array


def optimizer(config: Config, learning_rate: float) -> optax.GradientTransformation:
    """Global-norm clipping then Adam (the authors' ``tools.Adam``)."""
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adam(learning_rate, eps=config.adam_eps),
    )


def validate(config: Config) -> None:
    """Raises ValueError on settings Dreamer cannot run."""
    for name in ("batch_size", "batch_length", "horizon", "train_steps", "action_repeat"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.horizon < 2:
        raise ValueError(
            f"horizon must be >= 2 (returns bootstrap at the last step), got {config.horizon}"
        )
    rows_per_env = config.warmup_steps // (config.action_repeat * config.num_envs)
    if rows_per_env < config.batch_length:
        raise ValueError(
            f"warmup_steps ({config.warmup_steps} frames) gives each env {rows_per_env} steps, "
            f"fewer than batch_length ({config.batch_length}): the first update could not "
            "sample a sequence"
        )
    if config.buffer_size < config.num_envs * config.batch_length:
        raise ValueError("buffer_size must hold batch_length steps per env")


def validate_spec(config: Config, env_spec: Any) -> None:
    """Raises ValueError when the conv encoder/decoder cannot take the env's images."""
    del config
    shape = tuple(getattr(env_spec, "observation_shape", ()))
    if is_image(shape) and shape[:2] != (64, 64):
        raise ValueError(
            f"Dreamer's conv encoder and decoder take 64x64 images, got {shape[0]}x{shape[1]} "
            "(--image_size=64)"
        )


def init_learner(
    key: jax.Array, obs_shape: tuple[int, ...], action_size: int, config: Config
) -> Learner:
    """Fresh parameters and optimizer states."""
    validate(config)
    return _init_learner(key, tuple(int(d) for d in obs_shape), int(action_size), config)


# Jitted, the parameters and optimizer states come from one compiled program;
# eagerly, flax's initializers compile op by op (20 s for Dreamer's CNN on 2
# cores, 7 s jitted). The values are the same.
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init_learner(
    key: jax.Array, obs_shape: tuple[int, ...], action_size: int, config: Config
) -> Learner:
    nets = networks(config, obs_shape, action_size)
    keys = jax.random.split(key, 7)
    dtype = jnp.uint8 if is_image(obs_shape) else jnp.float32
    obs = jnp.zeros((1,) + obs_shape, dtype)
    encoder = nets.encoder.init(keys[0], _preprocess(obs))
    embed_size = nets.encoder.apply(encoder, _preprocess(obs)).shape[-1]
    rssm = wm.init_rssm(nets.rssm, keys[1], embed_size, action_size)
    feat = jnp.zeros((1, config.stoch_size + config.deter_size))
    decoder_input = feat[:, : config.stoch_size] if config.decoder_stoch_only else feat
    model = {
        "encoder": encoder,
        "rssm": rssm,
        "decoder": nets.decoder.init(keys[2], decoder_input),
        "reward": nets.reward.init(keys[3], feat),
    }
    if nets.cont is not None:
        model["cont"] = nets.cont.init(keys[4], feat)
    actor, value = init_behavior(keys[5:7], config, nets, action_size)
    return Learner(
        model=model,
        actor=actor,
        value=value,
        model_opt=optimizer(config, config.model_lr).init(model),
        actor_opt=optimizer(config, config.actor_lr).init(actor),
        value_opt=optimizer(config, config.value_lr).init(value),
        config=config,
        obs_shape=obs_shape,
        action_size=action_size,
    )


def init_behavior(
    keys: jax.Array, config: Config, nets: Networks, action_size: int
) -> tuple[PyTree, PyTree]:
    """Fresh actor and critic parameters from two keys (the critic is
    ``V(feat)``, or ``Q(feat, action)`` with ``q_critic``)."""
    k_actor, k_critic = keys
    feat = jnp.zeros((1, config.stoch_size + config.deter_size))
    critic_input = feat
    if config.q_critic:
        critic_input = jnp.zeros((1, feat.shape[-1] + action_size))
    return nets.actor.init(k_actor, feat), nets.value.init(k_critic, critic_input)


def example_step(obs_shape: tuple[int, ...], action_size: int) -> SequenceStep:
    """A zero replay row (no batch axis); images are stored as uint8."""
    dtype = jnp.uint8 if is_image(obs_shape) else jnp.float32
    return SequenceStep(
        obs=jnp.zeros(obs_shape, dtype),
        action=jnp.zeros((action_size,)),
        reward=jnp.zeros(()),
        discount=jnp.zeros(()),
        is_first=jnp.zeros((), bool),
    )


def init(key: jax.Array, env_spec: Any, config: Config) -> AgentState:
    """Learner and an empty sequence replay (``buffer_size`` rows over all envs)."""
    obs_shape = tuple(getattr(env_spec, "observation_shape", (env_spec.observation_size,)))
    learner = init_learner(key, obs_shape, env_spec.action_size, config)
    capacity = -(-config.buffer_size // config.num_envs)
    buffer = sequence_lib.init(
        example_step(obs_shape, env_spec.action_size), config.num_envs, capacity
    )
    return AgentState(learner=learner, buffer=buffer)


def _learner(state: AgentState | Learner) -> Learner:
    return state.learner if isinstance(state, AgentState) else state


def _preprocess(obs: jax.Array) -> jax.Array:
    """Images (uint8) -> ``obs / 255 - 0.5``; vectors unchanged."""
    if obs.dtype == jnp.uint8:
        return wm.preprocess_image(obs)
    return obs.astype(jnp.float32)


def init_carry(state: AgentState | Learner, batch_size: int) -> Carry:
    """The carry at an episode start: the RSSM's initial (zero) state and a zero
    action (the authors' ``policy`` with ``state=None``, or a reset mask)."""
    learner = _learner(state)
    rssm = learner.nets.rssm
    return Carry(
        latent=rssm.initial((batch_size,)),
        action=jnp.zeros((batch_size, learner.action_size)),
    )


def observe_step(
    learner: Learner, carry: Carry, obs: jax.Array, key: jax.Array
) -> tuple[wm.RSSMState, jax.Array]:
    """Filters ``obs`` into the RSSM state: ``post = obs_step(carry.latent,
    carry.action, encode(obs))``.

    Returns:
      ``(post, feat)``: the posterior to carry, and the feature the policy
      reads: the posterior's, or the prior's when not ``observe_before_act``.
    """
    nets = learner.nets
    embed = nets.encoder.apply(learner.model["encoder"], _preprocess(obs))
    post, prior = nets.rssm.apply(
        learner.model["rssm"], carry.latent, carry.action, embed, key, method=wm.RSSM.obs_step
    )
    return post, wm.feature(post if learner.config.observe_before_act else prior)


def explore_action(config: Config, dist: policy_lib.GaussianParams, key: jax.Array) -> jax.Array:
    """An exploring action: the actor's sample, plus ``N(0, expl_amount^2)``
    noise clipped to ``[-1, 1]``, replaced by a uniform random action with
    probability ``random_action_prob`` (Revised Dreamer)."""
    k_act, k_noise = jax.random.split(key)
    action, _ = policy_lib.sample_and_log_prob(dist, k_act)
    if config.expl_amount:
        noise = config.expl_amount * jax.random.normal(k_noise, action.shape, action.dtype)
        action = jnp.clip(action + noise, -1.0, 1.0)
    if config.random_action_prob:
        k_coin, k_uniform = jax.random.split(jax.random.fold_in(k_noise, 1))
        coin = jax.random.uniform(k_coin, action.shape[:-1] + (1,)) < config.random_action_prob
        uniform = jax.random.uniform(k_uniform, action.shape, action.dtype, -1.0, 1.0)
        action = jnp.where(coin, uniform, action)
    return action


def act(
    state: AgentState | Learner,
    obs: jax.Array,
    key: jax.Array,
    deterministic: bool = False,
    carry: Carry | None = None,
) -> tuple[jax.Array, Carry]:
    """One policy step (the authors' ``Dreamer.policy``).

    ``latent = obs_step(carry.latent, carry.action, encode(obs))``
    (``observe_step``); the action is ``explore_action`` (the actor's sample
    plus exploration noise) or, when ``deterministic``, the actor's
    sample-based mode without noise.

    Args:
      state: agent state or learner.
      obs: ``[N, *obs_shape]`` observations.
      key: PRNG key.
      deterministic: evaluation mode.
      carry: the previous ``Carry`` (``init_carry`` at an episode start; that
        is also used when ``None``).

    Returns:
      ``(action [N, A], carry)``.
    """
    learner = _learner(state)
    config, nets = learner.config, learner.nets
    if carry is None:
        carry = init_carry(learner, obs.shape[0])
    k_obs, k_act = jax.random.split(key)
    latent, feat = observe_step(learner, carry, obs, k_obs)
    dist = nets.actor.apply(learner.actor, feat)
    if deterministic:
        action = policy_lib.sample_mode(dist, k_act, config.mode_samples)
    else:
        action = explore_action(config, dist, k_act)
    return action, Carry(latent=latent, action=action)


# ---------------------------------------------------------------------------
# Losses. ``batch`` leaves are time-major inside: [T, B, ...].


def model_loss(
    model: PyTree, learner: Learner, batch: SequenceStep, key: jax.Array
) -> tuple[jax.Array, tuple[dict, wm.RSSMState]]:
    """World-model loss (paper 004 eq. 3-4; ``world_model.model_loss``, with
    Revised Dreamer's divergence and reward loss by flag) on a time-major
    batch. Returns the posterior too (the imagination starts there).
    """
    config, nets = learner.config, learner.nets
    obs = _preprocess(batch.obs)
    # Chunks where the convs use the memory-hungry patch forms (CPU).
    patches = is_image(obs.shape[2:]) and resolve_impl("auto") == "patches"
    chunk = config.image_chunk if patches else 0
    embed = map_in_chunks(nets.encoder.apply, model["encoder"], obs, 2, chunk)
    post, prior = wm.observe(nets.rssm, model["rssm"], embed, batch.action, batch.is_first, key)
    feat = wm.feature(post)
    cont_logits = nets.cont.apply(model["cont"], feat) if nets.cont is not None else None
    decoder_input = post.stoch if config.decoder_stoch_only else feat
    loss, metrics = wm.model_loss(
        post,
        prior,
        map_in_chunks(nets.decoder.apply, model["decoder"], decoder_input, 2, chunk),
        obs,
        nets.reward.apply(model["reward"], feat),
        batch.reward,
        cont_logits=cont_logits,
        discount=batch.discount,
        gamma=config.gamma,
        pcont_scale=config.pcont_scale,
        kl_scale=config.kl_scale,
        nats=config.free_nats,
        fixed_prior=config.fixed_prior,
        jeffreys_scale=config.jeffreys_scale,
        reward_smooth_l1=config.smooth_l1,
    )
    return loss, (metrics, post)


class Imagination(NamedTuple):
    """What the actor loss computed and the critic loss (and MaxEnt Dreamer's
    MDN) reuse; everything stop-gradient.

    Attributes:
      inputs: the critic's inputs for the targets ``returns``, ``[H - 1, N,
        ...]``: the features of ``s_1 .. s_{H-1}`` (V), or those of ``s_0 ..
        s_{H-2}`` with the actions ``a_0 .. a_{H-2}`` taken there (Q).
      returns: lambda-returns ``G_1 .. G_{H-1}``, ``[H - 1, N]``.
      weight: ``[H - 1, N]`` cumulative discounts ``prod_{k<t} c_k`` (1 at t = 1).
      feat: features of the start and the imagined states ``s_0 .. s_H``,
        ``[H + 1, N, F]``.
    """

    inputs: jax.Array
    returns: jax.Array
    weight: jax.Array
    feat: jax.Array


def critic_value(nets: Networks, critic: PyTree, feat: jax.Array, action: jax.Array | None):
    """``V(feat)``, or ``Q(feat, action)`` when ``action`` is given (``q_critic``)."""
    if action is not None:
        feat = jnp.concatenate([feat, action], axis=-1)
    return nets.value.apply(critic, feat)


def policy_fn(nets: Networks, actor: PyTree, deterministic: bool = False):
    """``(feat, key) -> action`` for imagination: the actor reads stop-gradient
    features (as in Dreamer) and samples with the reparameterization trick,
    or, when ``deterministic``, returns ``tanh(mean)`` (MaxEnt Dreamer's
    deterministic agent)."""

    def fn(feat, key):
        params = nets.actor.apply(actor, jax.lax.stop_gradient(feat))
        if deterministic:
            return policy_lib.mode(params)
        action, _ = policy_lib.sample_and_log_prob(params, key)
        return action

    return fn


BonusFn = Callable[[jax.Array, jax.Array], jax.Array]


def actor_loss(
    actor: PyTree,
    learner: Learner,
    post: wm.RSSMState,
    key: jax.Array,
    critic: PyTree | None = None,
    deterministic: bool = False,
    bonus_fn: BonusFn | None = None,
) -> tuple[jax.Array, tuple[dict, Imagination]]:
    """Dreamer's actor objective on imagined trajectories (the authors' actor tape).

    From every posterior state ``s_0`` (stop-gradient; without the last step
    when a continuation head is learned, as that step could be terminal)
    imagine ``H`` prior steps ``s_1..s_H`` with ``a_k ~ pi(.|stop_grad(feat(s_k)))``
    (reparameterized). With ``r_t = reward(s_t)`` (the reward that comes with
    ``s_t``), ``v_t = V(s_t)`` and ``c_t = gamma`` (or ``c_t = P(continue |
    s_t)`` from the termination head, which learns ``gamma * discount``), the
    lambda-returns of paper 004 eq. 5 over ``t = 1..H-1``::

        G_t = r_t + c_t ((1 - lambda) v_{t+1} + lambda G_{t+1}),  G_H := v_H,

    and ``J = -mean_{t,n} [w_t G_t]`` with ``w_t = prod_{1<=k<t} c_k``
    (stop-gradient). A predicted termination at ``s_t`` (``c_t = 0``) keeps
    ``r_t`` and cuts everything after it, including the weights of later
    terms. The gradient reaches the actor through the actions and the
    learned dynamics (reward, value and RSSM parameters are held fixed).

    Revised Dreamer (paper 004 Sec. 4.2), by flag:

    * ``q_critic``: ``v_t = Q(s_t, a_t)`` with ``a_t`` the reparameterized
      action the actor takes at ``s_t`` in the rollout (``a_H`` is one more
      sample), a one-sample estimate of ``V(s) = E_{a ~ pi} Q(s, a)``
      through which the actor's gradient also flows. ``G_t`` is the target
      of ``Q(s_{t-1}, a_{t-1})``.
    * ``first_state_grad``: ``J = -mean_n G_1``: only the return of the
      first imagined step (the action taken at the real posterior state)
      is maximized, so the actor does not optimize rewards of imagined
      states an episode's end would never reach.

    ``bonus_fn(feat [H + 1, N, F], key) -> [S, N]`` (MaxEnt Dreamer,
    eq. 7) adds a bonus ``b_t`` for the decision at ``s_{t-1}`` to ``G_t``,
    ``t = 1..S``, before the weighting (``S = H - 1``, or ``S = 1`` with
    ``first_state_grad``); ``feat`` holds ``s_0 .. s_H`` and is
    differentiable with respect to the actor.

    Args:
      actor: actor parameters (differentiated).
      learner: world model and default critic.
      post: posterior states from ``model_loss``, leaves ``[T, B, size]``.
      key: PRNG key.
      critic: critic parameters (default ``learner.value``).
      deterministic: imagine with ``tanh(mean)`` actions.
      bonus_fn: optional bonus.
    """
    config, nets = learner.config, learner.nets
    model = learner.model
    critic = learner.value if critic is None else critic
    if config.pcont:
        post = jax.tree_util.tree_map(lambda x: x[:-1], post)
    start = jax.tree_util.tree_map(
        lambda x: jax.lax.stop_gradient(x.reshape((-1,) + x.shape[2:])), post
    )
    k_imagine, k_last, k_bonus = jax.random.split(key, 3)
    act_fn = policy_fn(nets, actor, deterministic)
    states, actions = wm.imagine(nets.rssm, model["rssm"], act_fn, start, config.horizon, k_imagine)
    feat = wm.feature(states)  # [H, N, F]: s_1 .. s_H
    reward = nets.reward.apply(model["reward"], feat)
    if config.pcont:
        pcont = jax.nn.sigmoid(nets.cont.apply(model["cont"], feat))
    else:
        pcont = config.gamma * jnp.ones_like(reward)
    if config.q_critic:
        taken = jnp.concatenate([actions[1:], act_fn(feat[-1], k_last)[None]], 0)
        value = critic_value(nets, critic, feat, taken)
    else:
        value = critic_value(nets, critic, feat, None)
    returns = jax.vmap(returns_lib.lambda_returns, in_axes=(1, 1, 1, None), out_axes=1)(
        reward[:-1], pcont[:-1], value[1:], config.lambda_
    )
    weight = jnp.cumprod(jnp.concatenate([jnp.ones_like(pcont[:1]), pcont[:-2]], 0), 0)
    weight = jax.lax.stop_gradient(weight)
    all_feat = jnp.concatenate([wm.feature(start)[None], feat], 0)  # s_0 .. s_H
    objective = returns
    metrics = {}
    if bonus_fn is not None:
        bonus = bonus_fn(all_feat, k_bonus)
        objective = returns[: bonus.shape[0]] + bonus
        metrics["imagine/bonus"] = jnp.mean(bonus)
    if config.first_state_grad:
        loss = -jnp.mean(objective[0])
    else:
        loss = -jnp.mean(weight[: objective.shape[0]] * objective)
    if config.q_critic:
        inputs = jnp.concatenate([all_feat[:-2], actions[:-1]], -1)
    else:
        inputs = feat[:-1]
    imagination = Imagination(
        inputs=jax.lax.stop_gradient(inputs),
        returns=jax.lax.stop_gradient(returns),
        weight=weight,
        feat=jax.lax.stop_gradient(all_feat),
    )
    metrics.update(
        {
            "loss/actor": loss,
            "imagine/return": jnp.mean(returns),
            "imagine/reward": jnp.mean(reward),
        }
    )
    return loss, (metrics, imagination)


def value_loss(
    critic: PyTree, learner: Learner, imagination: Imagination
) -> tuple[jax.Array, dict]:
    """``J = mean_{t,n} w_t l(C(x_t) - stop_grad(G_t))`` over ``t = 1..H-1``
    with ``C(x_t) = V(s_t)`` or ``Q(s_{t-1}, a_{t-1})`` and ``l(x) = x^2 / 2``
    (the authors' ``-log N(G_t; V(s_t), 1)`` without its constant) or, with
    ``smooth_l1``, the Huber loss with delta 1."""
    pred = learner.nets.value.apply(critic, imagination.inputs)
    if learner.config.smooth_l1:
        error = optax.huber_loss(pred, imagination.returns, delta=1.0)
    else:
        error = 0.5 * jnp.square(pred - imagination.returns)
    loss = jnp.mean(imagination.weight * error)
    return loss, {"loss/value": loss, "value/mean": jnp.mean(pred)}


def apply_gradients(params, opt_state, grads, config: Config, learning_rate: float):
    """One clipped Adam step; returns ``(params, opt_state, gradient norm)``."""
    updates, opt_state = optimizer(config, learning_rate).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, optax.tree.norm(grads)


def time_major(batch: SequenceStep) -> SequenceStep:
    """``[B, T, ...]`` (as sampled) -> ``[T, B, ...]``."""
    return jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), batch)


def update_all(
    learner: Learner, batch: SequenceStep, key: jax.Array, bonus_fn: BonusFn | None = None
) -> tuple[Learner, dict, wm.RSSMState, Imagination]:
    """``update``, also returning the posterior and the imagination (MaxEnt
    Dreamer trains more modules on them). ``batch`` is time-major."""
    config = learner.config
    k_model, k_actor = jax.random.split(key)
    (_, (model_metrics, post)), model_grads = jax.value_and_grad(model_loss, has_aux=True)(
        learner.model, learner, batch, k_model
    )
    (_, (actor_metrics, imagination)), actor_grads = jax.value_and_grad(actor_loss, has_aux=True)(
        learner.actor, learner, post, k_actor, bonus_fn=bonus_fn
    )
    (_, value_metrics), value_grads = jax.value_and_grad(value_loss, has_aux=True)(
        learner.value, learner, imagination
    )
    model, model_opt, model_norm = apply_gradients(
        learner.model, learner.model_opt, model_grads, config, config.model_lr
    )
    actor, actor_opt, actor_norm = apply_gradients(
        learner.actor, learner.actor_opt, actor_grads, config, config.actor_lr
    )
    value, value_opt, value_norm = apply_gradients(
        learner.value, learner.value_opt, value_grads, config, config.value_lr
    )
    new = learner.replace(
        model=model,
        actor=actor,
        value=value,
        model_opt=model_opt,
        actor_opt=actor_opt,
        value_opt=value_opt,
    )
    metrics = {
        **model_metrics,
        **actor_metrics,
        **value_metrics,
        "grad_norm/model": model_norm,
        "grad_norm/actor": actor_norm,
        "grad_norm/value": value_norm,
    }
    return new, metrics, jax.lax.stop_gradient(post), imagination


def update(learner: Learner, batch: SequenceStep, key: jax.Array) -> tuple[Learner, dict]:
    """One Dreamer update on ``batch_size`` sequences (the authors' ``_train``).

    The three losses are evaluated with the current parameters, then the
    world model, actor and value each take one clipped Adam step.

    Args:
      learner: parameters and optimizer states.
      batch: ``SequenceStep`` with leaves ``[B, T, ...]`` (as sampled).
      key: PRNG key.

    Returns:
      The new learner and a flat dict of scalar metrics.
    """
    learner, metrics, _, _ = update_all(learner, time_major(batch), key)
    return learner, metrics


# ---------------------------------------------------------------------------
# Runner interface.


def replay_rows(transition: Transition, is_first: jax.Array) -> tuple[SequenceStep, SequenceStep]:
    """The rows one environment step adds to replay, per env.

    ``start``: the episode's first observation with zero action and reward
    (written only where ``is_first``); ``arrival``: the next observation (the
    true one, before any reset) with the action and reward that led to it.
    Each observation is stored once.
    """
    zeros = jnp.zeros_like
    start = SequenceStep(
        obs=transition.obs,
        action=zeros(transition.action),
        reward=zeros(transition.reward),
        discount=jnp.ones_like(transition.discount),
        is_first=jnp.ones_like(is_first, bool),
    )
    arrival = SequenceStep(
        obs=transition.next_obs,
        action=transition.action,
        reward=transition.reward,
        discount=transition.discount,
        is_first=jnp.zeros_like(is_first, bool),
    )
    return start, arrival


def train_step(
    state: AgentState,
    transition: Transition,
    key: jax.Array,
    step: jax.Array,
    is_first: jax.Array,
) -> tuple[AgentState, dict]:
    """Stores the step (leading axis ``num_envs``); learning is in ``periodic``.

    Args:
      state: agent state.
      transition: the step just taken by each environment.
      key: unused (kept for the runner's contract).
      step: unused.
      is_first: ``[num_envs]``: ``transition.obs`` starts an episode.
    """
    del key, step
    start, arrival = replay_rows(transition, is_first)
    buffer = sequence_lib.add(state.buffer, start, valid=is_first)
    buffer = sequence_lib.add(buffer, arrival)
    return state.replace(buffer=buffer), {}


def periodic(state: AgentState, key: jax.Array, step: jax.Array) -> tuple[AgentState, dict]:
    """``train_steps`` updates on sampled sequences (every ``periodic_every`` frames).

    Metrics are the means over the updates; ``count/policy_updates`` counts them.
    """
    del step
    return train_phase(state, key, update, state.learner.config)


def train_phase(state: AgentState, key: jax.Array, update_fn, config: Config):
    """``config.train_steps`` scanned ``update_fn(learner, batch, key)`` calls,
    each on a fresh ``batch_size x batch_length`` sample of the replay."""

    def one(learner, k):
        k_sample, k_update = jax.random.split(k)
        batch = sequence_lib.sample(state.buffer, k_sample, config.batch_size, config.batch_length)
        return update_fn(learner, batch, k_update)

    learner, metrics = jax.lax.scan(one, state.learner, jax.random.split(key, config.train_steps))
    metrics = jax.tree_util.tree_map(jnp.mean, metrics)
    metrics["count/policy_updates"] = jnp.asarray(config.train_steps, jnp.int32)
    return state.replace(learner=learner), metrics

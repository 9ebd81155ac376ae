"""MaxEnt Dreamer (Svidchenko and Shpilman, paper 004): Dreamer that maximizes
the entropy of the discounted distribution of its future latent states, and
the paper's Fig. 3 ablations.

Algorithm (paper 004 Sec. 3-4, on top of ``memrl.agents.dreamer``):

* every environment step: store it in sequence replay (Dreamer's
  ``train_step``); act with the exploring agent (``act``);
* every ``periodic_every`` frames, ``train_steps`` updates (``update``):

  1. world model: Dreamer's loss (paper 004 eq. 3-4), with Revised
     Dreamer's modifications when they are on (``dreamer.REVISED``);
  2. exploring actor and its critic: Dreamer's imagination objective plus
     the entropy bonus of eq. 7, ``V(s_t) + beta H(P(. | s_t))``, where
     ``P`` is the *target* MDN and the entropy is the Monte-Carlo estimate
     of ``memrl.state_distribution`` over the imagined states (``bonus``);
     beta falls linearly from ``beta_start`` to ``beta_end`` over
     ``beta_frames`` frames (Sec. 5.1);
  3. MDN ``P(s | s_t)`` (``memrl.nets.mdn``): maximum likelihood on eq.
     10's importance-sampled discounted target over the exploring agent's
     imagined states, bootstrapped with samples of the target MDN at each
     rollout's last state (``mdn_loss``); the target MDN follows by
     ``theta_T <- (1 - tau) theta_T + tau theta`` after every update;
  4. the deterministic agent (Sec. 4.1): its own actor (``tanh(mean)``
     actions) and critic, trained on its own imagined rollouts from the same
     posterior states on reward alone. Evaluation (``act(...,
     deterministic=True)``) uses it.

All losses use the parameters from before the update, as in Dreamer.

Variants (``VARIANTS``, Fig. 3; ``Config.for_env(env, obs, variant)``):

* ``dreamer``: Dreamer as in the authors' code (no exploration bonus, no
  deterministic agent, Gaussian action noise);
* ``dreamer_explore``: Dreamer plus the exploration method (bonus, MDN,
  deterministic agent, no additive noise);
* ``revised``: Revised Dreamer only (Sec. 4.2: ``dreamer.REVISED``, random
  actions plus noise);
* ``maxent``: both (paper: Revised Dreamer's settings without additive
  noise; the random-action probability stays).

The paper's text leaves out (memrl's choices, documented here): the MDN
models the full feature ``(z, h)`` of the RSSM state; two hidden layers of
256 ELU units; one bootstrap sample per start; the entropy bonus uses every
start of each rollout that the actor's returns use (only the first with
``first_state_grad``); termination probabilities are left out of eq. 6, as
the paper does ("Below we will omit termination probabilities").
"""

# No `from __future__ import annotations` here: ml_collections reads Config field
# types at runtime to parse --config.<field> flags.
import dataclasses
from typing import Any

import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from memrl import state_distribution
from memrl.agents import dreamer
from memrl.nets import mdn as mdn_lib
from memrl.nets import policy as policy_lib
from memrl.types import SequenceStep

PyTree = Any

VARIANTS = ("dreamer", "dreamer_explore", "revised", "maxent")
DEFAULT_VARIANT = "maxent"
OBSERVATIONS = dreamer.OBSERVATIONS


@dataclasses.dataclass(unsafe_hash=True)
class Config(dreamer.Config):
    """MaxEnt Dreamer settings: ``dreamer.Config`` plus the exploration method.

    Paper 004 Sec. 5.1 unless stated.

    Attributes:
      variant: which of ``VARIANTS`` this config is (set by ``for_env``; a
        record for the logs, not a switch).
      explore: the entropy bonus and its MDN (Sec. 3-4.1).
      deterministic_agent: train the deterministic agent and evaluate with
        it (Sec. 4.1).
      mdn_hidden: MDN hidden width (256), ``mdn_layers`` layers (memrl: 2).
      mdn_components: mixture components (8).
      mdn_min_std: lower bound of the components' std (memrl: 0.01).
      state_discount: discount of the state distribution, g of eq. 6 (0.9).
      mdn_tau: soft-update rate of the target MDN (0.1, every update).
      mdn_lr: Adam step size of the MDN (2e-4).
      mdn_samples: bootstrap samples of the target MDN per start (memrl: 1).
      beta_start, beta_end: the entropy coefficient of eq. 7 falls linearly
        from 0.2 to 1e-4 "during the training process".
      beta_frames: frames over which beta falls (set it to the run's length;
        ``for_env`` uses the default run length of the environment).
    """

    variant: str = DEFAULT_VARIANT
    explore: bool = True
    deterministic_agent: bool = True
    mdn_hidden: int = 256
    mdn_layers: int = 2
    mdn_components: int = 8
    mdn_min_std: float = 0.01
    state_discount: float = 0.9
    mdn_tau: float = 0.1
    mdn_lr: float = 2e-4
    mdn_samples: int = 1
    beta_start: float = 0.2
    beta_end: float = 1e-4
    beta_frames: int = 1_000_000

    @classmethod
    def for_env(cls, env_name: str, obs: str = "state", variant: str = DEFAULT_VARIANT) -> "Config":
        """Dreamer's per-environment config (``dreamer.Config.for_env``) with
        ``variant``'s settings (see the module docstring)."""
        base = dreamer.Config.for_env(env_name, obs)
        config = cls(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
        if env_name in dreamer.CLASSIC:
            config = dataclasses.replace(config, beta_frames=CLASSIC_FRAMES.get(env_name, 20_000))
        return apply_variant(config, variant)


# Default run lengths (frames) of the classic tasks, over which beta falls.
CLASSIC_FRAMES = {"pendulum": 20_000, "double_integrator": 20_000, "mountain_car": 50_000}


def fit_to_run(config: Config, total_steps: int, overridden: set) -> Config:
    """Beta falls over the whole run: ``beta_frames = total_steps`` unless
    ``--config.beta_frames`` was given (called by ``memrl.training.cli``)."""
    if "beta_frames" in overridden:
        return config
    return dataclasses.replace(config, beta_frames=max(int(total_steps), 1))


def apply_variant(config: Config, variant: str) -> Config:
    """``config`` set up as one of ``VARIANTS``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    if variant in ("revised", "maxent"):
        config = dreamer.revised(config)
    explore = variant in ("dreamer_explore", "maxent")
    changes: dict = dict(variant=variant, explore=explore, deterministic_agent=explore)
    if explore:
        changes["expl_amount"] = 0.0
    return dataclasses.replace(config, **changes)


def validate(config: Config) -> None:
    """Raises ValueError on settings MaxEnt Dreamer cannot run."""
    dreamer.validate(config)
    if not 0.0 < config.state_discount < 1.0:
        raise ValueError(f"state_discount must be in (0, 1), got {config.state_discount}")
    if not 0.0 < config.mdn_tau <= 1.0:
        raise ValueError(f"mdn_tau must be in (0, 1], got {config.mdn_tau}")
    for name in ("mdn_components", "mdn_samples", "beta_frames", "mdn_hidden", "mdn_layers"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")


validate_spec = dreamer.validate_spec


def mdn_network(config: Config) -> mdn_lib.MDN:
    return mdn_lib.MDN(
        output_size=config.stoch_size + config.deter_size,
        components=config.mdn_components,
        hidden_sizes=(config.mdn_hidden,) * config.mdn_layers,
        activation=config.activation,
        min_std=config.mdn_min_std,
    )


@struct.dataclass
class Learner:
    """Everything ``update`` changes.

    Attributes:
      base: Dreamer's learner: the world model and the exploring actor and
        critic.
      mdn, mdn_target, mdn_opt: the MDN, its target copy and optimizer state
        (``()`` without ``explore``).
      det_actor, det_value, det_actor_opt, det_value_opt: the deterministic
        agent (``()`` without ``deterministic_agent``).
    """

    base: dreamer.Learner
    mdn: PyTree = ()
    mdn_target: PyTree = ()
    mdn_opt: PyTree = ()
    det_actor: PyTree = ()
    det_value: PyTree = ()
    det_actor_opt: PyTree = ()
    det_value_opt: PyTree = ()

    @property
    def config(self) -> Config:
        return self.base.config


def mdn_optimizer(config: Config) -> optax.GradientTransformation:
    """Adam (paper: 2e-4), after Dreamer's global-norm clipping."""
    return dreamer.optimizer(config, config.mdn_lr)


def init(key: jax.Array, env_spec: Any, config: Config) -> dreamer.AgentState:
    """Dreamer's learner and replay, plus the MDNs and the deterministic agent."""
    validate(config)
    k_base, k_mdn, k_det = jax.random.split(key, 3)
    state = dreamer.init(k_base, env_spec, config)
    base = state.learner
    learner = Learner(base=base)
    feat = jnp.zeros((1, config.stoch_size + config.deter_size))
    if config.explore:
        params = mdn_network(config).init(k_mdn, feat)
        learner = learner.replace(
            mdn=params, mdn_target=params, mdn_opt=mdn_optimizer(config).init(params)
        )
    if config.deterministic_agent:
        actor, value = dreamer.init_behavior(
            jax.random.split(k_det), config, base.nets, base.action_size
        )
        learner = learner.replace(
            det_actor=actor,
            det_value=value,
            det_actor_opt=dreamer.optimizer(config, config.actor_lr).init(actor),
            det_value_opt=dreamer.optimizer(config, config.value_lr).init(value),
        )
    return state.replace(learner=learner)


def init_carry(state: dreamer.AgentState, batch_size: int) -> dreamer.Carry:
    """Dreamer's carry (the RSSM state and the previous action)."""
    return dreamer.init_carry(state.learner.base, batch_size)


def act(
    state: dreamer.AgentState,
    obs: jax.Array,
    key: jax.Array,
    deterministic: bool = False,
    carry: dreamer.Carry | None = None,
) -> tuple[jax.Array, dreamer.Carry]:
    """The exploring agent's action (``dreamer.explore_action``; no additive
    noise when exploring by entropy), or, when ``deterministic``, the
    deterministic agent's ``tanh(mean)`` (Dreamer's sample-based mode of the
    exploring actor without a deterministic agent)."""
    learner = state.learner
    base, config = learner.base, learner.config
    if not (deterministic and config.deterministic_agent):
        return dreamer.act(base, obs, key, deterministic, carry)
    if carry is None:
        carry = dreamer.init_carry(base, obs.shape[0])
    latent, feat = dreamer.observe_step(base, carry, obs, key)
    action = policy_lib.mode(base.nets.actor.apply(learner.det_actor, feat))
    return action, dreamer.Carry(latent=latent, action=action)


train_step = dreamer.train_step


def beta(config: Config, step: jax.Array) -> jax.Array:
    """Eq. 7's entropy coefficient at frame ``step``: linear from
    ``beta_start`` to ``beta_end`` over ``beta_frames``, then constant."""
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / config.beta_frames, 0.0, 1.0)
    return (1.0 - frac) * config.beta_start + frac * config.beta_end


def discounted_log_prob(
    params: PyTree,
    config: Config,
    feat: jax.Array,
    num_starts: int,
    key: jax.Array,
    boot_params: PyTree | None = None,
) -> jax.Array:
    """``E_{s ~ q(.|s_t)} log P_params(s | s_t)`` (eq. 10) for the starts
    ``s_0 .. s_{num_starts-1}`` of rollouts ``feat = s_0 .. s_H [H + 1, N, F]``,
    bootstrapped with ``mdn_samples`` samples of ``P(. | s_H)`` under
    ``boot_params`` (the target MDN; those samples then carry no gradient),
    or under ``params`` itself (reparameterized) when it is None.

    Returns:
      ``[num_starts, N]``.
    """
    net = mdn_network(config)
    cond = net.apply(params, feat[:num_starts])  # [T, N, K, (F)]
    log_prob = mdn_lib.pairwise_log_prob(cond, feat[1:])  # [T, H, N]
    boot = params if boot_params is None else boot_params
    samples = mdn_lib.sample(net.apply(boot, feat[-1]), key, config.mdn_samples)  # [M, N, F]
    if boot_params is not None:
        samples = jax.lax.stop_gradient(samples)
    boot_log_prob = mdn_lib.pairwise_log_prob(cond, samples)  # [T, M, N]
    return state_distribution.expected_log_prob(log_prob, boot_log_prob, config.state_discount)


def num_starts(config: Config) -> int:
    """The starts ``s_0 .. s_{S-1}`` of each imagined rollout whose entropy the
    actor maximizes, and on which the MDN is fitted: ``S = 1`` (the posterior
    start) with ``first_state_grad``, else ``S = H - 1`` (every decision whose
    return the actor maximizes).

    Fitting P only where its entropy is used keeps the MDN's cost at one
    conditioning per start state with first-state gradients: the MDN's output
    layer (``K (2 F + 1)`` units, 3080 for the 192-dim features of the
    pendulum configuration) dominated the update when all ``H`` starts were
    used (measured: about 20x slower than Dreamer's own update on 2 CPU
    cores)."""
    return 1 if config.first_state_grad else config.horizon - 1


def mdn_loss(params: PyTree, target: PyTree, config: Config, feat: jax.Array, key: jax.Array):
    """Eq. 10's maximum likelihood: ``-mean_{t,n} [ sum_i w_i log P(s_{t+1+i}
    | s_t) + g^n E_{x ~ P_target(.|s_H)} log P(x | s_t) ]`` over the starts
    ``t < num_starts(config)`` of the (stop-gradient) imagined rollouts
    ``feat [H + 1, N, F]``. The bootstrap samples come from the target MDN
    and carry no gradient."""
    feat = jax.lax.stop_gradient(feat)
    expected = discounted_log_prob(params, config, feat, num_starts(config), key, target)
    loss = -jnp.mean(expected)
    return loss, {"mdn/loss": loss}


def bonus(target: PyTree, config: Config, beta_now: jax.Array) -> dreamer.BonusFn:
    """Eq. 7's ``beta H(P_target(. | s_t))`` for the decisions at ``s_0 ..
    s_{S-1}``, ``S = num_starts(config)`` (aligned with Dreamer's returns
    ``G_1 .. G_S``), estimated by ``-discounted_log_prob`` with the target
    MDN and differentiated through the imagined states and the
    reparameterized bootstrap samples. Returns ``[S, N]``."""

    def fn(feat, key):
        return -beta_now * discounted_log_prob(target, config, feat, num_starts(config), key)

    return fn


def update(
    learner: Learner, batch: SequenceStep, key: jax.Array, beta_now: jax.Array
) -> tuple[Learner, dict]:
    """One MaxEnt Dreamer update (module docstring, steps 1-4).

    Args:
      learner: parameters and optimizer states.
      batch: ``SequenceStep`` with leaves ``[B, T, ...]`` (as sampled).
      key: PRNG key.
      beta_now: the entropy coefficient.

    Returns:
      The new learner and a flat dict of scalar metrics.
    """
    config, base = learner.config, learner.base
    k_base, k_mdn, k_det = jax.random.split(key, 3)
    bonus_fn = bonus(learner.mdn_target, config, beta_now) if config.explore else None
    new_base, metrics, post, imagination = dreamer.update_all(
        base, dreamer.time_major(batch), k_base, bonus_fn
    )
    new = learner.replace(base=new_base)
    if config.explore:
        (_, mdn_metrics), grads = jax.value_and_grad(mdn_loss, has_aux=True)(
            learner.mdn, learner.mdn_target, config, imagination.feat, k_mdn
        )
        params, opt, norm = dreamer.apply_gradients(
            learner.mdn, learner.mdn_opt, grads, config, config.mdn_lr
        )
        target = optax.incremental_update(params, learner.mdn_target, config.mdn_tau)
        new = new.replace(mdn=params, mdn_target=target, mdn_opt=opt)
        metrics.update(mdn_metrics)
        metrics["grad_norm/mdn"] = norm
        metrics["explore/beta"] = beta_now
        # The entropy estimate behind the bonus (its mean over the starts used).
        metrics["explore/entropy"] = metrics["imagine/bonus"] / jnp.maximum(beta_now, 1e-12)
    if config.deterministic_agent:
        (_, (actor_metrics, det_imagination)), actor_grads = jax.value_and_grad(
            dreamer.actor_loss, has_aux=True
        )(learner.det_actor, base, post, k_det, critic=learner.det_value, deterministic=True)
        (_, value_metrics), value_grads = jax.value_and_grad(dreamer.value_loss, has_aux=True)(
            learner.det_value, base, det_imagination
        )
        actor, actor_opt, _ = dreamer.apply_gradients(
            learner.det_actor, learner.det_actor_opt, actor_grads, config, config.actor_lr
        )
        value, value_opt, _ = dreamer.apply_gradients(
            learner.det_value, learner.det_value_opt, value_grads, config, config.value_lr
        )
        new = new.replace(
            det_actor=actor, det_value=value, det_actor_opt=actor_opt, det_value_opt=value_opt
        )
        det_metrics = {**actor_metrics, **value_metrics}
        metrics.update({f"deterministic/{k}": v for k, v in det_metrics.items()})
    return new, metrics


def periodic(
    state: dreamer.AgentState, key: jax.Array, step: jax.Array
) -> tuple[dreamer.AgentState, dict]:
    """``train_steps`` updates (every ``periodic_every`` frames) with beta at
    frame ``step``."""
    config = state.learner.config
    beta_now = beta(config, step)
    return dreamer.train_phase(
        state, key, lambda lrn, batch, k: update(lrn, batch, k, beta_now), config
    )

"""Maximum Entropy Model Rollouts (Zhang, Kuppannagari, Prasanna; MEMR),
``../shared/papers/000_9b0533898cb63deb.txt``.

Dyna with single-step model rollouts from real states chosen to maximize the
entropy of the model dataset (Algorithm 1):

* every ``periodic_every`` (250) steps: fit the ensemble on ``D_env`` (line 5);
* each environment step ``t`` (line 8): store ``(s_t, a_t, r_t, s_{t+1})`` in the
  prioritized ``D_env`` with priority ``p_t`` of eq. 4;
* lines 9-13: draw ``M`` states with ``P(j) = p_j^alpha / sum_i p_i^alpha``
  (eq. 3), importance weights ``w_j = (N P(j))^-beta / max_i w_i`` (eq. 5,
  beta annealed linearly 0.4 -> 1.0), ``a_j ~ pi_phi(.|s_j)`` and one model step;
* line 14: the ``M`` transitions and their weights form one segment of
  ``D_model`` (segmented replay, Fig. 1);
* line 15: fit the model-data policy ``pi_psi`` (a diagonal Gaussian) to the
  new pairs ``(s_j, a_j)`` by maximum likelihood for ``D`` epochs;
* line 16: set the priorities of the sampled states by eq. 4 under the
  updated ``pi_psi``;
* lines 17-21: ``G`` SAC updates, each on a batch from one uniformly chosen
  segment, the critic loss weighted by ``w`` (line 19).

Eq. 4 for a diagonal Gaussian ``pi_psi`` (see ``max_entropy_priority``): per
dimension ``-log(sqrt(2 pi) N(a; mu, sigma) sigma) = (a - mu)^2 / (2 sigma^2)``.
Dimensions are combined by summing, i.e. ``-log((2 pi)^(D/2) pi_psi(a|s) prod_d
sigma_d)``: with independent dimensions the joint entropy gain of Lemma A.1 is
the sum of the per-dimension gains, and the sum is the squared Mahalanobis
distance / 2, invariant to rescaling any action dimension.

Paper vs. the authors' code (DESIGN.md Sec. 6): the paper rolls out every step
(``rollout_every = 1``); the code draws ``M x 50`` states every 50 steps into
one segment (``rollout_every = 50``). The code fits a squashed Gaussian
(``model_policy_squashed``) and clips priorities to ``[1e-4, 50]`` (we clip
too: a zero priority would never be sampled again, and eq. 4 is unbounded).
"""

# No `from __future__ import annotations`: ml_collections reads Config types.
import dataclasses
from typing import Any

import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from memrl.agents import model_based, sac
from memrl.agents.common import computed_when, gradient_step
from memrl.nets import dynamics
from memrl.nets import policy as policy_lib
from memrl.nets.policy import GaussianParams
from memrl.replay import prioritized, segmented
from memrl.types import Transition

# MEMR Table 1 (App. D): total environment steps and model-dataset size.
_TABLE1 = {
    "halfcheetah": (400_000, 3_000_000),
    "walker2d": (300_000, 3_000_000),
    "ant": (300_000, 6_000_000),
    "hopper": (125_000, 1_000_000),
}


@dataclasses.dataclass(unsafe_hash=True)
class Config(model_based.ModelConfig):
    """MEMR settings; defaults from Table 1 (App. D) and DESIGN.md Sec. 6.

    Attributes:
      rollouts_per_step: M, model rollouts per environment step (400).
      rollout_every: steps between rollout rounds; each round draws
        ``M * rollout_every`` states into one segment (paper 1, code 50).
      priority_alpha: alpha of eq. 3 (0.6).
      beta_start: beta of eq. 5 at the start (0.4).
      beta_end: beta at ``anneal_steps`` and after (1.0).
      anneal_steps: environment steps of the linear beta schedule (the run
        length of Table 1).
      model_policy_epochs: D, maximum-likelihood epochs of pi_psi per round (2).
      model_policy_hidden_sizes: pi_psi's MLP widths.
      model_policy_learning_rate: pi_psi's Adam step size.
      model_policy_squashed: fit pi_psi to ``atanh(a)`` (the authors' squashed
        Gaussian) instead of to ``a`` (the paper's Gaussian).
      priority_min, priority_max: priorities are clipped to this range.
      model_dataset_size: capacity of D_model in transitions (Table 1).
      updates_per_step: G, SAC updates per environment step (5).
      buffer_size: capacity of D_env.
      warmup_steps: initial uniform-random steps (not given by the paper; 1000
        as in SAC's reference runs, so the model is first fit at step 1000).
      target_entropy: SAC's entropy target; ``None`` means ``-(|A| // 2)``,
        the authors' choice (-3, -1, -3 and -4 on HalfCheetah, Hopper,
        Walker2d and Ant; 0 on pendulum), not SAC's ``-|A|``
        (``target_entropy_for``).
    """

    rollouts_per_step: int = 400
    rollout_every: int = 1
    priority_alpha: float = 0.6
    beta_start: float = 0.4
    beta_end: float = 1.0
    anneal_steps: int = 400_000
    model_policy_epochs: int = 2
    model_policy_hidden_sizes: tuple[int, ...] = (256, 256)
    model_policy_learning_rate: float = 3e-4
    model_policy_squashed: bool = False
    priority_min: float = 1e-4
    priority_max: float = 50.0
    model_dataset_size: int = 3_000_000
    updates_per_step: int = 5
    warmup_steps: int = 1000
    # The ensemble of the authors' code: 5 members, 4x512 ReLU + LayerNorm,
    # normalized deltas, batch 512, 10% validation.
    model_members: int = 5
    model_elites: int = 5
    model_hidden_sizes: tuple[int, ...] = (512, 512, 512, 512)
    model_activation: str = "relu"
    model_layer_norm: bool = True
    model_batch_size: int = 512
    model_holdout_fraction: float = 0.1
    model_normalize_targets: bool = True

    def run_length(self) -> int | None:
        """Environment steps of the paper's runs (Table 1), None elsewhere."""
        return _TABLE1[self.env_name][0] if self.env_name in _TABLE1 else None

    @classmethod
    def for_env(cls, env_name: str) -> "Config":
        """Table 1 for the MuJoCo tasks; CPU-sized settings for classic control."""
        if env_name in _TABLE1:
            steps, size = _TABLE1[env_name]
            return cls(env_name=env_name, anneal_steps=steps, model_dataset_size=size)
        # Not in the paper: sized so a CPU run finishes in minutes.
        return cls(
            env_name=env_name,
            anneal_steps=10_000,
            model_dataset_size=400 * 250,
            buffer_size=100_000,
            warmup_steps=1000,
            model_members=5,
            model_elites=3,
            model_hidden_sizes=(200, 200, 200),
            model_layer_norm=False,
            model_batch_size=256,
            model_max_epochs=20,
        )


@struct.dataclass
class ModelPolicy:
    """pi_psi, the Gaussian fitted to the model dataset's actions (Problem 3.1)."""

    params: Any
    opt_state: optax.OptState


@struct.dataclass
class AgentState:
    """SAC learner, ensemble, pi_psi and MEMR's two buffers.

    Attributes:
      learner: SAC parameters and optimizer states.
      model: the ensemble.
      model_policy: pi_psi.
      env_buffer: prioritized D_env (sum tree of ``p^alpha``).
      model_buffer: segmented D_model with importance weights.
    """

    learner: sac.Learner
    model: dynamics.ModelState
    model_policy: ModelPolicy
    env_buffer: prioritized.PrioritizedState
    model_buffer: segmented.SegmentedState


def max_entropy_priority(mean: jax.Array, std: jax.Array, action: jax.Array) -> jax.Array:
    """MEMR eq. 4, ``p = -log(sqrt(2 pi) pi_psi(a|s) sigma(pi_psi(.|s)))``, for a
    diagonal Gaussian ``pi_psi = N(mean, diag(std^2))``.

    Per dimension the expression reduces to ``(a - mean)^2 / (2 std^2)``; the
    dimensions are summed (see the module docstring).

    Args:
      mean, std, action: ``[..., D]``.

    Returns:
      ``[...]`` non-negative priorities (not yet clipped).
    """
    z = (action - mean) / std
    return 0.5 * jnp.sum(z**2, axis=-1)


def _model_policy_net(config: Config, action_size: int) -> policy_lib.TanhGaussianPolicy:
    """pi_psi's network: ``s -> (mean, log_std)``; its density is the plain
    Gaussian (``policy_lib.gaussian_log_prob``), never squashed here."""
    return policy_lib.TanhGaussianPolicy(action_size, tuple(config.model_policy_hidden_sizes))


def _policy_target(config: Config, action: jax.Array) -> jax.Array:
    """What pi_psi models: ``a`` (paper) or ``atanh(a)`` (authors' squashed Gaussian)."""
    if config.model_policy_squashed:
        return jnp.arctanh(jnp.clip(action, -1 + 1e-6, 1 - 1e-6))
    return action


def _model_policy_optimizer(config: Config) -> optax.GradientTransformation:
    return optax.adam(config.model_policy_learning_rate)


def priorities(config: Config, policy: ModelPolicy, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Eq. 4 under pi_psi, clipped to ``[priority_min, priority_max]``."""
    dist: GaussianParams = _model_policy_net(config, action.shape[-1]).apply(policy.params, obs)
    p = max_entropy_priority(dist.mean, jnp.exp(dist.log_std), _policy_target(config, action))
    return jnp.clip(p, config.priority_min, config.priority_max)


def model_policy_loss(params, config: Config, obs: jax.Array, action: jax.Array):
    """Negative log-likelihood of ``(s, a)`` under pi_psi (line 15)."""
    net = _model_policy_net(config, action.shape[-1])
    nll = -jnp.mean(
        policy_lib.gaussian_log_prob(net.apply(params, obs), _policy_target(config, action))
    )
    return nll, {"model_policy/nll": nll}


def fit_model_policy(
    config: Config, policy: ModelPolicy, obs: jax.Array, action: jax.Array
) -> tuple[ModelPolicy, dict]:
    """``D`` full-batch maximum-likelihood epochs on the new pairs (line 15)."""
    step = gradient_step(model_policy_loss, _model_policy_optimizer(config))

    def epoch(carry, _):
        params, opt_state = carry
        params, opt_state, metrics = step(params, opt_state, config, obs, action)
        return (params, opt_state), metrics

    (params, opt_state), metrics = jax.lax.scan(
        epoch, (policy.params, policy.opt_state), None, length=config.model_policy_epochs
    )
    return ModelPolicy(params, opt_state), jax.tree_util.tree_map(lambda m: m[-1], metrics)


def beta(config: Config, step: jax.Array) -> jax.Array:
    """Linear annealing of the IS exponent from ``beta_start`` to ``beta_end``."""
    frac = jnp.clip(step / max(config.anneal_steps, 1), 0.0, 1.0)
    return config.beta_start + frac * (config.beta_end - config.beta_start)


def segment_size(config: Config) -> int:
    return config.rollouts_per_step * config.rollout_every


def validate(config: Config) -> None:
    """Raises ValueError on schedules that learn before the first model fit or
    the first rollout round."""
    model_based.validate_schedule(
        config, {"periodic_every": config.periodic_every, "rollout_every": config.rollout_every}
    )


def target_entropy_for(config: Config, action_size: int) -> float:
    """MEMR's SAC entropy target: ``config.target_entropy`` if set, else the
    authors' ``-(|A| // 2)`` (SAC's own default is ``-|A|``)."""
    if config.target_entropy is not None:
        return float(config.target_entropy)
    return -float(action_size // 2)


def init(key: jax.Array, env_spec: Any, config: Config) -> AgentState:
    """Learner, ensemble, pi_psi and the two buffers. The SAC learner keeps
    ``config`` with ``target_entropy`` resolved by ``target_entropy_for``."""
    k_learner, k_model, k_policy = jax.random.split(key, 3)
    obs_size, action_size = env_spec.observation_size, env_spec.action_size
    config = dataclasses.replace(config, target_entropy=target_entropy_for(config, action_size))
    example = sac.example_transition(obs_size, action_size)
    net = _model_policy_net(config, action_size)
    psi = net.init(k_policy, jnp.zeros((1, obs_size)))
    m = segment_size(config)
    return AgentState(
        learner=sac.init_learner(k_learner, obs_size, action_size, config),
        model=model_based.init_model(k_model, env_spec, config),
        model_policy=ModelPolicy(psi, _model_policy_optimizer(config).init(psi)),
        env_buffer=prioritized.init(example, config.buffer_size),
        model_buffer=segmented.init(example, max(config.model_dataset_size // m, 1), m),
    )


def act(state: AgentState, obs: jax.Array, key: jax.Array, deterministic: bool = False):
    return sac.act(state.learner, obs, key, deterministic)


update = sac.update


def periodic(state: AgentState, key: jax.Array, step: jax.Array) -> tuple[AgentState, dict]:
    """Line 5: fit the ensemble to the real data (every ``periodic_every`` steps)."""
    del step
    config = state.learner.config
    model, metrics = model_based.train_model(state.model, state.env_buffer.buffer, key, config)
    return state.replace(model=model), metrics


def generate(state: AgentState, key: jax.Array, step: jax.Array) -> tuple[AgentState, dict]:
    """Lines 9-16: prioritized states, one-step rollouts into a new segment,
    pi_psi fit, priority update."""
    config = state.learner.config
    k_sample, k_roll = jax.random.split(key)
    drawn = prioritized.sample(state.env_buffer, k_sample, segment_size(config), beta(config, step))
    out = model_based.model_step(
        state.learner, state.model, drawn.items.obs, k_roll, config.env_name
    )
    model_buffer = segmented.add(state.model_buffer, out.transition, drawn.weights)
    psi, psi_metrics = fit_model_policy(
        config, state.model_policy, out.transition.obs, out.transition.action
    )
    p = priorities(config, psi, out.transition.obs, out.transition.action)
    env_buffer = prioritized.update_priorities(
        state.env_buffer, drawn.indices, p, config.priority_alpha
    )
    metrics = {
        **psi_metrics,
        "priority/mean": jnp.mean(p),
        "priority/is_weight": jnp.mean(drawn.weights),
        "priority/beta": beta(config, step),
        "count/model_rollouts": jnp.int32(segment_size(config)),
    }
    state = state.replace(env_buffer=env_buffer, model_buffer=model_buffer, model_policy=psi)
    return state, metrics


def train_step(
    state: AgentState, transition: Transition, key: jax.Array, step: jax.Array
) -> tuple[AgentState, dict]:
    """Lines 7-21 for one environment step (see the module docstring)."""
    config = state.learner.config
    k_gen, k_update = jax.random.split(key)
    p_new = priorities(config, state.model_policy, transition.obs, transition.action)
    state = state.replace(
        env_buffer=prioritized.add(state.env_buffer, transition, p_new, config.priority_alpha)
    )
    learning = step >= config.warmup_steps
    due = learning & (step % config.rollout_every == 0)

    def skip(s, k, t):
        shapes = jax.eval_shape(generate, s, k, t)[1]
        return s, jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)

    state, gen_metrics = jax.lax.cond(due, generate, skip, state, k_gen, step)
    # Rollout metrics exist on rollout steps only: averaged over those.
    gen_metrics = computed_when(due, gen_metrics)

    def sample_batch(k):
        return segmented.sample(state.model_buffer, k, config.batch_size)

    learner, metrics = sac.repeated_updates(
        state.learner, sample_batch, k_update, config.updates_per_step, learning
    )
    return state.replace(learner=learner), {**metrics, **gen_metrics}

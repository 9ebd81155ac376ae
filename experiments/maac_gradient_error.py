"""MAAC Sec. 5.2 / Fig. 3: L1 error of the MAAC policy gradient against the
analytic gradient of the expected return on the double integrator, for
H = 0..max_horizon, with the learned ensemble and with the true dynamics.

    python -m experiments.maac_gradient_error --logdir=runs/maac_gradient_error

The reference is ``dJ/dK``, the analytic gradient of the expected discounted
return from ``s_0 ~ U[-2, 2]^2`` (``double_integrator.expected_return`` over
``--return_horizon`` steps; ``memrl.diagnostics.gradient_error``), the same for
every H. Per seed: collect ``--episodes`` episodes with the linear policy
(plus exploration noise), fit the ensemble (``memrl.nets.dynamics``) to early
stopping (MBPO/MAAC's holdout rule; the reward is known, as in MAAC) and a Q
network (an MLP regressed on the policy's exact Q), then for each H take the
pathwise gradient of ``J_H(K)`` with

  (a) ``learned_model``: the learned model and the learned Q (MAAC's estimator);
  (b) ``true_dynamics``: the true dynamics and the learned Q;
  (c) ``true_dynamics_exact_q_fixed``: the true dynamics and the exact
      ``Q^pi`` of the current policy held fixed while ``K`` moves (a perfect
      critic used as MAAC uses its critic): the bias of the H-step surrogate
      from ``s_0 ~ p_0``, which keeps only the first ``H + 1`` terms of the
      policy-gradient sum over time;
  (d) ``true_dynamics_exact_q_of_policy``: the true dynamics and ``Q^{pi_K}``
      rebuilt from the differentiated ``K``, so ``J_H = J``: the Monte-Carlo
      floor.

Writes ``gradient_error.csv`` (one row per seed, H, estimator: absolute and
relative L1 error, the estimate, the model's holdout MSE and epochs),
``summary.csv`` (mean and std over seeds of both errors) and
``gradient_error.png`` (absolute error, relative error on the right axis).
"""

from __future__ import annotations

import csv
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from memrl.diagnostics import gradient_error as ge
from memrl.envs import double_integrator as di
from memrl.nets import dynamics
from memrl.nets.mlp import MLP
from memrl.types import Transition

FLAGS = flags.FLAGS
flags.DEFINE_string("logdir", "runs/maac_gradient_error", "Output directory.")
flags.DEFINE_integer("seed", 0, "First seed.")
flags.DEFINE_integer("num_seeds", 3, "Seeds (independent data, model, Q and noise).")
flags.DEFINE_integer("max_horizon", 10, "Largest H.")
flags.DEFINE_float("gamma", 0.99, "Discount.")
flags.DEFINE_integer(
    "return_horizon", 2000, "Steps of the expected return whose gradient is the reference."
)
flags.DEFINE_integer("num_starts", 8192, "Start states of the Monte-Carlo objective.")
flags.DEFINE_integer("episodes", 5, "Episodes of 200 steps to train the model on.")
flags.DEFINE_float("explore_std", 1.0, "Action noise of the data-collecting policy.")
flags.DEFINE_integer("model_members", 8, "Ensemble members (MAAC: 8).")
flags.DEFINE_list("model_hidden_sizes", ["64", "64"], "Hidden widths of each member.")
flags.DEFINE_integer(
    "model_epochs", 1000, "Most epochs of model training (early stopping ends it first)."
)
flags.DEFINE_integer(
    "model_patience", 5, "Stop after this many epochs without holdout improvement (MBPO: 5)."
)
flags.DEFINE_list("q_hidden_sizes", ["64", "64"], "Hidden widths of the Q network.")
flags.DEFINE_integer("q_steps", 5000, "Adam steps of the Q regression.")
flags.DEFINE_string("q_activation", "swish", "Hidden activation of the Q network.")
flags.DEFINE_list("gain", ["-0.5", "-1.0"], "The policy gain K.")
flags.DEFINE_float("policy_std", 0.3, "The policy's action standard deviation.")

ESTIMATORS = (
    "learned_model",
    "true_dynamics",
    "true_dynamics_exact_q_fixed",
    "true_dynamics_exact_q_of_policy",
)


def collect(key, policy: ge.LinearPolicy, episodes: int, explore_std: float) -> Transition:
    """``episodes`` x 200 transitions of the policy with extra action noise."""
    k_s, k_a = jax.random.split(key)
    r = di.INIT_RANGE
    s0 = jax.random.uniform(k_s, (episodes, 2), minval=-r, maxval=r)
    eps = jax.random.normal(k_a, (di.EPISODE_LENGTH, episodes, 1))

    def body(s, e):
        a = s @ policy.K.T + explore_std * e
        s_next = di.dynamics(s, a)
        return s_next, Transition(s, a, di.reward(s, a), jnp.ones(episodes), s_next)

    _, data = jax.lax.scan(body, s0, eps)
    return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), data)


def fit_q(
    key, policy: ge.LinearPolicy, q_true, states: jax.Array, hidden, steps: int, activation: str
):
    """An MLP ``Q(s, a)`` regressed on the exact ``Q`` at ``s`` from the data and
    ``a = K s + sigma eps`` on targets divided by ``scale``; returns
    ``(net, params, scale)``, ``Q(s, a) = scale * net(params, [s, a])``."""
    net = MLP(tuple(hidden), 1, activation)
    k_init, k_loop = jax.random.split(key)
    params = net.init(k_init, jnp.zeros((1, 3)))
    scale = jnp.std(q_true(states, states @ policy.K.T)) + 1e-6
    opt = optax.adam(1e-3)

    def loss(params, s, a):
        pred = net.apply(params, jnp.concatenate([s, a], -1))[..., 0]
        return jnp.mean((pred - q_true(s, a) / scale) ** 2)

    def step(carry, k):
        params, opt_state = carry
        k_i, k_e = jax.random.split(k)
        s = states[jax.random.randint(k_i, (512,), 0, states.shape[0])]
        a = policy.act(s, jax.random.normal(k_e, (512, 1)))
        grads = jax.grad(loss)(params, s, a)
        updates, opt_state = opt.update(grads, opt_state)
        return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(k_loop, steps))
    return net, params, scale


@functools.partial(jax.jit, static_argnames=("horizon", "estimator", "q_net", "gamma"))
def estimate(policy, model, q_params, q_scale, noise, *, horizon, estimator, q_net, gamma):
    """``[1, 2]`` pathwise gradient of ``J_horizon(K)`` by ``estimator`` (one of
    ``ESTIMATORS``). Everything learned is an argument, so each (H, estimator)
    compiles once for all seeds."""

    def learned_q(s, a):
        return q_scale * q_net.apply(q_params, jnp.concatenate([s, a], -1))[..., 0]

    def learned_step(s, a, member, eps):
        return dynamics.step_with(model, s, a, member, eps)[0]

    def true_step(s, a, member, eps):
        return di.dynamics(s, a)

    if estimator == "learned_model":
        step_fn, critic_fn = learned_step, ge.held_fixed(learned_q)
    elif estimator == "true_dynamics":
        step_fn, critic_fn = true_step, ge.held_fixed(learned_q)
    elif estimator == "true_dynamics_exact_q_fixed":
        q_now = ge.exact_q(ge.exact_value(policy, gamma), gamma)
        step_fn, critic_fn = true_step, ge.held_fixed(q_now)
    elif estimator == "true_dynamics_exact_q_of_policy":
        step_fn, critic_fn = true_step, ge.exact_q_of_policy(gamma)
    else:
        raise ValueError(f"unknown estimator {estimator!r}")
    return ge.pathwise_gradient(policy, step_fn, critic_fn, noise, horizon, gamma)


def run_seed(seed: int) -> list[dict]:
    key = jax.random.PRNGKey(seed)
    k_data, k_model, k_train, k_q, k_noise = jax.random.split(key, 5)
    gain = jnp.array([[float(g) for g in FLAGS.gain]])
    policy = ge.LinearPolicy(K=gain, log_std=jnp.log(jnp.float32(FLAGS.policy_std)))
    gamma = FLAGS.gamma
    q_true = ge.exact_q(ge.exact_value(policy, gamma), gamma)
    reference = ge.policy_gradient(policy, gamma, FLAGS.return_horizon)

    data = collect(k_data, policy, FLAGS.episodes, FLAGS.explore_std)
    config = dynamics.EnsembleConfig.maac(
        num_members=FLAGS.model_members,
        num_elites=FLAGS.model_members,
        hidden_sizes=tuple(int(h) for h in FLAGS.model_hidden_sizes),
        predict_reward=False,
        max_epochs=FLAGS.model_epochs,
        patience=FLAGS.model_patience,
    )
    model = dynamics.init(k_model, 2, 1, config)
    model, model_metrics = jax.jit(dynamics.train)(model, data, data.obs.shape[0], k_train)
    q_net, q_params, q_scale = fit_q(
        k_q,
        policy,
        q_true,
        data.obs,
        [int(h) for h in FLAGS.q_hidden_sizes],
        FLAGS.q_steps,
        FLAGS.q_activation,
    )
    noise = ge.sample_noise(
        k_noise, FLAGS.num_starts, FLAGS.max_horizon, model.target_size, config.num_members
    )
    rows = []
    for h in range(FLAGS.max_horizon + 1):
        for name in ESTIMATORS:
            grad = estimate(
                policy,
                model,
                q_params,
                q_scale,
                noise,
                horizon=h,
                estimator=name,
                q_net=q_net,
                gamma=gamma,
            )
            rows.append(
                dict(
                    seed=seed,
                    horizon=h,
                    estimator=name,
                    l1_error=float(ge.l1_error(grad, reference)),
                    relative_l1_error=float(ge.relative_l1_error(grad, reference)),
                    grad_k0=float(grad[0, 0]),
                    grad_k1=float(grad[0, 1]),
                    reference_k0=float(reference[0, 0]),
                    reference_k1=float(reference[0, 1]),
                    model_val_mse=float(model_metrics["model/val_mse"]),
                    model_epochs=int(model_metrics["model/epochs"]),
                )
            )
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for h in sorted({r["horizon"] for r in rows}):
        for name in ESTIMATORS:
            sel = [r for r in rows if r["horizon"] == h and r["estimator"] == name]
            errs = np.array([r["l1_error"] for r in sel])
            rel = np.array([r["relative_l1_error"] for r in sel])
            out.append(
                dict(
                    horizon=h,
                    estimator=name,
                    mean=errs.mean(),
                    std=errs.std(),
                    relative_mean=rel.mean(),
                    relative_std=rel.std(),
                )
            )
    return out


def write_csv(path: str, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(path: str, summary: list[dict], reference_l1: float) -> None:
    """Absolute L1 error (left axis, log scale) and ``/ ||dJ/dK||_1`` (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    labels = {
        "learned_model": "learned model, learned Q",
        "true_dynamics": "true dynamics, learned Q",
        "true_dynamics_exact_q_fixed": "true dynamics, exact Q held fixed",
        "true_dynamics_exact_q_of_policy": "true dynamics, exact Q of pi_K (MC floor)",
    }
    styles = {"true_dynamics": "--"}  # It lies on the learned model's curve.
    for name in ESTIMATORS:
        pts = [r for r in summary if r["estimator"] == name]
        h = np.array([r["horizon"] for r in pts])
        m = np.array([r["mean"] for r in pts])
        s = np.array([r["std"] for r in pts])
        ax.plot(h, m, marker="o", linestyle=styles.get(name, "-"), label=labels[name])
        ax.fill_between(h, np.maximum(m - s, 1e-3 * m), m + s, alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("horizon H")
    ax.set_ylabel("L1 error of dJ/dK")
    scale = reference_l1
    right = ax.secondary_yaxis("right", functions=(lambda x: x / scale, lambda x: x * scale))
    right.set_ylabel(f"relative L1 error (||dJ/dK||_1 = {scale:.1f})")
    ax.set_title("MAAC gradient error (double integrator)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv):
    del argv
    for name in (
        "num_seeds",
        "num_starts",
        "episodes",
        "model_epochs",
        "model_patience",
        "q_steps",
    ):
        if getattr(FLAGS, name) <= 0:
            print(f"error: --{name} must be a positive integer", file=sys.stderr)
            sys.exit(2)
    if FLAGS.max_horizon < 0:
        print("error: --max_horizon must be non-negative", file=sys.stderr)
        sys.exit(2)
    os.makedirs(FLAGS.logdir, exist_ok=True)
    rows = []
    for seed in range(FLAGS.seed, FLAGS.seed + FLAGS.num_seeds):
        rows += run_seed(seed)
    summary = summarize(rows)
    write_csv(os.path.join(FLAGS.logdir, "gradient_error.csv"), rows)
    write_csv(os.path.join(FLAGS.logdir, "summary.csv"), summary)
    reference_l1 = abs(rows[0]["reference_k0"]) + abs(rows[0]["reference_k1"])
    plot(os.path.join(FLAGS.logdir, "gradient_error.png"), summary, reference_l1)
    print(f"reference dJ/dK = [{rows[0]['reference_k0']:.4f}, {rows[0]['reference_k1']:.4f}]")
    first = [r for r in rows if r["horizon"] == 0 and r["estimator"] == ESTIMATORS[0]]
    epochs = [r["model_epochs"] for r in first]
    mse = [r["model_val_mse"] for r in first]
    print(f"model: epochs {epochs}, holdout MSE (normalized) {[f'{m:.2e}' for m in mse]}")
    print("L1 error mean +- std over seeds (relative in brackets)")
    print("H  " + "  ".join(f"{n:>33}" for n in ESTIMATORS))
    for h in range(FLAGS.max_horizon + 1):
        vals = [r for r in summary if r["horizon"] == h]
        print(
            f"{h:<3}"
            + "  ".join(
                f"{r['mean']:>9.4f} +- {r['std']:<7.4f} [{r['relative_mean']:.4f}]" for r in vals
            )
        )
    print(f"wrote {FLAGS.logdir}/gradient_error.csv, summary.csv, gradient_error.png")


if __name__ == "__main__":
    app.run(main)

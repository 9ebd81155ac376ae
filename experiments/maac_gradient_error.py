"""MAAC Sec. 5.2 / Fig. 3: L1 error of the MAAC policy gradient against the
analytic gradient on the double integrator, for H = 0..max_horizon, with the
learned ensemble and with the true dynamics.

    python -m experiments.maac_gradient_error --logdir=runs/maac_gradient_error

The reference for each H is the analytic gradient of the H-step MAAC
objective with the true dynamics and the policy's exact Q (Lemma 4.1's "true
objective"; ``memrl.diagnostics.gradient_error``). Per seed: collect
``--episodes`` episodes with the linear policy (plus exploration noise), fit
the ensemble (``memrl.nets.dynamics``; the reward is known, as in MAAC) and a
Q network (an MLP regressed on the policy's exact Q, the objective's terminal
value), then for each H take the gradient of ``J_H(K)`` with (a) the learned
model and learned Q, (b) the true dynamics and learned Q, (c) the true
dynamics and the exact Q (the Monte-Carlo noise floor). Writes
``gradient_error.csv`` (one row per seed, H, estimator), ``summary.csv``
(mean and std over seeds) and ``gradient_error.png``.
"""

from __future__ import annotations

import csv
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
flags.DEFINE_integer("return_horizon", 2000, "Steps of the exact discounted return.")
flags.DEFINE_integer("num_starts", 8192, "Start states of the Monte-Carlo objective.")
flags.DEFINE_integer("episodes", 5, "Episodes of 200 steps to train the model on.")
flags.DEFINE_float("explore_std", 1.0, "Action noise of the data-collecting policy.")
flags.DEFINE_integer("model_members", 8, "Ensemble members (MAAC: 8).")
flags.DEFINE_list("model_hidden_sizes", ["64", "64"], "Hidden widths of each member.")
flags.DEFINE_integer("model_epochs", 10, "Most epochs of model training.")
flags.DEFINE_list("q_hidden_sizes", ["64", "64"], "Hidden widths of the Q network.")
flags.DEFINE_integer("q_steps", 5000, "Adam steps of the Q regression.")
flags.DEFINE_string("q_activation", "swish", "Hidden activation of the Q network.")
flags.DEFINE_list("gain", ["-0.5", "-1.0"], "The policy gain K.")
flags.DEFINE_float("policy_std", 0.3, "The policy's action standard deviation.")

ESTIMATORS = ("learned_model", "true_dynamics", "true_dynamics_exact_q")


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
    ``a = K s + sigma eps`` (scaled targets); returns ``q(s, a) -> [...]``."""
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
    return lambda s, a: scale * net.apply(params, jnp.concatenate([s, a], -1))[..., 0]


def run_seed(seed: int) -> list[dict]:
    key = jax.random.PRNGKey(seed)
    k_data, k_model, k_train, k_q, k_noise = jax.random.split(key, 5)
    gain = jnp.array([[float(g) for g in FLAGS.gain]])
    policy = ge.LinearPolicy(K=gain, log_std=jnp.log(jnp.float32(FLAGS.policy_std)))
    gamma = FLAGS.gamma
    value = ge.exact_value(policy, gamma, FLAGS.return_horizon)
    q_true = ge.exact_q(value, gamma)

    data = collect(k_data, policy, FLAGS.episodes, FLAGS.explore_std)
    config = dynamics.EnsembleConfig.maac(
        num_members=FLAGS.model_members,
        num_elites=FLAGS.model_members,
        hidden_sizes=tuple(int(h) for h in FLAGS.model_hidden_sizes),
        predict_reward=False,
        max_epochs=FLAGS.model_epochs,
    )
    model = dynamics.init(k_model, 2, 1, config)
    model, model_metrics = jax.jit(dynamics.train)(model, data, data.obs.shape[0], k_train)
    q_learned = fit_q(
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

    def learned_step(s, a, member, eps):
        return dynamics.step_with(model, s, a, member, eps)[0]

    def true_step(s, a, member, eps):
        return di.dynamics(s, a)

    estimators = {
        "learned_model": (learned_step, q_learned),
        "true_dynamics": (true_step, q_learned),
        "true_dynamics_exact_q": (true_step, q_true),
    }
    rows = []
    for h in range(FLAGS.max_horizon + 1):
        reference = ge.analytic_gradient(policy, value, h, gamma)
        for name, (step_fn, q_fn) in estimators.items():
            grad = jax.jit(
                lambda p, step_fn=step_fn, q_fn=q_fn, h=h: ge.pathwise_gradient(
                    p, step_fn, q_fn, noise, h, gamma
                )
            )(policy)
            err = float(ge.l1_error(grad, reference))
            rows.append(
                dict(
                    seed=seed,
                    horizon=h,
                    estimator=name,
                    l1_error=err,
                    relative_l1_error=err / float(jnp.sum(jnp.abs(reference))),
                    model_val_mse=float(model_metrics["model/val_mse"]),
                )
            )
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for h in sorted({r["horizon"] for r in rows}):
        for name in ESTIMATORS:
            errs = np.array(
                [r["l1_error"] for r in rows if r["horizon"] == h and r["estimator"] == name]
            )
            out.append(dict(horizon=h, estimator=name, mean=errs.mean(), std=errs.std()))
    return out


def write_csv(path: str, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(path: str, summary: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    labels = {
        "learned_model": "learned model",
        "true_dynamics": "true dynamics",
        "true_dynamics_exact_q": "true dynamics, exact Q (MC floor)",
    }
    for name in ESTIMATORS:
        pts = [r for r in summary if r["estimator"] == name]
        h = np.array([r["horizon"] for r in pts])
        m = np.array([r["mean"] for r in pts])
        s = np.array([r["std"] for r in pts])
        ax.plot(h, m, marker="o", label=labels[name])
        ax.fill_between(h, m - s, m + s, alpha=0.2)
    ax.set_xlabel("horizon H")
    ax.set_ylabel("L1 error of the policy gradient")
    ax.set_title("MAAC gradient error (double integrator)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv):
    del argv
    for name in ("num_seeds", "num_starts", "episodes", "model_epochs", "q_steps"):
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
    plot(os.path.join(FLAGS.logdir, "gradient_error.png"), summary)
    print("H  " + "  ".join(f"{n:>22}" for n in ESTIMATORS))
    for h in range(FLAGS.max_horizon + 1):
        vals = [r for r in summary if r["horizon"] == h]
        print(f"{h:<3}" + "  ".join(f"{r['mean']:>14.4f} +- {r['std']:<5.3f}" for r in vals))
    print(f"wrote {FLAGS.logdir}/gradient_error.csv, summary.csv, gradient_error.png")


if __name__ == "__main__":
    app.run(main)

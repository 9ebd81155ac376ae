"""Dreamer training speed: memrl's Dreamer beside sheeprl's DreamerV1 (PyTorch, CPU), one process.

    python -m benchmarks.dreamer_speed --obs=both --repeats=3 --updates_per_repeat=1

Install the peer with ``pip install -e ".[bench]"``; to keep pip from fetching a CUDA build of
torch, install the CPU wheel first: ``pip install torch --index-url
https://download.pytorch.org/whl/cpu``.

What is timed: one training update, as each implementation does it during training, on a fixed
random batch of ``--batch_size`` sequences of ``--batch_length`` steps (uniform actions in [-1, 1],
normal rewards, no terminals, uniform uint8 images or normal vector observations). Each update is:
the world model's loss over the batch (RSSM posterior unrolled over the sequence, reconstruction +
reward likelihoods + KL with free nats) and its Adam step; imagination of ``horizon`` = 15 prior
steps under the actor from every posterior state (``B * T`` starts), the actor's loss
(lambda-returns, backpropagated through the dynamics) and its Adam step; the value's regression onto
the returns and its Adam step.

* sheeprl: ``sheeprl.algos.dreamer_v1.dreamer_v1.train`` called on its agent as its ``main`` builds
  it (``build_agent`` from the hydra config ``exp=dreamer_v1``, composed with hydra's compose API,
  and the three Adam optimizers set up with a lightning ``Fabric(accelerator="cpu", devices=1,
  precision="32-true")``). The metric aggregator is off (``aggregator=None``, as with
  ``metric.log_level=0``) and distribution argument validation off
  (``distribution.validate_args=False``, which sheeprl's CLI applies); the losses are not compiled
  (``algo.compile.enabled=False``, sheeprl's default). The batch is given as ``sample_batches``
  yields it: ``[T, B, ...]`` float32 tensors (images ``[T, B, 3, 64, 64]`` in 0..255). Timed:
  ``train(...)`` wall time.
* memrl: ``jax.jit(memrl.agents.dreamer.update, donate_argnums=0)`` (AOT-compiled before timing), on
  a ``memrl.types.SequenceStep`` with leaves ``[B, T, ...]`` (images uint8 ``[B, T, 64, 64, 3]``);
  each timed call is waited for with ``block_until_ready``.

Sizes (Dreamer v1, danijar/dreamer, the defaults of both): RSSM deterministic 200, stochastic 30,
hidden 200; dense heads of 400 ELU units (reward 2 layers, value 3, actor 4); for images a conv
encoder/decoder of depth 32 (ReLU) on 64x64x3; horizon 15, continuous actions (``--action_size``),
no continuation head. For vector observations (``--obs_size``) both use an MLP encoder and decoder
of ``--mlp_layers`` x 400 ELU layers (sheeprl's ``algo.{encoder,observation_model}.mlp_layers``,
memrl's ``Config.encoder_sizes``).

The two are interleaved: each repeat runs ``--updates_per_repeat`` sheeprl updates, then as many
memrl updates, so that load from other processes hits both alike. Printed: median and best updates/s
over ``--repeats``, the memrl/sheeprl ratio (of the medians and the median of the interleaved
pairs), and CPU seconds per update.

Threads: torch runs with ``torch.set_num_threads(--threads)`` (default: all the CPUs of the machine;
sheeprl's CLI would set ``OMP_NUM_THREADS`` to its ``num_threads: 1``); XLA's CPU backend uses all
the CPUs.

Roofline: the float32 peak of this CPU is the best throughput measured, in this run, of a large
matmul (``[2048, 2048] x [2048, 2048]``) and of a conv shaped like Dreamer's second encoder layer
(4x4 stride 2, 32 -> 64 channels, on 31x31 maps), each with jax (XLA) and with torch (MKL / oneDNN),
before and after the timed updates. FLOPs per update count the matmuls and convolutions only
(forward and backward): for sheeprl ``torch.utils.flop_counter.FlopCounterMode`` over one (warm-up)
update; for memrl a walk over the jaxpr of the update that multiplies each ``scan`` body by its
length (``compiled.cost_analysis()`` is printed too, but XLA counts a loop body once, not once per
iteration, so it undercounts the unrolls by about their length). An input-dilated (transposed) conv
is counted by its non-zero inputs (the smaller of: each non-zero input times the whole window, as
``FlopCounterMode`` counts a transposed conv; the output-based count over the dilation). "of peak"
is achieved FLOP/s (median updates/s times FLOPs per update) over that peak.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("obs", "both", ["vector", "pixels", "both"], "observation type(s) to benchmark")
flags.DEFINE_integer("repeats", 3, "timed repeats per implementation (interleaved)")
flags.DEFINE_integer("updates_per_repeat", 1, "updates per timed repeat")
flags.DEFINE_integer(
    "warmup", 1, "untimed updates per implementation before timing (after sheeprl's FLOP count)"
)
flags.DEFINE_integer("batch_size", 50, "sequences per update")
flags.DEFINE_integer("batch_length", 50, "steps per sequence")
flags.DEFINE_integer("obs_size", 17, "vector observation size")
flags.DEFINE_integer("action_size", 6, "continuous action size")
flags.DEFINE_integer(
    "mlp_layers", 2, "vector encoder / decoder layers of 400 units (both implementations)"
)
flags.DEFINE_integer("threads", os.cpu_count() or 1, "torch intra-op threads")
flags.DEFINE_bool("sheeprl", True, "run sheeprl's DreamerV1")
flags.DEFINE_bool("memrl", True, "run memrl's Dreamer")
flags.DEFINE_integer(
    "roofline_repeats", 3, "repeats of each peak-throughput measurement (best counts)"
)
flags.DEFINE_integer("seed", 0, "seed of the parameters and the random batch")

IMAGE_SHAPE = (64, 64, 3)  # H, W, C (memrl); sheeprl takes C, H, W
UNITS = 400


@dataclasses.dataclass
class Result:
    """Timings of one implementation on one observation type."""

    name: str
    flops: float  # matmul + conv FLOPs per update
    seconds: list[float] = dataclasses.field(
        default_factory=list
    )  # wall s per update, one per repeat
    cpu: list[float] = dataclasses.field(default_factory=list)  # process CPU s per update
    note: str = ""

    @property
    def ups(self) -> list[float]:
        return [1.0 / s for s in self.seconds]


def _timed(step: Callable[[], None], n: int) -> tuple[float, float]:
    """Wall and process-CPU seconds per call of ``n`` calls of ``step``."""
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        step()
    return (time.perf_counter() - w0) / n, (time.process_time() - c0) / n


# ---------------------------------------------------------------------------
# sheeprl


def sheeprl_config(pixels: bool):
    """The DreamerV1 config (``exp=dreamer_v1``) for this benchmark, as its CLI resolves it."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf
    from sheeprl.utils.utils import dotdict

    cnn, mlp = ("[rgb]", "[]") if pixels else ("[]", "[state]")
    overrides = [
        "exp=dreamer_v1",
        "env=dummy",
        "env.num_envs=1",
        f"algo.cnn_keys.encoder={cnn}",
        f"algo.cnn_keys.decoder={cnn}",
        f"algo.mlp_keys.encoder={mlp}",
        f"algo.mlp_keys.decoder={mlp}",
        f"algo.per_rank_batch_size={FLAGS.batch_size}",
        f"algo.per_rank_sequence_length={FLAGS.batch_length}",
        f"algo.world_model.encoder.mlp_layers={FLAGS.mlp_layers}",
        f"algo.world_model.observation_model.mlp_layers={FLAGS.mlp_layers}",
        "algo.compile.enabled=False",
        "metric.log_level=0",
        "fabric.accelerator=cpu",
        "fabric.devices=1",
        "fabric.precision=32-true",
    ]
    with initialize_config_module("sheeprl.configs", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return dotdict(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))


def sheeprl_timer(pixels: bool) -> tuple[Callable[[], None], float, dict]:
    """Builds sheeprl's DreamerV1 agent and a fixed random batch.

    Returns:
      ``one_update()``, the matmul + conv FLOPs of one update (counted over the first, warm-up,
      update) and info.
    """
    import gymnasium as gym
    import hydra
    import torch
    from lightning.fabric import Fabric
    from sheeprl.algos.dreamer_v1 import dreamer_v1
    from sheeprl.algos.dreamer_v1.agent import build_agent
    from torch.utils.flop_counter import FlopCounterMode

    cfg = sheeprl_config(pixels)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    torch.distributions.Distribution.set_default_validate_args(cfg.distribution.validate_args)
    torch.manual_seed(FLAGS.seed)
    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    B, T, A = FLAGS.batch_size, FLAGS.batch_length, FLAGS.action_size
    if pixels:
        h, w, c = IMAGE_SHAPE
        space = gym.spaces.Dict({"rgb": gym.spaces.Box(0, 255, (c, h, w), np.uint8)})
    else:
        space = gym.spaces.Dict(
            {"state": gym.spaces.Box(-np.inf, np.inf, (FLAGS.obs_size,), np.float32)}
        )
    world_model, actor, critic, _ = build_agent(fabric, (A,), True, cfg, space)
    optimizers = fabric.setup_optimizers(
        *(
            hydra.utils.instantiate(c.optimizer, params=m.parameters(), _convert_="all")
            for c, m in (
                (cfg.algo.world_model, world_model),
                (cfg.algo.actor, actor),
                (cfg.algo.critic, critic),
            )
        )
    )
    g = torch.Generator().manual_seed(FLAGS.seed)
    data = {
        "actions": torch.rand(T, B, A, generator=g) * 2 - 1,
        "rewards": torch.randn(T, B, 1, generator=g),
        "is_first": torch.zeros(T, B, 1),
        "terminated": torch.zeros(T, B, 1),
        "truncated": torch.zeros(T, B, 1),
    }
    if pixels:  # sample_batches hands the images over as float (0..255)
        data["rgb"] = torch.randint(0, 256, (T, B, c, h, w), generator=g, dtype=torch.uint8).float()
    else:
        data["state"] = torch.randn(T, B, FLAGS.obs_size, generator=g)

    def one_update() -> None:
        dreamer_v1.train(fabric, world_model, actor, critic, *optimizers, data, None, cfg)

    t0 = time.perf_counter()
    with FlopCounterMode(display=False) as counter:
        one_update()
    first_s = time.perf_counter() - t0
    by_op = {str(k): float(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    params = sum(p.numel() for m in (world_model, actor, critic) for p in m.parameters())
    return (
        one_update,
        float(counter.get_total_flops()),
        {"first_s": first_s, "by_op": by_op, "params": params},
    )


# ---------------------------------------------------------------------------
# memrl

_SIZE_FIELDS = (
    "stoch_size",
    "deter_size",
    "hidden_size",
    "units",
    "cnn_depth",
    "horizon",
    "activation",
)


def memrl_config(pixels: bool):
    """memrl's Dreamer config at the benchmark's sizes (only the fields its ``Config`` has)."""
    from memrl.agents import dreamer

    wanted = {
        "batch_size": FLAGS.batch_size,
        "batch_length": FLAGS.batch_length,
        "encoder_sizes": (UNITS,) * FLAGS.mlp_layers,
        "obs": "pixels" if pixels else "state",
    }
    fields = {f.name for f in dataclasses.fields(dreamer.Config)}
    return dreamer.Config(**{k: v for k, v in wanted.items() if k in fields})


def _jaxpr_flops(jaxpr) -> tuple[float, int]:
    """Matmul + conv FLOPs of a jaxpr (each ``scan`` body times its length, the larger ``cond``
    branch) and the number of ``while`` loops met, whose bodies are counted once (their trip count
    is not static)."""
    from jax.extend import core as jcore

    total, whiles = 0.0, 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            out = eqn.outvars[0].aval.shape
            total += 2.0 * math.prod(out) * math.prod(lhs[d] for d in lhs_contract)
            continue
        if name == "conv_general_dilated":
            dn = eqn.params["dimension_numbers"]
            lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
            out = eqn.outvars[0].aval.shape
            # every output element: in-features x window products
            per_output = 2.0 * math.prod(out) * math.prod(rhs) / rhs[dn.rhs_spec[0]]
            dilation = math.prod(eqn.params.get("lhs_dilation") or (1,))
            if dilation > 1:
                # an input-dilated (transposed) conv multiplies only the non-zero inputs: at
                # most each of them times the whole window (exact for a transposed conv's
                # forward and input gradient), at most the output-based count over the
                # dilation (near exact for its weight gradient, whose window is the large
                # output gradient)
                groups = eqn.params.get("feature_group_count", 1)
                per_input = 2.0 * math.prod(lhs) * math.prod(rhs) / rhs[dn.rhs_spec[1]] / groups
                per_output = min(per_output / dilation, per_input)
            total += per_output
            continue
        subs = []
        for value in eqn.params.values():
            items = value if isinstance(value, (tuple, list)) else (value,)
            subs += [v for v in items if isinstance(v, (jcore.Jaxpr, jcore.ClosedJaxpr))]
        if not subs:
            continue
        counts = [_jaxpr_flops(s.jaxpr if isinstance(s, jcore.ClosedJaxpr) else s) for s in subs]
        whiles += sum(c[1] for c in counts) + (name == "while")
        if name == "cond":
            total += max(c[0] for c in counts)
        else:
            total += sum(c[0] for c in counts) * (
                eqn.params.get("length", 1) if name == "scan" else 1
            )
    return total, whiles


def memrl_updates_per_second(pixels: bool) -> tuple[Callable[[], None], float, dict]:
    """Builds memrl's Dreamer learner, compiles ``update`` and makes a fixed random batch.

    Returns:
      ``one_update()`` (blocks until done), the matmul + conv FLOPs of one update and info.
    """
    from memrl.agents import dreamer
    from memrl.types import SequenceStep

    config = memrl_config(pixels)
    obs_shape = IMAGE_SHAPE if pixels else (FLAGS.obs_size,)
    B, T, A = FLAGS.batch_size, FLAGS.batch_length, FLAGS.action_size
    key = jax.random.PRNGKey(FLAGS.seed)
    k_init, k_obs, k_act, k_rew, k_update = jax.random.split(key, 5)
    learner = dreamer.init_learner(k_init, obs_shape, A, config)
    if pixels:
        obs = jax.random.randint(k_obs, (B, T, *obs_shape), 0, 256, jnp.int32).astype(jnp.uint8)
    else:
        obs = jax.random.normal(k_obs, (B, T, *obs_shape), jnp.float32)
    batch = SequenceStep(
        obs=obs,
        action=jax.random.uniform(k_act, (B, T, A), jnp.float32, -1.0, 1.0),
        reward=jax.random.normal(k_rew, (B, T), jnp.float32),
        discount=jnp.ones((B, T), jnp.float32),
        is_first=jnp.zeros((B, T), bool).at[:, 0].set(True),
    )
    flops, whiles = _jaxpr_flops(jax.make_jaxpr(dreamer.update)(learner, batch, k_update).jaxpr)
    t0 = time.perf_counter()
    compiled = jax.jit(dreamer.update, donate_argnums=0).lower(learner, batch, k_update).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    state = {"learner": learner, "key": k_update}

    def one_update() -> None:
        state["key"], k = jax.random.split(state["key"])
        state["learner"], metrics = compiled(state["learner"], batch, k)
        jax.block_until_ready((state["learner"], metrics))

    params = sum(
        x.size for x in jax.tree_util.tree_leaves((learner.model, learner.actor, learner.value))
    )
    info = {
        "compile_s": compile_s,
        "xla_flops": float((cost or {}).get("flops", float("nan"))),
        "whiles": whiles,
        "params": params,
        "config": {k: getattr(config, k) for k in _SIZE_FIELDS if hasattr(config, k)},
    }
    return one_update, flops, info


def memrl_available() -> str:
    """Empty if memrl's Dreamer (``memrl.agents.dreamer`` with ``Config``, ``init_learner`` and
    ``update``) can be imported, else why not."""
    try:
        from memrl.agents import dreamer
    except ImportError as e:
        return f"memrl.agents.dreamer cannot be imported ({e})"
    missing = [n for n in ("Config", "init_learner", "update") if not hasattr(dreamer, n)]
    return f"memrl.agents.dreamer lacks {', '.join(missing)}" if missing else ""


# ---------------------------------------------------------------------------
# roofline


def _jax_loop(op: Callable, x, w, min_seconds: float = 0.2):
    """A compiled loop of ``op(x, w)`` taking about ``min_seconds`` and its number of iterations
    (the input is perturbed by the previous result each iteration so XLA cannot hoist the op out of
    the loop)."""

    @functools.partial(jax.jit, static_argnums=2)
    def run(x, w, iters):
        def body(_, acc):
            return acc + op(x + 1e-30 * acc.ravel()[0], w).ravel()[0]

        return jax.lax.fori_loop(0, iters, body, jnp.zeros((), jnp.float32))

    iters = 1
    while True:
        run(x, w, iters).block_until_ready()
        t0 = time.perf_counter()
        run(x, w, iters).block_until_ready()
        if time.perf_counter() - t0 >= min_seconds or iters >= 1 << 14:
            return functools.partial(run, x, w, iters), iters
        iters *= 2


def _torch_loop(op: Callable, min_seconds: float = 0.2):
    iters = 1
    while True:
        op()
        t0 = time.perf_counter()
        for _ in range(iters):
            op()
        if time.perf_counter() - t0 >= min_seconds or iters >= 1 << 14:
            return op, iters
        iters *= 2


# (batch, height, width, channels in, channels out, kernel, stride): Dreamer's second encoder conv
CONV = (256, 31, 31, 32, 64, 4, 2)
MATMUL = 2048


def _conv_flops() -> float:
    n, h, w, cin, cout, k, s = CONV
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    return 2.0 * n * oh * ow * cout * cin * k * k


@functools.cache
def _peak_ops(use_torch: bool) -> dict[str, tuple[Callable, float]]:
    """name -> (one timed call, FLOPs of that call)."""
    n, h, w, cin, cout, k, s = CONV
    rng = np.random.default_rng(0)
    a = rng.standard_normal((MATMUL, MATMUL), np.float32)
    x = rng.standard_normal((n, h, w, cin), np.float32)
    kern = rng.standard_normal((k, k, cin, cout), np.float32)
    mm_flops = 2.0 * MATMUL**3
    ops = {}
    if use_torch:
        import torch

        ta, tx = torch.from_numpy(a), torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        tk = torch.from_numpy(kern).permute(3, 2, 0, 1).contiguous()
        for name, fn, f in (
            ("torch matmul", lambda: ta @ ta, mm_flops),
            ("torch conv", lambda: torch.nn.functional.conv2d(tx, tk, stride=s), _conv_flops()),
        ):
            with torch.no_grad():
                op, iters = _torch_loop(fn)

            def call(op=op, iters=iters):
                with torch.no_grad():
                    for _ in range(iters):
                        op()

            ops[name] = (call, f * iters)
    else:
        conv = functools.partial(
            jax.lax.conv_general_dilated,
            window_strides=(s, s),
            padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        for name, op, lhs, rhs, f in (
            ("jax matmul", jnp.matmul, a, a, mm_flops),
            ("jax conv", conv, x, kern, _conv_flops()),
        ):
            run, iters = _jax_loop(op, jnp.asarray(lhs), jnp.asarray(rhs))
            ops[name] = (lambda run=run: run().block_until_ready(), f * iters)
    return ops


def measure_peaks(
    use_torch: bool, repeats: int, best: dict[str, float] | None = None
) -> dict[str, float]:
    """FLOP per second of each peak op, the best of ``repeats`` (and of ``best``)."""
    best = dict(best or {})
    for name, (call, f) in _peak_ops(use_torch).items():
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            best[name] = max(best.get(name, 0.0), f / (time.perf_counter() - t0))
    return best


# ---------------------------------------------------------------------------


def run_obs(
    pixels: bool, use_sheeprl: bool, use_memrl: bool, peaks: dict[str, float]
) -> list[Result]:
    kind = "pixels 64x64x3" if pixels else f"vector {FLAGS.obs_size}"
    print(f"\n== {kind} observations ==", flush=True)
    timers: list[tuple[Result, Callable[[], None]]] = []
    if use_sheeprl:
        t0 = time.perf_counter()
        step, flops, info = sheeprl_timer(pixels)
        print(
            f"sheeprl: built in {time.perf_counter() - t0 - info['first_s']:.1f}s, "
            f"{info['params'] / 1e6:.2f}M parameters; first update (FLOP-counted) "
            f"{info['first_s']:.1f}s, "
            f"{flops / 1e9:.1f} GFLOP ("
            + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in sorted(info["by_op"].items()))
            + ")",
            flush=True,
        )
        timers.append((Result("sheeprl", flops), step))
    if use_memrl:
        step, flops, info = memrl_updates_per_second(pixels)
        print(
            f"memrl: {info['params'] / 1e6:.2f}M parameters, {info['config']}; compiled in "
            f"{info['compile_s']:.1f}s; {flops / 1e9:.1f} GFLOP (jaxpr matmul + conv"
            + (f"; {info['whiles']} while loops counted once" if info["whiles"] else "")
            + f"), XLA cost_analysis {info['xla_flops'] / 1e9:.1f} GFLOP (loop bodies once)",
            flush=True,
        )
        timers.append((Result("memrl", flops), step))
    for result, step in timers:
        if FLAGS.warmup:
            s, _ = _timed(step, FLAGS.warmup)
            print(f"{result.name}: warm-up {s:.2f}s per update", flush=True)
    for r in range(FLAGS.repeats):
        for result, step in timers:
            s, c = _timed(step, FLAGS.updates_per_repeat)
            result.seconds.append(s)
            result.cpu.append(c)
        print(
            f"repeat {r + 1}/{FLAGS.repeats}: "
            + ", ".join(f"{res.name} {res.seconds[-1]:.2f}s/update" for res, _ in timers)
            + f" (load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    return [res for res, _ in timers]


def report(kind: str, results: list[Result], peak: float) -> None:
    print(f"\n{kind}: updates/s at batch {FLAGS.batch_size} x {FLAGS.batch_length}")
    print(
        f"  {'impl':8s} {'median':>8s} {'best':>8s} {'GFLOP/upd':>9s} {'GFLOP/s':>8s} "
        f"{'of peak':>7s} "
        f"{'cpu s/upd':>9s}   all updates/s"
    )
    for res in results:
        ups = res.ups
        median = statistics.median(ups)
        print(
            f"  {res.name:8s} {median:8.3f} {max(ups):8.3f} {res.flops / 1e9:9.1f} "
            f"{median * res.flops / 1e9:8.1f} {median * res.flops / peak:7.1%} "
            f"{statistics.median(res.cpu):9.2f}   " + " ".join(f"{u:.3f}" for u in ups)
        )
    by_name = {r.name: r for r in results}
    if {"memrl", "sheeprl"} <= by_name.keys():
        m, s = by_name["memrl"].ups, by_name["sheeprl"].ups
        pairs = [a / b for a, b in zip(m, s, strict=True)]
        print(
            f"  memrl / sheeprl, updates/s: {statistics.median(m) / statistics.median(s):.2f} "
            "(ratio of "
            f"medians), {statistics.median(pairs):.2f} (median of interleaved pairs), "
            f"{by_name['sheeprl'].flops / by_name['memrl'].flops:.2f} "
            "(FLOPs per update, sheeprl's over memrl's)"
        )


def main(argv):
    del argv
    if FLAGS.repeats <= 0 or FLAGS.updates_per_repeat <= 0 or FLAGS.warmup < 0:
        raise app.UsageError(
            "--repeats and --updates_per_repeat must be positive, --warmup non-negative"
        )
    use_sheeprl, use_memrl = FLAGS.sheeprl, FLAGS.memrl
    if use_memrl and (why := memrl_available()):
        print(f"memrl's Dreamer is not available: {why}. Measuring sheeprl alone.")
        use_memrl = False
    if use_sheeprl:
        try:
            import sheeprl  # noqa: F401
            import torch
        except ImportError as e:
            raise SystemExit(
                f"sheeprl is not installed ({e}): pip install torch --index-url "
                'https://download.pytorch.org/whl/cpu && pip install -e ".[bench]"'
            ) from e
        torch.set_num_threads(FLAGS.threads)
        warnings.filterwarnings("ignore", module="lightning")
    if not (use_sheeprl or use_memrl):
        raise app.UsageError("nothing to run")
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} CPUs, "
        "load average "
        f"{os.getloadavg()[0]:.1f})"
        + (
            f"; torch {torch.__version__}, torch.set_num_threads({torch.get_num_threads()})"
            if use_sheeprl
            else ""
        )
        + f"; batch {FLAGS.batch_size} x {FLAGS.batch_length}, {FLAGS.action_size} actions, "
        f"{FLAGS.repeats} repeats of {FLAGS.updates_per_repeat} updates",
        flush=True,
    )
    peaks = measure_peaks(False, FLAGS.roofline_repeats)
    if use_sheeprl:
        peaks = measure_peaks(True, FLAGS.roofline_repeats, peaks)
    kinds = {"vector": [False], "pixels": [True], "both": [False, True]}[FLAGS.obs]
    all_results = {}
    for pixels in kinds:
        all_results[pixels] = run_obs(pixels, use_sheeprl, use_memrl, peaks)
    peaks = measure_peaks(False, FLAGS.roofline_repeats, peaks)
    if use_sheeprl:
        peaks = measure_peaks(True, FLAGS.roofline_repeats, peaks)
    peak = max(peaks.values())
    print(
        "\nfloat32 peak, best of all rounds (GFLOP/s): "
        + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in peaks.items())
        + f"; peak = {peak / 1e9:.1f}"
    )
    for pixels, results in all_results.items():
        report("pixels 64x64x3" if pixels else f"vector {FLAGS.obs_size}", results, peak)
    print(
        "\nGFLOP/s and 'of peak' use the median updates/s and the matmul + conv FLOPs of one "
        "update; "
        "'cpu s/upd' is the process CPU time per update (median)."
    )


if __name__ == "__main__":
    app.run(main)

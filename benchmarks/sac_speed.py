"""SAC training speed: memrl beside brax's own SAC, in one process.

    python -m benchmarks.sac_speed --env=inverted_pendulum --steps=500 --repeats=12

Both run SAC with the same settings: one environment, one gradient update per
environment step, batch 256, 2 x 256 ReLU policy and twin-Q networks, Adam
3e-4, gamma 0.99, tau 0.005, a 100k replay buffer, ``--warmup`` steps of data
collection before the first update, no observation normalization.

What is timed (compilation, warm-up and evaluation excluded from both):

* memrl: the runner's own compiled chunk, built by
  ``memrl.training.runner.build`` as ``runner.train`` does (``make_chunk`` of
  ``--steps`` env steps over a seed axis of size 1, state donated,
  AOT-compiled). After the warm-up chunks and one more chunk
  with updates, each timed call runs ``--steps`` env steps with their updates
  and is waited for with ``block_until_ready``: the figure the runner logs as
  ``sps`` (it times the same call plus a ``device_get`` of a few scalars).
* brax: ``brax.training.agents.sac.train``'s own ``training/sps`` metric,
  which is ``num_envs * steps_per_epoch / wall time`` of one pmapped
  ``training_epoch`` call (``steps_per_epoch`` env steps, each followed by
  ``grad_updates_per_step`` SGD steps), timed with ``time.time()`` around the
  call plus a ``block_until_ready`` of its metrics. It excludes the replay
  prefill (``min_replay_size``) and evaluation, but the first epoch's figure
  includes the compilation of ``training_epoch``; that report is dropped.
  Each later one covers exactly ``--steps`` env steps. brax's evaluator is
  replaced by a stub that passes the training metrics through (``--brax_eval``
  keeps it): it runs outside the timed call either way, so this only saves its
  compilation. ``jax.device_put_replicated``, which brax's SAC still calls and
  current jax removed, is shimmed with a stacked ``device_put`` onto a
  one-axis mesh of the local devices.

The two are interleaved: memrl's timed chunks run inside brax's
``progress_fn``, one after each brax epoch, so that load from other processes
hits both alike. Printed: best and median sps over ``--repeats``, and the
memrl/brax ratio (of the medians, of the bests, and the median of the
interleaved pairs).

Work counters. On a machine shared with other jobs wall-clock sps swings by
2x from one chunk to the next. So the benchmark also reads, where Linux perf
events allow (``perf_event_paranoid <= 2``), the user-mode CPU cycles and
instructions of all the process's threads (opened with ``inherit`` before jax
starts its thread pools), and always the process CPU time. For brax these
cover the interval between two ``progress_fn`` calls: one epoch plus brax's
few host operations between epochs. Instructions per env step stay within
1-2% whatever the load; cycles per env step count only the time the threads
actually run, but rise (by up to a third, seen here) when other processes
share the cores' caches, alike for both implementations within one
interleaved run. Neither shows what an implementation gains from running ops
on both cores at once; only wall time does.

Roofline: the float32 matmul throughput of this CPU is measured for every
matmul shape that one SAC update performs (forward ``[B, in] x [in, out]``,
weight gradient ``[in, B] x [B, out]`` and input gradient
``[B, out] x [out, in]`` of each layer), each shape in a jitted loop:
``--matmul_repeats`` times before and after the SAC runs and once after each
interleaved pair of timed calls, the best of all counting (on a shared
machine the speed drifts; one measurement in a slow spell would make the
bound too low), both in FLOP per wall second and in FLOP per cycle. One update's FLOPs are counted
analytically (below). "bound sps" is ``1 / sum(count * flops / throughput)``
over the update's matmuls: the env steps per second if an update took only
its matmuls, each at the speed measured for its shape; "of bound" is the
median sps over it, and "of peak" the achieved FLOP/s over the square
``[256, 256] x [256, 256]`` throughput. "of cycle bound" is the same bound in
cycles (the cycles the update's matmuls take at their measured FLOP per
cycle) over the cycles per env step: the less load-sensitive version. Env
stepping, Adam, sampling and elementwise work are not counted: they are the
overhead these fractions expose.

FLOPs of one update at batch ``B`` (a matmul ``[m, k] x [k, n]`` is ``2 m k n``):

* critic (both): policy forward on ``s'``; twin target-Q forward on
  ``(s', a')``; twin Q forward plus backward to the parameters (weight
  gradients of every layer, input gradients of all but the first layer).
* actor (both): policy forward and backward to its parameters; twin Q forward
  and backward to the action input (input gradients of every layer, no weight
  gradients).
* temperature: brax's ``alpha_loss`` runs its own policy forward on ``s``;
  memrl reuses the actor's log-probabilities (no matmul).
* acting (one ``[1, obs]`` policy forward per env step) is negligible and not
  counted.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import platform
import statistics
import struct
import tempfile
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec

FLAGS = flags.FLAGS
flags.DEFINE_string("env", "inverted_pendulum", "brax MJX task name (both implementations)")
flags.DEFINE_integer("steps", 500, "env steps per timed chunk (memrl) / epoch (brax)")
flags.DEFINE_integer("repeats", 12, "timed chunks / epochs per implementation")
flags.DEFINE_integer("warmup", 1000, "env steps before the first update (brax: min_replay_size)")
flags.DEFINE_integer("buffer_size", 100_000, "replay capacity")
flags.DEFINE_integer("batch_size", 256, "SAC minibatch size")
flags.DEFINE_integer("hidden", 256, "width of the two hidden layers of every network")
flags.DEFINE_integer("matmul_repeats", 7, "repeats of each matmul-throughput measurement")
flags.DEFINE_bool("brax", True, "also run brax's SAC (otherwise memrl alone)")
flags.DEFINE_bool(
    "brax_eval",
    False,
    "run brax's evaluator between epochs (outside its timing either way; off saves its "
    "compilation)",
)

LR, GAMMA, TAU = 3e-4, 0.99, 0.005


# ---------------------------------------------------------------------------
# work counters


class Counters:
    """Process CPU time and, where available, user-mode cycles and instructions
    of every thread of the process (Linux ``perf_event_open`` with ``inherit``:
    threads created after ``__init__`` are counted, so create this before jax
    starts its thread pools).

    ``read()`` returns ``[wall s, cpu s, cycles, instructions]`` (NaN where
    unavailable); differences of two reads measure an interval.
    """

    _SYSCALL = {"x86_64": 298, "aarch64": 241}
    _HW_CYCLES, _HW_INSTRUCTIONS = 0, 1

    def __init__(self):
        self._fds: list[int] = []
        try:
            self._fds = [self._open(self._HW_CYCLES), self._open(self._HW_INSTRUCTIONS)]
        except OSError:
            for fd in self._fds:
                os.close(fd)
            self._fds = []

    @property
    def hardware(self) -> bool:
        return bool(self._fds)

    def _open(self, config: int) -> int:
        number = self._SYSCALL.get(platform.machine())
        if number is None:
            raise OSError("perf_event_open: unknown architecture")
        # struct perf_event_attr (PERF_ATTR_SIZE_VER5 = 112 bytes): type
        # PERF_TYPE_HARDWARE (0), size, config, then flag bits inherit (1),
        # exclude_kernel (5), exclude_hv (6).
        attr = bytearray(112)
        flag_bits = (1 << 1) | (1 << 5) | (1 << 6)
        struct.pack_into("IIQQQQQ", attr, 0, 0, len(attr), config, 0, 0, 0, flag_bits)
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.syscall(number, ctypes.create_string_buffer(bytes(attr), len(attr)), 0, -1, -1, 0)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return fd

    def read(self) -> np.ndarray:
        hw = [struct.unpack("Q", os.read(fd, 8))[0] for fd in self._fds] or [np.nan, np.nan]
        return np.array([time.perf_counter(), time.process_time(), *hw], np.float64)


WALL, CPU, CYCLES, INSTRUCTIONS = range(4)


# ---------------------------------------------------------------------------
# brax compatibility


def _device_put_replicated(x, devices):
    """Stand-in for ``jax.device_put_replicated`` (removed from jax; brax's SAC
    still calls it): stacks ``x`` along a new leading axis, one row per device,
    sharded one row per device."""
    mesh = Mesh(np.asarray(devices), ("replica",))
    sharding = NamedSharding(mesh, PartitionSpec("replica"))

    def put(leaf):
        leaf = np.asarray(leaf)
        return jax.device_put(np.stack([leaf] * len(devices)), sharding)

    return jax.tree_util.tree_map(put, x)


def _install_brax_shims() -> None:
    if not hasattr(jax, "device_put_replicated"):
        jax.device_put_replicated = _device_put_replicated


class _NoEvaluator:
    """Stands in for ``brax.training.acting.Evaluator``: returns the training
    metrics unchanged (brax times ``training_epoch`` alone, so skipping its
    evaluation changes no timed work; it only saves the evaluator's compilation
    and run time)."""

    def __init__(self, *args, **kwargs):
        del args, kwargs

    def run_evaluation(self, policy_params, training_metrics, aggregate_episodes=True):
        del policy_params, aggregate_episodes
        return dict(training_metrics)


# ---------------------------------------------------------------------------
# FLOP counts and matmul roofline

Shape = tuple[int, int, int]  # (m, k, n) of [m, k] x [k, n]


def _mlp_dims(in_size: int, hidden: int, out_size: int) -> list[tuple[int, int]]:
    return [(in_size, hidden), (hidden, hidden), (hidden, out_size)]


def _forward(dims, b: int) -> list[Shape]:
    return [(b, i, o) for i, o in dims]


def _weight_grads(dims, b: int) -> list[Shape]:
    return [(i, b, o) for i, o in dims]


def _input_grads(dims, b: int, first_layer: bool) -> list[Shape]:
    layers = dims if first_layer else dims[1:]
    return [(b, o, i) for i, o in layers]


def update_matmuls(
    obs_size: int, action_size: int, hidden: int, batch: int, brax_alpha: bool
) -> list[Shape]:
    """Every matmul of one SAC update (twin Q counted as two networks)."""
    pi = _mlp_dims(obs_size, hidden, 2 * action_size)
    q = _mlp_dims(obs_size + action_size, hidden, 1)
    shapes: list[Shape] = []
    # critic: pi(s'), 2 x Q'(s', a'), 2 x [Q(s, a) forward + backward to params]
    shapes += _forward(pi, batch)
    shapes += 2 * _forward(q, batch)
    shapes += 2 * (_forward(q, batch) + _weight_grads(q, batch) + _input_grads(q, batch, False))
    # actor: pi(s) forward + backward to params; 2 x Q(s, a~pi) forward + backward to a
    shapes += _forward(pi, batch) + _weight_grads(pi, batch) + _input_grads(pi, batch, False)
    shapes += 2 * (_forward(q, batch) + _input_grads(q, batch, True))
    if brax_alpha:  # brax's alpha_loss samples the policy again
        shapes += _forward(pi, batch)
    return shapes


def flops(shapes: list[Shape]) -> float:
    return float(sum(2 * m * k * n for m, k, n in shapes))


@functools.cache
def _matmul_loop(shape: Shape, min_seconds: float = 0.02):
    """A compiled loop of ``[m, k] x [k, n]`` products taking about
    ``min_seconds``, its operands and its number of products (built once per
    shape, so that repeated measurements do not recompile).

    The left operand is perturbed by the previous result each iteration so XLA
    cannot hoist the product out of the loop.
    """
    m, k, n = shape
    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(ka, (m, k), jnp.float32)
    w = jax.random.normal(kb, (k, n), jnp.float32) / np.sqrt(k)

    @functools.partial(jax.jit, static_argnums=2)
    def run(a, w, iters):
        def body(_, out):
            return (a + 1e-30 * out[0, 0]) @ w

        return jax.lax.fori_loop(0, iters, body, jnp.zeros((m, n), jnp.float32))

    iters = 8
    while True:  # grow the loop until one call takes min_seconds
        run(a, w, iters).block_until_ready()
        t0 = time.perf_counter()
        run(a, w, iters).block_until_ready()
        if time.perf_counter() - t0 >= min_seconds or iters >= 1 << 16:
            break
        iters *= 4
    return functools.partial(run, a, w, iters), iters


def matmul_throughput(shape: Shape, repeats: int, counters: Counters) -> tuple[float, float]:
    """Best float32 throughput of ``[m, k] x [k, n]`` in a jitted loop.

    Returns:
      (FLOP per wall second, FLOP per cycle of all threads), each the best of
      ``repeats`` (NaN per cycle without hardware counters).
    """
    run, iters = _matmul_loop(shape)
    best = np.full(4, np.inf)
    for _ in range(repeats):
        c0 = counters.read()
        run().block_until_ready()
        best = np.fmin(best, counters.read() - c0)
    m, k, n = shape
    work = 2.0 * m * k * n * iters
    return work / best[WALL], work / best[CYCLES]


@dataclasses.dataclass
class Roofline:
    """Measured matmul throughput per shape.

    Attributes:
      per_second: FLOP per wall second.
      per_cycle: FLOP per cycle of all threads (NaN without hardware counters).
      square: the ``[batch, hidden] x [hidden, hidden]`` shape (the peak).
    """

    per_second: dict[Shape, float]
    per_cycle: dict[Shape, float]
    square: Shape

    @property
    def peak(self) -> float:
        return self.per_second[self.square]

    def seconds(self, shapes: list[Shape]) -> float:
        return sum(2.0 * m * k * n / self.per_second[(m, k, n)] for m, k, n in shapes)

    def cycles(self, shapes: list[Shape]) -> float:
        # Without hardware counters the cycle throughputs are 0 or NaN.
        if not all(self.per_cycle[s] > 0 for s in shapes):
            return float("nan")
        return sum(2.0 * m * k * n / self.per_cycle[(m, k, n)] for m, k, n in shapes)

    def best_of(self, other: Roofline) -> Roofline:
        def best(a, b):
            return {s: float(np.fmax(a[s], b[s])) for s in a}

        return Roofline(
            best(self.per_second, other.per_second),
            best(self.per_cycle, other.per_cycle),
            self.square,
        )


def measure_roofline(
    all_shapes: list[Shape], hidden: int, batch: int, repeats: int, counters: Counters
) -> Roofline:
    square = (batch, hidden, hidden)
    unique = sorted(set(all_shapes) | {square})
    measured = {s: matmul_throughput(s, repeats, counters) for s in unique}
    return Roofline(
        {s: v[0] for s, v in measured.items()}, {s: v[1] for s, v in measured.items()}, square
    )


# ---------------------------------------------------------------------------
# memrl


def memrl_timer(env_name: str, counters: Counters) -> tuple[Callable[[], np.ndarray], dict]:
    """Builds and compiles the runner's chunk as ``runner.train`` does.

    Returns:
      ``one_chunk() -> counter deltas`` (see ``Counters.read``) of one timed
      chunk of ``--steps`` env steps, after the warm-up chunks and one chunk
      with updates have run; and compile facts.
    """
    from memrl import envs
    from memrl.agents import sac
    from memrl.training import compilation_cache, runner

    config = dataclasses.replace(
        sac.Config.for_env(env_name),
        hidden_sizes=(FLAGS.hidden, FLAGS.hidden),
        batch_size=FLAGS.batch_size,
        learning_rate=LR,
        gamma=GAMMA,
        tau=TAU,
        updates_per_step=1,
        num_envs=1,
        warmup_steps=FLAGS.warmup,
        buffer_size=FLAGS.buffer_size,
    )
    run = runner.RunConfig(
        env=env_name,
        total_steps=FLAGS.warmup + (FLAGS.repeats + 2) * FLAGS.steps,
        eval_every=FLAGS.steps,
        max_chunk=FLAGS.steps,
        progress=False,
    )
    trainer = runner.build(sac, config, run)
    assert trainer.steps_per_chunk == FLAGS.steps
    spec = envs.spec(env_name)
    t0 = time.perf_counter()
    # Exactly what runner.train runs by default: the programs exported, kept
    # (here in a temporary directory) and compiled from the export.
    with tempfile.TemporaryDirectory() as cache:
        compilation_cache.setup(True, cache)
        description = runner.program_description(sac, config, run, trainer.steps_per_chunk)
        init, compiled, _ = runner.compile_programs(trainer, description)
        compilation_cache.setup(False)
    holder = {"state": init(trainer.keys), "step": 0}
    info = {"compile_s": time.perf_counter() - t0, "spec": spec}

    def one_chunk() -> np.ndarray:
        c0 = counters.read()
        state, metrics = compiled(holder["state"], jnp.asarray(holder["step"], jnp.int32))
        jax.block_until_ready((state, metrics))
        delta = counters.read() - c0
        holder["state"] = state
        holder["step"] += FLAGS.steps
        return delta

    # Warm-up chunks (random actions, no updates), then one chunk with updates.
    while holder["step"] < FLAGS.warmup:
        one_chunk()
    info["first_update_chunk_sps"] = FLAGS.steps / one_chunk()[WALL]
    return one_chunk, info


# ---------------------------------------------------------------------------
# brax


def run_brax(
    env_name: str, counters: Counters, after_epoch: Callable[[], None]
) -> tuple[list[float], list[np.ndarray]]:
    """Runs brax's SAC.

    Returns:
      brax's ``training/sps`` of every epoch but the first, and the counter
      deltas (see ``Counters.read``) of the same epochs, each measured from the
      end of one ``progress_fn`` call to the start of the next. ``after_epoch``
      runs inside ``progress_fn`` after each of these epochs, outside both.
    """
    _install_brax_shims()
    import brax.envs
    from brax.training import acting
    from brax.training.agents.sac import networks as sac_networks
    from brax.training.agents.sac import train as sac_train

    environment = brax.envs.get_environment(env_name, backend="mjx")
    epochs = FLAGS.repeats + 1  # the first includes compilation
    sps: list[float] = []
    deltas: list[np.ndarray] = []
    last_end: list[np.ndarray] = []  # counters when the previous progress_fn returned

    def progress(step, metrics):
        if "training/sps" not in metrics:  # the evaluation before training
            return
        sps.append(float(metrics["training/sps"]))
        if len(sps) > 1:
            deltas.append(counters.read() - last_end[-1])
            after_epoch()
        last_end.append(counters.read())

    evaluator = acting.Evaluator
    if not FLAGS.brax_eval:
        acting.Evaluator = _NoEvaluator
    try:
        sac_train.train(
            environment=environment,
            num_timesteps=FLAGS.warmup + epochs * FLAGS.steps,
            episode_length=1000,
            num_envs=1,
            num_eval_envs=1,
            learning_rate=LR,
            discounting=GAMMA,
            tau=TAU,
            batch_size=FLAGS.batch_size,
            num_evals=epochs + 1,
            min_replay_size=FLAGS.warmup,
            max_replay_size=FLAGS.buffer_size,
            grad_updates_per_step=1,
            normalize_observations=False,
            network_factory=functools.partial(
                sac_networks.make_sac_networks, hidden_layer_sizes=(FLAGS.hidden, FLAGS.hidden)
            ),
            progress_fn=progress,
            seed=0,
        )
    finally:
        acting.Evaluator = evaluator
    if len(sps) != epochs:
        raise RuntimeError(f"expected {epochs} training reports from brax, got {len(sps)}")
    return sps[1:], deltas


# ---------------------------------------------------------------------------


def main(argv):
    del argv
    counters = Counters()  # before jax creates its thread pools
    from memrl import envs

    if FLAGS.env not in envs.BRAX_NAMES:
        raise app.UsageError(f"--env must be a brax task ({', '.join(envs.BRAX_NAMES)})")
    if FLAGS.steps <= 0 or FLAGS.repeats <= 0 or FLAGS.warmup < 0:
        raise app.UsageError("--steps and --repeats must be positive, --warmup non-negative")
    if FLAGS.warmup % FLAGS.steps:
        raise app.UsageError("--warmup must be a multiple of --steps (whole warm-up chunks)")

    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform} "
        f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, hardware counters "
        f"{'on' if counters.hardware else 'unavailable'}); env {FLAGS.env}, batch "
        f"{FLAGS.batch_size}, {FLAGS.hidden}x{FLAGS.hidden}, 1 env, 1 update/step, "
        f"{FLAGS.steps} steps per timed call, {FLAGS.repeats} repeats",
        flush=True,
    )
    time_memrl, info = memrl_timer(FLAGS.env, counters)
    spec = info["spec"]
    print(
        f"memrl: compiled in {info['compile_s']:.1f}s; first chunk with updates "
        f"{info['first_update_chunk_sps']:.1f} sps",
        flush=True,
    )
    shapes = {
        name: update_matmuls(
            spec.observation_size,
            spec.action_size,
            FLAGS.hidden,
            FLAGS.batch_size,
            brax_alpha=name == "brax",
        )
        for name in ("memrl", "brax")
    }
    all_shapes = shapes["memrl"] + shapes["brax"]
    roof = measure_roofline(
        all_shapes, FLAGS.hidden, FLAGS.batch_size, FLAGS.matmul_repeats, counters
    )

    memrl_deltas: list[np.ndarray] = []
    results: dict[str, tuple[list[float], list[np.ndarray]]] = {}

    def measure_both() -> None:
        # One memrl chunk after each brax epoch, then one more roofline round
        # (the best of all rounds counts: the machine's speed drifts).
        nonlocal roof
        memrl_deltas.append(time_memrl())
        roof = roof.best_of(
            measure_roofline(all_shapes, FLAGS.hidden, FLAGS.batch_size, 1, counters)
        )

    if FLAGS.brax:
        brax_result = run_brax(FLAGS.env, counters, measure_both)
    else:
        for _ in range(FLAGS.repeats):
            measure_both()
    results["memrl"] = ([FLAGS.steps / d[WALL] for d in memrl_deltas], memrl_deltas)
    if FLAGS.brax:
        results["brax"] = brax_result

    roof = roof.best_of(
        measure_roofline(all_shapes, FLAGS.hidden, FLAGS.batch_size, FLAGS.matmul_repeats, counters)
    )
    report(results, shapes, roof)


def report(results: dict, shapes: dict, roof: Roofline) -> None:
    print("\nmatmul throughput, best of all rounds: GFLOP/s, FLOP/cycle")
    for shape, tp in sorted(roof.per_second.items(), key=lambda kv: -kv[1]):
        m, k, n = shape
        print(f"  [{m:4d},{k:4d}] x [{k:4d},{n:4d}]  {tp / 1e9:7.1f} {roof.per_cycle[shape]:7.1f}")

    print(
        f"\n{'impl':6s} {'best sps':>8s} {'median':>7s} {'MFLOP/upd':>9s} {'GFLOP/s':>7s} "
        f"{'bound sps':>9s} {'of bound':>8s} {'of peak':>7s} {'Mcycle/step':>11s} "
        f"{'Minstr/step':>11s} {'of cycle bound':>14s} {'cpu ms/step':>11s}   all sps"
    )
    per_step = {}
    for name, (sps, deltas) in results.items():
        best, median = max(sps), statistics.median(sps)
        step = np.median(np.stack(deltas), axis=0) / FLAGS.steps
        per_step[name] = step
        f = flops(shapes[name])
        bound = 1.0 / roof.seconds(shapes[name])
        print(
            f"{name:6s} {best:8.1f} {median:7.1f} {f / 1e6:9.1f} {median * f / 1e9:7.1f} "
            f"{bound:9.1f} {median / bound:8.1%} {median * f / roof.peak:7.1%} "
            f"{step[CYCLES] / 1e6:11.2f} {step[INSTRUCTIONS] / 1e6:11.2f} "
            f"{roof.cycles(shapes[name]) / step[CYCLES]:14.1%} {1e3 * step[CPU]:11.2f}   "
            + " ".join(f"{v:.0f}" for v in sps)
        )
    if "brax" in results:
        (m_sps, m_deltas), (b_sps, _) = results["memrl"], results["brax"]
        pairs = [m / b for m, b in zip(m_sps, b_sps, strict=True)]
        m_cycles = np.array([d[CYCLES] for d in m_deltas])
        medians = statistics.median(m_sps) / statistics.median(b_sps)
        print(
            f"\nmemrl / brax, env-steps/s: {medians:.2f}"
            f" (ratio of medians), {statistics.median(pairs):.2f} (median of interleaved pairs), "
            f"{max(m_sps) / max(b_sps):.2f} (ratio of bests)\n  pairs: "
            + " ".join(f"{p:.2f}" for p in pairs)
            + "\nmemrl / brax, by work per step (brax's over memrl's): cycles "
            f"{per_step['brax'][CYCLES] / per_step['memrl'][CYCLES]:.2f}, instructions "
            f"{per_step['brax'][INSTRUCTIONS] / per_step['memrl'][INSTRUCTIONS]:.2f}, CPU time "
            f"{per_step['brax'][CPU] / per_step['memrl'][CPU]:.2f}"
            f"\n  memrl Mcycle/step min-max over chunks: {m_cycles.min() / 1e6 / FLAGS.steps:.2f}-"
            f"{m_cycles.max() / 1e6 / FLAGS.steps:.2f}"
        )
    print(
        "\nGFLOP/s, 'of bound' and 'of peak' use the median sps; the per-step counters are "
        "medians over the timed calls (cycles and instructions: user mode, all threads)."
    )


if __name__ == "__main__":
    app.run(main)

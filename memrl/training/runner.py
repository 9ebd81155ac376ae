"""The host loop: builds the compiled chunk and evaluation for an agent + env,
vmaps them over seeds, shards the seed axis over local devices, and drives
training, evaluation, logging, checkpointing and resumption.

Only whole chunks run on the device; the host waits for each, evaluates at
``eval_every`` steps, appends rows to ``metrics.csv`` and saves a checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import math
import os
import sys
import time
from types import ModuleType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from memrl import envs
from memrl.diagnostics import coverage
from memrl.training import checkpoint, distributed, logging_utils, program_cache, sinks
from memrl.training.loop import init_state, make_chunk, make_evaluate


class UserError(Exception):
    """A problem with the user's input or run directory: reported as one line."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Settings of a run that are not the agent's.

    Attributes:
      env: environment name (see ``memrl.envs.NAMES``).
      seed: first seed; seeds ``seed .. seed + num_seeds - 1`` run in parallel.
      num_seeds: number of seeds, a vmapped axis sharded over local devices.
      total_steps: environment steps per seed.
      eval_every: environment steps between evaluations (and log rows).
      eval_episodes: deterministic evaluation episodes per seed.
      max_chunk: most environment steps compiled into one device call.
      logdir: output directory (metrics.csv, config.json, checkpoints/).
      resume: continue from the latest checkpoint in ``logdir``.
      progress: show a progress bar on stderr.
      obs: ``'state'`` (the env's observation vector) or ``'pixels'``
        (``image_size`` square RGB images rendered in the step,
        ``memrl.envs.pixels``; for agents whose module lists it in
        ``OBSERVATIONS``).
      image_size: side of the images in pixels.
      tensorboard: mirror the rows into TensorBoard event files in ``logdir``
        (``memrl.training.sinks``).
      wandb: mirror them into a Weights & Biases run as well.
      wandb_project: the W&B project.
      wandb_mode: ``'online'``, ``'offline'`` (no network; ``wandb sync``
        later) or ``'disabled'``; None: W&B's own choice (``WANDB_MODE``).
    """

    env: str
    seed: int = 0
    num_seeds: int = 1
    total_steps: int = 100_000
    eval_every: int = 5000
    eval_episodes: int = 10
    max_chunk: int = 1000
    logdir: str = "runs/default"
    resume: bool = False
    progress: bool = True
    obs: str = "state"
    image_size: int = 64
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "memrl"
    wandb_mode: str | None = None


def validate(run: RunConfig, config: Any) -> None:
    """Raises ``UserError`` naming the first bad setting."""
    if run.env not in envs.NAMES:
        raise UserError(f"unknown env {run.env!r}; valid envs: {', '.join(envs.NAMES)}")
    for name in ("total_steps", "eval_every", "eval_episodes", "num_seeds", "max_chunk"):
        value = getattr(run, name)
        if value <= 0:
            raise UserError(f"--{name} must be a positive integer, got {value}")
    if run.obs not in envs.pixels.OBS_TYPES:
        raise UserError(f"--obs must be one of {', '.join(envs.pixels.OBS_TYPES)}, got {run.obs!r}")
    if run.image_size <= 0:
        raise UserError(f"--image_size must be a positive integer, got {run.image_size}")
    num_envs = getattr(config, "num_envs", 1)
    if num_envs <= 0:
        raise UserError(f"--config.num_envs must be positive, got {num_envs}")
    repeat = getattr(config, "action_repeat", 1)
    if repeat <= 0:
        raise UserError(f"--config.action_repeat must be positive, got {repeat}")
    frames = num_envs * repeat
    if run.total_steps % frames or run.eval_every % frames:
        raise UserError(
            f"--total_steps ({run.total_steps}) and --eval_every ({run.eval_every}) must be "
            f"multiples of config.num_envs x config.action_repeat ({frames} frames per step)"
        )


def chunk_steps(run: RunConfig, num_envs: int, period: int = 0) -> int:
    """The largest chunk (env steps) dividing every log point, at most ``max_chunk``.

    ``num_envs`` is the env steps (frames) of one iteration: ``num_envs x
    action_repeat``.

    Log points are multiples of ``eval_every`` and ``total_steps``; one chunk
    length for the whole run means one compilation.
    """
    g = math.gcd(run.eval_every, run.total_steps)
    best = num_envs
    for d in range(num_envs, min(g, max(run.max_chunk, num_envs)) + 1, num_envs):
        if g % d == 0:
            best = d
    return best


def seed_mesh(num_seeds: int) -> Mesh:
    """A 1-D mesh over as many devices as evenly divide ``num_seeds``.

    One process: the largest number of local devices that divides
    ``num_seeds``. Several processes (``memrl.training.distributed``): every
    process takes the same number of its own devices, the largest that lets
    the mesh divide ``num_seeds``, so each process runs ``num_seeds /
    num_processes`` seeds; the devices are ordered by process, so process
    ``p`` holds a contiguous block of seeds.

    Raises:
      UserError: ``num_seeds`` that does not split evenly over the processes.
    """
    processes = jax.process_count()
    if processes == 1:
        devices = jax.local_devices()
        n = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
        return Mesh(np.asarray(devices[:n]), ("seed",))
    if num_seeds % processes:
        raise UserError(
            f"--num_seeds ({num_seeds}) must be a multiple of the number of processes "
            f"({processes}): each process runs its own seeds"
        )
    by_process = [
        sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)
        for p in range(processes)
    ]
    local = min(len(d) for d in by_process)
    per = max(d for d in range(1, local + 1) if (num_seeds // processes) % d == 0)
    return Mesh(np.asarray([d for devs in by_process for d in devs[:per]]), ("seed",))


def per_seed(fn: Any, mesh: Mesh, num_seeds: int, in_axes: tuple) -> Any:
    """Maps a one-seed function over a leading seed axis sharded over ``mesh``.

    ``in_axes[i]`` is 0 for an argument with the seed axis and ``None`` for one
    shared by all seeds; every output gets the seed axis. Each device runs its
    own seeds (``shard_map``): with several seeds per device it ``vmap``s
    over them; with one it calls ``fn`` unbatched on the squeezed arguments.
    The one-seed case matters for speed: a ``vmap`` of size 1 is not free
    (XLA sees batched ops where plain ones would do); it cost SAC about 7% of
    its CPU cycles per step in benchmarks/sac_speed.py's setting. And it is
    the common case: one seed on a laptop, one seed per accelerator in a sweep.
    """
    local = num_seeds // mesh.size
    specs = tuple(PartitionSpec("seed") if a == 0 else PartitionSpec() for a in in_axes)

    def local_fn(*args):
        if local > 1:
            return jax.vmap(fn, in_axes=in_axes)(*args)
        squeezed = [
            jax.tree_util.tree_map(lambda x: x[0], a) if ax == 0 else a
            for a, ax in zip(args, in_axes, strict=True)
        ]
        return jax.tree_util.tree_map(lambda x: x[None], fn(*squeezed))

    return jax.shard_map(
        local_fn, mesh=mesh, in_specs=specs, out_specs=PartitionSpec("seed"), check_vma=False
    )


class Trainer(NamedTuple):
    """The compiled-on-demand functions of a run, all over a leading seed axis.

    Attributes:
      init: ``init(keys[S]) -> RunnerState``.
      chunk: ``chunk(state, step) -> (state, ChunkMetrics)``, ``steps_per_chunk``
        env steps; ``state`` is donated.
      evaluate: ``evaluate(state, keys[S]) -> returns[S, eval_episodes]``.
      steps_per_chunk: environment steps per ``chunk`` call.
      keys: the seeds' PRNG keys.
      seeds: the seed numbers.
      sharding: the seed-axis sharding of every state leaf.
    """

    init: Any
    chunk: Any
    evaluate: Any
    steps_per_chunk: int
    keys: jax.Array
    seeds: np.ndarray
    sharding: NamedSharding


def build(agent: ModuleType, config: Any, run: RunConfig) -> Trainer:
    """Jitted init / chunk / evaluate for a run over a device-sharded seed axis."""
    validate(run, config)
    if hasattr(agent, "validate"):
        try:
            agent.validate(config)
        except ValueError as e:
            raise UserError(f"bad config: {e}") from None
    num_envs = getattr(config, "num_envs", 1)
    repeat = getattr(config, "action_repeat", 1)
    try:
        env = envs.make(run.env)
        spec = envs.spec(run.env)
    except ImportError as e:  # an optional extra (dmc_* needs playground)
        raise UserError(str(e).strip().splitlines()[0]) from None
    render = None
    if run.obs == "pixels":
        supported = getattr(agent, "OBSERVATIONS", ("state",))
        if "pixels" not in supported:
            name = agent.__name__.rsplit(".", 1)[-1]
            raise UserError(f"--obs=pixels: {name} learns from state only (pixels: dreamer)")
        try:
            render = envs.pixels.wrapper(run.env, run.image_size, env)
        except ValueError as e:
            raise UserError(str(e)) from None
        spec = envs.pixel_spec(spec, run.image_size)
        if hasattr(agent, "validate_spec"):
            try:
                agent.validate_spec(config, spec)
            except ValueError as e:
                raise UserError(f"bad config: {e}") from None
    train_env = envs.wrap_for_training(env, spec.episode_length, num_envs, repeat, render)
    eval_env = envs.wrap_for_eval(env, spec.episode_length, run.eval_episodes, repeat, render)

    # Counted in environment frames: one iteration is num_envs x repeat frames.
    frames = num_envs * repeat
    steps_per_chunk = chunk_steps(run, frames)
    grid = coverage.grid(run.env)  # None: no histogram, nothing added to the chunk
    chunk = make_chunk(agent, config, train_env, spec.action_size, steps_per_chunk // frames, grid)
    evaluate = make_evaluate(agent, eval_env, envs.agent_steps(spec.episode_length, repeat))

    mesh = seed_mesh(run.num_seeds)
    sharded = NamedSharding(mesh, PartitionSpec("seed"))
    replicated = NamedSharding(mesh, PartitionSpec())
    seeds = np.arange(run.seed, run.seed + run.num_seeds)
    # Host (NumPy) keys: identical in every process, so each can place its shards.
    keys = np.asarray(jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds)))

    def init_one(key):
        return init_state(agent, config, spec, train_env, key, grid)

    init_fn = jax.jit(per_seed(init_one, mesh, run.num_seeds, (0,)), out_shardings=sharded)
    chunk_fn = jax.jit(
        per_seed(chunk, mesh, run.num_seeds, (0, None)),
        in_shardings=(sharded, replicated),
        out_shardings=(sharded, sharded),
        donate_argnums=0,
    )
    eval_fn = jax.jit(
        per_seed(lambda s, k: evaluate(s.agent, k), mesh, run.num_seeds, (0, 0)),
        in_shardings=(sharded, sharded),
        out_shardings=sharded,
    )
    return Trainer(init_fn, chunk_fn, eval_fn, steps_per_chunk, keys, seeds, sharded)


def train(agent: ModuleType, config: Any, run: RunConfig) -> list[dict]:
    """Trains ``agent`` with ``config`` on ``run.env``; returns the logged rows.

    Raises:
      UserError: bad settings, a run directory that conflicts with ``resume``,
        an unreadable checkpoint, or non-finite values during training (the
        last good checkpoint is kept).
    """
    started = time.perf_counter()
    trainer = build(agent, config, run)
    keys, seeds = trainer.keys, trainer.seeds

    os.makedirs(run.logdir, exist_ok=True)
    with _quiet_absl():  # damaged metadata: one UserError line, not orbax's log
        ckpt = checkpoint.Checkpointer(os.path.join(run.logdir, "checkpoints"))
    settings = logging_utils.settings(agent, config, run)
    step, extra = 0, {"wall_time": 0.0, "counts": {}}
    if ckpt.latest_step() is not None and not run.resume:
        ckpt.close()
        raise UserError(
            f"{run.logdir} already holds a run; pass --resume to continue it or choose "
            "another --logdir"
        )
    resuming = run.resume and ckpt.latest_step() is not None
    if resuming:
        logging_utils.check_resumable(run.logdir, settings)
    t_built = time.perf_counter()
    description = program_description(agent, config, run, trainer.steps_per_chunk)
    init, compiled_chunk, compiled_eval = programs = compile_programs(trainer, description)
    if resuming:
        state, step, extra = _restore(ckpt, init.out_shapes)
    else:
        state = init(distributed.put(keys, trainer.sharding))
    # Every process has read the run directory before the primary writes to it.
    distributed.barrier("memrl:checked")
    primary = distributed.is_primary()  # the only process that writes files
    if primary:
        logging_utils.write_settings(run.logdir, settings)
    metrics_path = os.path.join(run.logdir, "metrics.csv")
    writer = logging_utils.MetricsWriter(metrics_path, keep_until=step) if primary else None

    steps_per_chunk = trainer.steps_per_chunk
    if primary:  # the time to the first step (benchmarks/startup.py reads this line)
        tracing = sum(p.seconds_tracing for p in programs)
        compiling = sum(p.seconds_compiling for p in programs)
        loaded = sum(p.loaded for p in programs)
        print(
            f"ready after {time.perf_counter() - started:.1f} s (build {t_built - started:.1f} s, "
            f"tracing {tracing:.1f} s, compiling {compiling:.1f} s; {loaded} of 3 programs "
            f"loaded, not traced); training from env step {step}",
            file=sys.stderr,
            flush=True,
        )

    # Opened next to the try that closes them (a failed compile leaks no writer).
    mirrors = sinks.open_sinks(run, settings, step) if primary else []
    bar = logging_utils.progress_bar(run.total_steps, step, enabled=run.progress and primary)
    rows: list[dict] = []
    train_start = time.perf_counter() - extra["wall_time"]
    totals = {k: np.asarray(v, np.int64) for k, v in extra.get("counts", {}).items()}
    window = logging_utils.Window(run.num_seeds)
    try:
        while step < run.total_steps:
            t0 = time.perf_counter()
            state, chunk_metrics = compiled_chunk(state, jnp.asarray(step, jnp.int32))
            chunk_metrics = distributed.gather(chunk_metrics)
            sps = steps_per_chunk / (time.perf_counter() - t0)
            step += steps_per_chunk
            window.add(chunk_metrics)
            bar.update(steps_per_chunk)
            if step % run.eval_every and step != run.total_steps:
                continue
            eval_keys = np.asarray(jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step))
            eval_keys = distributed.put(eval_keys, trainer.sharding)
            eval_returns = np.asarray(distributed.gather(compiled_eval(state, eval_keys)))
            agent_metrics = {**window.agent_means(), **window.periodic}
            # Periodic metrics are always checked (they override same-named ones).
            computed = {**window.computed(), **{k: True for k in window.periodic}}
            _check_finite(agent_metrics, computed, eval_returns, step, ckpt)
            for key, value in window.counts.items():
                totals[key] = totals.get(key, 0) + value
            new_rows = logging_utils.rows(
                step=step,
                seeds=seeds,
                eval_returns=eval_returns,
                wall_time=time.perf_counter() - train_start,
                sps=sps,
                train_returns=window.train_returns(),
                agent_metrics=agent_metrics,
                counts=totals,
                coverage=window.coverage,
            )
            if writer is not None:
                writer.write(new_rows)
            for sink in mirrors:
                sink.write(new_rows)
            rows.extend(new_rows)
            ckpt.save(
                step,
                state,
                {
                    "wall_time": new_rows[0]["wall_time"],
                    "counts": {k: v.tolist() for k, v in totals.items()},
                    "processes": jax.process_count(),
                },
            )
            bar.set_postfix(ret=f"{np.mean(eval_returns):.1f}", sps=f"{sps:.0f}")
            window = logging_utils.Window(run.num_seeds)
    finally:
        bar.close()
        ckpt.close()
        sinks.close(mirrors)
    return rows


def compile_programs(
    trainer: Trainer, description: str | None
) -> tuple[program_cache.Program, program_cache.Program, program_cache.Program]:
    """``trainer``'s init, chunk and evaluation, compiled; traced here or loaded
    from disk (``program_cache``; ``description`` from ``program_description``,
    ``None`` to keep nothing). The chunk donates its state."""
    sharded = trainer.sharding
    replicated = NamedSharding(sharded.mesh, PartitionSpec())
    keys = jax.ShapeDtypeStruct(trainer.keys.shape, trainer.keys.dtype)
    init = program_cache.compile("init", trainer.init, (keys,), (sharded,), sharded, description)
    state = init.out_shapes
    step = jax.ShapeDtypeStruct((), jnp.int32)
    chunk = program_cache.compile(
        "chunk", trainer.chunk, (state, step), (sharded, replicated), sharded, description,
        donate_first=True,
    )  # fmt: skip
    evaluate = program_cache.compile(
        "evaluate", trainer.evaluate, (state, keys), (sharded, sharded), sharded, description
    )
    return init, chunk, evaluate


def program_description(
    agent: ModuleType, config: Any, run: RunConfig, steps_per_chunk: int
) -> str | None:
    """What the run's programs depend on besides memrl's source, for
    ``program_cache`` keys; ``None`` (not cached) for an agent outside memrl,
    whose source the key would not cover."""
    if not agent.__name__.startswith("memrl."):
        return None
    shape = (run.env, run.num_seeds, steps_per_chunk, run.eval_episodes, run.obs, run.image_size)
    return f"{agent.__name__}|{config!r}|{shape}"


def _abstract_state(trainer: Trainer) -> Any:
    abstract = jax.eval_shape(trainer.init, trainer.keys)
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=trainer.sharding), abstract
    )


@contextlib.contextmanager
def _quiet_absl():
    """Silences absl's log (orbax logs an ERROR line per damaged file before
    raising) so that a damaged checkpoint reads as one ``UserError`` line."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _restore(ckpt: checkpoint.Checkpointer, abstract: Any) -> tuple[Any, int, dict]:
    """The newest checkpoint as a state shaped as ``abstract``; ``UserError``
    if unreadable (``ckpt`` is closed then)."""
    try:
        with _quiet_absl():
            saved_by = ckpt.read_extra().get("processes", 1)
            if saved_by == jax.process_count():
                return ckpt.restore(abstract)
    except Exception as e:  # orbax raises many types for damaged files
        ckpt.close()
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(
            f"cannot read the checkpoint in {ckpt.directory} ({type(e).__name__}: {first})"
        ) from None
    ckpt.close()
    raise UserError(
        f"the checkpoint in {ckpt.directory} was saved by {saved_by} process(es); resume it "
        f"with {saved_by} processes, not {jax.process_count()}"
    )


EVAL_CSV = "eval.csv"
EVAL_COLUMNS = (
    "env_steps",
    "seed",
    "controller",
    "eval_return",
    "eval_return_std",
    "eval_episodes",
    "eval_seconds",
)


def evaluate_checkpoint(agent: ModuleType, controllers: dict, run: RunConfig) -> list[dict]:
    """Evaluates the newest checkpoint in ``run.logdir`` once per controller and
    appends the rows to ``<logdir>/eval.csv`` (``--eval_only``).

    Nothing else in ``logdir`` is written: ``metrics.csv``, ``config.json`` and
    the checkpoints stay as they are. ``eval.csv`` gets one row per controller
    and seed (columns ``EVAL_COLUMNS``; ``controller`` names the row), appended
    after the rows of earlier evaluations, and only once every evaluation has
    run.

    Every controller uses the keys of the training-time evaluation at the
    checkpoint's step (``fold_in(PRNGKey(seed), step)``): all rows of a seed
    start from the same ``eval_episodes`` initial states (a paired
    comparison, as MAAC's Table 1 with and without MPC), and with the run's own
    config and ``eval_episodes`` the return equals ``metrics.csv``'s at that step.

    Args:
      agent: the agent module.
      controllers: name -> agent config. The configs may differ only in
        evaluation settings (MAAC's ``mpc*`` fields): the checkpoint's arrays
        are read once, with the first config's layout, and evaluated under each.
      run: the run's settings (``env``, ``seed``, ``num_seeds``, ``obs`` and
        ``image_size`` as when it was trained; ``eval_episodes``; ``logdir``).

    Raises:
      UserError: no checkpoint in ``logdir``, or one that cannot be read
        (nothing is written then), or configs that change the state layout.
    """
    ckpt_dir = os.path.join(run.logdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise UserError(f"no checkpoint to evaluate in {run.logdir} (train there first)")
    names = list(controllers)
    trainers = {name: build(agent, controllers[name], run) for name in names}
    with _quiet_absl():  # damaged metadata: one UserError line, not orbax's log
        ckpt = checkpoint.Checkpointer(ckpt_dir)
        latest = ckpt.latest_step()
    if latest is None:
        ckpt.close()
        raise UserError(f"no checkpoint to evaluate in {ckpt_dir}")
    state, step, _ = _restore(ckpt, _abstract_state(trainers[names[0]]))
    ckpt.close()
    leaves = jax.tree_util.tree_leaves(state)
    new_rows = []
    for name in names:
        trainer = trainers[name]
        abstract = _abstract_state(trainer)
        layout = [(a.shape, a.dtype) for a in jax.tree_util.tree_leaves(abstract)]
        if layout != [(x.shape, x.dtype) for x in leaves]:
            raise UserError(f"controller {name!r} changes the agent's state layout")
        # Same arrays, this controller's static config (e.g. MAAC's mpc).
        own = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(abstract), leaves)
        eval_keys = np.asarray(jax.vmap(jax.random.fold_in, in_axes=(0, None))(trainer.keys, step))
        t0 = time.perf_counter()
        eval_keys = distributed.put(eval_keys, trainer.sharding)
        returns = np.asarray(distributed.gather(trainer.evaluate(own, eval_keys)), np.float64)
        seconds = time.perf_counter() - t0  # includes compilation
        for i, seed in enumerate(trainer.seeds):
            new_rows.append(
                {
                    "env_steps": int(step),
                    "seed": int(seed),
                    "controller": name,
                    "eval_return": float(np.mean(returns[i])),
                    "eval_return_std": float(np.std(returns[i])),
                    "eval_episodes": int(returns.shape[1]),
                    "eval_seconds": round(seconds, 3),
                }
            )
    if distributed.is_primary():
        _append_eval_rows(os.path.join(run.logdir, EVAL_CSV), new_rows)
    return new_rows


def _append_eval_rows(path: str, new_rows: list[dict]) -> None:
    if os.path.exists(path):
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
        if header is not None and tuple(header) != EVAL_COLUMNS:
            raise UserError(f"{path} has other columns than {', '.join(EVAL_COLUMNS)}")
        fresh = header is None
    else:
        fresh = True
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EVAL_COLUMNS)
        if fresh:
            writer.writeheader()
        writer.writerows(new_rows)


def _check_finite(
    agent_metrics: dict, computed: dict, eval_returns: np.ndarray, step: int, ckpt
) -> None:
    # A train_step metric's mean is NaN by contract where no step of the window
    # computed it (``computed`` false; None for every seed): only the seeds that
    # computed it are checked. Periodic metrics are always checked.
    bad = []
    for k, v in agent_metrics.items():
        if v is None:
            continue
        finite = np.isfinite(np.asarray(v, np.float64))
        if not np.all(finite | ~np.asarray(computed.get(k, True))):
            bad.append(k)
    if not np.all(np.isfinite(eval_returns)):
        bad.append("eval_return")
    if bad:
        last = ckpt.latest_step()
        kept = f"last good checkpoint: step {last}" if last is not None else "no checkpoint yet"
        raise UserError(
            f"non-finite values in training at env step {step} ({', '.join(sorted(bad))}); "
            f"{kept} in {ckpt.directory}"
        )

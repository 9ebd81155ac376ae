"""Runs that span several processes (hosts) on JAX's distributed runtime.

One run is one program started once per host (multi-controller JAX, as on TPU
pods and multi-node GPU clusters). ``initialize`` joins the processes; the
runner then shards the seed axis over every device of every process
(``runner.seed_mesh``), each process runs its own seeds with no cross-process
traffic inside a chunk, ``gather`` brings the per-seed metrics and
evaluation returns to every process at each log point, and only the primary
process (``is_primary``) writes ``metrics.csv``, ``config.json`` and the
progress bar. Checkpoints go through orbax's multi-process path (each process
writes its shards, the primary commits).

Failure handling (checked on this machine with two CPU processes):

* A process that dies makes a cross-process all-gather fail at once on the
  others (gloo: "Connection closed by peer"); ``gather`` turns that into
  ``PeerError``. A process that dies while the others run a chunk is noticed
  by a watchdog thread that asks the coordination service which processes
  still send heartbeats, once a second; it prints one line and ends the
  process (``os._exit``: no shutdown barrier that would wait for the dead
  peer). Both happen within ``timeout`` seconds.
* JAX's default reaction to a dead peer is a fatal error in the
  coordination client (an abort with a C++ stack trace, exit code 134), and,
  where the coordinator itself died, a hang until the heartbeat timeout.
  ``initialize`` therefore turns on ``jax_enable_recoverability`` (the
  service then leaves the surviving processes running) and lets the
  watchdog end them cleanly instead.
* Nothing saved is lost: orbax commits a checkpoint only after every process
  has written its part, so a checkpoint interrupted by a death is never the
  newest one, and ``--resume`` continues from the last complete one.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import jax
import numpy as np

# Cluster managers whose environment variables jax.distributed.initialize()
# reads by itself (jax._src.clusters): SLURM, Open MPI, Cloud TPU, Kubernetes.
_AUTO_DETECT = "jax's cluster detection (SLURM, Open MPI, Cloud TPU pods)"


_STOPPING = threading.Event()  # set once every process has finished (``finish``)


class PeerError(RuntimeError):
    """Another process of the run stopped or cannot be reached."""


def detected_process_count() -> int:
    """The process count of a cluster job jax would auto-detect, else 1.

    Uses the cluster environments jax registers (``jax._src.clusters``); a
    single-task job (one SLURM task, one MPI rank, a one-host TPU) counts as 1,
    so nothing is initialized for it.
    """
    try:
        from jax._src import clusters  # noqa: F401 (registers the cluster types)
        from jax._src.clusters.cluster import ClusterEnv
    except ImportError:  # a jax without the (private) detection module
        return 1
    for env in ClusterEnv._cluster_types:
        if getattr(env, "opt_in_only_method", False):
            continue
        try:
            if env.is_env_present():
                return int(env.get_process_count())
        except Exception:  # a half-configured environment: not a cluster job
            continue
    return 1


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout: int = 120,
) -> int:
    """Joins the processes of a multi-process run; returns the process count.

    Explicit arguments (the ``--coordinator_address``, ``--num_processes``,
    ``--process_id`` flags) override detection; with none given, a cluster
    job that jax detects by itself with more than one process is joined, and
    anything else is a single-process run that this leaves untouched. Must
    run before any JAX computation.

    Args:
      coordinator_address: ``host:port`` of process 0.
      num_processes: processes in the run.
      process_id: this process's index, ``0 .. num_processes - 1``.
      timeout: seconds to wait for every process to join, and after which a
        silent process counts as dead.

    Raises:
      ValueError: inconsistent arguments, or a coordinator that cannot be
        reached within ``timeout`` (one line).
    """
    explicit = (coordinator_address, num_processes, process_id)
    if all(v is None for v in explicit):
        if detected_process_count() <= 1:
            return 1
        source = _AUTO_DETECT
    else:
        if num_processes is not None and num_processes < 1:
            raise ValueError(f"--num_processes must be positive, got {num_processes}")
        if process_id is not None and num_processes is not None:
            if not 0 <= process_id < num_processes:
                raise ValueError(
                    f"--process_id must be in 0..{num_processes - 1}, got {process_id}"
                )
        if num_processes == 1:
            return 1
        source = f"coordinator {coordinator_address}"
    # CPU processes exchange data through gloo (the default, none, cannot).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # The service keeps the survivors of a dead process alive; the watchdog
    # below ends them with one line instead of an abort.
    jax.config.update("jax_enable_recoverability", True)
    # JAX ends a process that cannot join with a fatal error (an abort and a
    # C++ stack trace) once initialization_timeout passes; this timer ends it
    # first, with one line.
    joined = threading.Event()

    def give_up():
        if not joined.wait(timeout):
            _die(f"cannot join the distributed run through {source} within {timeout} s", False)

    threading.Thread(target=give_up, name="memrl-join-timeout", daemon=True).start()
    try:
        jax.distributed.initialize(
            coordinator_address,
            num_processes,
            process_id,
            initialization_timeout=timeout + 30,
            heartbeat_timeout_seconds=max(2, timeout),
        )
        joined.set()
    except (ValueError, RuntimeError) as e:  # jax raises both; XlaRuntimeError is a RuntimeError
        text = _first_line(e)
        raise ValueError(f"cannot join the distributed run through {source}: {text}") from None
    _start_watchdog(jax.process_count(), poll_seconds=1.0)
    return jax.process_count()


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0)."""
    return not _joined() or jax.process_index() == 0


def gather(tree: Any) -> Any:
    """Every process gets the global value of each array of ``tree`` as NumPy.

    One process: ``jax.device_get``. Several: an all-gather of each process's
    shards (a collective: every process must call it at the same point).

    Raises:
      PeerError: another process stopped during the exchange.
    """
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    try:
        return multihost_utils.process_allgather(tree, tiled=True)
    except jax.errors.JaxRuntimeError as e:
        first = _first_line(e)
        raise PeerError(f"another process of the run stopped ({first})") from None


def put(value: Any, sharding: jax.sharding.Sharding) -> jax.Array:
    """A host array that every process holds in full, as a global array with
    ``sharding`` (each process places only its own shards)."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def barrier(name: str) -> None:
    """Waits until every process reaches ``name`` (nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        try:
            multihost_utils.sync_global_devices(name)
        except jax.errors.JaxRuntimeError as e:
            first = _first_line(e)
            raise PeerError(f"another process of the run stopped ({first})") from None


def finish() -> None:
    """Ends a run's distributed part: waits until every process is done, then
    stops the watchdog (the processes may now exit in any order; the
    coordinator's exit would otherwise look like a death to the others)."""
    if _joined():
        barrier("memrl:finished")
        _STOPPING.set()


def leave() -> None:
    """Exits a finished multi-process run's process (status 0) without JAX's
    shutdown, whose order across processes is not safe: with the recoverable
    setting the coordinator does not wait for the others, and a process that
    disconnects after it has gone aborts. ``finish`` has synchronized them, and
    every file is written and closed. Nothing happens in a one-process run."""
    if _joined():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def exit_now(code: int) -> None:
    """Ends a multi-process run's process without the shutdown barrier (which
    would wait for peers that may be gone); a plain ``sys.exit`` otherwise."""
    if _joined():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _joined() -> bool:
    """Whether this process joined a multi-process run (touches no device)."""
    return jax.distributed.is_initialized()


def _start_watchdog(num_processes: int, poll_seconds: float) -> None:
    from jax._src import distributed as jax_distributed

    client = jax_distributed.global_state.client
    me = jax.process_index()
    everyone = list(range(num_processes))

    def watch():
        while not _STOPPING.is_set():
            time.sleep(poll_seconds)
            if _STOPPING.is_set():
                return
            try:
                live = client.get_live_nodes(everyone)
            except Exception as e:  # the coordinator (process 0) is gone
                if _STOPPING.is_set():
                    return
                first = _first_line(e)
                _die(f"process {me}: lost the coordinator ({first})")
                return
            missing = sorted(set(everyone) - set(live))
            if missing:
                who = ", ".join(str(i) for i in missing)
                _die(f"process {me}: process {who} of {num_processes} stopped responding")
                return

    threading.Thread(target=watch, name="memrl-peer-watchdog", daemon=True).start()


def _die(message: str, saved: bool = True) -> None:
    hint = " (checkpoints already saved are kept; continue with --resume)" if saved else ""
    print(
        f"error: {message}; exiting{hint}",
        file=sys.stderr,
        flush=True,
    )
    os._exit(3)

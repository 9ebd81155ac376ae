"""Traced programs kept on disk, so that a repeated command skips tracing.

JAX's persistent compilation cache (``compilation_cache``) skips XLA's
compilation of a program it has seen, but every run still traces the program
in Python first, to find out which program it is: for SAC on MJX halfcheetah
that was 38 of the 56 s a warm start took (MJX's ``forward`` is traced six
times: the training step, its auto-reset, the evaluation step and reset, the
inits). Here each of the runner's programs (init, chunk, evaluation) is
exported once with ``jax.export`` (StableHLO, shardings included) and written
next to the compilation cache; a later run with the same program key loads
it, skips tracing, and compiles it (from the compilation cache when that holds
it too).

The key of a program is a SHA-256 over everything its trace depends on:

* memrl's own source files and the versions of the libraries that build the
  program (jax, jaxlib, flax, optax, distrax, brax, mujoco, mujoco-mjx,
  playground);
* the program's name and the caller's description (agent, its full config,
  env, seeds, steps per chunk, evaluation episodes, observations);
* the backend, device kind and count, and the JAX settings that change a trace
  (x64, default matmul precision, PRNG implementation, rank and dtype promotion);
* the argument structure (as printed, without object addresses) and shapes;
  a loaded program's structure must also equal the caller's.

Only agents that live in memrl are cached this way (their source is in the
key); another agent module, a multi-process run or ``--nocompilation_cache``
trace as before. A program that cannot be exported (a host callback, say) is
traced and compiled as before too. Files that cannot be read are traced
again and rewritten.

Arguments and results go in and out of the exported program as flat lists of
arrays; the pytree structures are kept beside it (pickled tree definitions),
so the state's classes need no registration with ``jax.export``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import pickle
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

# The libraries whose code goes into a trace.
PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "distrax",
    "brax",
    "mujoco",
    "mujoco-mjx",
    "playground",
)
# JAX settings that change what a trace produces.
CONFIG = (
    "jax_enable_x64",
    "jax_default_matmul_precision",
    "jax_default_prng_impl",
    "jax_threefry_partitionable",
    "jax_numpy_rank_promotion",
    "jax_numpy_dtype_promotion",
    "jax_debug_nans",
    "jax_debug_infs",
)
MAX_BYTES = 2**30  # the directory's cap; least recently used programs are removed first
_SUFFIX = ".program"


def directory() -> str | None:
    """Where programs are kept: ``programs/`` in the persistent compilation
    cache's directory; ``None`` while that cache is off or in one of several
    processes."""
    if not jax.config.jax_enable_compilation_cache or jax.process_count() > 1:
        return None
    cache = jax.config.jax_compilation_cache_dir
    return os.path.join(cache, "programs") if cache else None


@functools.cache
def source_digest() -> str:
    """SHA-256 of memrl's source files and the versions in ``PACKAGES``."""
    digest = hashlib.sha256()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for base, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(base, name)
                digest.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    for package in PACKAGES:
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{package}={version};".encode())
    return digest.hexdigest()


def program_key(name: str, description: str, leaves: Sequence[Any], in_tree: Any) -> str:
    """The key of a program (module docstring)."""
    # A tree's static data may print with addresses (MJX's Data holds NumPy
    # arrays in wrappers that print as objects): the key leaves them out, and
    # a loaded program's structure must equal the caller's (``_load``).
    structure = re.sub(r" at 0x[0-9a-fA-F]+", "", str(in_tree))
    device = jax.devices()[0]
    parts = [
        source_digest(),
        name,
        description,
        f"{jax.default_backend()}:{device.device_kind}:{jax.device_count()}",
        *(f"{k}={jax.config.values.get(k)!r}" for k in CONFIG),
        structure,
        *(f"{x.shape}:{x.dtype}:{getattr(x, 'sharding', None)}" for x in leaves),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class Program:
    """A compiled program over pytrees, from a trace or a loaded export.

    Attributes:
      loaded: whether its export was read from disk (nothing was traced).
      out_shapes: the results' ``jax.ShapeDtypeStruct`` pytree (with shardings).
      seconds_tracing: tracing and lowering (or loading), in seconds.
      seconds_compiling: compiling (or fetching from the compilation cache).
    """

    def __init__(self, compiled: Any, in_tree: Any, out_tree: Any, out_avals, out_sharding):
        self._compiled, self._in_tree, self._out_tree = compiled, in_tree, out_tree
        self.loaded = False
        self.seconds_tracing = self.seconds_compiling = 0.0
        shapes = [jax.ShapeDtypeStruct(s, d, sharding=out_sharding) for s, d in out_avals]
        self.out_shapes = jax.tree_util.tree_unflatten(out_tree, shapes)

    def __call__(self, *args: Any) -> Any:
        leaves, tree = jax.tree_util.tree_flatten(args)
        if tree != self._in_tree:
            raise TypeError(f"arguments {tree} do not match the program's {self._in_tree}")
        return jax.tree_util.tree_unflatten(self._out_tree, self._compiled(*leaves))


def compile(
    name: str,
    fn: Callable,
    args: tuple,
    in_shardings: tuple,
    out_sharding: Any,
    description: str | None,
    donate_first: bool = False,
) -> Program:
    """``fn(*args)`` compiled, its trace loaded from disk when it is there.

    Args:
      name: the program's name (its file's prefix).
      fn: the function (jitted or not).
      args: its arguments, arrays or ``jax.ShapeDtypeStruct``s.
      in_shardings: one sharding per argument, for all of its leaves.
      out_sharding: the sharding of every result.
      description: what else the trace depends on (module docstring); ``None``:
        trace and compile, keep nothing.
      donate_first: donate the first argument's buffers.

    Returns:
      A ``Program``; ``compile(...)(*args)`` equals ``jax.jit(fn)(*args)``.
    """
    leaves, in_tree = jax.tree_util.tree_flatten(args)
    counts = [len(jax.tree_util.tree_leaves(a)) for a in args]
    shardings = tuple(s for s, n in zip(in_shardings, counts, strict=True) for _ in range(n))
    avals = [
        jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
        for x, s in zip(leaves, shardings, strict=True)
    ]
    donate = tuple(range(counts[0])) if donate_first else ()
    folder = directory() if description is not None else None
    path = None
    if folder is not None:
        key = program_key(name, description, avals, in_tree)
        path = os.path.join(folder, f"{name}-{key[:40]}{_SUFFIX}")
    start = time.perf_counter()
    exported, out_tree = _load(path, in_tree) if path else (None, None)
    loaded = exported is not None
    if not loaded:
        out_trees = []

        def flat(*flat_args):
            out = fn(*jax.tree_util.tree_unflatten(in_tree, flat_args))
            out_leaves, tree = jax.tree_util.tree_flatten(out)
            out_trees.append(tree)
            return out_leaves

        if path is not None:
            jitted = jax.jit(flat, in_shardings=shardings, out_shardings=out_sharding)
            try:
                exported = jax.export.export(jitted)(*avals)
            except Exception:  # not exportable (a host callback, say); a bad trace raises below
                exported = None
            else:
                _save(path, exported, in_tree, out_trees[-1])
    # The export's call (loaded or just made), or the trace itself when there
    # is nothing to keep.
    target = flat if exported is None else exported.call
    lowered = jax.jit(
        target, in_shardings=shardings, out_shardings=out_sharding, donate_argnums=donate
    ).lower(*avals)
    traced = time.perf_counter()
    program = Program(
        lowered.compile(),
        in_tree,
        out_tree if loaded else out_trees[-1],
        [(o.shape, o.dtype) for o in lowered.out_info],
        out_sharding,
    )
    program.loaded = loaded
    program.seconds_tracing = traced - start
    program.seconds_compiling = time.perf_counter() - traced
    return program


def _load(path: str, in_tree: Any) -> tuple[Any, Any]:
    try:
        with open(path, "rb") as f:
            blob, saved_in, out_tree = pickle.load(f)
        if saved_in != in_tree:
            return None, None
        exported = jax.export.deserialize(blob)
        os.utime(path)  # recently used
        return exported, out_tree
    except Exception:  # absent, truncated or from another version: trace again
        return None, None


def _save(path: str, exported: Any, in_tree: Any, out_tree: Any) -> None:
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        payload = pickle.dumps((exported.serialize(), in_tree, out_tree))
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)  # atomic: readers see the whole file or none
        _prune(folder)
    except OSError:  # a read-only or full disk costs the next run a trace, nothing more
        pass


def _prune(folder: str) -> None:
    entries = []
    for name in os.listdir(folder):
        if name.endswith(_SUFFIX):
            stat = os.stat(os.path.join(folder, name))
            entries.append((stat.st_mtime, stat.st_size, name))
    total = sum(size for _, size, _ in entries)
    for _, size, name in sorted(entries):
        if total <= MAX_BYTES:
            break
        os.remove(os.path.join(folder, name))
        total -= size

"""Test-session settings, inherited by the scripts the tests launch:

- a persistent XLA compilation cache shared by the test processes (xdist
  workers and scripts), capped as the scripts cap it, so that identical
  programs (a resumed run, the same run twice) compile once;
- XLA's CPU backend at LLVM optimization level 0.

Tests compile far more than they compute: with the persistent cache on, XLA
compilation took 1200 s of the suite's 2560 test-seconds on the 2-core dev VM
(a listener on ``/jax/core/compile/backend_compile_duration``: 7095
programs), most of it LLVM's -O3 pipeline (threefry's unrolled rounds in
every network initializer, for one: 0.4 s per parameter at -O3). Measured:
test_maxent_dreamer.py 173 s -> 130 s, test_dreamer.py + test_dmc.py 285 s
-> 231 s, the whole suite 21 min -> 16.5 min. The -O0 build computes the same
functions, but float32 sums round differently (XLA lets LLVM reassociate
reductions when it vectorizes), so two tests that sat at float32's edge state
their tolerance for both builds. Users' runs and the benchmarks keep XLA's
default. ``xla_flags`` adds to the session's ``XLA_FLAGS`` for a subprocess.
"""

import os
import tempfile

import jax

FAST_COMPILE = "--xla_backend_optimization_level=0"


def xla_flags(*flags: str) -> str:
    """``XLA_FLAGS`` for a test process: the session's flags plus ``flags``."""
    return " ".join((os.environ.get("XLA_FLAGS", ""), *flags)).strip()


if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = xla_flags(FAST_COMPILE)

from memrl.training import compilation_cache  # noqa: E402 (after XLA_FLAGS)

CACHE_DIR = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "memrl-test-xla-cache")
)
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
# The scripts cap the cache (least recently used out first), and jax's capped
# cache keeps an access-time file per entry; with the tests writing uncapped
# entries (no such files) into the same directory, every later write from a
# script failed (FileNotFoundError on an entry's -atime file: jax 0.10.2), so
# the scripts' largest programs never reached the cache. Cap the tests too.
jax.config.update("jax_compilation_cache_max_size", compilation_cache.CACHE_MAX_BYTES)

"""Test-session settings: a persistent XLA compilation cache shared by the test
processes (xdist workers and the scripts the tests launch), so that identical
programs (a resumed run, the same run twice) compile once; and XLA's CPU
backend at LLVM optimization level 0.

Tests compile far more than they compute: with the persistent cache on, XLA
compilation was 1200 s of the suite's 2560 test-seconds on the 2-core dev VM
(listener on ``/jax/core/compile/backend_compile_duration``, 7095 programs),
most of it LLVM's -O3 pipeline (threefry's unrolled rounds in every network
initializer, for one: 0.4 s per parameter at -O3). Measured: test_maxent_dreamer.py
173 s -> 130 s, test_dreamer.py + test_dmc.py 285 s -> 231 s, the whole suite
21 min -> 17 min. The -O0 build computes the same functions; float32 sums
round differently (XLA lets LLVM reassociate reductions when it vectorizes),
so two tests that sat at float32's edge state their tolerance against both
builds. Users' runs and the benchmarks keep XLA's default. The test processes and the scripts they launch inherit
the flag through ``XLA_FLAGS`` (``xla_flags`` adds to it).
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

CACHE_DIR = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "memrl-test-xla-cache")
)
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

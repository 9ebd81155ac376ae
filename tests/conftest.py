"""Test-session settings: a persistent XLA compilation cache shared by the test
processes (xdist workers and the scripts the tests launch), so that identical
programs (a resumed run, the same run twice) compile once."""

import os
import tempfile

import jax

CACHE_DIR = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "memrl-test-xla-cache")
)
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

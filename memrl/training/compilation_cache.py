"""JAX's persistent compilation cache as the experiment scripts set it up.

Its own module, light to import (jax and the standard library only), so a
process can set the cache up before memrl's environments and agents load.
"""

from __future__ import annotations

import importlib.util
import os

CACHE_MAX_BYTES = 4 * 2**30  # the default cache's cap (JAX_COMPILATION_CACHE_MAX_SIZE overrides)


def default_cache_dir() -> str:
    """Where compiled programs are kept between commands."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "memrl", "xla")


def setup(enabled: bool, directory: str | None = None) -> str | None:
    """Turns JAX's persistent compilation cache on (or off); returns its directory.

    On by default: a CPU run of MAAC on ant compiles for minutes, and a grid of
    runs or a repeated command would pay that each time. The directory is
    ``directory``, else ``$JAX_COMPILATION_CACHE_DIR``, else the user's cache
    directory (``default_cache_dir``). Programs that compile in under a second
    are not kept (JAX's ``jax_persistent_cache_min_compile_time_secs``), and
    the cache is capped at ``CACHE_MAX_BYTES`` (4 GiB; the least recently used
    programs are dropped first) unless ``JAX_COMPILATION_CACHE_MAX_SIZE`` is set.
    """
    import jax

    if not enabled:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    directory = directory or os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_cache_dir()
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", directory)
    # The cap (least recently used out first) needs filelock, else jax cannot
    # write the cache at all; filelock is a dependency, checked all the same.
    capped = importlib.util.find_spec("filelock") is not None
    if capped and "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    return directory

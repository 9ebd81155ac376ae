"""The persistent compilation cache the experiment scripts turn on by default:
programs land in the chosen directory (flag, then $JAX_COMPILATION_CACHE_DIR,
then the user's cache directory), capped at 4 GiB, and nothing lands there
when it is off. Each case runs in a fresh process (JAX's cache settings are
process-wide)."""

import os
import subprocess
import sys

PROGRAM = """
import sys
import jax, jax.numpy as jnp
from memrl.training import compilation_cache
enabled, directory = sys.argv[1] == "on", sys.argv[2] or None
used = compilation_cache.setup(enabled, directory)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
jax.jit(lambda x: jnp.sin(x) @ x.T + 1.5)(jnp.ones((7, 5))).block_until_ready()
print(used, jax.config.jax_compilation_cache_max_size)
"""


def _run(tmp_path, enabled, directory="", env_dir=None, home=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    if env_dir:
        env["JAX_COMPILATION_CACHE_DIR"] = env_dir
    env.pop("XDG_CACHE_HOME", None)
    if home:
        env["HOME"] = home
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, "on" if enabled else "off", directory],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return out.stdout.split()


def _entries(path):
    return [f for f in os.listdir(path) if not f.startswith(".")] if os.path.isdir(path) else []


def test_flag_directory_env_and_default(tmp_path):
    flag_dir, env_dir, home = (str(tmp_path / n) for n in ("flag", "env", "home"))
    used, cap, *_ = _run(tmp_path, True, flag_dir, env_dir=env_dir)
    assert used == flag_dir and _entries(flag_dir) and not _entries(env_dir)
    assert int(cap) == 4 * 2**30
    used, *_ = _run(tmp_path, True, env_dir=env_dir)
    assert used == env_dir and _entries(env_dir)
    used, *_ = _run(tmp_path, True, home=home)
    assert used == os.path.join(home, ".cache", "memrl", "xla") and _entries(used)


def test_off_writes_nothing(tmp_path):
    env_dir = str(tmp_path / "env")
    used, *_ = _run(tmp_path, False, env_dir=env_dir)
    assert used == "None" and not _entries(env_dir)

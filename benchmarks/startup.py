"""Time to the first training step, with a cold and a warm compilation cache.

    python -m benchmarks.startup [--runs=maac:ant,sac:halfcheetah] [--repeats=1]

For each ``algo:env`` it launches ``python -m experiments.<algo> --env=<env>``
with a fresh, empty persistent compilation cache (cold), then again with the
cache that run filled (warm), each in a fresh run directory, and measures the
wall time from the launch to the runner's ``ready after`` line (imports, env
construction, parameter init, tracing and compiling the init, chunk and
evaluation programs; nothing has stepped yet). The process is then stopped.
The warm/cold ratio is the saving of the persistent caches, which
``experiments/*.py`` turn on by default (``--nocompilation_cache`` turns them
off): XLA's compiled programs, and beside them the traced programs
(``memrl.training.program_cache``), so a warm start neither traces nor
compiles. The runner's own split of each start (build, tracing, compiling,
programs loaded) is printed after the table. Both runs share the machine, so
its load affects both; the load average is printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_list("runs", ["maac:ant", "sac:halfcheetah"], "algo:env pairs.")
flags.DEFINE_integer("repeats", 1, "Warm starts after the cold one (the median is printed).")
flags.DEFINE_integer("timeout", 1800, "Seconds to wait for the ready line.")
FLAGS = flags.FLAGS


def time_to_ready(algo: str, env: str, cache: str, logdir: str) -> tuple[float, str]:
    """Seconds from the launch of the run to its ``ready after`` line, and the line."""
    command = [
        sys.executable,
        "-m",
        f"experiments.{algo}",
        f"--env={env}",
        f"--logdir={logdir}",
        "--noprogress",
        f"--compilation_cache_dir={cache}",
    ]
    environment = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=environment
    )
    try:
        for line in process.stderr:
            if line.startswith("ready after"):
                return time.perf_counter() - start, line.strip()
            if line.startswith("error:") or time.perf_counter() - start > FLAGS.timeout:
                raise RuntimeError(f"{algo} {env}: {line.strip() or 'timed out'}")
        raise RuntimeError(f"{algo} {env}: exited before its first step")
    finally:
        process.kill()
        process.wait()


def main(argv):
    del argv
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    print("| run | cold (s) | warm (s) | warm / cold |")
    print("|---|---|---|---|")
    lines = []  # the runner's own split of each start (build, tracing, compiling)
    for item in FLAGS.runs:
        algo, env = item.split(":")
        with tempfile.TemporaryDirectory() as tmp:
            cache = os.path.join(tmp, "cache")
            cold, cold_line = time_to_ready(algo, env, cache, os.path.join(tmp, "cold"))
            warm, warm_line = sorted(
                time_to_ready(algo, env, cache, os.path.join(tmp, f"warm{i}"))
                for i in range(FLAGS.repeats)
            )[FLAGS.repeats // 2]
        print(f"| {algo} {env} | {cold:.1f} | {warm:.1f} | {warm / cold:.2f} |", flush=True)
        lines.append(f"{algo} {env}: cold: {cold_line}\n{algo} {env}: warm: {warm_line}")
    print("\n".join(lines))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    app.run(main)

"""Runs ``python -m experiments.<name> ...`` for the tests, without paying the
imports each time: a fork server.

Every launch of an experiment script spends 8-10 s of CPU importing jax, flax,
distrax, brax and MuJoCo MJX (with MuJoCo Warp) before it parses a flag, and
the default suite launches about 35. Here one server process per pytest
process imports what the scripts import, once, then forks a child per launch.
The child runs the module as ``python -m`` does
(``runpy.run_module(name, run_name="__main__", alter_sys=True)``) with the
launch's ``argv``, environment and working directory, stdout and stderr in
files, stdin from ``/dev/null``, and exits as the interpreter does
(non-daemon threads joined, ``atexit`` handlers run, ``SystemExit``'s code as
the exit status; an uncaught exception prints its traceback and exits 1), so
what a test sees is what a shell sees. Only the interpreter's teardown of its
modules is skipped (2 s per launch). ``test_cli`` checks this against
a real ``python -m``.

Forking is safe because the server never touches a device: no XLA backend
exists before the fork (checked), so ``XLA_FLAGS`` (fake host devices, the
test build's optimization level) takes effect in each child. JAX reads its
``JAX_*`` variables once, at import: a launch that changes one runs as a real
subprocess instead.

API: ``run(module, *args, env=None, timeout=600) -> subprocess.CompletedProcess``
(text output) and ``start(module, *args, env=None) -> Process`` (``pid``,
``poll``, ``wait``, ``communicate``, ``send_signal``, ``returncode``).
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
# Imported once by the server: what the experiment scripts import. Not the
# scripts themselves: some define absl flags at import, and the child runs the
# script's module afresh, as python -m does.
PRELOAD = (
    "memrl.training.cli",
    "memrl.agents.sac",
    "memrl.agents.mbpo",
    "memrl.agents.memr",
    "memrl.agents.maac",
    "memrl.agents.s2vg",
    "memrl.agents.memb",
    "memrl.agents.svg",
    "memrl.agents.dreamer",
    "memrl.agents.maxent_dreamer",
    "memrl.diagnostics.gradient_error",
    "memrl.reproduce.driver",
)


# --------------------------------------------------------------------- client


class Process:
    """A launched script, with the part of ``subprocess.Popen``'s interface the
    tests use. Its output goes to files, read back by ``communicate``."""

    def __init__(self, server: _Server | None, popen: subprocess.Popen | None, pid: int, files):
        self._server, self._popen, self.pid, self._files = server, popen, pid, files
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            if self._popen is not None:
                self.returncode = self._popen.poll()
            else:
                self.returncode = self._server.exit_code(self.pid, timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if self._popen is not None:
                self.returncode = self._popen.wait(timeout)
            else:
                self.returncode = self._server.exit_code(self.pid, timeout)
                if self.returncode is None:
                    raise subprocess.TimeoutExpired(self.pid, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        outputs = []
        for path in self._files:
            with open(path, errors="replace") as f:
                outputs.append(f.read())
            os.unlink(path)
        self._files = ()
        return outputs[0], outputs[1]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Server:
    """The client's end of one fork server: requests out, pids and exit codes in."""

    def __init__(self):
        self._proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._lock = threading.Condition()
        self._pids: dict[int, int] = {}  # request id -> pid
        self._codes: dict[int, int] = {}  # pid -> exit code
        self._next = 0
        self._dead = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            message = json.loads(line)
            with self._lock:
                if "request" in message:
                    self._pids[message["request"]] = message["pid"]
                else:
                    self._codes[message["pid"]] = message["returncode"]
                self._lock.notify_all()
        with self._lock:
            self._dead = True
            self._lock.notify_all()

    def alive(self) -> bool:
        return not self._dead and self._proc.poll() is None

    def launch(self, request: dict) -> int:
        with self._lock:
            request["request"] = number = self._next
            self._next += 1
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            self._lock.wait_for(lambda: number in self._pids or self._dead)
            if self._dead:
                raise RuntimeError("the tests' fork server died")
            return self._pids.pop(number)

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        with self._lock:
            self._lock.wait_for(lambda: pid in self._codes or self._dead, timeout)
            if pid not in self._codes and self._dead:
                raise RuntimeError("the tests' fork server died")
            return self._codes.get(pid)


_SERVER: _Server | None = None


def start(module: str, *args: str, env: dict | None = None, cwd: str = ROOT) -> Process:
    """Launches ``python -m module *args`` with ``os.environ`` updated by ``env``."""
    global _SERVER
    env = dict(os.environ, **(env or {}))
    files = []
    for name in ("stdout", "stderr"):
        fd, path = tempfile.mkstemp(prefix=f"memrl-{name}-", suffix=".txt")
        os.close(fd)
        files.append(path)
    changed = {k for k in env.keys() | os.environ.keys() if env.get(k) != os.environ.get(k)}
    if any(k.startswith("JAX_") for k in changed) or not hasattr(os, "fork"):
        with open(files[0], "w") as out, open(files[1], "w") as err:
            popen = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        return Process(None, popen, popen.pid, files)
    if _SERVER is None or not _SERVER.alive():
        _SERVER = _Server()
    request = dict(module=module, args=list(args), env=env, cwd=cwd, files=files)
    return Process(_SERVER, None, _SERVER.launch(request), files)


def run(
    module: str, *args: str, env: dict | None = None, timeout: float = 600, cwd: str = ROOT
) -> subprocess.CompletedProcess:
    """``subprocess.run([python, '-m', module, *args], capture_output=True,
    text=True)``, through the fork server."""
    process = start(module, *args, env=env, cwd=cwd)
    try:
        stdout, stderr = process.communicate(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess([module, *args], process.returncode, stdout, stderr)


# --------------------------------------------------------------------- server


def _serve() -> dict | None:
    """Forks a child per request line on stdin; reports its pid, then its exit
    code. Returns the request in a child, ``None`` in the server at EOF."""
    sys.path.insert(0, ROOT)
    for name in PRELOAD:
        importlib.import_module(name)
    from jax._src import xla_bridge

    children: set[int] = set()
    pending = b""
    out = sys.stdout

    def reply(message):
        out.write(json.dumps(message) + "\n")
        out.flush()

    while True:
        ready, _, _ = select.select([0], [], [], 0.05)
        if ready:
            data = os.read(0, 1 << 16)
            if not data:  # the client is gone: so are its launches
                for pid in children:
                    os.kill(pid, signal.SIGKILL)
                return None
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                # No device was ever touched here, so XLA_FLAGS still apply.
                assert not xla_bridge._backends, "the fork server initialized a backend"
                pid = os.fork()
                if pid == 0:
                    return request
                children.add(pid)
                reply({"request": request["request"], "pid": pid})
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            reply({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)})


def _child(request: dict) -> int:
    """Becomes ``python -m request['module'] *request['args']``; its exit status."""
    import runpy
    import traceback

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for fd, path in zip((1, 2), request["files"], strict=True):
        target = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = [request["module"], *request["args"]]
    # As python -m: the working directory first (the server had ROOT, tests/).
    sys.path[:] = [request["cwd"], *(p for p in sys.path if p not in (ROOT, TESTS))]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as e:  # as the interpreter reads it
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1


def _exit(code: int) -> None:
    """The interpreter's exit, less its teardown of every module (2 s here):
    non-daemon threads joined, ``atexit`` handlers run, output flushed."""
    import atexit

    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # pytest's Ctrl-C is for pytest
    launch = _serve()
    if launch is not None:
        _exit(_child(launch))

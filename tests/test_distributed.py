"""One run over two processes (JAX's distributed runtime, CPU, gloo
collectives, two XLA host devices each) against the same run in one process
with four host devices: the same metrics.csv; resume; a killed process."""

import csv
import os
import signal
import socket
import time

import pytest
import scripts
from conftest import xla_flags

TIMING = ("wall_time", "sps")  # the only columns allowed to differ between runs
FLAGS = [
    "--env=pendulum",
    "--num_seeds=4",
    "--eval_every=100",
    "--eval_episodes=2",
    "--config.hidden_sizes=(8,8)",
    "--config.batch_size=8",
    "--config.warmup_steps=50",
    "--noprogress",
]
PEER_TIMEOUT = 8


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    return {"XLA_FLAGS": xla_flags(f"--xla_force_host_platform_device_count={devices}")}


def _start(args, devices):
    return scripts.start("experiments.sac", *FLAGS, *args, env=_env(devices))


def _pair(args, processes=2):
    port = _port()
    return [
        _start(
            [
                *args,
                f"--coordinator_address=127.0.0.1:{port}",
                f"--num_processes={processes}",
                f"--process_id={i}",
                f"--peer_timeout={PEER_TIMEOUT}",
            ],
            devices=2,
        )
        for i in range(processes)
    ]


def _finish(procs, timeout=240):
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout, stderr))
    return out


def _rows(logdir):
    with open(os.path.join(logdir, "metrics.csv"), newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    logdir = str(tmp_path_factory.mktemp("one"))
    ((rc, _, err),) = _finish([_start(["--total_steps=300", f"--logdir={logdir}"], devices=4)])
    assert rc == 0, err[-3000:]
    return logdir


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    logdir = str(tmp_path_factory.mktemp("two"))
    results = _finish(_pair(["--total_steps=300", f"--logdir={logdir}"]))
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    return logdir


def test_two_processes_write_what_one_process_writes(one_process, two_processes):
    ours, reference = _rows(two_processes), _rows(one_process)
    assert [(r["env_steps"], r["seed"]) for r in reference] == [
        (s, k) for s in ("100", "200", "300") for k in ("0", "1", "2", "3")
    ]
    assert ours == reference
    assert len({r["eval_return"] for r in ours[-4:]}) == 4  # the four seeds differ
    # Only the primary process wrote the run's files; the checkpoint holds all seeds.
    files = sorted(os.listdir(two_processes))
    events = [f for f in files if f.startswith("events.out.tfevents.")]
    assert len(events) == 1  # TensorBoard's mirror: one writer
    assert [f for f in files if f not in events] == ["checkpoints", "config.json", "metrics.csv"]


def test_killed_process_stops_the_other_and_resume_equals_uninterrupted(two_processes, tmp_path):
    logdir = str(tmp_path)
    procs = _pair(["--total_steps=100000", f"--logdir={logdir}"])
    ckpt = os.path.join(logdir, "checkpoints")
    deadline = time.monotonic() + 180
    while not (os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt))):
        assert time.monotonic() < deadline, "no checkpoint written"
        assert procs[0].poll() is None and procs[1].poll() is None
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = procs[0].communicate(timeout=PEER_TIMEOUT + 60)
    waited = time.monotonic() - killed
    procs[1].communicate()
    assert procs[0].returncode not in (0, None)
    lines = _error_lines(stderr)
    assert len(lines) == 1, stderr[-3000:]
    assert "stop" in lines[0] and "Traceback" not in stderr
    assert waited < PEER_TIMEOUT + 30

    # The newest complete checkpoint continues, with the same process count, to
    # the numbers of the uninterrupted run.
    last = max(int(d) for d in os.listdir(ckpt) if d.isdigit())
    assert last < 300, "the run was not stopped early enough to test resuming"
    for rc, _, err in _finish(_pair(["--total_steps=300", "--resume", f"--logdir={logdir}"])):
        assert rc == 0, err[-3000:]
    assert _rows(logdir) == _rows(two_processes)

    # Another process count cannot continue it (one line, nothing changed).
    ((rc, _, err),) = _finish(
        [_start(["--total_steps=400", "--resume", f"--logdir={logdir}"], devices=4)]
    )
    assert rc != 0
    lines = _error_lines(err)
    assert len(lines) == 1 and "2 process" in lines[0], err[-2000:]
    assert "Traceback" not in err
    assert _rows(logdir) == _rows(two_processes)


def test_unreachable_coordinator_is_one_line():
    port = _port()
    start = time.monotonic()
    proc = _start(
        [
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            "--process_id=1",
            "--peer_timeout=2",
            "--total_steps=100",
        ],
        devices=2,
    )
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode not in (0, None)
    lines = _error_lines(stderr)
    assert len(lines) == 1 and "cannot join" in lines[0], stderr[-2000:]
    assert time.monotonic() - start < 60

"""TensorBoard and W&B mirrors of metrics.csv, read back with independent readers:
TensorBoard's own EventAccumulator, and a LevelDB-log parse of W&B's offline
run file (the format W&B documents for its .wandb files)."""

import glob
import json
import os
import struct
import time

import numpy as np
import pytest

from memrl.training import sinks


def _rows(step, returns, losses):
    return [
        {"env_steps": step, "seed": s, "eval_return": r, "loss/critic": c, "train_return": ""}
        for s, (r, c) in enumerate(zip(returns, losses, strict=True))
    ]


def _scalars(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_seed_means_skip_empty_and_nan():
    rows = _rows(10, [1.0, 3.0], [np.nan, 4.0]) + _rows(20, [5.0, 7.0], ["", ""])
    means = sinks.seed_means(rows)
    assert means == {10: {"eval_return": 2.0, "loss/critic": 4.0}, 20: {"eval_return": 6.0}}


def test_tensorboard_means_per_seed_and_resume_purge(tmp_path):
    logdir = str(tmp_path)
    tb = sinks.TensorBoard(logdir)
    tb.write(_rows(100, [-10.0, -30.0], [1.0, 2.0]))
    tb.write(_rows(200, [-5.0, -7.0], [0.5, 0.25]))
    tb.close()
    scalars = _scalars(logdir)
    assert scalars["eval_return"] == [(100, -20.0), (200, -6.0)]
    assert scalars["loss/critic"] == [(100, 1.5), (200, 0.375)]
    assert scalars["eval_return/seed1"] == [(100, -30.0), (200, -7.0)]
    assert "train_return" not in scalars  # empty cells are not logged
    # Resumed from the checkpoint at step 100: step 200 is logged again; the
    # interrupted run's value there must not show. (Event files are named by
    # the second they were opened in; a real resume is seconds later.)
    time.sleep(1.1)
    tb = sinks.TensorBoard(logdir, resume_step=100)
    tb.write(_rows(200, [-1.0, -3.0], [0.0, 0.0]))
    tb.close()
    assert _scalars(logdir)["eval_return"] == [(100, -20.0), (200, -2.0)]


def _key(item):
    return item.key or "/".join(item.nested_key)


def _wandb_history(run_file):
    """History rows of a W&B offline file: a 7-byte header (':W&B', 2 magic
    bytes, version), then LevelDB log blocks of 32 KiB whose records
    (crc32, length, type) hold protobuf ``Record`` messages."""
    from wandb.proto import wandb_internal_pb2

    raw = open(run_file, "rb").read()
    assert raw[:4] == b":W&B"
    pos, pending, records = 7, b"", []
    while pos + 7 <= len(raw):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        data, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = data if kind in (1, 2) else pending + data
        if kind in (1, 4):  # a whole record, or the last piece of one
            records.append(pending)
    history = []
    for data in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            items = record.history.item
            history.append({_key(i): json.loads(i.value_json) for i in items})
    return history


def test_wandb_offline_logs_means_and_keeps_the_run_id_on_resume(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logdir = str(tmp_path)
    settings = {"algorithm": "sac", "run": {"env": "pendulum"}}
    sink = sinks.WandB(logdir, settings, "memrl-test", "offline", resume=False)
    sink.write(_rows(100, [-10.0, -30.0], [1.0, 2.0]))
    sink.write(_rows(200, [-5.0, -7.0], [0.5, 0.25]))
    sink.close()
    # run.finish() only informs W&B's service process that the run is done; the
    # service flushes the run file when it closes the stream, asynchronously
    # (wandb 0.31: ServiceConnection.inform_finish publishes, never waits). A
    # read right after finish() can see a file without its history records
    # (seen once in CI under load). Tearing the service down waits for it to
    # exit, so the file is complete; the next wandb.init starts a new one.
    import wandb

    wandb.teardown()
    run_id = open(os.path.join(logdir, "wandb_id")).read().strip()
    (run_file,) = glob.glob(os.path.join(logdir, "wandb", "offline-run-*", f"run-{run_id}.wandb"))
    history = _wandb_history(run_file)
    assert [(h["_step"], h["eval_return"], h["loss/critic"]) for h in history] == [
        (100, -20.0, 1.5),
        (200, -6.0, 0.375),
    ]
    resumed = sinks.WandB(logdir, settings, "memrl-test", "offline", resume=True)
    resumed.close()
    wandb.teardown()
    assert open(os.path.join(logdir, "wandb_id")).read().strip() == run_id
    files = glob.glob(os.path.join(logdir, "wandb", "offline-run-*", f"run-{run_id}.wandb"))
    assert len(files) == 2

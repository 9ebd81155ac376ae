"""Traced programs kept on disk (memrl.training.program_cache): a repeated run
loads its programs instead of tracing them and computes what a run without
the cache computes; damaged files are traced again; keys follow what the
programs depend on; the directory stays under its cap."""

import csv
import dataclasses
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memrl.agents import sac
from memrl.training import program_cache, runner

CONFIG = sac.Config(hidden_sizes=(8, 8), batch_size=8, buffer_size=200, warmup_steps=50)
TIMING = ("wall_time", "sps")


def _run(logdir, **overrides):
    settings = dict(
        env="pendulum", seed=1, total_steps=100, eval_every=50, eval_episodes=1,
        logdir=str(logdir), progress=False, tensorboard=False,
    )  # fmt: skip
    return runner.RunConfig(**{**settings, **overrides})


def _rows(logdir):
    with open(os.path.join(logdir, "metrics.csv"), newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def _loaded(capsys):
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("ready after")]
    return int(line.split("; ")[1].split(" of 3 programs")[0])


def test_repeated_run_loads_its_programs_and_computes_the_same(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "programs"
    monkeypatch.setattr(program_cache, "directory", lambda: None)
    runner.train(sac, CONFIG, _run(tmp_path / "reference"))  # no program cache
    assert _loaded(capsys) == 0
    reference = _rows(tmp_path / "reference")
    assert [r["env_steps"] for r in reference] == ["50", "100"]

    monkeypatch.setattr(program_cache, "directory", lambda: str(folder))
    runner.train(sac, CONFIG, _run(tmp_path / "cold"))
    assert _loaded(capsys) == 0
    files = sorted(os.listdir(folder))
    assert [f.split("-")[0] for f in files] == ["chunk", "evaluate", "init"]
    runner.train(sac, CONFIG, _run(tmp_path / "warm"))
    assert _loaded(capsys) == 3  # nothing traced
    assert _rows(tmp_path / "cold") == _rows(tmp_path / "warm") == reference

    # A resumed run restores into the loaded init program's state layout.
    runner.train(sac, CONFIG, _run(tmp_path / "warm", total_steps=150, resume=True))
    assert _loaded(capsys) == 3
    assert _rows(tmp_path / "warm")[:2] == reference and len(_rows(tmp_path / "warm")) == 3

    # Damaged files: traced again, rewritten, same numbers.
    for name in files:
        with open(folder / name, "wb") as f:
            f.write(b"not a program")
    runner.train(sac, CONFIG, _run(tmp_path / "damaged"))
    assert _loaded(capsys) == 0
    assert _rows(tmp_path / "damaged") == reference
    assert sorted(os.listdir(folder)) == files
    assert all(os.path.getsize(folder / name) > 1000 for name in files)


def test_description_follows_what_the_programs_depend_on():
    describe = runner.program_description
    base = describe(sac, CONFIG, _run("a"), 50)
    # Not in the programs: the seed (keys are arguments), the directory, logging.
    assert describe(sac, CONFIG, _run("b", seed=7, tensorboard=True, resume=True), 50) == base
    assert describe(sac, dataclasses.replace(CONFIG, batch_size=16), _run("a"), 50) != base
    assert describe(sac, CONFIG, _run("a", num_seeds=2), 50) != base
    assert describe(sac, CONFIG, _run("a", eval_episodes=3), 50) != base
    assert describe(sac, CONFIG, _run("a"), 25) != base  # another chunk length
    assert describe(sac, CONFIG, _run("a", env="mountain_car"), 50) != base
    # An agent outside memrl: its source is not in the key, so nothing is kept.
    outside = types.ModuleType("my_agent")
    assert describe(outside, CONFIG, _run("a"), 50) is None


class _Static:
    """Static pytree data that prints with its address but pickles by value
    (as MJX's wrapped NumPy arrays in ``Data``)."""

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _Static) and other.value == self.value

    def __hash__(self):
        return hash(self.value)


class _Node:
    def __init__(self, x, static):
        self.x, self.static = x, static


jax.tree_util.register_pytree_node(
    _Node, lambda n: ((n.x,), n.static), lambda static, xs: _Node(xs[0], static)
)


def test_key_ignores_addresses_and_loading_checks_the_structure(tmp_path):
    leaves = [jax.ShapeDtypeStruct((2,), "float32")]
    first, second = (jax.tree_util.tree_structure(_Node(0.0, _Static(3))) for _ in range(2))
    assert str(first) != str(second)  # the addresses differ
    key = program_cache.program_key("chunk", "d", leaves, first)
    assert program_cache.program_key("chunk", "d", leaves, second) == key
    # Other static data may print alike (same key): the file's own structure decides.
    other = jax.tree_util.tree_structure(_Node(0.0, _Static(4)))
    exported = jax.export.export(jax.jit(lambda x: [x + 1]))(leaves[0])
    path = str(tmp_path / f"chunk-{key[:40]}{program_cache._SUFFIX}")
    program_cache._save(path, exported, first, jax.tree_util.tree_structure([0]))
    assert program_cache._load(path, second)[0] is not None
    assert program_cache._load(path, other) == (None, None)


def test_key_covers_shapes_and_source(monkeypatch):
    leaves = [jax.ShapeDtypeStruct((2, 3), "float32")]
    tree = jax.tree_util.tree_structure((0,))
    key = program_cache.program_key("chunk", "d", leaves, tree)
    assert program_cache.program_key("chunk", "d", leaves, tree) == key
    assert program_cache.program_key("evaluate", "d", leaves, tree) != key
    assert program_cache.program_key("chunk", "e", leaves, tree) != key
    other = [jax.ShapeDtypeStruct((2, 4), "float32")]
    assert program_cache.program_key("chunk", "d", other, tree) != key
    monkeypatch.setattr(program_cache, "source_digest", lambda: "edited source")
    assert program_cache.program_key("chunk", "d", leaves, tree) != key


def test_a_program_that_cannot_be_exported_still_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(program_cache, "directory", lambda: str(tmp_path))

    def fn(x):  # a host callback: jax.export refuses it
        y = jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x)
        return {"y": y, "z": x * 2}

    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    x = jnp.arange(3.0)
    program = program_cache.compile("cb", fn, (x,), (sharding,), sharding, "callback")
    out = program(x)
    np.testing.assert_allclose(out["y"], np.sin(np.arange(3.0)), rtol=1e-6)
    np.testing.assert_allclose(out["z"], [0.0, 2.0, 4.0])
    assert not program.loaded and os.listdir(tmp_path) == []


def test_prune_drops_the_least_recently_used_first(tmp_path, monkeypatch):
    for i, name in enumerate(["a", "b", "c"]):
        path = tmp_path / f"{name}{program_cache._SUFFIX}"
        path.write_bytes(b"x" * 100)
        os.utime(path, (1000 + i, 1000 + i))
    (tmp_path / "other.txt").write_bytes(b"x" * 1000)  # not a program: left alone
    monkeypatch.setattr(program_cache, "MAX_BYTES", 250)
    program_cache._prune(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["b.program", "c.program", "other.txt"]


@pytest.mark.parametrize("enabled", [True, False])
def test_directory_follows_the_compilation_cache(enabled, tmp_path):
    names = ("jax_enable_compilation_cache", "jax_compilation_cache_dir")
    before = [jax.config.values[name] for name in names]
    try:
        jax.config.update(names[0], enabled)
        jax.config.update(names[1], str(tmp_path))
        expected = str(tmp_path / "programs") if enabled else None
        assert program_cache.directory() == expected
    finally:
        for name, value in zip(names, before, strict=True):
            jax.config.update(name, value)

"""Sum tree speed: memrl.replay.sum_tree beside flashbax's sum tree, in one process.

    python -m benchmarks.sum_tree_speed
    python -m benchmarks.sum_tree_speed --log2_capacities=20 --trials=30

One round is what MEMR does every environment step (Algorithm 1, lines 10 and
16, M = 400): update the values of 400 random leaves, then draw 400
stratified samples. Both libraries get the same pre-generated leaf indices
(uniform, so duplicates occur), values and keys; the trees start with every
leaf set to a random positive value. Each is measured two ways:

* per call: one jitted call per round, the tree donated (``donate_argnums``);
  ``--calls`` calls per trial, waited for at the end of the trial;
* in a scan: ``--scan_rounds`` rounds inside one jitted ``lax.scan`` over the
  pre-generated inputs (as when the round runs inside a training step),
  tree donated; one call per trial.

flashbax is measured with each of its two batched setters
(``set_batch_bincount`` and ``set_batch_scan``) followed by its
``stratified_sample``; the better of the two is the reference. Trials of all
implementations are interleaved, so that load from other processes hits them
alike. Printed per capacity and way: the best trial's rounds/s of memrl and of
flashbax's better setter, their ratio, and the median over trials of
memrl / (better flashbax setter in the same trial), the statistic least
moved by other jobs on the machine. Compilation is excluded.

Results on a 2-core CPU are in the docstring of ``memrl.replay.sum_tree``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from memrl.replay import sum_tree

FLAGS = flags.FLAGS
flags.DEFINE_list("log2_capacities", ["14", "17", "20", "22"], "log2 of the numbers of leaves")
flags.DEFINE_integer("batch", 400, "leaves updated and samples drawn per round (MEMR's M)")
flags.DEFINE_integer("calls", 100, "rounds per per-call trial")
flags.DEFINE_integer("scan_rounds", 100, "rounds inside one jitted lax.scan")
flags.DEFINE_integer("trials", 15, "interleaved trials per implementation and way; best kept")
flags.DEFINE_bool("flashbax", True, "also measure flashbax (otherwise memrl alone)")
flags.DEFINE_integer("seed", 0, "seed of the generated inputs")


def _memrl(capacity: int):
    def init(values):
        tree = sum_tree.init(capacity)
        return sum_tree.update(tree, jnp.arange(capacity), values)

    def round_(tree, indices, values, key):
        tree = sum_tree.update(tree, indices, values)
        return tree, sum_tree.sample(tree, key, indices.shape[0])

    return init, round_


def _flashbax(capacity: int, setter: str):
    from flashbax.buffers import sum_tree as fbx_tree

    set_batch = getattr(fbx_tree, setter)

    def init(values):
        state = fbx_tree.init(capacity)
        return fbx_tree.set_batch_bincount(state, jnp.arange(capacity), values)

    def round_(state, indices, values, key):
        state = set_batch(state, indices, values)
        return state, fbx_tree.stratified_sample(state, indices.shape[0], key)

    return init, round_


class _Runner:
    """Compiled per-call and scan versions of one implementation's round."""

    def __init__(self, init, round_, inputs, init_values):
        self.inputs = inputs  # (indices [R, B], values [R, B], keys [R, 2])
        self.per_call = jax.jit(round_, donate_argnums=0)

        def many(state, indices, values, keys):
            def body(state, x):
                state, samples = round_(state, *x)
                return state, samples

            return jax.lax.scan(body, state, (indices, values, keys))

        self.scan = jax.jit(many, donate_argnums=0)
        self.state = jax.block_until_ready(jax.jit(init)(jnp.asarray(init_values)))
        self.rows = [tuple(x[i] for x in inputs) for i in range(inputs[0].shape[0])]
        # Compile and warm up both ways.
        self.state, out = self.per_call(self.state, *self.rows[0])
        self.state, out = self.scan(self.state, *inputs)
        jax.block_until_ready(out)

    def trial_per_call(self, calls: int) -> float:
        state = self.state
        rows = self.rows
        start = time.perf_counter()
        for i in range(calls):
            state, out = self.per_call(state, *rows[i % len(rows)])
        jax.block_until_ready(out)
        self.state = state
        return calls / (time.perf_counter() - start)

    def trial_scan(self) -> float:
        start = time.perf_counter()
        self.state, out = self.scan(self.state, *self.inputs)
        jax.block_until_ready(out)
        return self.inputs[0].shape[0] / (time.perf_counter() - start)


def _inputs(capacity: int, batch: int, rounds: int, seed: int):
    rng = np.random.default_rng(seed)
    indices = jnp.asarray(rng.integers(0, capacity, (rounds, batch)), jnp.int32)
    values = jnp.asarray(rng.uniform(0.01, 1.0, (rounds, batch)), jnp.float32)
    keys = jnp.asarray(rng.integers(0, 2**32, (rounds, 2), dtype=np.uint32))
    init_values = rng.uniform(0.01, 1.0, capacity).astype(np.float32)
    return (indices, values, keys), init_values


def measure(capacity: int) -> dict[str, np.ndarray]:
    """Rounds/s of every implementation: ``[trials, 2]`` (per call, in a scan)."""
    inputs, init_values = _inputs(capacity, FLAGS.batch, FLAGS.scan_rounds, FLAGS.seed)
    impls = {"memrl": _memrl(capacity)}
    if FLAGS.flashbax:
        for setter in ("set_batch_bincount", "set_batch_scan"):
            impls[f"flashbax {setter}"] = _flashbax(capacity, setter)
    runners = {name: _Runner(*fns, inputs, init_values) for name, fns in impls.items()}
    rates = {name: [] for name in runners}
    for _ in range(FLAGS.trials):
        for name, runner in runners.items():
            rates[name].append((runner.trial_per_call(FLAGS.calls), runner.trial_scan()))
    return {name: np.asarray(r) for name, r in rates.items()}


def main(argv):
    del argv
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; round = update "
        f"{FLAGS.batch} random leaves + {FLAGS.batch} stratified samples; "
        f"{FLAGS.trials} interleaved trials"
    )
    print(
        "rounds/s: best trial of each; ratio: memrl / flashbax's better setter, best "
        "trials and median over trials of the ratio of adjacent trials"
    )
    header = (
        f"{'leaves':>7} {'way':>9} {'memrl':>9} {'flashbax':>9} {'setter':>9}"
        f" {'ratio':>6} {'median':>7}"
    )
    print(header)
    for log2 in FLAGS.log2_capacities:
        rates = measure(2 ** int(log2))
        for way, col in (("per call", 0), ("scan", 1)):
            ours = rates["memrl"][:, col]
            line = f"{'2^' + log2:>7} {way:>9} {ours.max():9.0f}"
            if FLAGS.flashbax:
                peers = {k.split("_")[-1]: v[:, col] for k, v in rates.items() if k != "memrl"}
                best = max(peers, key=lambda k: peers[k].max())
                theirs = np.maximum.reduce(list(peers.values()))  # better setter, per trial
                line += (
                    f" {peers[best].max():9.0f} {best:>9} {ours.max() / peers[best].max():6.2f}"
                    f" {np.median(ours / theirs):7.2f}"
                )
            print(line, flush=True)


if __name__ == "__main__":
    app.run(main)

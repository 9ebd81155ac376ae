"""Pixel rendering speed: memrl's in-JAX renderer beside MuJoCo's host renderer, in one process.

    MUJOCO_GL=egl python -m benchmarks.render_speed
    MUJOCO_GL=egl python -m benchmarks.render_speed --envs=ant --num_envs=16 --repeats=3

The peer is ``mujoco.Renderer`` (MuJoCo's OpenGL renderer, shipped with the ``mujoco`` wheel). It
needs an OpenGL library on the host: ``apt-get install libegl1`` and ``MUJOCO_GL=egl``, or
``apt-get install libosmesa6`` and ``MUJOCO_GL=osmesa`` (the script sets ``MUJOCO_GL=egl`` when
it is unset). Without a GPU both run Mesa's software rasterizer (llvmpipe) on the CPU, as
memrl's renderer does here; the GL renderer string is printed. The classic-control peer is
gymnasium's pygame drawing: ``pip install "gymnasium[classic-control]"``.

What is timed, per environment (``--envs``, MJX tasks) and batch size (``--num_envs``), compilation
and state preparation excluded:

* states: one jitted, vmapped random rollout (``env.reset`` with distinct keys, then
  ``--rollout_steps`` steps of uniform actions in ``[-1, 1]``) of the largest batch; each batch
  size takes the first ``num_envs`` of these distinct states.
* memrl: ``jax.jit(jax.vmap(memrl.render.raycast.make_raycaster(mj_model, size, size, 0)))``
  (what ``memrl.envs.pixels.renderer`` runs inside the env step, camera 0: the brax tasks'
  ``track`` camera) on the batch of ``mjx.Data``, AOT-compiled; one measurement is as many
  calls as fill ``--min_seconds`` (at least one), each waited for with ``block_until_ready``.
  Frames/s = calls x num_envs / wall time. The images are uint8 ``[num_envs, size, size, 3]``
  on the device (the CPU here).
* host: ``mujoco.Renderer(mj_model, size, size)``; each state is copied into its own
  ``MjData`` (``qpos``, ``qvel``, mocap poses, activations) and ``mj_forward`` is run on it
  before timing. One measurement renders every state of the batch once, in a Python loop
  (the renderer draws one image at a time): ``update_scene(data, camera=0)`` then
  ``render()`` (which reads the pixels back into a new uint8 ``[size, size, 3]`` array);
  repeated over the batch until ``--min_seconds`` have passed. Two rows: MuJoCo's default
  scene, and shadows and reflections off (``scene.flags[mjRND_SHADOW] =
  scene.flags[mjRND_REFLECTION] = 0``), which is closer to what memrl draws (one ray per
  pixel, Lambert shading, no shadows, no reflections, no antialiasing or texture filtering).

The three are interleaved (memrl, host, host without shadows, then again) ``--repeats`` times,
so that load from other processes hits all alike. Printed: the median frames/s of each over the
repeats and memrl's ratio to each host row (ratio of the medians).

``--classic`` adds pendulum: memrl's analytic drawing (``memrl.render.classic.pendulum``, signed
distance functions evaluated at every pixel, jitted and vmapped as above) beside gymnasium
Pendulum-v1's ``render()`` in ``rgb_array`` mode at the same size (``screen_dim = size``; its
state set to each observation's angle; pygame drawing on the host). The classic-control
observations are drawn analytically from the true state, with no scene and no ray cast.

``--step_env`` / ``--step_envs`` add a step row: frames/s of
``jax.jit(jax.vmap(wrapped.step))`` for ``wrapped = memrl.envs.pixels.wrapper(env, size)(env)``
(the physics step, then the picture of the new state) beside ``jax.jit(jax.vmap(env.step))``,
both from the same batch of states with the same actions (each call starts from the same
states, so every call does the same work), AOT-compiled, interleaved; ``--step_envs=0`` skips it.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported

import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("envs", ["halfcheetah", "ant"], "MJX environments (memrl.envs names)")
flags.DEFINE_list("num_envs", ["1", "16", "256"], "batch sizes (environments per call)")
flags.DEFINE_integer("size", 64, "image side in pixels")
flags.DEFINE_integer("repeats", 5, "interleaved measurements per implementation and row")
flags.DEFINE_float("min_seconds", 1.0, "least wall time of one measurement")
flags.DEFINE_integer("rollout_steps", 20, "random steps after reset before the states are taken")
flags.DEFINE_bool("classic", True, "add pendulum (analytic drawing vs gymnasium's pygame render)")
flags.DEFINE_string("step_env", "halfcheetah", "env of the step-with-pixels row")
flags.DEFINE_integer("step_envs", 16, "batch of the step-with-pixels row (0: skip the row)")
flags.DEFINE_integer("seed", 0, "seed of the rollouts")


def _measure(call: Callable[[], int], min_seconds: float) -> float:
    """Frames/s of ``call`` (which returns the frames it drew), called until ``min_seconds``."""
    frames, t0 = 0, time.perf_counter()
    while True:
        frames += call()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return frames / elapsed


def _interleave(calls: dict[str, Callable[[], int]]) -> dict[str, list[float]]:
    """``--repeats`` rounds of one measurement of each call in turn: frames/s per call."""
    fps: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(FLAGS.repeats):
        for name, call in calls.items():
            fps[name].append(_measure(call, FLAGS.min_seconds))
    return fps


def _take(tree, n: int):
    return jax.tree_util.tree_map(lambda x: x[:n], tree)


def _row(fps: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(v) for name, v in fps.items()}


# ---------------------------------------------------------------------------
# MJX environments


def rollout_states(env, n: int, steps: int, seed: int):
    """``n`` distinct brax states (batched): distinct reset keys, then ``steps`` random steps."""

    def one(key):
        k_reset, k_act = jax.random.split(key)
        state = env.reset(k_reset)
        actions = jax.random.uniform(k_act, (steps, env.action_size), minval=-1.0, maxval=1.0)
        state, _ = jax.lax.scan(lambda s, a: (env.step(s, a), None), state, actions)
        return state

    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    return jax.block_until_ready(jax.jit(jax.vmap(one))(keys))


def host_data(m: mujoco.MjModel, data, i: int) -> mujoco.MjData:
    """State ``i`` of a batched ``mjx.Data`` as a forwarded ``MjData`` (positions, velocities,
    mocap poses, activations)."""
    d = mujoco.MjData(m)
    d.qpos[:] = np.asarray(data.qpos[i])
    d.qvel[:] = np.asarray(data.qvel[i])
    if m.nmocap:
        d.mocap_pos[:] = np.asarray(data.mocap_pos[i])
        d.mocap_quat[:] = np.asarray(data.mocap_quat[i])
    if m.na:
        d.act[:] = np.asarray(data.act[i])
    mujoco.mj_forward(m, d)
    return d


def host_renderer(m: mujoco.MjModel, size: int, effects: bool) -> mujoco.Renderer:
    renderer = mujoco.Renderer(m, size, size)
    if not effects:
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    return renderer


def _host_call(renderer: mujoco.Renderer, datas: list[mujoco.MjData]) -> Callable[[], int]:
    """Draws every state once, one image at a time: ``update_scene`` + ``render``."""

    def call() -> int:
        for d in datas:
            renderer.update_scene(d, camera=0)
            renderer.render()
        return len(datas)

    return call


def gl_renderer_name() -> str:
    """The GL_RENDERER string of the current context (e.g. llvmpipe), if PyOpenGL can read it."""
    try:
        from OpenGL import GL

        return GL.glGetString(GL.GL_RENDERER).decode()
    except Exception as e:  # noqa: BLE001 (informational only)
        return f"unknown ({type(e).__name__})"


def mjx_rows(name: str, sizes: list[int]) -> list[tuple]:
    from memrl import envs
    from memrl.envs import pixels
    from memrl.render import raycast

    env = envs.make(name)
    m = pixels.mj_model(env)
    t0 = time.perf_counter()
    states = rollout_states(env, max(sizes), FLAGS.rollout_steps, FLAGS.seed)
    data = states.pipeline_state
    print(
        f"{name}: {max(sizes)} states from a {FLAGS.rollout_steps}-step rollout in "
        f"{time.perf_counter() - t0:.0f}s (compile included)",
        flush=True,
    )
    hosts = {
        "host": host_renderer(m, FLAGS.size, True),
        "host_plain": host_renderer(m, FLAGS.size, False),
    }
    datas = [host_data(m, data, i) for i in range(max(sizes))]
    cast = jax.vmap(raycast.make_raycaster(m, FLAGS.size, FLAGS.size, 0))
    rows = []
    for n in sizes:
        batch = _take(data, n)
        t0 = time.perf_counter()
        compiled = jax.jit(cast).lower(batch).compile()
        compile_s = time.perf_counter() - t0
        images = compiled(batch).block_until_ready()
        assert images.shape == (n, FLAGS.size, FLAGS.size, 3) and images.dtype == jnp.uint8

        def ours(compiled=compiled, batch=batch, n=n) -> int:
            compiled(batch).block_until_ready()
            return n

        calls = {"memrl": ours, **{k: _host_call(r, datas[:n]) for k, r in hosts.items()}}
        for warm in calls.values():  # warm-up: first GL draws, first device call
            warm()
        fps = _interleave(calls)
        rows.append((name, n, _row(fps), fps, f"compile {compile_s:.1f}s"))
        print(_format(rows[-1]), flush=True)
    for r in hosts.values():
        r.close()
    return rows


# ---------------------------------------------------------------------------
# pendulum (analytic drawing vs gymnasium's pygame render)


def pendulum_rows(sizes: list[int]) -> list[tuple]:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame draws off screen
    import gymnasium

    from memrl.render import classic

    rng = np.random.default_rng(FLAGS.seed)
    theta = rng.uniform(-np.pi, np.pi, max(sizes))
    thdot = rng.uniform(-8.0, 8.0, max(sizes))
    obs = jnp.asarray(np.stack([np.cos(theta), np.sin(theta), thdot], -1), jnp.float32)
    gym = gymnasium.make("Pendulum-v1", render_mode="rgb_array").unwrapped
    gym.screen_dim = FLAGS.size
    gym.reset(seed=FLAGS.seed)
    gym.last_u = None  # no torque arrow
    draw = jax.vmap(lambda o: classic.pendulum(o, FLAGS.size))
    rows = []
    for n in sizes:
        batch = obs[:n]
        compiled = jax.jit(draw).lower(batch).compile()

        def ours(compiled=compiled, batch=batch, n=n) -> int:
            compiled(batch).block_until_ready()
            return n

        def host(n=n) -> int:
            for th, w in zip(theta[:n], thdot[:n], strict=True):
                gym.state = np.array([th, w])
                image = gym.render()
            assert image.shape == (FLAGS.size, FLAGS.size, 3)
            return n

        calls = {"memrl": ours, "host": host}
        for warm in calls.values():
            warm()
        fps = _interleave(calls)
        rows.append(("pendulum", n, _row(fps), fps, "host: gymnasium (pygame)"))
        print(_format(rows[-1]), flush=True)
    gym.close()
    return rows


# ---------------------------------------------------------------------------
# env step with and without pixels


def step_row(name: str, n: int) -> tuple:
    from memrl import envs

    env = envs.make(name)
    wrapped = envs.pixels.wrapper(name, FLAGS.size)(env)
    keys = jax.random.split(jax.random.PRNGKey(FLAGS.seed), n)
    actions = jax.random.uniform(
        jax.random.PRNGKey(FLAGS.seed + 1), (n, env.action_size), minval=-1.0, maxval=1.0
    )
    calls, compile_s = {}, {}
    for label, e in (("step", env), ("step+pixels", wrapped)):
        state = jax.block_until_ready(jax.jit(jax.vmap(e.reset))(keys))
        t0 = time.perf_counter()
        compiled = jax.jit(jax.vmap(e.step)).lower(state, actions).compile()
        compile_s[label] = time.perf_counter() - t0

        def call(compiled=compiled, state=state) -> int:
            jax.block_until_ready(compiled(state, actions))
            return n

        call()
        calls[label] = call
    fps = _interleave(calls)
    med = _row(fps)
    print(
        f"\n{name}, {n} envs, frames/s (median of {FLAGS.repeats}): step {med['step']:.0f}, "
        f"step+pixels {med['step+pixels']:.0f}; with pixels / without "
        f"{med['step+pixels'] / med['step']:.2f} (compile: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in compile_s.items())
        + ")\n  all: "
        + "; ".join(f"{k} " + " ".join(f"{x:.0f}" for x in v) for k, v in fps.items()),
        flush=True,
    )
    return (name, n, med, fps)


# ---------------------------------------------------------------------------


HEADER = (
    f"{'env':12s} {'envs':>5s} {'memrl fps':>10s} {'host fps':>9s} {'host plain':>10s} "
    f"{'memrl/host':>10s} {'memrl/plain':>11s}"
)


def _format(row: tuple, details: bool = True) -> str:
    name, n, med, fps, note = row
    host, plain = med.get("host", np.nan), med.get("host_plain", np.nan)

    def f(x: float, width: int, fmt: str = ".0f") -> str:
        return f"{'-':>{width}s}" if np.isnan(x) else f"{x:{width}{fmt}}"

    line = (
        f"{name:12s} {n:5d} {med['memrl']:10.0f} {f(host, 9)} {f(plain, 10)} "
        f"{f(med['memrl'] / host, 10, '.2f')} {f(med['memrl'] / plain, 11, '.2f')}"
    )
    if not details:
        return line
    return f"{line}   {note}; all: " + "; ".join(
        f"{k} " + " ".join(f"{x:.0f}" for x in v) for k, v in fps.items()
    )


def main(argv):
    del argv
    sizes = sorted({int(n) for n in FLAGS.num_envs})
    if not sizes or sizes[0] < 1 or FLAGS.size < 1 or FLAGS.repeats < 1:
        raise app.UsageError("--num_envs, --size and --repeats must be positive")
    from memrl import envs
    from memrl.render import classic

    for name in FLAGS.envs:
        if name not in envs.NAMES or name in classic.DRAWERS:
            raise app.UsageError(f"--envs takes MJX environments, got {name!r}")
    probe = mujoco.Renderer(mujoco.MjModel.from_xml_string("<mujoco/>"), 8, 8)
    gl = gl_renderer_name()
    probe.close()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, mujoco {mujoco.__version__}, "
        f"MUJOCO_GL={os.environ['MUJOCO_GL']} (GL renderer: {gl}); {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; {FLAGS.size}x{FLAGS.size} images, "
        f"{FLAGS.repeats} interleaved repeats of >= {FLAGS.min_seconds}s\n"
        "host = mujoco.Renderer (default scene); host plain = shadows and reflections off\n\n"
        + HEADER,
        flush=True,
    )
    rows = []
    for name in FLAGS.envs:
        rows += mjx_rows(name, sizes)
    if FLAGS.classic:
        rows += pendulum_rows(sizes)
    if FLAGS.step_envs > 0:
        step_row(FLAGS.step_env, FLAGS.step_envs)
    print(
        f"\nframes/s: medians over the repeats; ratios of the medians; load average at the end "
        f"{os.getloadavg()[0]:.1f}\n\n" + HEADER
    )
    for row in rows:
        print(_format(row, details=False))


if __name__ == "__main__":
    app.run(main)

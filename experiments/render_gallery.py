"""Picture of memrl's pixel observations beside a reference renderer's image of the same state.

    MUJOCO_GL=egl python -m experiments.render_gallery      # writes docs/images/pixels_*.png
    MUJOCO_GL=egl python -m experiments.render_gallery --envs=pendulum,ant --out_dir=/tmp/p

For each environment (``--envs``; by default pendulum, double_integrator, mountain_car,
halfcheetah, hopper, walker2d, ant and, when ``memrl.envs.NAMES`` has ``dmc_*`` tasks, the first
task of each dm_control domain, or every one with ``--all_dmc_tasks``; an env that cannot be
built, e.g. a ``dmc_*`` task without MuJoCo Playground installed, is skipped with a message),
one state is taken after ``--steps`` uniformly random actions from ``reset``
(``--seed``), and two pictures of it are drawn side by side, each upscaled ``--scale`` times
(nearest neighbour, so the pixels stay visible):

* memrl: the observation ``memrl.envs.pixels.renderer(name, env, --size)`` gives for the state,
  exactly what an agent sees with ``--obs=pixels`` (analytic drawings for classic control, the
  in-JAX ray caster through camera 0 for MJX tasks).
* reference: for MJX tasks, ``mujoco.Renderer(mj_model, size, size)`` through camera 0 with
  MuJoCo's default scene options, on an ``MjData`` holding the state's ``qpos``, ``qvel`` (and
  mocap poses, activations) after ``mj_forward``; for pendulum and mountain_car, gymnasium's own
  ``render()`` (``render_mode='rgb_array'``, Pendulum-v1 500x500, MountainCarContinuous-v0
  600x400) of the same state (pendulum angle ``atan2(sin, cos)`` of the observation, car
  position), reduced to ``--size`` rows with a box filter; the double integrator has no
  reference renderer and is drawn alone.

The host renderer needs an OpenGL library (``apt-get install libegl1`` with ``MUJOCO_GL=egl``,
or ``libosmesa6`` with ``MUJOCO_GL=osmesa``; EGL is used when ``MUJOCO_GL`` is unset), and the
gymnasium images need pygame (``pip install "gymnasium[classic-control]"``).

One PNG per group of environments is written under ``--out_dir``: ``pixels_classic.png``
(classic control), ``pixels_brax.png`` (brax's MJX tasks), ``pixels_dmc.png`` (the control suite),
each a grid of ``--columns`` environments per row, each a labelled pair (memrl left, reference
right). The figure lives in a script of its own under
``experiments/`` (beside ``plot.py``, which draws the other figures) rather than in
``benchmarks/``, which holds speed comparisons.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame draws off screen

import pathlib  # noqa: E402

import jax  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

DEFAULT_ENVS = (
    "pendulum",
    "double_integrator",
    "mountain_car",
    "halfcheetah",
    "hopper",
    "walker2d",
    "ant",
)
GYMNASIUM_IDS = {"pendulum": "Pendulum-v1", "mountain_car": "MountainCarContinuous-v0"}

FLAGS = flags.FLAGS
flags.DEFINE_list("envs", None, "environments (default: the module docstring's list)")
flags.DEFINE_integer("size", 64, "observation side in pixels")
flags.DEFINE_integer("scale", 2, "nearest-neighbour upscaling of every picture in the figure")
flags.DEFINE_integer("steps", 20, "random steps from reset before the state is drawn")
flags.DEFINE_integer("seed", 0, "seed of the reset and the random actions")
flags.DEFINE_integer("columns", 4, "environments per row of the figure")
flags.DEFINE_string("out_dir", "docs/images", "where the PNGs go")
flags.DEFINE_bool("all_dmc_tasks", False, "every dmc_* task, not one per dm_control domain")

BACKGROUND = (255, 255, 255)
GAP, LABEL = 6, 16  # pixels between pictures, height of a label line


def default_envs(all_dmc_tasks: bool) -> list[str]:
    """``DEFAULT_ENVS`` and the registered ``dmc_*`` tasks (one per domain unless all)."""
    from memrl import envs

    names = list(DEFAULT_ENVS)
    domains = set()
    for name in envs.NAMES:
        if not name.startswith("dmc_"):
            continue
        try:
            from memrl.envs import dmc

            domain = dmc.TASKS[name.removeprefix("dmc_")][1]
        except (ImportError, AttributeError, KeyError):
            domain = name
        if all_dmc_tasks or domain not in domains:
            names.append(name)
            domains.add(domain)
    return names


def group(name: str) -> str:
    from memrl.render import classic

    if name in classic.DRAWERS:
        return "classic"
    return "dmc" if name.startswith("dmc_") else "brax"


def random_state(env, steps: int, seed: int):
    """The env state after ``steps`` uniform actions in ``[-1, 1]`` from ``reset`` (one compile)."""

    def run(key):
        k_reset, k_act = jax.random.split(key)
        actions = jax.random.uniform(k_act, (steps, env.action_size), minval=-1.0, maxval=1.0)
        state, _ = jax.lax.scan(lambda s, a: (env.step(s, a), None), env.reset(k_reset), actions)
        return state

    return jax.block_until_ready(jax.jit(run)(jax.random.PRNGKey(seed)))


def mujoco_picture(m: mujoco.MjModel, data, size: int) -> np.ndarray:
    """MuJoCo's own 64x64 (``size``) image of an ``mjx.Data`` state through camera 0."""
    d = mujoco.MjData(m)
    d.qpos[:] = np.asarray(data.qpos)
    d.qvel[:] = np.asarray(data.qvel)
    if m.nmocap:
        d.mocap_pos[:] = np.asarray(data.mocap_pos)
        d.mocap_quat[:] = np.asarray(data.mocap_quat)
    if m.na:
        d.act[:] = np.asarray(data.act)
    mujoco.mj_forward(m, d)
    with mujoco.Renderer(m, size, size) as renderer:
        renderer.update_scene(d, camera=0)
        return renderer.render().copy()


def gymnasium_picture(name: str, obs: np.ndarray, size: int) -> np.ndarray:
    """gymnasium's ``rgb_array`` render of the classic-control state ``obs``, ``size`` rows high."""
    import gymnasium

    env = gymnasium.make(GYMNASIUM_IDS[name], render_mode="rgb_array").unwrapped
    env.reset(seed=0)
    if name == "pendulum":
        env.state = np.array([np.arctan2(obs[1], obs[0]), obs[2]])
        env.last_u = None  # no torque arrow
    else:
        env.state = np.array([obs[0], obs[1]])
    frame = env.render()
    env.close()
    height, width = frame.shape[:2]
    new_size = (max(1, round(width * size / height)), size)
    return np.asarray(Image.fromarray(frame).resize(new_size, Image.BOX))


def pictures(name: str, size: int, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(memrl's observation, the reference image or None) of one random state of ``name``."""
    from memrl import envs
    from memrl.envs import pixels

    env = envs.make(name)
    state = random_state(env, steps, seed)
    ours = np.asarray(jax.jit(pixels.renderer(name, env, size))(state))
    if name in GYMNASIUM_IDS:
        return ours, gymnasium_picture(name, np.asarray(state.obs), size)
    model = pixels.mj_model(env)
    if model is None:
        return ours, None
    return ours, mujoco_picture(model, state.pipeline_state, size)


def _upscale(image: np.ndarray, scale: int) -> Image.Image:
    h, w = image.shape[:2]
    return Image.fromarray(image).resize((w * scale, h * scale), Image.NEAREST)


def figure(panels: list[tuple[str, np.ndarray, np.ndarray | None]], scale: int, columns: int):
    """The labelled grid: per env, memrl's picture and the reference side by side."""
    font = ImageFont.load_default(size=12)
    cells = []
    for name, ours, ref in panels:
        left = _upscale(ours, scale)
        right = _upscale(ref, scale) if ref is not None else None
        width = left.width + (GAP + right.width if right is not None else 0)
        cell = Image.new("RGB", (width, 2 * LABEL + left.height), BACKGROUND)
        draw = ImageDraw.Draw(cell)
        draw.text((0, 0), name, fill=(0, 0, 0), font=font)
        draw.text(
            (0, LABEL), "memrl" if ref is not None else "memrl only", fill=(90, 90, 90), font=font
        )
        cell.paste(left, (0, 2 * LABEL))
        if right is not None:
            source = "gymnasium" if name in GYMNASIUM_IDS else "mujoco.Renderer"
            draw.text((left.width + GAP, LABEL), source, fill=(90, 90, 90), font=font)
            cell.paste(right, (left.width + GAP, 2 * LABEL))
        cells.append(cell)
    rows = [cells[i : i + columns] for i in range(0, len(cells), columns)]
    col_widths = [
        max(row[c].width for row in rows if c < len(row)) for c in range(min(columns, len(cells)))
    ]
    row_heights = [max(c.height for c in row) for row in rows]
    out = Image.new(
        "RGB",
        (sum(col_widths) + 3 * GAP * (len(col_widths) - 1), sum(row_heights) + GAP * len(rows)),
        BACKGROUND,
    )
    y = 0
    for row, height in zip(rows, row_heights, strict=True):
        x = 0
        for c, cell in enumerate(row):
            out.paste(cell, (x, y))
            x += col_widths[c] + 3 * GAP
        y += height + GAP
    return out


def main(argv):
    del argv
    names = FLAGS.envs or default_envs(FLAGS.all_dmc_tasks)
    panels: dict[str, list] = {}
    for name in names:
        try:
            ours, ref = pictures(name, FLAGS.size, FLAGS.steps, FLAGS.seed)
        except (ImportError, ValueError) as e:
            print(f"{name}: skipped ({type(e).__name__}: {e})", flush=True)
            continue
        print(f"{name}: memrl {ours.shape}, reference {None if ref is None else ref.shape}")
        panels.setdefault(group(name), []).append((name, ours, ref))
    if not panels:
        raise app.UsageError("no environment could be drawn")
    out_dir = pathlib.Path(FLAGS.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind, rows in panels.items():
        out = out_dir / f"pixels_{kind}.png"
        figure(rows, FLAGS.scale, FLAGS.columns).save(out, optimize=True)
        print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    app.run(main)

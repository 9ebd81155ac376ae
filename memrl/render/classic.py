"""Antialiased drawings of the classic-control environments, in pure JAX.

Each drawer ``draw(obs, size=64) -> uint8 [size, size, 3]`` maps an
environment's true observation vector to an RGB image. They jit (with ``size``
static), vmap over observations and contain no Python control flow on values,
so they run inside ``lax.scan`` next to the environment step. ``DRAWERS`` maps
registry names to drawers.

Method: every shape is a signed distance function (SDF) ``d(p)`` of the world
point ``p`` (negative inside), evaluated at every pixel centre. With ``w`` the
width of a pixel in world units, a shape's coverage of a pixel is the
box-filter approximation

    alpha = clip(1/2 - d / w, 0, 1)

(exact for a straight edge crossing the pixel perpendicular to an axis), and
shapes are composited back to front with the "over" operator

    C <- (1 - alpha) C + alpha c_shape.

The SDFs used (``|.|`` the Euclidean norm):

* disc of centre ``c``, radius ``r``: ``|p - c| - r``;
* capsule (rounded segment) from ``a`` to ``b`` with radius ``r``:
  ``|p - a - h (b - a)| - r`` with ``h = clip((p - a).(b - a) / |b - a|^2, 0, 1)``;
* rounded box of half extents ``e``, corner radius ``r``, rotated by
  ``theta`` about its centre ``c``: with ``q = |R(-theta)(p - c)| - e``
  (componentwise absolute value), ``|max(q, 0)| + min(max(q_x, q_y), 0) - r``;
* region below a curve ``y = h(x)``: the first-order distance
  ``(y - h(x)) / sqrt(1 + h'(x)^2)`` (the implicit function over its gradient
  norm), accurate to within a pixel where the curvature radius is many pixels.

Image coordinates: row 0 is the top; world ``y`` points up. Pixel ``(i, j)``
has its centre at world ``(x_min + (j + 1/2) w, y_max - (i + 1/2) w)``.
Colours are floats in ``[0, 1]`` until the final rounding to uint8.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Colour = tuple[float, float, float]


def _rgb(r: int, g: int, b: int) -> Colour:
    return (r / 255.0, g / 255.0, b / 255.0)


BACKGROUND = _rgb(255, 255, 255)
# Pendulum: gymnasium's pole colour (204, 77, 77) on white, a darker bob.
POLE = _rgb(204, 77, 77)
BOB = _rgb(150, 45, 45)
PIVOT = _rgb(20, 20, 20)
# Double integrator and mountain car.
TRACK = _rgb(150, 150, 150)
TARGET = _rgb(40, 160, 60)
MASS = _rgb(40, 70, 200)
GROUND = _rgb(150, 190, 110)
GROUND_EDGE = _rgb(60, 80, 40)
CAR = _rgb(40, 70, 200)
FLAG_POLE = _rgb(60, 60, 60)
FLAG = _rgb(220, 200, 0)


# ------------------------------------------------------------------ helpers


class Grid:
    """World coordinates of the pixel centres of a square image.

    Attributes:
      x: ``[size, size]`` world x of each pixel centre (constant down a column).
      y: ``[size, size]`` world y of each pixel centre (y up: decreasing rows).
      pixel: width of a pixel in world units.
    """

    def __init__(self, size: int, x_min: float, y_max: float, extent: float):
        """A ``size x size`` grid covering ``[x_min, x_min + extent] x
        [y_max - extent, y_max]`` (square pixels of width ``extent / size``)."""
        self.pixel = extent / size
        centres = (jnp.arange(size, dtype=jnp.float32) + 0.5) * self.pixel
        self.x = jnp.broadcast_to(x_min + centres[None, :], (size, size))
        self.y = jnp.broadcast_to(y_max - centres[:, None], (size, size))


def sdf_disc(grid: Grid, centre: jax.Array, radius: float | jax.Array) -> jax.Array:
    """``|p - c| - r`` at every pixel centre ``p``; ``centre`` ``[2]``."""
    return jnp.hypot(grid.x - centre[0], grid.y - centre[1]) - radius


def sdf_capsule(grid: Grid, a: jax.Array, b: jax.Array, radius: float | jax.Array) -> jax.Array:
    """Distance to the segment ``a``-``b`` (each ``[2]``) minus ``radius``.

    ``|p - a - h (b - a)| - r`` with ``h = clip((p - a).(b - a) / |b - a|^2, 0, 1)``;
    a zero-length segment gives a disc (the denominator is floored).
    """
    px, py = grid.x - a[0], grid.y - a[1]
    ex, ey = b[0] - a[0], b[1] - a[1]
    h = jnp.clip((px * ex + py * ey) / jnp.maximum(ex * ex + ey * ey, 1e-12), 0.0, 1.0)
    return jnp.hypot(px - h * ex, py - h * ey) - radius


def sdf_box(
    grid: Grid,
    centre: jax.Array,
    half_extents: tuple[float, float],
    angle: float | jax.Array = 0.0,
    corner: float = 0.0,
) -> jax.Array:
    """Rounded box rotated by ``angle`` (radians, counter-clockwise) about ``centre``.

    In the box frame ``q = |R(-angle)(p - c)| - e``; the SDF is
    ``|max(q, 0)| + min(max(q_x, q_y), 0) - corner``. The box's outer
    half extents are ``e + corner``.
    """
    c, s = jnp.cos(angle), jnp.sin(angle)
    dx, dy = grid.x - centre[0], grid.y - centre[1]
    qx = jnp.abs(c * dx + s * dy) - half_extents[0]
    qy = jnp.abs(-s * dx + c * dy) - half_extents[1]
    outside = jnp.hypot(jnp.maximum(qx, 0.0), jnp.maximum(qy, 0.0))
    return outside + jnp.minimum(jnp.maximum(qx, qy), 0.0) - corner


def sdf_below_curve(grid: Grid, height: Callable, slope: Callable) -> jax.Array:
    """Region ``y <= height(x)``: ``(y - h(x)) / sqrt(1 + h'(x)^2)``."""
    return (grid.y - height(grid.x)) / jnp.sqrt(1.0 + slope(grid.x) ** 2)


def coverage(sdf: jax.Array, pixel: float) -> jax.Array:
    """Pixel coverage ``clip(1/2 - sdf / pixel, 0, 1)`` of a shape with this SDF."""
    return jnp.clip(0.5 - sdf / pixel, 0.0, 1.0)


def canvas(size: int, colour: Colour = BACKGROUND) -> jax.Array:
    """A ``[size, size, 3]`` float image filled with ``colour``."""
    return jnp.broadcast_to(jnp.asarray(colour, jnp.float32), (size, size, 3))


def over(image: jax.Array, colour: Colour, alpha: jax.Array) -> jax.Array:
    """Composites ``colour`` with coverage ``alpha`` ``[H, W]`` over ``image``."""
    a = alpha[..., None]
    return (1.0 - a) * image + a * jnp.asarray(colour, jnp.float32)


def paint(image: jax.Array, grid: Grid, sdf: jax.Array, colour: Colour) -> jax.Array:
    """``over(image, colour, coverage(sdf, grid.pixel))``: one antialiased shape."""
    return over(image, colour, coverage(sdf, grid.pixel))


def to_uint8(image: jax.Array) -> jax.Array:
    """Float ``[0, 1]`` image to uint8 (rounded to nearest)."""
    return jnp.round(jnp.clip(image, 0.0, 1.0) * 255.0).astype(jnp.uint8)


# ----------------------------------------------------------------- drawers

# Pendulum (world units: the pole is 1 long; gymnasium draws it in [-2.2, 2.2]
# but a tighter frame keeps the pole large at 64 pixels).
PENDULUM_HALF_EXTENT = 1.3
POLE_LENGTH = 1.0
POLE_RADIUS = 0.08
BOB_RADIUS = 0.16
PIVOT_RADIUS = 0.06


def pendulum(obs: jax.Array, size: int = 64) -> jax.Array:
    """Pendulum-v1 from ``obs = [cos th, sin th, thdot]`` (th = 0 upright).

    The pole is a capsule of radius 0.08 from the pivot at the image centre to
    ``L (-sin th, cos th)`` (world y up, so upright points up and positive
    ``th`` turns counter-clockwise, as gymnasium's render), with a disc bob of
    radius 0.16 at its end and a dark pivot dot of radius 0.06, over white; the
    image spans ``[-1.3, 1.3]^2``. ``(cos th, sin th)`` is normalized first
    (floored norm), so slightly off-circle values (e.g. a model's prediction)
    still draw a pole of length 1. ``thdot`` is not drawn.

    Args:
      obs: ``[3]`` observation.
      size: image side in pixels (static).

    Returns:
      ``uint8 [size, size, 3]``.
    """
    grid = Grid(size, -PENDULUM_HALF_EXTENT, PENDULUM_HALF_EXTENT, 2 * PENDULUM_HALF_EXTENT)
    cos_th, sin_th = obs[0], obs[1]
    norm = jnp.maximum(jnp.hypot(cos_th, sin_th), 1e-6)
    pivot = jnp.zeros(2, jnp.float32)
    tip = POLE_LENGTH * jnp.stack([-sin_th, cos_th]) / norm
    image = canvas(size)
    image = paint(image, grid, sdf_capsule(grid, pivot, tip, POLE_RADIUS), POLE)
    image = paint(image, grid, sdf_disc(grid, tip, BOB_RADIUS), BOB)
    image = paint(image, grid, sdf_disc(grid, pivot, PIVOT_RADIUS), PIVOT)
    return to_uint8(image)


# Double integrator: positions in [-4, 4] (twice the start range U[-2, 2]).
DI_HALF_EXTENT = 4.0
DI_MASS_RADIUS = 0.45
DI_LINE_RADIUS = 0.08
DI_TICK_HALF_HEIGHT = 0.9


def double_integrator(obs: jax.Array, size: int = 64) -> jax.Array:
    """MAAC's double integrator from ``obs = [position, velocity]``.

    A 1-d point mass: a blue disc of radius 0.45 at ``(position, 0)`` on a grey
    horizontal track through the image centre, over a green vertical tick at the
    origin (the target the quadratic cost pulls to). Fixed scale: the image
    spans ``[-4, 4]`` world units horizontally (``size / 8`` pixels per unit),
    twice the start range ``U[-2, 2]``; beyond it the disc's centre is clipped
    to ``+-(4 - 0.45)`` so the mass stays in view at the border. ``velocity`` is
    not drawn.

    Args:
      obs: ``[2]`` observation.
      size: image side in pixels (static).

    Returns:
      ``uint8 [size, size, 3]``.
    """
    h = DI_HALF_EXTENT
    grid = Grid(size, -h, h, 2 * h)
    position = jnp.clip(obs[0], -h + DI_MASS_RADIUS, h - DI_MASS_RADIUS)
    image = canvas(size)
    track = sdf_capsule(grid, jnp.array([-h, 0.0]), jnp.array([h, 0.0]), DI_LINE_RADIUS)
    image = paint(image, grid, track, TRACK)
    tick = sdf_capsule(
        grid,
        jnp.array([0.0, -DI_TICK_HALF_HEIGHT]),
        jnp.array([0.0, DI_TICK_HALF_HEIGHT]),
        DI_LINE_RADIUS,
    )
    image = paint(image, grid, tick, TARGET)
    centre = jnp.stack([position, jnp.zeros_like(position)])
    image = paint(image, grid, sdf_disc(grid, centre, DI_MASS_RADIUS), MASS)
    return to_uint8(image)


# Mountain car: gymnasium's x range, its render's hill 0.45 sin(3x) + 0.55.
MC_MIN_POSITION = -1.2
MC_MAX_POSITION = 0.6
MC_GOAL_POSITION = 0.45
MC_Y_MAX = 1.5
MC_CAR_HALF = (0.09, 0.035)
MC_CAR_CORNER = 0.02
MC_FLAG_POLE_HEIGHT = 0.25
MC_FLAG_HALF = (0.06, 0.035)


def hill_height(x: jax.Array) -> jax.Array:
    """Height ``0.45 sin(3 x) + 0.55`` of the hill (gymnasium's render ``_height``)."""
    return 0.45 * jnp.sin(3.0 * x) + 0.55


def hill_slope(x: jax.Array) -> jax.Array:
    """Derivative ``1.35 cos(3 x)`` of ``hill_height``."""
    return 1.35 * jnp.cos(3.0 * x)


def mountain_car(obs: jax.Array, size: int = 64) -> jax.Array:
    """MountainCarContinuous-v0 from ``obs = [position, velocity]``.

    The image spans ``x in [-1.2, 0.6]`` (the position range) and ``y in
    [-0.3, 1.5]``. The valley ``y = 0.45 sin(3 x) + 0.55`` (gymnasium's render,
    the dynamics' ``sin(3 x)`` scaled) is a filled green region with a dark
    one-pixel edge; the car is a blue rounded box (0.22 x 0.11 world units)
    tilted to the slope ``atan(h'(x))`` and resting on the curve at
    ``x = position``; the goal flag is a grey pole at ``x = 0.45`` with a yellow
    flag. ``velocity`` is not drawn.

    Args:
      obs: ``[2]`` observation.
      size: image side in pixels (static).

    Returns:
      ``uint8 [size, size, 3]``.
    """
    extent = MC_MAX_POSITION - MC_MIN_POSITION
    grid = Grid(size, MC_MIN_POSITION, MC_Y_MAX, extent)
    image = canvas(size)
    ground = sdf_below_curve(grid, hill_height, hill_slope)
    image = paint(image, grid, ground, GROUND)
    # The edge: a band of half-width half a pixel around the curve.
    image = paint(image, grid, jnp.abs(ground) - 0.5 * grid.pixel, GROUND_EDGE)

    goal_base = jnp.array([MC_GOAL_POSITION, hill_height(MC_GOAL_POSITION)], jnp.float32)
    goal_top = goal_base + jnp.array([0.0, MC_FLAG_POLE_HEIGHT], jnp.float32)
    image = paint(image, grid, sdf_capsule(grid, goal_base, goal_top, 0.5 * grid.pixel), FLAG_POLE)
    flag_centre = goal_top + jnp.array([MC_FLAG_HALF[0], -MC_FLAG_HALF[1]], jnp.float32)
    image = paint(image, grid, sdf_box(grid, flag_centre, MC_FLAG_HALF), FLAG)

    x = obs[0]
    slope = hill_slope(x)
    normal = jnp.stack([-slope, jnp.ones_like(slope)]) / jnp.sqrt(1.0 + slope**2)
    lift = MC_CAR_HALF[1] + MC_CAR_CORNER
    centre = jnp.stack([x, hill_height(x)]) + lift * normal
    car = sdf_box(grid, centre, MC_CAR_HALF, jnp.arctan(slope), MC_CAR_CORNER)
    image = paint(image, grid, car, CAR)
    return to_uint8(image)


DRAWERS: dict[str, Callable[..., jax.Array]] = {
    "pendulum": pendulum,
    "double_integrator": double_integrator,
    "mountain_car": mountain_car,
}
"""Registry name -> ``draw(obs, size=64) -> uint8 [size, size, 3]``."""

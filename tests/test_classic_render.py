"""Tests for memrl.render.classic: geometry read back from the pixels with NumPy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memrl.render import classic


def _centroid(weights):
    """Weighted centroid ``(row, col)`` of pixel centres (pixel (i, j) at (i + 1/2, j + 1/2))."""
    rows, cols = np.indices(weights.shape) + 0.5
    total = weights.sum()
    assert total > 0
    return (weights * rows).sum() / total, (weights * cols).sum() / total


def _red_weight(image):
    """Redness R - G: 0 on white, grey and black, large on the pole and bob."""
    image = image.astype(np.float64)
    return np.maximum(image[..., 0] - image[..., 1], 0.0)


def _blue_weight(image):
    """Blueness B - max(R, G): 0 on white and grey, <= 0 on green, yellow, dark."""
    image = image.astype(np.float64)
    return np.maximum(image[..., 2] - np.maximum(image[..., 0], image[..., 1]), 0.0)


def _batch(draw, size):
    return jax.jit(jax.vmap(functools.partial(draw, size=size)))


def _wrap(angle):
    return (angle + np.pi) % (2 * np.pi) - np.pi


@pytest.mark.parametrize("size", [32, 64, 96])
def test_pendulum_angle_from_pixels(size):
    """The direction of the red pixels' centroid from the image centre is the
    pole's angle (th = 0 up, positive th counter-clockwise as in gymnasium)."""
    angles = np.array([-3.1, -2.3, -1.2, -0.4, 0.0, 0.3, 1.0, 1.9, 2.7, np.pi])
    obs = np.stack([np.cos(angles), np.sin(angles), np.ones_like(angles)], -1)
    images = np.asarray(_batch(classic.pendulum, size)(jnp.asarray(obs, jnp.float32)))
    for angle, image in zip(angles, images, strict=True):
        row, col = _centroid(_red_weight(image))
        right, up = col - size / 2, size / 2 - row
        assert np.hypot(right, up) > 0.2 * size  # the pole sticks out of the centre
        estimate = np.arctan2(-right, up)  # tip direction (-sin th, cos th)
        assert abs(_wrap(estimate - angle)) < np.deg2rad(2.0), (angle, estimate)


def test_pendulum_upright_is_up_and_centre_is_dark():
    image = np.asarray(classic.pendulum(jnp.array([1.0, 0.0, 0.0])))
    weight = _red_weight(image)
    assert weight[:32].sum() > 20 * weight[32:].sum()  # pole above the pivot
    assert image[31:33, 31:33].max() < 100  # the pivot dot
    np.testing.assert_array_equal(image[0, 0], [255, 255, 255])  # white background


def test_mountain_car_position_from_pixels():
    """The blue car's pixel centroid moves right with the position and, mapped
    through the image's x range [-1.2, 0.6], recovers it to within 0.06 (the car
    rests on the curve, so its centre sits off the contact point on slopes)."""
    size = 64
    positions = np.linspace(-1.1, 0.55, 15)
    obs = np.stack([positions, np.zeros_like(positions)], -1)
    images = np.asarray(_batch(classic.mountain_car, size)(jnp.asarray(obs, jnp.float32)))
    estimates = []
    for image in images:
        _, col = _centroid(_blue_weight(image))
        estimates.append(-1.2 + col * 1.8 / size)
    estimates = np.array(estimates)
    assert np.all(np.diff(estimates) > 0)
    np.testing.assert_allclose(estimates, positions, atol=0.06)
    # The car is drawn above the valley floor at the bottom, on the hill near the goal.
    rows = [_centroid(_blue_weight(image))[0] for image in images]
    assert rows[np.argmin(np.abs(positions + 0.52))] > rows[-1] + 10


def test_double_integrator_position_from_pixels():
    """Scale 8 world units per image width; the disc is clipped at the border."""
    size = 64
    positions = np.array([-6.0, -3.0, -1.5, -0.2, 0.0, 0.7, 2.0, 3.5, 9.0])
    obs = np.stack([positions, np.ones_like(positions)], -1)
    images = np.asarray(_batch(classic.double_integrator, size)(jnp.asarray(obs, jnp.float32)))
    estimates = []
    for image in images:
        row, col = _centroid(_blue_weight(image))
        assert abs(row - size / 2) < 0.5  # on the track through the centre
        estimates.append(-4.0 + col * 8.0 / size)
    expected = np.clip(positions, -3.55, 3.55)
    np.testing.assert_allclose(estimates, expected, atol=0.1)
    # The green target tick at the origin.
    green = images[0].astype(int)
    green = (green[..., 1] - np.maximum(green[..., 0], green[..., 2])).clip(0)
    assert abs(_centroid(green)[1] - size / 2) < 0.5


@pytest.mark.parametrize("name", sorted(classic.DRAWERS))
@pytest.mark.parametrize("size", [16, 64])
def test_shapes_jit_vmap_and_determinism(name, size):
    draw = classic.DRAWERS[name]
    dim = 3 if name == "pendulum" else 2
    obs = jax.random.uniform(jax.random.PRNGKey(0), (5, dim), minval=-1.0, maxval=1.0)
    batched = _batch(draw, size)(obs)
    assert batched.shape == (5, size, size, 3) and batched.dtype == jnp.uint8
    single = jax.jit(draw, static_argnums=1)(obs[2], size)
    np.testing.assert_array_equal(single, batched[2])
    np.testing.assert_array_equal(single, jax.jit(draw, static_argnums=1)(obs[2], size))
    eager = np.asarray(draw(obs[2], size), np.int16)
    assert np.abs(eager - np.asarray(single, np.int16)).max() <= 1  # rounding only
    # Inside a scan (the env-step loop) too.
    _, scanned = jax.lax.scan(lambda c, o: (c, draw(o, size)), 0, obs)
    np.testing.assert_array_equal(scanned, batched)


# Palette of each drawer: the background and every shape's own colour.
_PALETTES = {
    "pendulum": (classic.BACKGROUND, classic.POLE, classic.BOB, classic.PIVOT),
    "double_integrator": (classic.BACKGROUND, classic.TRACK, classic.TARGET, classic.MASS),
    "mountain_car": (
        classic.BACKGROUND,
        classic.GROUND,
        classic.GROUND_EDGE,
        classic.CAR,
        classic.FLAG_POLE,
        classic.FLAG,
    ),
}


@pytest.mark.parametrize("name", sorted(classic.DRAWERS))
def test_edges_are_antialiased(name):
    """Edges blend: many pixels are none of the palette's pure colours."""
    obs = {"pendulum": [np.cos(0.7), np.sin(0.7), 0.0]}.get(name, [0.3, 0.0])
    image = np.asarray(classic.DRAWERS[name](jnp.asarray(obs, jnp.float32))).reshape(-1, 3)
    palette = np.round(np.array(_PALETTES[name]) * 255).astype(int)
    is_pure = (np.abs(image[:, None, :].astype(int) - palette[None]).max(-1) == 0).any(-1)
    assert (~is_pure).sum() >= 30
    assert len(np.unique(image, axis=0)) >= len(palette) + 10


def test_pendulum_edge_blends_pole_and_background():
    """Along a row crossing the upright pole, the green channel goes from white
    (255) to the pole's 77 through intermediate values."""
    image = np.asarray(classic.pendulum(jnp.array([1.0, 0.0, 0.0]), 64))
    row = image[20, :, 1].astype(int)  # a row through the pole, above the pivot
    assert row.min() == 77 and row.max() == 255
    assert np.any((row > 77) & (row < 255))

"""memrl.nets.conv: the matmul + overlap-add transposed convolution against
lax.conv_transpose (flipped kernel) and a NumPy loop, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memrl.nets import conv


def _numpy_conv_transpose(x, w, s):
    n, h, wd, _ = x.shape
    k_h, k_w, _, c_out = w.shape
    y = np.zeros((n, (h - 1) * s[0] + k_h, (wd - 1) * s[1] + k_w, c_out))
    for i in range(h):
        for j in range(wd):
            for a in range(k_h):
                for b in range(k_w):
                    y[:, s[0] * i + a, s[1] * j + b] += x[:, i, j] @ w[a, b]
    return y


@pytest.mark.parametrize(
    "shape,kernel,strides",
    [
        ((2, 1, 1, 5), (5, 5), (2, 2)),
        ((2, 3, 4, 3), (6, 5), (2, 2)),
        ((1, 4, 3, 2), (3, 3), (3, 1)),
    ],
)
def test_conv_transpose_matches_numpy_and_lax(shape, kernel, strides):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    w = rng.normal(size=kernel + (shape[-1], 4)).astype(np.float32)
    got = conv.conv_transpose(jnp.asarray(x), jnp.asarray(w), strides, impl="patches")
    np.testing.assert_allclose(got, _numpy_conv_transpose(x, w, strides), rtol=1e-4, atol=1e-4)
    via_lax = conv.conv_transpose(jnp.asarray(x), jnp.asarray(w), strides, impl="lax")
    np.testing.assert_allclose(via_lax, got, rtol=1e-4, atol=1e-4)
    flipped = jnp.asarray(w[::-1, ::-1])
    ref = jax.lax.conv_transpose(
        jnp.asarray(x), flipped, strides, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_conv_transpose_gradients_match_lax():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 3, 3, 4)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(6, 6, 4, 3)).astype(np.float32))
    probe = jnp.asarray(rng.normal(size=(2, 10, 10, 3)).astype(np.float32))

    def ours(x, w):
        return jnp.sum(probe * conv.conv_transpose(x, w, (2, 2), impl="patches"))

    def lax_version(x, w):
        y = jax.lax.conv_transpose(
            x, w[::-1, ::-1], (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jnp.sum(probe * y)

    grads = jax.grad(ours, (0, 1))(x, w)
    for got, ref in zip(grads, jax.grad(lax_version, (0, 1))(x, w), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_module_shapes_like_flax():
    import flax.linen as nn

    x = jnp.ones((3, 13, 13, 8))
    ours = conv.ConvTranspose(5, (6, 6), strides=(2, 2))
    theirs = nn.ConvTranspose(5, (6, 6), strides=(2, 2), padding="VALID")
    p, q = ours.init(jax.random.PRNGKey(0), x), theirs.init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(jnp.shape, p) == jax.tree.map(jnp.shape, q)
    assert ours.apply(p, x).shape == theirs.apply(q, x).shape == (3, 30, 30, 5)


def _numpy_conv(x, w, s):
    n, h, wd, _ = x.shape
    k_h, k_w, _, c_out = w.shape
    out = np.zeros((n, (h - k_h) // s[0] + 1, (wd - k_w) // s[1] + 1, c_out))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            window = x[:, s[0] * i : s[0] * i + k_h, s[1] * j : s[1] * j + k_w]
            out[:, i, j] = np.einsum("nabc,abco->no", window, w)
    return out


@pytest.mark.parametrize(
    "shape,kernel,strides",
    [
        ((2, 9, 9, 3), (4, 4), (2, 2)),  # Dreamer's encoder layer
        ((2, 10, 7, 2), (3, 5), (2, 3)),  # padded taps, odd sizes
        ((1, 6, 6, 4), (2, 2), (1, 1)),
    ],
)
def test_conv_matches_numpy_and_lax_with_gradients(shape, kernel, strides):
    rng = np.random.default_rng(2)
    x = rng.normal(size=shape).astype(np.float32)
    w = rng.normal(size=kernel + (shape[-1], 5)).astype(np.float32)
    got = conv.conv(jnp.asarray(x), jnp.asarray(w), strides, impl="patches")
    np.testing.assert_allclose(got, _numpy_conv(x, w, strides), rtol=1e-4, atol=1e-4)
    probe = jnp.asarray(rng.normal(size=got.shape).astype(np.float32))

    def loss(impl):
        return lambda x, w: jnp.sum(probe * conv.conv(x, w, strides, impl=impl))

    ours = jax.grad(loss("patches"), (0, 1))(jnp.asarray(x), jnp.asarray(w))
    ref = jax.grad(loss("lax"), (0, 1))(jnp.asarray(x), jnp.asarray(w))
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_transpose_from_one_pixel_is_one_matmul():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 1, 1, 6)).astype(np.float32)
    w = rng.normal(size=(5, 5, 6, 3)).astype(np.float32)
    got = conv.conv_transpose(jnp.asarray(x), jnp.asarray(w), (2, 2), impl="patches")
    np.testing.assert_allclose(got, _numpy_conv_transpose(x, w, (2, 2)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("chunk", [0, 4, 5, 32])
def test_map_in_chunks_equals_one_call_values_and_gradients(chunk):
    """[3, 5] images in chunks of 4 (one padded item), of 5 (exact), one call
    (0, or a chunk larger than the batch): the same values and the same
    gradients for the parameters and the input as the network on the whole
    batch (lax convolutions, no chunks, no remat)."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(3, 5, 9, 9, 2)).astype(np.float32))
    params = {
        "k1": jnp.asarray(rng.normal(size=(4, 4, 2, 3)).astype(np.float32)),
        "k2": jnp.asarray(rng.normal(size=(3, 3, 3, 2)).astype(np.float32)),
    }
    probe = jnp.asarray(rng.normal(size=(3, 5, 7, 7, 2)).astype(np.float32))

    def net(impl):
        def fn(p, images):  # [n, 9, 9, 2] -> [n, 7, 7, 2]
            h = jax.nn.relu(conv.conv(images, p["k1"], (2, 2), impl=impl))
            return conv.conv_transpose(h, p["k2"], (2, 2), impl=impl)

        return fn

    def loss_chunked(p, images):
        return jnp.sum(probe * conv.map_in_chunks(net("patches"), p, images, 2, chunk))

    def loss_whole(p, images):
        flat = images.reshape((15,) + images.shape[2:])
        return jnp.sum(probe * net("lax")(p, flat).reshape(probe.shape))

    np.testing.assert_allclose(loss_chunked(params, x), loss_whole(params, x), rtol=1e-4)
    got = jax.grad(loss_chunked, (0, 1))(params, x)
    want = jax.grad(loss_whole, (0, 1))(params, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

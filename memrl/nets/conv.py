"""Strided convolutions and transposed convolutions that train fast on CPU
(Dreamer's image encoder and decoder), with XLA's own ops on accelerators.

XLA's CPU backend computes the forward pass of ``lax.conv_transpose`` at
matmul speed, but the gradient with respect to its kernel (a convolution
with window dilation) about 20x slower: measured on this 2-core CPU for one
layer of Dreamer's decoder (13x13x64 -> 30x30x32, kernel 6, stride 2, batch
100): forward 0.16 s, kernel gradient 2.8 s. At Dreamer's batch of 50 x 50
images that single gradient dominated a training update.

``conv_transpose`` computes the same function as a stride-1 convolution with
``s^2`` times the output channels, one per output phase, followed by a
depth-to-space reshape ("sub-pixel" convolution), and computes that
convolution as patches (``ceil(k/s)^2`` shifted slices) times one matrix.
Forward and both gradients are then matmuls, slices and pads. Measured for
the gradient of Dreamer's whole decoder on 250 images (2-core CPU): flax's
``ConvTranspose`` 6.6 s with 0.14 GB of temporaries; this 1.8 s with 0.9 GB.
Two alternatives measured worse: the phase convolution left to XLA's conv
(its kernel gradient, 1.6 s for the one layer above, is slow again), and a
matmul followed by an overlap-add of ``k^2`` padded slices (16 s and 7.8 GB
for the decoder: XLA materialized the slices).

``conv`` (the encoder's strided conv) likewise: space-to-depth, then
patches times a matrix. Dreamer's encoder on 500 images, forward and kernel
gradients: flax's ``nn.Conv`` 3.3 s, this 1.05 s (XLA's CPU convolutions
reached 22 GFLOP/s here against 122 for its matmuls).

Both have ``impl='auto'``: these forms on CPU, XLA's convolutions on GPU and
TPU (cuDNN is fast there, and the patches cost memory: 0.9 GB of
temporaries per 250 decoded images). The parameters mean the same either
way, so checkpoints move between backends.

Those temporaries are the forms' cost on CPU too: ``map_in_chunks`` runs a
network over a large batch a chunk at a time with rematerialization, which
took Dreamer's pixel update from 43 s to 18 s on 2 cores. Also measured and
dropped: the last decoder layer (32 -> 3 channels) as a matmul then an
overlap-add (its wide tensor 108 channels instead of the patches' 288):
1.7x faster for that layer alone, but 1-2 s slower in the chunked update.

``conv_transpose`` is ``lax.conv_transpose(..., padding='VALID')`` with the kernel
flipped in both spatial axes (with ``transpose_kernel=False`` lax
correlates the dilated input with the unflipped kernel, which sends tap
``a`` to ``s i + k - 1 - a``); as a learned layer that is only a
reparameterisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def conv_transpose(
    x: jax.Array, kernel: jax.Array, strides: Sequence[int], impl: str = "auto"
) -> jax.Array:
    """VALID transposed convolution: ``y[n, s_h i + a, s_w j + b, o] +=
    sum_c x[n, i, j, c] kernel[a, b, c, o]``.

    Computed as one stride-1 convolution (patches times a matrix) with
    ``s_h s_w`` times the output channels followed by a depth-to-space
    reshape. Write a kernel tap as
    ``a = s q + r`` (phase ``r < s``; the kernel is zero-padded to a multiple
    of ``s``, ``K = ceil(k / s)`` taps per phase): output row ``s m + r``
    receives ``sum_q x[m - q] kernel[s q + r]``, a stride-1 "full"
    correlation of ``x`` (padded by ``K - 1``) with the phase's taps flipped.
    All phases are one convolution whose output channels are ``(r_h, r_w,
    o)``; interleaving the phases and cropping to ``(H - 1) s + k`` gives
    ``y``. Forward and both gradients are then ordinary convolutions.

    Args:
      x: ``[N, H, W, C_in]``.
      kernel: ``[k_h, k_w, C_in, C_out]``.
      strides: ``(s_h, s_w)``.
      impl: ``'patches'`` (the above), ``'lax'`` (``lax.conv_transpose`` with
        the kernel flipped: the same function, the accelerators' fast path),
        or ``'auto'``: patches on CPU, lax elsewhere.

    Returns:
      ``[N, (H - 1) s_h + k_h, (W - 1) s_w + k_w, C_out]``.
    """
    impl = resolve_impl(impl)
    if impl == "lax":
        numbers = ("NHWC", "HWIO", "NHWC")
        flipped = kernel[::-1, ::-1]
        return jax.lax.conv_transpose(
            x, flipped, tuple(strides), "VALID", dimension_numbers=numbers
        )
    n, h, w, c_in = x.shape
    k_h, k_w, _, c_out = kernel.shape
    s_h, s_w = strides
    if h == w == 1:  # No overlap: one matmul (Dreamer's first decoder layer).
        y = x[:, 0, 0] @ kernel.transpose(2, 0, 1, 3).reshape(c_in, k_h * k_w * c_out)
        return y.reshape(n, k_h, k_w, c_out)
    taps_h, taps_w = -(-k_h // s_h), -(-k_w // s_w)
    padded = jnp.pad(kernel, ((0, taps_h * s_h - k_h), (0, taps_w * s_w - k_w), (0, 0), (0, 0)))
    phases = padded.reshape(taps_h, s_h, taps_w, s_w, c_in, c_out)[::-1, :, ::-1]
    phases = phases.transpose(0, 2, 4, 1, 3, 5).reshape(taps_h, taps_w, c_in, s_h * s_w * c_out)
    m_h, m_w = h + taps_h - 1, w + taps_w - 1
    xpad = jnp.pad(x, ((0, 0), (taps_h - 1, taps_h - 1), (taps_w - 1, taps_w - 1), (0, 0)))
    patches = jnp.concatenate(
        [xpad[:, i : i + m_h, j : j + m_w] for i in range(taps_h) for j in range(taps_w)], axis=-1
    )  # [N, M_h, M_w, K_h * K_w * C_in]
    z = patches @ phases.reshape(taps_h * taps_w * c_in, s_h * s_w * c_out)
    y = z.reshape(n, m_h, m_w, s_h, s_w, c_out).transpose(0, 1, 3, 2, 4, 5)
    y = y.reshape(n, m_h * s_h, m_w * s_w, c_out)
    return y[:, : (h - 1) * s_h + k_h, : (w - 1) * s_w + k_w]


def resolve_impl(impl: str) -> str:
    """``'auto'`` -> ``'patches'`` on CPU, ``'lax'`` elsewhere; other names checked."""
    if impl == "auto":
        return "patches" if jax.default_backend() == "cpu" else "lax"
    if impl not in ("patches", "lax"):
        raise ValueError(f"unknown impl {impl!r}; valid: auto, patches, lax")
    return impl


def conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int], impl: str = "auto") -> jax.Array:
    """VALID strided convolution (cross-correlation, as ``lax.conv``):
    ``y[n, o_h, o_w, :] = sum_{a, b, c} x[n, s_h o_h + a, s_w o_w + b, c] kernel[a, b, c, :]``.

    ``'patches'`` computes it as space-to-depth then a stride-1 convolution as
    patches times a matrix: with taps ``a = s q + r`` (kernel zero-padded to
    ``K = ceil(k / s)`` taps per phase), ``x[s (o + q) + r]`` is row ``o + q``,
    channel block ``r`` of the space-to-depth input, so ``y`` is a stride-1
    correlation with ``K x K`` taps over ``s^2 C`` channels; its patches are
    ``K^2`` contiguous slices (no strided slices, whose gradients XLA would
    materialize as interior-padded arrays). Dreamer's encoder (k 4, s 2)
    has no padded taps. ``'lax'`` is ``lax.conv_general_dilated``.

    Args:
      x: ``[N, H, W, C_in]``.
      kernel: ``[k_h, k_w, C_in, C_out]`` (flax ``nn.Conv``'s layout).
      strides: ``(s_h, s_w)``.
      impl: ``'auto'`` (patches on CPU, lax elsewhere), ``'patches'`` or ``'lax'``.

    Returns:
      ``[N, (H - k_h) // s_h + 1, (W - k_w) // s_w + 1, C_out]``.
    """
    impl = resolve_impl(impl)
    if impl == "lax":
        numbers = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(
            x, kernel, tuple(strides), "VALID", dimension_numbers=numbers
        )
    n, h, w, c_in = x.shape
    k_h, k_w, _, c_out = kernel.shape
    s_h, s_w = strides
    out_h, out_w = (h - k_h) // s_h + 1, (w - k_w) // s_w + 1
    taps_h, taps_w = -(-k_h // s_h), -(-k_w // s_w)
    m_h, m_w = out_h + taps_h - 1, out_w + taps_w - 1
    x = x[:, : m_h * s_h, : m_w * s_w]
    x = jnp.pad(x, ((0, 0), (0, m_h * s_h - x.shape[1]), (0, m_w * s_w - x.shape[2]), (0, 0)))
    x = x.reshape(n, m_h, s_h, m_w, s_w, c_in).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(n, m_h, m_w, s_h * s_w * c_in)  # space to depth
    padded = jnp.pad(kernel, ((0, taps_h * s_h - k_h), (0, taps_w * s_w - k_w), (0, 0), (0, 0)))
    weights = padded.reshape(taps_h, s_h, taps_w, s_w, c_in, c_out).transpose(0, 2, 1, 3, 4, 5)
    weights = weights.reshape(taps_h * taps_w * s_h * s_w * c_in, c_out)
    patches = jnp.concatenate(
        [x[:, i : i + out_h, j : j + out_w] for i in range(taps_h) for j in range(taps_w)], axis=-1
    )
    return patches @ weights


def map_in_chunks(
    fn: Callable[[object, jax.Array], jax.Array],
    params: object,
    x: jax.Array,
    batch_ndims: int,
    chunk: int,
) -> jax.Array:
    """``fn(params, x)`` over ``x``'s leading ``batch_ndims`` axes, ``chunk``
    items at a time, each chunk rematerialized in the backward pass.

    The patch forms above trade FLOPs for memory: Dreamer's decoder on its
    50 x 50 images makes a 2.9 GB patch tensor in its last layer alone, and
    the whole world-model gradient tens of GB of temporaries. Memory that
    size is written at DRAM speed at best (and far below it where fresh pages
    are slow to fault in, as on this project's VMs: 0.06 GB/s for first-touch
    pages measured against 6 GB/s for reused ones). ``lax.map`` over chunks
    with ``jax.checkpoint`` on the body keeps, for the backward pass, each
    chunk's input and its matmul outputs (the layers' pre-activations, what
    a direct convolution would keep), and recomputes the rest of that
    chunk's forward there: the patches and the elementwise ops, no matmuls.
    The patch tensors then live one chunk at a time, reused from chunk to
    chunk. Measured on Dreamer's shapes (2500 images, 2-core CPU), the
    world-model gradient took 35 s on the whole batch and 16 s in chunks of
    50 (no FLOPs saved or added; 25 and 100 were no better).

    Args:
      fn: ``fn(params, x_chunk) -> y_chunk`` acting on ``[n, ...]`` with the
        batch axis first, independent across items (no batch statistics).
      params: closed over by every chunk (its gradient sums over chunks).
      x: ``[*batch, ...]``.
      batch_ndims: number of leading batch axes of ``x``.
      chunk: items per chunk; ``0`` (or a batch no larger than ``chunk``) is
        one call of ``fn`` on the whole batch, without rematerialization.

    Returns:
      ``[*batch, ...]``: the same values as ``fn`` on the whole batch.
    """
    lead = x.shape[:batch_ndims]
    n = math.prod(lead)
    flat = x.reshape((n,) + x.shape[batch_ndims:])
    if chunk <= 0 or n <= chunk:
        y = fn(params, flat)
    else:
        pad = -n % chunk  # zero items, dropped again below
        flat = jnp.pad(flat, [(0, pad)] + [(0, 0)] * (flat.ndim - 1))
        body = jax.checkpoint(fn, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
        ys = jax.lax.map(lambda c: body(params, c), flat.reshape((-1, chunk) + flat.shape[1:]))
        y = ys.reshape((-1,) + ys.shape[2:])[:n]
    return y.reshape(lead + y.shape[1:])


class _Layer(nn.Module):
    """A VALID (transposed) convolution layer with a bias; ``_op`` computes it.

    Attributes:
      features: output channels.
      kernel_size: ``(k_h, k_w)``.
      strides: ``(s_h, s_w)``.
      kernel_init: kernel initializer (shape ``[k_h, k_w, C_in, C_out]``).
      bias_init: bias initializer.
      impl: ``'auto'``, ``'patches'`` or ``'lax'`` (see ``conv``); the
        parameters mean the same for all.
    """

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] = (1, 1)
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()
    impl: str = "auto"

    _op = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = tuple(self.kernel_size) + (x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape)
        bias = self.param("bias", self.bias_init, (self.features,))
        return type(self)._op(x, kernel, self.strides, self.impl) + bias


class Conv(_Layer):
    """Drop-in for ``flax.linen.Conv`` with VALID padding, computed by ``conv``
    (flax's parameter layout)."""

    _op = staticmethod(conv)


class ConvTranspose(_Layer):
    """Drop-in for ``flax.linen.ConvTranspose`` with VALID padding, computed by
    ``conv_transpose`` (see the module docstring for the kernel's flip)."""

    _op = staticmethod(conv_transpose)

"""How the JAX twin computes each layer form of vae_core/forms.py, and which forms and XLA options it uses
on each platform unless told (and the one cached jax.jit that applies the options). Mirrors
vae_torch/forms.py."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from vae_core.forms import NATIVE_FORMS, SUBPIXEL_TAPS

# How this twin computes each layer kind of vae_core.forms.FORMS on each JAX platform unless told: the
# forms each device's figures chose (docs/devices/). CPU: measured (the sub-pixel decoder and the
# space-to-depth encoder are matmuls, XLA's CPU convolutions are slow, docs/perf-log.md). GPU: measured
# once on an H200, the sub-pixel decoder 4.9x the native one (the encoder ran native only). TPU: estimated
# from compile-only analysis (docs/devices/tpu.md): the matmul forms move more bytes there than XLA's
# own convolutions. A platform not listed gets the native forms.
DEFAULT_FORMS = {
    "cpu": {"strided_conv": "space_to_depth", "transposed_conv": "subpixel", "output_transposed_conv": "col2im"},
    "gpu": {"strided_conv": "native", "transposed_conv": "subpixel", "output_transposed_conv": "col2im"},
    "tpu": {"strided_conv": "native", "transposed_conv": "native", "output_transposed_conv": "native"},
}


# XLA's options for this twin's compiled functions on each platform, part of its form there (measured:
# docs/perf-log.md, benchmarks/results/cpu-xla-options.md). CPU: YNNPACK for the dots alone. jax 0.10 makes
# YNNPACK fusions of convolutions, dots and elementwise ops by default, and its convolutions' weight
# gradients ran at a fifth of XLA's own kernels' speed (the resnet preset's step 1.9x as long); its dots
# alone make the seed model's step 1.07-1.12x faster (the sub-pixel decoder's, 1.2-1.3x).
COMPILER_OPTIONS = {"cpu": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}}


def default_forms(device: str | None = None) -> dict[str, str]:
    """This twin's forms on `device`, a JAX platform ("cpu", "gpu" or its "cuda", "tpu"); default: the
    platform new arrays go to."""
    return dict(DEFAULT_FORMS.get(_platform(device), NATIVE_FORMS))


def compiler_options(device: str | None = None) -> dict[str, str]:
    """The XLA options this twin compiles with on `device` (as default_forms); pass them to your own
    jax.jit of the model (`jax.jit(f, compiler_options=...)`) to get the speed its compiled steps get."""
    return dict(COMPILER_OPTIONS.get(_platform(device), {}))


def _platform(device: str | None) -> str:
    if device is None:
        default = jax.config.jax_default_device
        device = default.platform if isinstance(default, jax.Device) else jax.default_backend()
    return {"cuda": "gpu", "rocm": "gpu"}.get(device, device)


def jit_for(fn, model, static_argnums=0):
    """fn(graphdef, state, ...) under jax.jit with the compiler options of `model` (a VAE; the graphdef, or
    the arguments static_argnums names, static): one jit, and one compile per shape, for each function and
    options."""
    return jitted(fn, tuple(sorted(model.compiler_options.items())), static_argnums)


@functools.cache
def jitted(fn, options: tuple[tuple[str, str], ...], static_argnums=0, donate_argnums=()):
    """One jax.jit of fn for each set of options, shared by every model and state that calls it: jax then
    compiles once per distinct structure, shapes and dtypes (the parity suite's cases repeat them)."""
    return jax.jit(fn, static_argnums=static_argnums, donate_argnums=donate_argnums,
                   compiler_options=dict(options))


def conv_space_to_depth(x, kernel, bias):
    """nnx.Conv(k=4, s=2, p=1)(x) for NHWC x and its kernel (4, 4, C_in, C_out), as one contraction: x padded
    by 1 and folded space-to-depth by 2, so each output pixel reads a 2x2 window of folded pixels, and
    kernel tap (2r+p, 2s+q) multiplies window (r, s), folded channel (p, q, c). XLA's CPU convolution is
    slow here, above all in backward (weight gradients: docs/perf-log.md); its dot is not. An odd
    H or W gets one more row or column of padding, which the window never reads. Computes in x's dtype; a
    bf16 x with float32 parameters returns the float32 accumulation (see model.py's _precision)."""
    n, h, w, c = x.shape
    out_h, out_w = h // 2, w // 2
    x = jnp.pad(x, ((0, 0), (1, 1 + h % 2), (1, 1 + w % 2), (0, 0)))
    fold_h, fold_w = x.shape[1] // 2, x.shape[2] // 2
    folded = x.reshape(n, fold_h, 2, fold_w, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, fold_h, fold_w, 4 * c)
    windows = jnp.stack([folded[:, r:r + out_h, s:s + out_w] for r in (0, 1) for s in (0, 1)])
    taps = kernel.reshape(2, 2, 2, 2, c, -1).transpose(0, 2, 1, 3, 4, 5).reshape(4, 4 * c, -1)
    accumulate = None if x.dtype == kernel.dtype else kernel.dtype
    y = jnp.einsum("tnhwc,tco->nhwo", windows, taps.astype(x.dtype), preferred_element_type=accumulate)
    return y + bias.astype(x.dtype)  # as nnx.Conv promotes it


def conv_transpose_subpixel(x, kernel, bias):
    """The sub-pixel form of Flax ConvTranspose(k=4, s=2, p=1, transpose_kernel=True)(x), in the order of
    its sums that XLA runs fastest, col2im's (vae_core/forms.py; XLA's CPU convolutions are slow, its dots
    are not)."""
    return conv_transpose_col2im(x, kernel, bias)


def conv_transpose_col2im(x, kernel, bias):
    """Flax ConvTranspose(k=4, s=2, p=1, transpose_kernel=True)(x) for NHWC x and its kernel (4, 4, C_out,
    C_in), phase by phase: one matmul gives every input pixel times all 16 kernel taps, and output phase
    (a, b) sums, for each of its pixels, the four taps that reach it from the 2x2 neighbouring input pixels.
    Computes in x's dtype; a bf16 x with float32 parameters returns the float32 accumulation, as the layers
    do in mixed precision (see model.py's _precision)."""
    n, h, w, c_in = x.shape
    c_out = kernel.shape[2]
    weight = kernel.reshape(-1, c_in)  # ((kh, kw, c_out), c_in): the canonical W's taps
    accumulate = None if x.dtype == kernel.dtype else kernel.dtype
    # taps lead, pixels last: each tap's plane is contiguous, and so is its gradient in backward
    taps = jnp.einsum("tc,nhwc->tnhw", weight.astype(x.dtype), x, preferred_element_type=accumulate)
    # split, not indexed (the gradient of 16 slices of one array is 16 zero-padded copies of it), and the
    # batch axis kept apart (a data-parallel mesh shards it); each tap's plane padded by 1
    planes = [jnp.pad(plane[0], ((0, 0), (0, 0), (1, 1), (1, 1)))
              for plane in jnp.split(taps.reshape(16, c_out, n, h, w), 16)]

    def phase(a, b):  # pixel (i, j) of output phase (a, b) reads input pixel (i-1+a+r, j-1+b+s) through tap
        # (SUBPIXEL_TAPS[a][r], SUBPIXEL_TAPS[b][s])
        taps_in = [(r, s, int(4 * SUBPIXEL_TAPS[a][r] + SUBPIXEL_TAPS[b][s])) for r in (0, 1) for s in (0, 1)]
        return sum(planes[t][..., a + r:a + r + h, b + s:b + s + w] for r, s, t in taps_in)

    rows = [jnp.stack([phase(a, 0), phase(a, 1)], axis=-1) for a in (0, 1)]
    y = jnp.stack(rows, axis=-3).reshape(c_out, n, 2 * h, 2 * w).transpose(1, 2, 3, 0)
    return y + bias.astype(x.dtype)

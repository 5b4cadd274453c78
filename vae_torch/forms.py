"""How the torch twin computes each layer form of vae_core/forms.py, and which forms it uses on each
device unless told. Mirrors vae_jax/forms.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vae_core.config import KERNEL, PADDING, STRIDE
from vae_core.forms import NATIVE_FORMS, SUBPIXEL_TAPS

# How this twin computes each layer kind of vae_core.forms.FORMS on each device unless told: the forms
# each device's figures chose (docs/devices/). cuDNN's and oneDNN's own convolutions measured fastest on
# both (the sub-pixel decoder: docs/benchmarks.md), but for oneDNN's output layer into 1 channel, which
# a matmul and F.fold beat 3x (docs/perf-log.md, 2026-12-06); the space-to-depth encoder is JAX's CPU
# choice, mirrored here so both twins offer every form. A device not listed gets the native forms.
DEFAULT_FORMS = {"cpu": {**NATIVE_FORMS, "output_transposed_conv": "col2im"}, "cuda": dict(NATIVE_FORMS)}


def default_forms(device: str | None = None) -> dict[str, str]:
    """This twin's forms on `device` ("cpu", "cuda"; default: the CPU, where a model is built before it
    is moved, so its constructor takes the CPU's unless told)."""
    return dict(DEFAULT_FORMS.get(torch.device(device or "cpu").type, NATIVE_FORMS))


def compiler_options(device: str | None = None) -> dict[str, str]:
    """The compiler options this twin sets on `device`: none (the JAX twin's XLA options have no torch
    counterpart; torch.compile's choice is compile_train_step's `mode`)."""
    return {}


def conv_space_to_depth(x, weight, bias):
    """Conv2d(k=4, s=2, p=1)(x) with the canonical weight (C_out, C_in, 4, 4), as a stride-1 2x2 conv over x
    padded by 1 and folded space-to-depth by 2 (pixel_unshuffle: channel (c, p, q)); kernel tap
    (2r+p, 2s+q) multiplies window (r, s) of folded channel (c, p, q). An odd H or W gets one more row or
    column of padding, which the window never reads."""
    _, _, h, w = x.shape
    c_out, c_in = weight.shape[:2]
    folded = F.pixel_unshuffle(F.pad(x, (1, 1 + w % 2, 1, 1 + h % 2)), 2)
    kernel = weight.view(c_out, c_in, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(c_out, 4 * c_in, 2, 2)
    return F.conv2d(folded, kernel, bias)


def conv_transpose_subpixel(x, weight, bias):
    """ConvTranspose2d(k=4, s=2, p=1)(x) with the canonical weight (C_in, C_out, 4, 4), computed as one 2x2
    conv over x padded by 1 whose 4*C_out channels are the four output phases, then interleaved."""
    n, _, h, w = x.shape
    c_out = weight.shape[1]
    # 16 kernel slices: (a, b, r, s, c_in, c_out) -> ((a, b, c_out), c_in, r, s)
    taps = [weight[:, :, int(SUBPIXEL_TAPS[a][r]), int(SUBPIXEL_TAPS[b][s])]
            for a in (0, 1) for b in (0, 1) for r in (0, 1) for s in (0, 1)]
    kernel = torch.stack(taps).view(2, 2, 2, 2, -1, c_out).permute(0, 1, 5, 4, 2, 3).reshape(4 * c_out, -1, 2, 2)
    y = F.conv2d(F.pad(x, (1, 1, 1, 1)), kernel).view(n, 2, 2, c_out, h + 1, w + 1)
    rows = [torch.stack([y[:, a, b, :, a:a + h, b:b + w] for b in (0, 1)], dim=-1) for a in (0, 1)]
    # bias in y's dtype, as ConvTranspose2d adds it under autocast (bf16), not promoted to float32
    return torch.stack(rows, dim=-3).reshape(n, c_out, 2 * h, 2 * w) + bias.to(y.dtype).view(1, -1, 1, 1)


def conv_transpose_col2im(x, weight, bias):
    """ConvTranspose2d(k=4, s=2, p=1)(x) with the canonical weight (C_in, C_out, 4, 4), as one matmul of every
    input pixel with all 16 taps, then col2im (F.fold) summing the four taps that reach each output pixel.
    The decoder's output layer: 3x oneDNN's 32 -> 1 ConvTranspose2d (docs/perf-log.md), but F.fold is slow
    over many channels, so the hidden layers keep their form."""
    n, c_in, h, w = x.shape
    columns = x.permute(0, 2, 3, 1).reshape(n * h * w, c_in) @ weight.reshape(c_in, -1)
    columns = columns.view(n, h * w, -1).transpose(1, 2)  # (N, (c_out, kh, kw), pixels): fold's layout
    y = F.fold(columns, (STRIDE * h, STRIDE * w), KERNEL, padding=PADDING, stride=STRIDE)
    return y + bias.to(y.dtype).view(1, -1, 1, 1)  # in y's dtype, as ConvTranspose2d under autocast

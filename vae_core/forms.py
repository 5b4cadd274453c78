"""The layer forms: the layer kinds a twin may compute in more than one way, each way the same function of
the same canonical weights, and how a model's forms are chosen and read. The weights' layout is
vae_core/layout.py; which form a twin uses on which device is that twin's table (its forms.DEFAULT_FORMS).

How a twin computes a transposed conv is its own choice; the weight stays the canonical W either way.
TRANSPOSED_CONVS, for every transposed conv but the decoder's last (OUTPUT_TRANSPOSED_CONVS, below):
"native" (ConvTranspose2d / lax's lhs-dilated conv, which multiplies the inserted zeros too) or
"subpixel": for k=4, s=2, p=1, output pixel (2i+a, 2j+b) (phase a, b in {0, 1}) reads the
2x2 input window rows i-1+a+r, columns j-1+b+s (r, s in {0, 1}) through kernel tap
(SUBPIXEL_TAPS[a][r], SUBPIXEL_TAPS[b][s]). So one stride-1 2x2 conv over the input padded by 1, with
weight K[(a, b, c_out), c_in, r, s] = W[c_in, c_out, SUBPIXEL_TAPS[a][r], SUBPIXEL_TAPS[b][s]], gives
every phase as a block of 4*c_out channels on an (H+1) x (W+1) grid; phase (a, b) is the window at
offset (a, b), and interleaving the four gives the (2H, 2W) output (torch's order). Or, the same sums in
the other order (JAX's: XLA's CPU convolutions are slow, its dots are not): one matmul of every input
pixel with all 16 taps, W as (c_in, (kh, kw, c_out)), then phase (a, b) adds the four tap planes
(SUBPIXEL_TAPS[a][r], SUBPIXEL_TAPS[b][s]) shifted by (a+r-1, b+s-1). Either does the useful work (the
conv order also the grid's one extra row and column), where the native form on XLA also multiplies the
zeros it inserts.

Likewise the encoder's stride-2 convs. STRIDED_CONVS: "native" (Conv2d / lax's conv) or
"space_to_depth": the input padded by 1 and folded 2x2 into 4x the channels, so the k=4, s=2 conv is a
stride-1 2x2 conv over the folded grid, kernel tap (2r+p, 2s+q) for window (r, s), folded channel
(p, q, c): one matmul per window, no strided gathers.

The decoder's last transposed conv, into the image's few channels (the logits'), is a kind of its own:
there a convolution library's kernels are at their worst (oneDNN's 32 -> 1 ConvTranspose2d ran at
~4.5 GFLOP/s) while a matmul is not. OUTPUT_TRANSPOSED_CONVS: "native" (as for the hidden ones) or
"col2im": one matmul of every input pixel with all 16 taps, W as (c_in, (c_out, kh, kw)), then col2im,
each output pixel summing the four taps that reach it (the second order above; torch: F.fold).

FORMS names every layer kind a twin may compute in more than one way, with its forms ("native" first)."""

from __future__ import annotations

import numpy as np

TRANSPOSED_CONVS = ("native", "subpixel")
OUTPUT_TRANSPOSED_CONVS = ("native", "col2im")
STRIDED_CONVS = ("native", "space_to_depth")
FORMS = {"strided_conv": STRIDED_CONVS, "transposed_conv": TRANSPOSED_CONVS,
         "output_transposed_conv": OUTPUT_TRANSPOSED_CONVS}
NATIVE_FORMS = dict.fromkeys(FORMS, "native")  # read-only: take dict(NATIVE_FORMS) to change one
SUBPIXEL_TAPS = np.array([[3, 1], [2, 0]])  # kernel row (or column) of phase a, window row r: 3 - a - 2r
# The part of a conv model that computes each layer kind, and holds its form as an attribute of the kind's
# name (the same in both twins: model.encoder.strided_conv, model.decoder.transposed_conv, ...).
HOLDERS = {"strided_conv": "encoder", "transposed_conv": "decoder", "output_transposed_conv": "decoder"}


def check_form(kind: str, value, default: str) -> str:
    """How a twin computes one layer kind (a key of FORMS): one of its forms; None is the twin's
    default."""
    value = default if value is None else value
    if value not in FORMS[kind]:
        raise ValueError(f"{kind} must be one of {FORMS[kind]}, got {value!r}")
    return value


def resolve_forms(defaults: dict[str, str], **given: str | None) -> dict[str, str]:
    """Every layer kind's form for a new model: the one given, or where it is None the twin's default
    (`defaults`, its default_forms()), each checked (for any architecture: an MLP takes forms it never
    uses, but not a misspelt one)."""
    unknown = sorted(set(given) - set(FORMS))
    if unknown:
        raise TypeError(f"unknown layer kinds {unknown}; the kinds are {tuple(FORMS)}")
    return {kind: check_form(kind, given.get(kind), defaults[kind]) for kind in FORMS}


def forms_of(model) -> dict[str, str]:
    """How `model`, either twin's VAE, computes each layer kind: the forms its encoder and decoder hold (an
    MLP has only native ones)."""
    if model.config.arch != "conv":
        return dict(NATIVE_FORMS)
    return {kind: getattr(getattr(model, holder), kind) for kind, holder in HOLDERS.items()}

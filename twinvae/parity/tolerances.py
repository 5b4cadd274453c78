"""The tolerance policy: how far each compared quantity of a twin may lie from the float64 torch
reference, in each precision, and why (docs/parity.md). Framework-free.

float64: the JAX twin against the torch reference, both in float64 (64-bit JAX enabled inside
`jax.enable_x64` only). float32: each twin run in float32 against the float64 reference. bfloat16: mixed
precision (float32 parameters and inputs, layers computing in bf16: compute_dtype="bfloat16") against the
same float64 reference.
"""

from __future__ import annotations

import numpy as np

from vae_core.checks import PRECISIONS
from vae_core.config import VAEConfig

# float64: layout bugs give O(1) errors, rounding ~1e-16..1e-11 (Adam amplifies gradients near its eps).
# float32: derived from the errors observed on CPU (README table), with margin. Forward, losses and
# gradients sit near 1e-7..1e-6. A 50-step float32 Adam trajectory is chaotic against the float64 one: a
# ReLU unit whose pre-activation sits near 0, or a gradient at rounding level (Adam moves it by about
# lr * sign(g)), sends single parameters off by whole learning rates (observed up to 0.28 of a tensor's
# largest value for fc_mu, whose init bound is only 0.018), while the losses stay within 2e-4. So the
# optimizer's float32 maths is held tightly at the first step (adam.step1), the whole trajectory loosely.
TOLERANCES = {
    "float64": {"forward": 1e-10, "loss": 1e-10, "grad": 1e-10, "sample": 1e-10, "checkpoint": 0.0,
                "adam_loss": 1e-10, "adam_step1": 1e-10, "adam_params": 1e-10},
    "float32": {"forward": 2e-5, "loss": 2e-5, "grad": 1e-4, "sample": 2e-5, "checkpoint": 0.0,
                "adam_loss": 1e-3, "adam_step1": 1e-2, "adam_params": 0.5},
}
# float64, the IWAE bound (K > 1 samples): its gradient weighs each sample by softmax(log w), and log w sums
# the image's D pixels' terms, O(1) nats each (up to log(levels) for the discretized logistic), so it is
# rounded at about D nats times u, not 1 nat times u: the weights, and with them the gradient and Adam's
# trajectory, carry up to D times the ELBO's rounding (measured: 6e-13 in the gradient and 1.4e-10 in
# Adam's parameters after 5 steps against 1e-15 and 6e-14 for the same ELBO, D = 128, |log w| = 900
# nats; a drawn property example). Those tolerances grow by D for it, still far below a layout bug's O(1).
IWAE_SCALED = ("grad", "adam_step1", "adam_params")
# bfloat16: derived from u = 2^-8, the relative error of one rounding to bf16 (8 significant bits).
# Forward, losses, sampling: each layer on the way rounds its input, its weights and its output to bf16
# (its sums accumulate in float32): 3 roundings per layer, L layers on the longest path from the input
# (layers_on_path). Independent rounding errors add in quadrature (Higham & Mary 2019): about sqrt(3L) u,
# and the tolerance allows 3x that, since the error measure is a max over elements, not a mean.
# Gradients: a ReLU whose pre-activation lies within rounding distance of 0 can switch, and then its
# unit's whole contribution to the gradient is lost or gained. A fraction of about u of the units does,
# each an O(1) error of its own term, so a gradient tensor is off by about sqrt(u) = 6% in norm, whatever
# the depth: bf16 gradients are measured by ||a - b|| / ||b|| per tensor (a max over elements picks the
# one switched unit), and the tolerance allows 4x sqrt(u). Adam's trajectory (step1, params) is held as
# in float32 (see above): single parameters moved by whole learning rates, whatever the precision.
BF16_UNIT_ROUNDOFF = 2.0**-8
BF16_MARGIN = 3.0
BF16_ROUNDINGS = {"forward": 3, "loss": 3, "sample": 3, "adam_loss": 3}  # per layer on the path
BF16_FIXED = {"grad": 4 * np.sqrt(BF16_UNIT_ROUNDOFF), "checkpoint": 0.0, "adam_step1": 0.5, "adam_params": 0.5}
PARAM_DTYPE = {name: dtypes[0] for name, dtypes in PRECISIONS.items()}
COMPUTE_DTYPE = {name: dtypes[1] for name, dtypes in PRECISIONS.items()}


def layers_on_path(config: VAEConfig) -> int:
    """Layers (convs, linears) on the longest path from the input image to the logits."""
    if config.arch == "conv":
        per_side = len(config.conv_channels) * (1 + 2 * config.res_blocks)  # stride-2 conv + 2 per block
    else:
        per_side = len(config.mlp_widths)
    # encoder, fc_mu / fc_logvar, decoder's fc, decoder; two levels: z2 -> p(z1 | z2)'s two layers -> z1 too
    return 2 * per_side + 2 + 2 * (config.hierarchy - 1)


def tolerance(dtype: str, kind: str, config: VAEConfig) -> float:
    if dtype == "float64" and config.importance_weighted and kind in IWAE_SCALED:
        return TOLERANCES[dtype][kind] * config.num_pixels
    if dtype != "bfloat16":
        return TOLERANCES[dtype][kind]
    if kind in BF16_FIXED:
        return BF16_FIXED[kind]
    return BF16_MARGIN * np.sqrt(BF16_ROUNDINGS[kind] * layers_on_path(config)) * BF16_UNIT_ROUNDOFF


QUANTITY_KIND = {"mu": "forward", "logvar": "forward", "z": "forward", "logits": "forward",
                 "prior.mu": "forward", "prior.logvar": "forward", "lower.mu": "forward",
                 "lower.logvar": "forward", "lower.z": "forward", "lower.prior_mu": "forward",
                 "lower.prior_logvar": "forward",
                 "reconstruct": "forward",
                 "loss.total": "loss", "loss.reconstruction": "loss", "loss.kl": "loss", "grad": "grad",
                 "adam.loss": "adam_loss", "adam.params": "adam_params",
                 "adam.step1": "adam_step1", "sample": "sample", "decode": "sample",
                 "checkpoint": "checkpoint"}
PRIOR_QUANTITIES = ("prior.mu", "prior.logvar")  # compared only where the model has the VampPrior
LOWER_QUANTITIES = ("lower.mu", "lower.logvar", "lower.z", "lower.prior_mu", "lower.prior_logvar")  # two levels


def compared_quantities(config: VAEConfig) -> set[str]:
    """The quantities compare() measures for a model of `config`: every one of QUANTITY_KIND, the
    VampPrior's components only where it has them, z1's only for two levels."""
    absent = (set() if config.prior == "vamp" else set(PRIOR_QUANTITIES)) | \
        (set() if config.hierarchy == 2 else set(LOWER_QUANTITIES))
    return set(QUANTITY_KIND) - absent


# what compare_exports measures: an exported artifact's outputs
EXPORT_QUANTITY_KIND = {"export.mu": "forward", "export.logvar": "forward", "export.logits": "forward"}

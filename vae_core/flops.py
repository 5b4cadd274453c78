"""One analytic FLOP count and one analytic byte count for both twins: every benchmark rate divides by the
first, every roofline's arithmetic intensity is the first over the second.

FLOPs. Counted: the multiply-adds of convolutions, transposed convolutions and linear layers, as 2 FLOPs
each, useful work only (a stride-2 transposed conv scatters each input pixel through k*k taps; the zeros an
implementation may insert are not counted). Not counted: biases, activations, the loss, the optimizer
(together under 1% for the seed model). A training step is the forward pass, the weight gradients (as
much again) and the input gradients (as much again, except the first layer's: the images need none). The
IWAE objective's K = train_samples samples decode K latents per image (a two-level model's q(z1 | x, z2) and
p(z1 | z2) run K times too); the VampPrior encodes its P pseudo-inputs once per step, the first layer's
input gradients included (they are parameters).

Bytes: the analytic minimum of memory traffic, for a device whose caches hold nothing from one operation
to the next (an accelerator's HBM; a CPU's DRAM once a batch outgrows its last-level cache). The
activations are every layer's output (mu, logvar and the logits among them) and, in training, z. Counted:
- forward: every activation written once and read once by its consumer; the images and eps read once;
- backward (training): every activation, and the images, read once more (saved for the gradients); every
  activation's gradient written once and read once;
- parameters: inference reads the weights once; a training step reads and writes the weights, their
  gradients and Adam's two moments once each.
Nothing is recomputed, no fusion saves a tensor's round trip, and no cache reuse across operations is
assumed. Activations are counted in the compute dtype (bf16 in mixed precision), the images, eps and the
parameters in the parameters' dtype.
"""

from __future__ import annotations

from vae_core.config import VAEConfig
from vae_core.layout import layer_specs, num_parameters

# Bytes per element: (activations, parameters and data) for each precision name of vae_core.checks.
ELEMENT_BYTES = {"float32": (4, 4), "float64": (8, 8), "bfloat16": (2, 4)}
KINDS = ("train", "infer")


def _layers(config: VAEConfig):
    """(layer, forward MACs per image, output elements per image) of every layer, in model order."""
    _, h, w = config.image_shape
    for layer in layer_specs(config):
        macs = layer.in_features * layer.out_features
        if layer.kind == "conv":  # output pixels: the input's divided by the stride
            h, w = h // layer.stride, w // layer.stride
            macs *= layer.kernel**2 * h * w
            outputs = layer.out_features * h * w
        elif layer.kind == "conv_transpose":  # input pixels, each through k*k taps
            macs *= layer.kernel**2 * h * w
            h, w = h * layer.stride, w * layer.stride
            outputs = layer.out_features * h * w
        else:
            outputs = layer.out_features
        yield layer, macs, outputs


def layer_flops(config: VAEConfig) -> dict[str, int]:
    """Forward FLOPs per image of every layer, by canonical layer name, in model order."""
    return {layer.name: 2 * macs for layer, macs, _ in _layers(config)}


def layer_outputs(config: VAEConfig) -> dict[str, int]:
    """Elements per image of every layer's output, by canonical layer name, in model order."""
    return {layer.name: outputs for layer, _, outputs in _layers(config)}


def _per_sample(name: str) -> bool:
    """Whether the layer runs once per sample of z: the decoder's, and a two-level model's q(z1 | x, z2) and
    p(z1 | z2)."""
    return name.startswith(("decoder.", "fc_mu_lower", "fc_logvar_lower", "prior_lower."))


def forward_flops(config: VAEConfig, samples: int = 1) -> int:
    """encode + decode of `samples` latents, per image."""
    return sum(flops * (samples if _per_sample(name) else 1) for name, flops in layer_flops(config).items())


def encoder_flops(config: VAEConfig) -> int:
    """encode (mu and logvar: z2's for two levels), per image."""
    return sum(flops for name, flops in layer_flops(config).items() if not _per_sample(name))


def inference_flops(config: VAEConfig) -> int:
    """encode (mu and logvar) + decode(mu), per image: reconstruct's (a two-level model's p(z1 | z2) does not
    run)."""
    return sum(flops for name, flops in layer_flops(config).items() if _in_inference(name))


def _in_inference(name: str) -> bool:
    return not name.startswith("prior_lower.")


def train_step_flops(config: VAEConfig) -> int:
    """forward (train_samples decodes) + weight gradients + input gradients (none for the first layer),
    per image; the VampPrior's pseudo-inputs are step_flops's."""
    first = next(iter(layer_flops(config).values()))
    return 3 * forward_flops(config, config.train_samples) - first


def step_flops(config: VAEConfig, kind: str, batch_size: int) -> int:
    """FLOPs of one step of `kind` ("train" or "infer") on a batch: in training with the VampPrior also
    its P pseudo-inputs' encoding, forward and both gradients."""
    per_image = {"train": train_step_flops, "infer": inference_flops}[_check_kind(kind)](config)
    prior = 3 * config.pseudo_inputs * encoder_flops(config) if kind == "train" and config.prior == "vamp" else 0
    return per_image * batch_size + prior


def step_bytes(config: VAEConfig, kind: str, batch_size: int, dtype: str = "float32") -> int:
    """The analytic minimum of bytes one step of `kind` moves on a batch (the model in the module's
    docstring); dtype: a precision name ("float32", "float64", or "bfloat16": mixed precision)."""
    if dtype not in ELEMENT_BYTES:
        raise ValueError(f"dtype must be one of {tuple(ELEMENT_BYTES)}, got {dtype!r}")
    activation, parameter = ELEMENT_BYTES[dtype]
    pixels, latent = config.num_pixels, config.noise_dim  # z and eps: both levels'
    activations = sum(layer_outputs(config).values())  # mu, logvar and the logits among them
    if _check_kind(kind) == "infer":  # the images read; every activation written and read once
        activations = sum(n for name, n in layer_outputs(config).items() if _in_inference(name))
        per_image = parameter * pixels + activation * 2 * activations
        return batch_size * per_image + parameter * num_parameters(config)
    # K samples: every decoder activation and z K times, eps K times; the VampPrior: its P pseudo-inputs'
    # encoder activations, and the pseudo-inputs read (they are among the parameters)
    outputs = layer_outputs(config)
    k = config.train_samples
    decoded = sum(n for name, n in outputs.items() if _per_sample(name))
    activations += (k - 1) * decoded + k * latent
    # forward: write + read; backward: read again, gradient written + read. The images: read in the
    # forward and again in the backward; eps: read once.
    per_image = activation * 5 * activations + parameter * (2 * pixels + k * latent)
    prior = config.pseudo_inputs * activation * 5 * (sum(outputs.values()) - decoded) \
        if config.prior == "vamp" else 0
    return batch_size * per_image + prior + 8 * parameter * num_parameters(config)


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind

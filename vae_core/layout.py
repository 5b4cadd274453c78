"""Canonical weights: PyTorch `state_dict` names and shapes, the layout rules that map the JAX twin onto
them, the canonical initialisation and the weights' validation. The file format is vae_core/checkpoint.py;
the other ways a twin may compute a layer from the same weights (its forms) are vae_core/forms.py."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from vae_core import seeds
from vae_core.config import KERNEL, RES_KERNEL, STRIDE, VAEConfig


class WeightsError(ValueError):
    """Weights that do not match a config: missing, extra or mis-shaped keys, wrong dtype, non-finite."""


# ---------------------------------------------------------------------------------------------------------
# The layout table. Canonical = torch. Each layer kind says how the JAX (Flax NNX, NHWC) kernel and bias
# relate to the torch weight and bias. `image` is the (C, H, W) of the feature map a linear layer reads
# (from_image) or writes (to_image): torch flattens it C,H,W; NHWC flattens it H,W,C, so the linear's
# input (or output) dimension is permuted at conversion time rather than transposing activations.
#
# | kind             | torch weight     | JAX kernel        | torch -> JAX                                |
# |------------------|------------------|-------------------|---------------------------------------------|
# | linear           | (out, in)        | (in, out)         | W.T                                         |
# | linear_from_image| (out, C*H*W)     | (H*W*C, out)      | W.reshape(out,C,H,W).transpose(2,3,1,0)     |
# | linear_to_image  | (C*H*W, in)      | (in, H*W*C)       | W.reshape(C,H,W,in).transpose(3,1,2,0);     |
# |                  | bias (C*H*W,)    | bias (H*W*C,)     | bias.reshape(C,H,W).transpose(1,2,0)        |
# | conv             | (O, I, kH, kW)   | (kH, kW, I, O)    | W.transpose(2,3,1,0) (4x4 stride 2 or the   |
# |                  |                  |                   | residual blocks' 3x3 stride 1)              |
# | conv_transpose   | (I, O, kH, kW)   | (kH, kW, O, I)    | W.transpose(2,3,1,0); Flax ConvTranspose    |
# |                  |                  |                   | with transpose_kernel=True flips the kernel |
# |                  |                  |                   | itself, so no manual flip; lax padding per  |
# |                  |                  |                   | side k-1-p = 2 for k=4, s=2, p=1            |
# | pseudo_inputs    | (P, C, H, W)     | (P, H, W, C)      | W.transpose(0,2,3,1): images, as the twins' |
# |                  |                  |                   | inputs are                                  |
# Biases not listed are the same vector in both. The VampPrior's pseudo-inputs are one parameter, no layer:
# canonical key "pseudo_inputs", after every layer's keys.
# A class-conditional model (num_classes > 0) gives fc_mu, fc_logvar and decoder.fc num_classes more input
# columns, the one-hot label's, after the features (or z): in linear_from_image only the image's columns
# are permuted, and the label's follow them unchanged (weight[:, C*H*W:].T are the kernel's last rows).
# A two-level model (hierarchy 2) reads z2 in the same way: fc_mu_lower / fc_logvar_lower's columns are the
# features', then z2's, then a label's; decoder.fc's are z1's, then z2's, then a label's.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    name: str  # canonical prefix, e.g. "encoder.convs.0"; keys are name + ".weight" / ".bias"
    kind: str  # a row of the layout table
    in_features: int  # channels for convs, features for linears
    out_features: int
    image: tuple[int, int, int] | None = None  # (C, H, W) for linear_from_image / linear_to_image
    # linear_from_image: in_features is C*H*W of `image`, plus a conditional model's label columns
    kernel: int = KERNEL  # convs: the resampling convs are 4x4 stride 2, the residual blocks' 3x3 stride 1
    stride: int = STRIDE
    # the config fields that set (in_features, out_features), e.g. ("conv_channels[1]", "latent_dim"): the
    # ones to lower when the layer is too big (of a sum or product of fields, the largest term's)
    fields: tuple[str, str] = ("", "")

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.kind == "conv":
            return (self.out_features, self.in_features, self.kernel, self.kernel)
        if self.kind == "conv_transpose":
            return (self.in_features, self.out_features, self.kernel, self.kernel)
        return (self.out_features, self.in_features)

    @property
    def fan_in(self) -> int:
        # torch's default init reads fan_in off the weight's dim 1 (times the kernel area); for
        # ConvTranspose2d that is out_channels. Mirrored here so canonical init matches torch's.
        shape = self.weight_shape
        return shape[1] * (self.kernel * self.kernel if len(shape) == 4 else 1)


def _res_blocks(prefix: str, channels: int, count: int, field: str) -> list[LayerSpec]:
    return [LayerSpec(f"{prefix}.{j}.{conv}", "conv", channels, channels, kernel=RES_KERNEL, stride=1,
                      fields=(field, field))
            for j in range(count) for conv in ("conv1", "conv2")]


def _largest(*terms: tuple[str, int]) -> str:
    """The field of the largest (field, size) term: the one to lower to shrink their sum or product."""
    return max(terms, key=lambda term: term[1])[0]


def _heads(config: VAEConfig, kind: str, features: int, image, field: str) -> list[LayerSpec]:
    """The posterior's heads on the encoder's `features` (a label's columns after them): fc_mu and fc_logvar,
    q(z | x) (z2's in a two-level model); then a two-level model's q(z1 | x, z2), fc_mu_lower and
    fc_logvar_lower, on the features, z2 and the label, in that order, and p(z1 | z2): prior_lower.hidden
    (ReLU), prior_lower.mu and prior_lower.logvar."""
    latent = config.latent_dim
    heads = [LayerSpec(head, kind, features + config.num_classes, latent, image, fields=(field, "latent_dim"))
             for head in ("fc_mu", "fc_logvar")]
    if config.hierarchy == 1:
        return heads
    width = config.prior_width
    return heads + [
        *(LayerSpec(head, kind, features + latent + config.num_classes, latent, image,
                    fields=(field, "latent_dim")) for head in ("fc_mu_lower", "fc_logvar_lower")),
        LayerSpec("prior_lower.hidden", "linear", latent, width, fields=("latent_dim", "prior_width")),
        *(LayerSpec(f"prior_lower.{head}", "linear", width, latent, fields=("prior_width", "latent_dim"))
          for head in ("mu", "logvar"))]


def layer_specs(config: VAEConfig) -> list[LayerSpec]:
    """Every parameterised layer, in the order the model runs them (encoder, the posterior's heads, a
    two-level model's q(z1 | x, z2) and p(z1 | z2), decoder)."""
    c, _, _ = config.image_shape
    classes = ("num_classes", config.num_classes)
    latent = _largest(("latent_dim", config.latent_dim), classes)  # what sets the decoder's fc's inputs
    layers = []
    if config.arch == "conv":
        channels = (c, *config.conv_channels)
        fields = ("image_shape", *(f"conv_channels[{i}]" for i in range(len(config.conv_channels))))
        for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
            layers.append(LayerSpec(f"encoder.convs.{i}", "conv", cin, cout, fields=fields[i:i + 2]))
            layers += _res_blocks(f"encoder.blocks.{i}", cout, config.res_blocks, fields[i + 1])
        bottleneck = config.bottleneck_shape
        features = _largest((fields[-1], bottleneck[0]), ("image_shape", bottleneck[1] * bottleneck[2]), classes)
        layers += _heads(config, "linear_from_image", config.bottleneck_size, bottleneck, features)
        layers.append(LayerSpec("decoder.fc", "linear_to_image", config.noise_dim + config.num_classes,
                                config.bottleneck_size, bottleneck, fields=(latent, features)))
        reverse, reverse_fields = channels[::-1], fields[::-1]
        for i, (cin, cout) in enumerate(zip(reverse[:-1], reverse[1:])):
            layers += _res_blocks(f"decoder.blocks.{i}", cin, config.res_blocks, reverse_fields[i])
            out = config.output_shape[0] if i == len(reverse) - 2 else cout
            layers.append(LayerSpec(f"decoder.deconvs.{i}", "conv_transpose", cin, out,
                                    fields=reverse_fields[i:i + 2]))
    else:
        widths = (config.num_pixels, *config.mlp_widths)
        fields = ("image_shape", *(f"mlp_widths[{i}]" for i in range(len(config.mlp_widths))))
        for i, (fin, fout) in enumerate(zip(widths[:-1], widths[1:])):
            kind = "linear_from_image" if i == 0 else "linear"
            layers.append(LayerSpec(f"encoder.linears.{i}", kind, fin, fout,
                                    config.image_shape if i == 0 else None, fields=fields[i:i + 2]))
        features = _largest((fields[-1], widths[-1]), classes)
        layers += _heads(config, "linear", widths[-1], None, features)
        layers.append(LayerSpec("decoder.fc", "linear", config.noise_dim + config.num_classes, widths[-1],
                                fields=(latent, fields[-1])))
        reverse, reverse_fields = widths[::-1], fields[::-1]
        last = len(reverse) - 2
        for i, (fin, fout) in enumerate(zip(reverse[:-1], reverse[1:])):
            kind = "linear_to_image" if i == last else "linear"
            layers.append(LayerSpec(f"decoder.linears.{i}", kind, fin, config.output_size if i == last else fout,
                                    config.output_shape if i == last else None, fields=reverse_fields[i:i + 2]))
    return layers


PSEUDO_INPUTS = "pseudo_inputs"  # the VampPrior's learned images: canonical key, shape (P, C, H, W)
# Tomczak & Welling's init of them (normal, mean 0.05, std 0.01, as in their code for images in [0, 1]) and
# the range the encoder sees them in: clipped to the images' [0, 1] by a hardtanh, whose gradient is 0 at and
# beyond the bounds (both twins).
PSEUDO_INPUT_INIT = (0.05, 0.01)
PSEUDO_INPUT_BOUNDS = (0.0, 1.0)


def canonical_shapes(config: VAEConfig) -> dict[str, tuple[int, ...]]:
    """Canonical key -> shape, in model order (this is the golden key list the README documents); the
    VampPrior's pseudo-inputs last."""
    shapes = {}
    for layer in layer_specs(config):
        shapes[f"{layer.name}.weight"] = layer.weight_shape
        shapes[f"{layer.name}.bias"] = (layer.out_features,)
    if config.prior == "vamp":
        shapes[PSEUDO_INPUTS] = (config.pseudo_inputs, *config.image_shape)
    return shapes


def num_parameters(config: VAEConfig) -> int:
    return sum(math.prod(shape) for shape in canonical_shapes(config).values())  # ints: exact, none allocated


TRAINING_COPIES = 4  # a model in training holds its parameters, their gradients and Adam's two moments


def check_fits_in_memory(config: VAEConfig, dtype: str, itemsize: int, training: bool = False) -> None:
    """Refuse, before anything is allocated, a config whose parameters (TRAINING_COPIES of them in
    training) need more bytes than this machine's physical memory, where the allocator's own error would
    name no field: name the largest weight and the config field that sets its size. Sizes are the spec's,
    multiplied as ints."""
    memory = physical_memory()
    copies = TRAINING_COPIES if training else 1
    need = copies * itemsize * num_parameters(config)
    if memory is None or need <= memory:
        return
    layer = max(layer_specs(config), key=lambda layer: math.prod(layer.weight_shape))
    size, field = max(zip((layer.in_features, layer.out_features), layer.fields))
    dims = " × ".join(map(str, layer.weight_shape))
    largest = _size(copies * itemsize * math.prod(layer.weight_shape))
    what = "training needs" if training else "the model's parameters need"
    held = " (the parameters, their gradients and Adam's two moments)" if training else ""
    raise ValueError(f"{what} {_size(need)} in {dtype}{held}, more than this machine's {_size(memory)} of "
                     f"memory: {layer.name}.weight ({dims}, {size} set by {field}) alone needs {largest}; "
                     f"lower {field}")


def physical_memory() -> int | None:
    """This machine's physical memory in bytes; None where the system does not say."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no os.sysconf (Windows), or not these names
        return None
    return memory if memory > 0 else None


def _size(nbytes: int) -> str:
    """Bytes in binary units, e.g. "24.0 GiB"."""
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} EiB"


# --- torch <-> JAX layout rules (numpy, so the JAX twin and tests share one implementation) -------------

def to_jax_layout(layer: LayerSpec, weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical (torch) weight and bias of one layer -> Flax NNX kernel and bias."""
    if layer.kind in ("conv", "conv_transpose"):
        return weight.transpose(2, 3, 1, 0), bias
    if layer.kind == "linear":
        return weight.T, bias
    c, h, w = layer.image
    if layer.kind == "linear_from_image":  # the image's columns permuted, any label columns after them
        image = weight[:, :c * h * w].reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)
        return np.concatenate([image, weight[:, c * h * w:].T]), bias
    if layer.kind == "linear_to_image":
        kernel = weight.reshape(c, h, w, -1).transpose(3, 1, 2, 0).reshape(-1, h * w * c)
        return kernel, bias.reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
    raise AssertionError(f"unknown layer kind {layer.kind!r}")


def from_jax_layout(layer: LayerSpec, kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flax NNX kernel and bias of one layer -> canonical (torch) weight and bias; inverse of to_jax_layout."""
    if layer.kind in ("conv", "conv_transpose"):
        return kernel.transpose(3, 2, 0, 1), bias
    if layer.kind == "linear":
        return kernel.T, bias
    c, h, w = layer.image
    if layer.kind == "linear_from_image":
        image = kernel[:c * h * w].reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(-1, c * h * w)
        return np.concatenate([image, kernel[c * h * w:].T], axis=1), bias
    if layer.kind == "linear_to_image":
        weight = kernel.reshape(-1, h, w, c).transpose(3, 1, 2, 0).reshape(c * h * w, -1)
        return weight, bias.reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
    raise AssertionError(f"unknown layer kind {layer.kind!r}")


def pseudo_inputs_to_jax(pseudo_inputs: np.ndarray) -> np.ndarray:
    """Canonical (P, C, H, W) pseudo-inputs -> the JAX twin's NHWC (P, H, W, C)."""
    return pseudo_inputs.transpose(0, 2, 3, 1)


def pseudo_inputs_from_jax(pseudo_inputs: np.ndarray) -> np.ndarray:
    """The JAX twin's (P, H, W, C) pseudo-inputs -> canonical (P, C, H, W); inverse of pseudo_inputs_to_jax."""
    return pseudo_inputs.transpose(0, 3, 1, 2)


# --- initialisation and validation -----------------------------------------------------------------------

def init_weights(config: VAEConfig, seed: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """Canonical weights drawn like torch's default init (weights and biases uniform in ±1/sqrt(fan_in)),
    from vae_core's 'init' stream, so both backends can start from the very same model; then the VampPrior's
    pseudo-inputs (PSEUDO_INPUT_INIT), so the layers' draws are those of the standard prior's model."""
    generator = seeds.rng(seed, "init")
    weights = {}
    for layer in layer_specs(config):
        bound = 1.0 / np.sqrt(layer.fan_in)
        weights[f"{layer.name}.weight"] = generator.uniform(-bound, bound, layer.weight_shape).astype(dtype)
        weights[f"{layer.name}.bias"] = generator.uniform(-bound, bound, (layer.out_features,)).astype(dtype)
    if config.prior == "vamp":
        mean, std = PSEUDO_INPUT_INIT
        shape = canonical_shapes(config)[PSEUDO_INPUTS]
        weights[PSEUDO_INPUTS] = generator.normal(mean, std, shape).astype(dtype)
    return weights


def check_weights(weights: dict, config: VAEConfig) -> np.dtype:
    """Raise WeightsError naming every missing, extra or mis-shaped key (with both shapes), a non-float or
    mixed dtype, or a non-finite value. Returns the weights' common dtype."""
    expected = canonical_shapes(config)
    problems = []
    for key in expected:
        if key not in weights:
            problems.append(f"missing key {key!r} (expected shape {expected[key]})")
    for key in weights:
        if key not in expected:
            problems.append(f"unexpected key {key!r} (shape {tuple(np.shape(weights[key]))})")
    for key, shape in expected.items():
        if key in weights and tuple(np.shape(weights[key])) != shape:
            problems.append(f"key {key!r} has shape {tuple(np.shape(weights[key]))}, expected {shape}")
    if problems:
        raise WeightsError(f"weights do not match the config ({len(problems)} problem(s)):\n  "
                           + "\n  ".join(problems))
    dtypes = {np.asarray(w).dtype for w in weights.values()}
    if len(dtypes) != 1:
        raise WeightsError(f"weights mix dtypes {sorted(map(str, dtypes))}; expected one float dtype")
    (dtype,) = dtypes
    if dtype not in (np.float32, np.float64):
        raise WeightsError(f"weights have dtype {dtype}; expected float32 or float64")
    bad = [key for key, w in weights.items() if not np.all(np.isfinite(w))]
    if bad:
        raise WeightsError(f"weights hold NaN or inf in {bad}")
    return dtype

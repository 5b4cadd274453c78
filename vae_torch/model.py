"""The VAE in PyTorch (NCHW). Mirrors vae_jax/model.py layer for layer; canonical weight names are this
module's state_dict keys."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vae_core import checks, layout, seeds
from vae_core.config import KERNEL, PADDING, RES_KERNEL, STRIDE, VAEConfig
from vae_core.layout import NATIVE_FORMS, SUBPIXEL_TAPS
from vae_core.outputs import VAEOutput
from vae_torch.likelihoods import mean_image

LAYOUT = "NCHW"  # images' axes in this twin (canonical arrays, checkpoints and vae_core: NCHW)

# How this twin computes each layer kind of vae_core.layout.FORMS on each device unless told: the forms
# each device's figures chose (docs/devices/). cuDNN's and oneDNN's own convolutions measured fastest on
# both (the sub-pixel decoder: docs/benchmarks.md), but for oneDNN's output layer into 1 channel, which
# a matmul and F.fold beat 3x (docs/perf-log.md, 2026-12-06); the space-to-depth encoder is JAX's CPU
# choice, mirrored here so both twins offer every form. A device not listed gets the native forms.
DEFAULT_FORMS = {"cpu": {**NATIVE_FORMS, "output_transposed_conv": "col2im"}, "cuda": dict(NATIVE_FORMS)}
# The memory layout a conv model's 4-D weights and images take where it is built (the CPU): channels_last
# trained 1.31x / 1.20x faster than contiguous NCHW eagerly at batch 128 / 512 (benchmarks/results/cpu-epyc).
# The values are the same either way; only the strides differ (checkpoints hold C-order arrays).
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
DEFAULT_MEMORY_FORMAT = "channels_last"


def default_forms(device: str | None = None) -> dict[str, str]:
    """This twin's forms on `device` ("cpu", "cuda"; default: the CPU, where a model is built before it
    is moved, so its constructor takes the CPU's unless told)."""
    return dict(DEFAULT_FORMS.get(torch.device(device or "cpu").type, NATIVE_FORMS))


def compiler_options(device: str | None = None) -> dict[str, str]:
    """The compiler options this twin sets on `device`: none (the JAX twin's XLA options have no torch
    counterpart; torch.compile's choice is compile_train_step's `mode`)."""
    return {}


class ResBlock(nn.Module):
    """x + conv2(relu(conv1(relu(x)))), 3x3 convs that keep the size (pre-activation, He et al. 2016)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, RES_KERNEL, 1, RES_KERNEL // 2)
        self.conv2 = nn.Conv2d(channels, channels, RES_KERNEL, 1, RES_KERNEL // 2)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


def _res_blocks(channels: int, count: int) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(channels) for _ in range(count)))


class ConvEncoder(nn.Module):
    """Stride-2 convs with ReLU, each followed by `res_blocks` residual blocks, then flatten (C, H, W)
    for fc_mu / fc_logvar. `strided_conv` says how the stride-2 convs are computed: "native" or
    "space_to_depth" (the same function of the same weights)."""

    def __init__(self, config: VAEConfig, strided_conv: str):
        super().__init__()
        self.strided_conv = checks.check_form("strided_conv", strided_conv, "native")
        channels = (config.image_shape[0], *config.conv_channels)
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, KERNEL, STRIDE, PADDING) for cin, cout in zip(channels[:-1], channels[1:]))
        self.blocks = nn.ModuleList(_res_blocks(cout, config.res_blocks) for cout in channels[1:])

    def forward(self, x):
        for conv, blocks in zip(self.convs, self.blocks):
            x = conv(x) if self.strided_conv == "native" else conv_space_to_depth(x, conv.weight, conv.bias)
            x = blocks(F.relu(x))
        return x.flatten(1)


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


class ConvDecoder(nn.Module):
    """fc (+ ReLU where decoder_fc_relu) -> reshape to the encoder's last feature map -> stride-2
    transposed convs (ReLU between), each preceded by `res_blocks` residual blocks. `transposed_conv` says
    how all but the last are computed: "native" or "subpixel", `output_transposed_conv` the last, into the
    image's channels: "native" or "col2im" (each the same function of the same weights)."""

    def __init__(self, config: VAEConfig, transposed_conv: str, output_transposed_conv: str):
        super().__init__()
        self.transposed_conv = checks.check_form("transposed_conv", transposed_conv, "native")
        self.output_transposed_conv = checks.check_form("output_transposed_conv", output_transposed_conv,
                                                        "native")
        self.bottleneck_shape = config.bottleneck_shape
        self.fc_relu = config.decoder_fc_relu
        channels = (config.image_shape[0], *config.conv_channels)[::-1]
        self.fc = nn.Linear(config.latent_dim + config.num_classes, config.bottleneck_size)  # z, then a label
        self.blocks = nn.ModuleList(_res_blocks(cin, config.res_blocks) for cin in channels[:-1])
        outputs = (*channels[1:-1], config.output_shape[0])  # the last: the logits' channels
        self.deconvs = nn.ModuleList(
            nn.ConvTranspose2d(cin, cout, KERNEL, STRIDE, PADDING) for cin, cout in zip(channels[:-1], outputs))

    def forward(self, z):
        h = self.fc(z)
        h = (F.relu(h) if self.fc_relu else h).view(-1, *self.bottleneck_shape)
        *hidden, (blocks, deconv) = zip(self.blocks, self.deconvs)
        for hidden_blocks, hidden_deconv in hidden:
            h = F.relu(self._transposed_conv(hidden_blocks(h), hidden_deconv))
        return self._output_transposed_conv(blocks(h), deconv)  # logits

    def _transposed_conv(self, h, deconv):
        if self.transposed_conv == "native":
            return deconv(h)
        return conv_transpose_subpixel(h, deconv.weight, deconv.bias)

    def _output_transposed_conv(self, h, deconv):
        if self.output_transposed_conv == "native":
            return deconv(h)
        return conv_transpose_col2im(h, deconv.weight, deconv.bias)


class MLPEncoder(nn.Module):
    """Flatten (C, H, W), then Linear + ReLU for each width (pytorch/examples: 784-400)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        widths = (config.num_pixels, *config.mlp_widths)
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x):
        x = x.flatten(1)
        for linear in self.linears:
            x = F.relu(linear(x))
        return x


class MLPDecoder(nn.Module):
    """fc + ReLU, then the encoder's widths in reverse (ReLU between), reshaped to the image."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.output_shape = config.output_shape
        widths = (config.output_size, *config.mlp_widths)[::-1]
        self.fc = nn.Linear(config.latent_dim + config.num_classes, widths[0])  # z, then a label
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, z):
        h = F.relu(self.fc(z))
        for i, linear in enumerate(self.linears):
            h = linear(h)
            if i < len(self.linears) - 1:
                h = F.relu(h)
        return h.view(-1, *self.output_shape)  # logits


def with_labels(h, labels, num_classes: int):
    """h (N, F) with a conditional model's one-hot labels as its last num_classes columns; h itself for an
    unconditional model (labels None)."""
    if labels is None:
        return h
    return torch.cat([h, F.one_hot(labels.long(), num_classes).to(h.dtype)], dim=1)


def reparameterize(mu, logvar, eps):
    """z = mu + sigma * eps with sigma = exp(logvar / 2); eps is explicit so both twins draw the same."""
    return mu + torch.exp(0.5 * logvar) * eps


class VAE(nn.Module):
    """Encoder -> fc_mu / fc_logvar -> reparameterize -> decoder. Input: NCHW images in [0, 1].
    dtype: the parameters'. strided_conv ("native" or "space_to_depth"), transposed_conv ("native" or
    "subpixel") and output_transposed_conv ("native" or "col2im"): how the conv architecture computes its
    encoder's and decoder's resampling convs (vae_core/layout.py; None: default_forms("cpu")).
    compute_dtype: None, or "bfloat16" for mixed precision: the encoder and decoder run under torch.autocast
    with float32 parameters, and mu, logvar and the logits come back in float32, so reparameterize, the
    losses and Adam stay float32."""

    def __init__(self, config: VAEConfig, *, dtype=torch.float32, strided_conv: str | None = None,
                 transposed_conv: str | None = None, output_transposed_conv: str | None = None,
                 compute_dtype=None):
        super().__init__()
        if not isinstance(config, VAEConfig):
            raise TypeError(f"config must be a VAEConfig, got {type(config).__name__}")
        dtype = float_dtype(dtype)
        layout.check_fits_in_memory(config, _dtype_name(dtype), dtype.itemsize)  # before any allocation
        self.config = config
        defaults = default_forms()
        forms = {kind: checks.check_form(kind, value, defaults[kind])  # checked for any arch
                 for kind, value in (("strided_conv", strided_conv), ("transposed_conv", transposed_conv),
                                     ("output_transposed_conv", output_transposed_conv))}
        conv = config.arch == "conv"
        self.encoder = ConvEncoder(config, forms["strided_conv"]) if conv else MLPEncoder(config)
        features = config.bottleneck_size + config.num_classes  # a conditional model's one-hot label last
        self.fc_mu = nn.Linear(features, config.latent_dim)
        self.fc_logvar = nn.Linear(features, config.latent_dim)
        self.decoder = ConvDecoder(config, forms["transposed_conv"], forms["output_transposed_conv"]) if conv \
            else MLPDecoder(config)
        self.to(dtype, memory_format=MEMORY_FORMATS[DEFAULT_MEMORY_FORMAT if conv else "contiguous"])
        self.compute_dtype = checks.check_compute_dtype(
            None if compute_dtype is None else _dtype_name(float_dtype(compute_dtype)), _dtype_name(self.dtype))

    @property
    def dtype(self) -> torch.dtype:
        return self.fc_mu.weight.dtype

    @property
    def forms(self) -> dict[str, str]:
        """How this model computes each layer kind of vae_core.layout.FORMS (an MLP has only native ones)."""
        if self.config.arch != "conv":
            return dict(NATIVE_FORMS)
        return {"strided_conv": self.encoder.strided_conv, "transposed_conv": self.decoder.transposed_conv,
                "output_transposed_conv": self.decoder.output_transposed_conv}

    @property
    def memory_format(self) -> str:
        """"channels_last" or "contiguous": the layout of the 4-D weights, which as_input gives images too
        (`model.to(memory_format=torch.contiguous_format)` changes it)."""
        weights = [p for p in self.parameters() if p.ndim == 4]  # a 1-channel weight reads as both layouts
        channels_last = all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
        return "channels_last" if channels_last and not all(w.is_contiguous() for w in weights) else "contiguous"

    @property
    def compiler_options(self) -> dict[str, str]:
        """compiler_options() of the device the model is on: none (the JAX twin's property of that name)."""
        return compiler_options(self.fc_mu.weight.device.type)

    # `labels`: a class-conditional model's (num_classes > 0) class index of each image or latent, an
    # integer tensor of shape (N,); required exactly then.
    def encode(self, x, *, labels=None):
        """Images (N, C, H, W) -> (mu, logvar), each (N, latent_dim)."""
        self._check_images("x", x)
        self._check_labels(labels, x.shape[0])
        return self._encode(x, labels)

    def decode(self, z, *, labels=None):
        """Latents (N, latent_dim) -> logits (N, C, H, W)."""
        self._check_latents("z", z)
        self._check_labels(labels, z.shape[0])
        return self._decode(z, labels)

    def forward(self, x, eps, *, labels=None) -> VAEOutput:
        self._check_batch(x, eps, labels=labels)
        return self._forward(x, eps, labels)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, *, labels=None):
        """n images from the prior, as the likelihood's mean images in [0, 1] (likelihoods.mean_image); z
        comes from vae_core's 'sample' stream, so both twins given the same seed and weights return the
        same images."""
        n = checks.check_count("n", n)
        self._check_labels(labels, n)
        z = seeds.standard_normal(seed, "sample", 0, (n, self.config.latent_dim))
        z = torch.as_tensor(z, dtype=self.dtype, device=self.fc_mu.weight.device)
        return mean_image(self._decode(z, labels), self.config.likelihood)

    @torch.no_grad()
    def reconstruct(self, x, *, labels=None, check_inputs: bool = True):
        """Decode the posterior mean: the likelihood's mean image in [0, 1], the shape of x.
        check_inputs=False skips the checks of x and labels (shape, dtype, NaN, range: a device sync), for
        timing loops over data checked once."""
        if check_inputs:
            self._check_images("x", x)
            self._check_labels(labels, x.shape[0])
        return self._reconstruct(x, labels)

    # Unchecked internals: the public methods above check their input, then call these; the training
    # step checks its batch once and calls them, so compiled code never holds a check.
    def _forward(self, x, eps, labels=None) -> VAEOutput:
        mu, logvar = self._encode(x, labels)
        z = reparameterize(mu, logvar, eps)
        return VAEOutput(mu, logvar, z, self._decode(z, labels))

    def _reconstruct(self, x, labels=None):
        return mean_image(self._decode(self._encode(x, labels)[0], labels), self.config.likelihood)

    def _encode(self, x, labels=None):
        with self._mixed_precision():
            h = with_labels(self.encoder(x), labels, self.config.num_classes)
            mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        return mu.to(self.dtype), logvar.to(self.dtype)

    def _decode(self, z, labels=None):
        with self._mixed_precision():
            logits = self.decoder(with_labels(z, labels, self.config.num_classes))
        return logits.to(self.dtype)

    def _mixed_precision(self):
        if self.compute_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.fc_mu.weight.device.type, dtype=getattr(torch, self.compute_dtype))

    def _check_batch(self, x, eps, target=None, labels=None):
        self._check_images("x", x)
        self._check_latents("eps", eps, batch_size=x.shape[0])
        self._check_labels(labels, x.shape[0])
        if target is not None:
            self._check_images("target", target)
            checks.check_same_shape("target", tuple(target.shape), "x", tuple(x.shape))

    def _check_labels(self, labels, batch_size):
        checks.check_labels_given(labels is not None, self.config.num_classes)
        if labels is None:
            return
        _check_tensor("labels", labels, self.fc_mu.weight.device)
        checks.check_label_batch("labels", tuple(labels.shape), _dtype_name(labels.dtype), batch_size)
        if not torch.compiler.is_compiling():
            low, high = torch.aminmax(labels)
            checks.check_label_values("labels", int(low), int(high), self.config.num_classes)

    def _check_images(self, name, x):
        _check_tensor(name, x, self.fc_mu.weight.device)
        checks.check_image_batch(name, tuple(x.shape), _dtype_name(x.dtype), self.config.image_shape, "NCHW",
                                 _dtype_name(self.dtype))
        check_values(name, x, bounds=(0.0, 1.0))

    def _check_latents(self, name, z, batch_size=None):
        _check_tensor(name, z, self.fc_mu.weight.device)
        checks.check_latent_batch(name, tuple(z.shape), _dtype_name(z.dtype), self.config.latent_dim,
                                  _dtype_name(self.dtype), batch_size)
        check_values(name, z, bounds=None)


def as_input(array, model: VAE):
    """A canonical numpy batch (images NCHW, or latents) -> a tensor this model takes: its dtype, device
    and memory format."""
    tensor = torch.as_tensor(np.asarray(array), dtype=model.dtype, device=model.fc_mu.weight.device)
    return tensor.contiguous(memory_format=MEMORY_FORMATS[model.memory_format]) if tensor.ndim == 4 else tensor


def as_labels(array, model: VAE):
    """Canonical class indices (numpy, shape (N,)) -> the int64 tensor this model takes, on its device."""
    return torch.as_tensor(np.asarray(array), dtype=torch.int64, device=model.fc_mu.weight.device)


def to_numpy(array) -> np.ndarray:
    """This twin's output -> canonical numpy (images NCHW: already torch's layout)."""
    return array.detach().cpu().numpy()


def float_dtype(dtype) -> torch.dtype:
    """torch.float32, 'float32' or np.float32 -> torch.float32; anything but a float dtype is an error."""
    if not isinstance(dtype, torch.dtype):
        name = getattr(dtype, "__name__", None) or str(getattr(dtype, "name", dtype))
        dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype such as torch.float32 or 'float64', got {dtype!r}")
    return dtype


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_tensor(name, x, device):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but the model is on {device}")


def check_values(name, x, bounds):
    """NaN/inf and range checks; skipped if torch.compile traces a public method, so compiled code never
    holds a check (and never syncs the device for one)."""
    if torch.compiler.is_compiling():
        return
    with torch.no_grad():
        low, high = torch.aminmax(x.detach())
        finite = bool(torch.isfinite(low) & torch.isfinite(high))
    checks.check_values(name, finite, float(low), float(high), bounds)

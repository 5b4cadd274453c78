"""The VAE in PyTorch (NCHW). Mirrors vae_jax/model.py layer for layer; canonical weight names are this
module's state_dict keys. How it computes each layer form, and which forms it uses on each device, is
forms.py; its input checks are checks.py."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vae_core import checks, layout, seeds
from vae_core.config import KERNEL, PADDING, RES_KERNEL, STRIDE, VAEConfig
from vae_core.forms import check_form, forms_of, resolve_forms
from vae_core.outputs import LowerLevel, VAEOutput
from vae_torch.checks import check_images, check_labels, check_latents, dtype_name, float_dtype
from vae_torch.forms import (
    compiler_options,
    conv_space_to_depth,
    conv_transpose_col2im,
    conv_transpose_subpixel,
    default_forms,
)
from vae_torch.likelihoods import mean_image

LAYOUT = "NCHW"  # images' axes in this twin (canonical arrays, checkpoints and vae_core: NCHW)

# The memory layout a conv model's 4-D weights and images take where it is built (the CPU): channels_last
# trained 1.31x / 1.20x faster than contiguous NCHW eagerly at batch 128 / 512 (benchmarks/results/cpu-epyc).
# The values are the same either way; only the strides differ (checkpoints hold C-order arrays).
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
DEFAULT_MEMORY_FORMAT = "channels_last"


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
        self.strided_conv = check_form("strided_conv", strided_conv, "native")
        channels = (config.image_shape[0], *config.conv_channels)
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, KERNEL, STRIDE, PADDING) for cin, cout in zip(channels[:-1], channels[1:]))
        self.blocks = nn.ModuleList(_res_blocks(cout, config.res_blocks) for cout in channels[1:])

    def forward(self, x):
        for conv, blocks in zip(self.convs, self.blocks):
            x = conv(x) if self.strided_conv == "native" else conv_space_to_depth(x, conv.weight, conv.bias)
            x = blocks(F.relu(x))
        return x.flatten(1)


class ConvDecoder(nn.Module):
    """fc (+ ReLU where decoder_fc_relu) -> reshape to the encoder's last feature map -> stride-2
    transposed convs (ReLU between), each preceded by `res_blocks` residual blocks. `transposed_conv` says
    how all but the last are computed: "native" or "subpixel", `output_transposed_conv` the last, into the
    image's channels: "native" or "col2im" (each the same function of the same weights)."""

    def __init__(self, config: VAEConfig, transposed_conv: str, output_transposed_conv: str):
        super().__init__()
        self.transposed_conv = check_form("transposed_conv", transposed_conv, "native")
        self.output_transposed_conv = check_form("output_transposed_conv", output_transposed_conv, "native")
        self.bottleneck_shape = config.bottleneck_shape
        self.fc_relu = config.decoder_fc_relu
        channels = (config.image_shape[0], *config.conv_channels)[::-1]
        self.fc = nn.Linear(config.noise_dim + config.num_classes, config.bottleneck_size)  # z, then a label
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
        self.fc = nn.Linear(config.noise_dim + config.num_classes, widths[0])  # z (z1, z2), then a label
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, z):
        h = F.relu(self.fc(z))
        for i, linear in enumerate(self.linears):
            h = linear(h)
            if i < len(self.linears) - 1:
                h = F.relu(h)
        return h.view(-1, *self.output_shape)  # logits


class LowerPrior(nn.Module):
    """p(z1 | z2) of a two-level model: a Gaussian whose mean and log-variance come from z2 through one
    hidden layer of `prior_width` units (ReLU)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.hidden = nn.Linear(config.latent_dim, config.prior_width)
        self.mu = nn.Linear(config.prior_width, config.latent_dim)
        self.logvar = nn.Linear(config.prior_width, config.latent_dim)

    def forward(self, z2):
        h = F.relu(self.hidden(z2))
        return self.mu(h), self.logvar(h)


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
    """Encoder -> fc_mu / fc_logvar -> reparameterize -> decoder. Input: NCHW images in [0, 1]. A two-level
    model (config.hierarchy 2) draws z2 that way, then z1 from fc_mu_lower / fc_logvar_lower on the encoder's
    features and z2, and decodes both; prior_lower is p(z1 | z2).
    dtype: the parameters'. strided_conv ("native" or "space_to_depth"), transposed_conv ("native" or
    "subpixel") and output_transposed_conv ("native" or "col2im"): how the conv architecture computes its
    encoder's and decoder's resampling convs (vae_core/forms.py; None: default_forms("cpu")).
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
        layout.check_fits_in_memory(config, dtype_name(dtype), dtype.itemsize)  # before any allocation
        self.config = config
        forms = resolve_forms(default_forms(), strided_conv=strided_conv, transposed_conv=transposed_conv,
                              output_transposed_conv=output_transposed_conv)
        conv = config.arch == "conv"
        self.encoder = ConvEncoder(config, forms["strided_conv"]) if conv else MLPEncoder(config)
        features = config.bottleneck_size + config.num_classes  # a conditional model's one-hot label last
        self.fc_mu = nn.Linear(features, config.latent_dim)
        self.fc_logvar = nn.Linear(features, config.latent_dim)
        if config.hierarchy == 2:  # q(z1 | x, z2): the features, z2, then a label; and p(z1 | z2)
            self.fc_mu_lower = nn.Linear(features + config.latent_dim, config.latent_dim)
            self.fc_logvar_lower = nn.Linear(features + config.latent_dim, config.latent_dim)
            self.prior_lower = LowerPrior(config)
        self.decoder = ConvDecoder(config, forms["transposed_conv"], forms["output_transposed_conv"]) if conv \
            else MLPDecoder(config)
        if config.prior == "vamp":  # the VampPrior's learned images (vae_core.layout.PSEUDO_INPUTS)
            self.pseudo_inputs = nn.Parameter(torch.empty(config.pseudo_inputs, *config.image_shape))
        self.to(dtype, memory_format=MEMORY_FORMATS[DEFAULT_MEMORY_FORMAT if conv else "contiguous"])
        self.compute_dtype = checks.check_compute_dtype(
            None if compute_dtype is None else dtype_name(float_dtype(compute_dtype)), dtype_name(self.dtype))

    @property
    def dtype(self) -> torch.dtype:
        return self.fc_mu.weight.dtype

    @property
    def forms(self) -> dict[str, str]:
        """How this model computes each layer kind of vae_core.forms.FORMS (an MLP has only native ones)."""
        return forms_of(self)

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
    # integer tensor of shape (N,); required exactly then. check_inputs=False skips the checks of the
    # inputs (type, device, shape, dtype, NaN, range: a device sync) and computes the same: for the training
    # step, which checks its batch once (compiled code never holds a check), and for loops over data
    # checked once.
    def encode(self, x, *, labels=None, check_inputs: bool = True):
        """Images (N, C, H, W) -> (mu, logvar), each (N, latent_dim)."""
        if check_inputs:
            check_images(self, "x", x)
            check_labels(self, labels, x.shape[0])
        with self._mixed_precision():
            return self._posterior(self.encoder(x), labels)

    def decode(self, z, *, labels=None, check_inputs: bool = True):
        """Latents (N, latent_dim) -> logits (N, C, H, W). A two-level model's z is the top latent z2, and
        z1 is p(z1 | z2)'s mean."""
        if check_inputs:
            check_latents(self, "z", z)
            check_labels(self, labels, z.shape[0])
        return self._decoded(z, None, labels)

    def forward(self, x, eps, *, labels=None, check_inputs: bool = True) -> VAEOutput:
        """x (N, C, H, W), eps (N, noise) or (K, N, noise): K samples of z per image (the IWAE bound's),
        each decoded; then z is (K, N, latent) and the logits (K * N, C, H, W), sample-major (row k * N + n
        decodes z[k, n]). noise is config.noise_dim: a two-level model's eps[..., :latent] draws z2 and
        eps[..., latent:] z1 (VAEOutput.lower)."""
        if check_inputs:
            self.check_batch(x, eps, labels=labels)
        latent = self.config.latent_dim
        with self._mixed_precision():
            features = self.encoder(x)
            mu, logvar = self._posterior(features, labels)
            z = reparameterize(mu, logvar, eps[..., :latent])
            samples = z.shape[0] if z.ndim == 3 else 1
            if samples > 1:  # one decoder batch of K * N, sample-major: each image's label K times
                labels = None if labels is None else labels.repeat(samples)
            top = z.flatten(0, -2)
            lower = None
            if self.config.hierarchy == 2:  # q(z1 | x, z2) of each z2 (each image's features K times)
                mu1, logvar1 = self._lower_posterior(features.repeat(samples, 1), top, labels)
                lower = LowerLevel(mu1, logvar1, reparameterize(mu1, logvar1, eps[..., latent:].flatten(0, -2)),
                                   *self._lower_prior(top))
            logits = self._decoded(top, None if lower is None else lower.z, labels)
        if lower is not None:  # shaped as z
            lower = LowerLevel(*(t.reshape(z.shape) for t in lower))
        return VAEOutput(mu, logvar, z, logits, self.prior_components(), lower)

    def prior_components(self):
        """The VampPrior's components: the encoder's (mu, logvar) at the pseudo-inputs, clipped to the
        images' range (vae_core.layout.PSEUDO_INPUT_BOUNDS), (P, latent) each; None for N(0, I)."""
        if self.config.prior != "vamp":
            return None
        return self.encode(F.hardtanh(self.pseudo_inputs, *layout.PSEUDO_INPUT_BOUNDS), check_inputs=False)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, *, labels=None):
        """n images from the model (p(z), then a two-level model's z1 ~ p(z1 | z2)), as the likelihood's
        mean images in [0, 1] (likelihoods.mean_image); the noise comes from vae_core's 'sample' stream, so
        both twins given the same seed and weights return the same images."""
        n = checks.check_count("n", n)
        check_labels(self, labels, n)
        z, lower_eps = self._prior_draw(n, seed)
        lower = None if lower_eps is None else reparameterize(*self._lower_prior(z), lower_eps)
        return mean_image(self._decoded(z, lower, labels), self.config.likelihood)

    @torch.no_grad()
    def prior_sample(self, n: int, seed: int = 0):
        """n latents z ~ p(z), (n, latent) (a two-level model's top latent z2): N(0, I), or the VampPrior's
        component of each (uniform) and z from it, both drawn by vae_core.seeds.prior_draw, so both twins
        draw the same latents."""
        return self._prior_draw(n, seed)[0]

    @torch.no_grad()
    def reconstruct(self, x, *, labels=None, check_inputs: bool = True):
        """Decode the posterior mean (a two-level model's: z2's, then z1's given it): the likelihood's mean
        image in [0, 1], the shape of x."""
        if check_inputs:
            check_images(self, "x", x)
            check_labels(self, labels, x.shape[0])
        with self._mixed_precision():
            features = self.encoder(x)
            mu = self._posterior(features, labels)[0]
            lower = self._lower_posterior(features, mu, labels)[0] if self.config.hierarchy == 2 else None
        return mean_image(self._decoded(mu, lower, labels), self.config.likelihood)

    def check_batch(self, x, eps, target=None, labels=None):
        """A training batch's checks (images x, noise eps, the reconstruction's target, labels), as the
        training step runs them once before it computes; returns them."""
        check_images(self, "x", x)
        check_latents(self, "eps", eps, batch_size=x.shape[0], samples=True)
        check_labels(self, labels, x.shape[0])
        if target is not None:
            check_images(self, "target", target)
            checks.check_same_shape("target", tuple(target.shape), "x", tuple(x.shape))
        return x, eps, target, labels

    def _posterior(self, features, labels):
        """q(z | x)'s (mu, logvar) (z2's for two levels) from the encoder's features, in the model's dtype."""
        h = with_labels(features, labels, self.config.num_classes)
        return self.fc_mu(h).to(self.dtype), self.fc_logvar(h).to(self.dtype)

    def _lower_posterior(self, features, z2, labels):
        """A two-level model's q(z1 | x, z2): (mu, logvar) from the features and z2 (a label last)."""
        h = with_labels(torch.cat([features, z2], dim=1), labels, self.config.num_classes)
        return self.fc_mu_lower(h).to(self.dtype), self.fc_logvar_lower(h).to(self.dtype)

    def _lower_prior(self, z2):
        """A two-level model's p(z1 | z2): (mu, logvar), in the model's dtype."""
        with self._mixed_precision():
            return tuple(t.to(self.dtype) for t in self.prior_lower(z2))

    def _decoded(self, z, lower, labels):
        """The logits of latents z; a two-level model's z is z2, decoded with z1 = `lower`, or p(z1 | z2)'s
        mean where lower is None."""
        with self._mixed_precision():
            if self.config.hierarchy == 2:
                z = torch.cat([self._lower_prior(z)[0] if lower is None else lower, z], dim=1)
            logits = self.decoder(with_labels(z, labels, self.config.num_classes))
        return logits.to(self.dtype)

    def _prior_draw(self, n: int, seed: int):
        """(z ~ p(z), (n, latent); a two-level model's noise for z1, (n, latent), else None), from
        vae_core.seeds.prior_draw's eps of noise_dim columns."""
        latent = self.config.latent_dim
        components = self.config.pseudo_inputs if self.config.prior == "vamp" else 0
        eps, drawn = seeds.prior_draw(seed, n, self.config.noise_dim, components)
        eps = torch.as_tensor(eps, dtype=self.dtype, device=self.fc_mu.weight.device)
        z, lower = eps[:, :latent], eps[:, latent:] if self.config.hierarchy == 2 else None
        if drawn is not None:
            mu, logvar = self.prior_components()
            index = torch.as_tensor(drawn, device=eps.device)
            z = reparameterize(mu[index], logvar[index], z)
        return z, lower

    def _mixed_precision(self):
        if self.compute_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.fc_mu.weight.device.type, dtype=getattr(torch, self.compute_dtype))


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

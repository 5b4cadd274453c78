"""The VAE in JAX / Flax NNX (NHWC). Mirrors vae_torch/model.py layer for layer; the layout rules that map
these parameters onto the canonical (torch) names are in vae_core/layout.py. How it computes each layer form,
and which forms and XLA options it uses on each platform, is forms.py; its input checks are checks.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vae_core import checks, layout, seeds
from vae_core.config import KERNEL, PADDING, RES_KERNEL, STRIDE, VAEConfig
from vae_core.forms import check_form, forms_of, resolve_forms
from vae_core.outputs import LowerLevel, VAEOutput
from vae_jax.checks import ENABLE_X64, X64_CLI, check_images, check_labels, check_latents, dtype_name, float_dtype
from vae_jax.forms import (
    compiler_options,
    conv_space_to_depth,
    conv_transpose_col2im,
    conv_transpose_subpixel,
    default_forms,
    jit_for,
)
from vae_jax.likelihoods import mean_image

LAYOUT = "NHWC"  # images' axes in this twin (canonical arrays, checkpoints and vae_core: NCHW)

# torch ConvTranspose2d(k, s, p) == lax conv_transpose with padding k-1-p on each side (no output_padding).
_DECONV_PADDING = ((KERNEL - 1 - PADDING, KERNEL - 1 - PADDING),) * 2


def _torch_uniform(fan_in: int):
    """torch's default init for weights and biases: uniform in ±1/sqrt(fan_in)."""
    bound = 1.0 / np.sqrt(fan_in)
    return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound)


# Every layer takes Flax's pair: `dtype` to compute in, `param_dtype` to store its parameters in. In mixed
# precision the layers also return their float32 accumulation (preferred_element_type), so the bias is
# added before rounding, as torch's fused matmul/conv epilogue does under autocast: rounded first, a
# pre-activation near 0 can lose its sign, and the ReLU's gradient then switches for that unit (the bf16
# tolerances of twinvae/parity/tolerances.py, docs/parity.md).
def _precision(dtype, param_dtype) -> dict:
    return {"dtype": dtype, "param_dtype": param_dtype,
            "preferred_element_type": None if dtype == param_dtype else param_dtype}


def _linear(fin, fout, dtype, param_dtype, rngs):
    init = _torch_uniform(fin)
    return nnx.Linear(fin, fout, **_precision(dtype, param_dtype), kernel_init=init, bias_init=init, rngs=rngs)


def _conv(cin, cout, kernel, stride, padding, dtype, param_dtype, rngs):
    init = _torch_uniform(cin * kernel**2)
    return nnx.Conv(cin, cout, (kernel, kernel), (stride, stride), padding=((padding, padding),) * 2,
                    **_precision(dtype, param_dtype), kernel_init=init, bias_init=init, rngs=rngs)


class ResBlock(nnx.Module):
    """x + conv2(relu(conv1(relu(x)))), 3x3 convs that keep the size (pre-activation, He et al. 2016)."""

    def __init__(self, channels: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.conv1 = _conv(channels, channels, RES_KERNEL, 1, RES_KERNEL // 2, dtype, param_dtype, rngs)
        self.conv2 = _conv(channels, channels, RES_KERNEL, 1, RES_KERNEL // 2, dtype, param_dtype, rngs)

    def __call__(self, x):
        return x + self.conv2(nnx.relu(self.conv1(nnx.relu(x))))


def _res_blocks(channels: int, count: int, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.List:
    # a List run in a loop rather than nnx.Sequential (which nests its layers under `.layers`), so the
    # parameter paths are the canonical names: encoder.blocks.0.1.conv1
    return nnx.List([ResBlock(channels, dtype=dtype, param_dtype=param_dtype, rngs=rngs) for _ in range(count)])


def _run_blocks(blocks: nnx.List, x):
    for block in blocks:
        x = block(x)
    return x


class ConvEncoder(nnx.Module):
    """Stride-2 convs with ReLU, each followed by `res_blocks` residual blocks, then flatten (H, W, C);
    fc_mu's kernel absorbs the order (see weights). `strided_conv` says how the stride-2 convs are
    computed: "native" (lax's convolution) or "space_to_depth" (the same function of the same weights)."""

    def __init__(self, config: VAEConfig, *, dtype, param_dtype, rngs: nnx.Rngs, strided_conv: str):
        self.strided_conv = check_form("strided_conv", strided_conv, "native")
        channels = (config.image_shape[0], *config.conv_channels)
        self.convs = nnx.List([_conv(cin, cout, KERNEL, STRIDE, PADDING, dtype, param_dtype, rngs)
                               for cin, cout in zip(channels[:-1], channels[1:])])
        self.blocks = nnx.List([_res_blocks(cout, config.res_blocks, dtype, param_dtype, rngs)
                                for cout in channels[1:]])

    def __call__(self, x):
        for conv, blocks in zip(self.convs, self.blocks):  # the Conv holds the parameters
            x = conv(x) if self.strided_conv == "native" else \
                conv_space_to_depth(x.astype(conv.dtype), conv.kernel[...], conv.bias[...])
            x = _run_blocks(blocks, nnx.relu(x))
        return x.reshape(x.shape[0], -1)


class ConvDecoder(nnx.Module):
    """fc (+ ReLU where decoder_fc_relu) -> reshape to the encoder's last feature map -> stride-2
    transposed convs (ReLU between), each preceded by `res_blocks` residual blocks. `transposed_conv` says
    how all but the last are computed: "native" or "subpixel", `output_transposed_conv` the last, into the
    image's channels: "native" or "col2im" (each the same function of the same weights)."""

    def __init__(self, config: VAEConfig, *, dtype, param_dtype, rngs: nnx.Rngs, transposed_conv: str,
                 output_transposed_conv: str):
        self.transposed_conv = check_form("transposed_conv", transposed_conv, "native")
        self.output_transposed_conv = check_form("output_transposed_conv", output_transposed_conv, "native")
        c, h, w = config.bottleneck_shape
        self.bottleneck_shape = (h, w, c)
        self.fc_relu = config.decoder_fc_relu
        channels = (config.image_shape[0], *config.conv_channels)[::-1]
        self.fc = _linear(config.noise_dim + config.num_classes, config.bottleneck_size, dtype, param_dtype,
                          rngs)  # z (z1, z2), then a label
        self.blocks = nnx.List([_res_blocks(cin, config.res_blocks, dtype, param_dtype, rngs)
                                for cin in channels[:-1]])
        outputs = (*channels[1:-1], config.output_shape[0])  # the last: the logits' channels
        self.deconvs = nnx.List([
            nnx.ConvTranspose(cin, cout, (KERNEL, KERNEL), (STRIDE, STRIDE), padding=_DECONV_PADDING,
                              transpose_kernel=True, **_precision(dtype, param_dtype),
                              kernel_init=_torch_uniform(cout * KERNEL**2),
                              bias_init=_torch_uniform(cout * KERNEL**2), rngs=rngs)
            for cin, cout in zip(channels[:-1], outputs)])

    def __call__(self, z):
        h = self.fc(z)
        h = (nnx.relu(h) if self.fc_relu else h).reshape(-1, *self.bottleneck_shape)
        *hidden, (blocks, deconv) = zip(self.blocks, self.deconvs)
        for hidden_blocks, hidden_deconv in hidden:
            h = nnx.relu(self._transposed_conv(_run_blocks(hidden_blocks, h), hidden_deconv))
        return self._output_transposed_conv(_run_blocks(blocks, h), deconv)  # logits

    def _transposed_conv(self, h, deconv):
        if self.transposed_conv == "native":
            return deconv(h)
        return conv_transpose_subpixel(h.astype(deconv.dtype), deconv.kernel[...], deconv.bias[...])

    def _output_transposed_conv(self, h, deconv):
        if self.output_transposed_conv == "native":
            return deconv(h)
        return conv_transpose_col2im(h.astype(deconv.dtype), deconv.kernel[...], deconv.bias[...])


class MLPEncoder(nnx.Module):
    """Flatten (H, W, C), then Linear + ReLU for each width (pytorch/examples: 784-400)."""

    def __init__(self, config: VAEConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        widths = (config.num_pixels, *config.mlp_widths)
        self.linears = nnx.List([_linear(a, b, dtype, param_dtype, rngs) for a, b in zip(widths[:-1], widths[1:])])

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for linear in self.linears:
            x = nnx.relu(linear(x))
        return x


class MLPDecoder(nnx.Module):
    """fc + ReLU, then the encoder's widths in reverse (ReLU between), reshaped to the image."""

    def __init__(self, config: VAEConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        c, h, w = config.output_shape
        self.output_shape = (h, w, c)
        widths = (config.output_size, *config.mlp_widths)[::-1]
        self.fc = _linear(config.noise_dim + config.num_classes, widths[0], dtype, param_dtype, rngs)  # z, label
        self.linears = nnx.List([_linear(a, b, dtype, param_dtype, rngs) for a, b in zip(widths[:-1], widths[1:])])

    def __call__(self, z):
        h = nnx.relu(self.fc(z))
        for i, linear in enumerate(self.linears):
            h = linear(h)
            if i < len(self.linears) - 1:
                h = nnx.relu(h)
        return h.reshape(-1, *self.output_shape)  # logits


class LowerPrior(nnx.Module):
    """p(z1 | z2) of a two-level model: a Gaussian whose mean and log-variance come from z2 through one
    hidden layer of `prior_width` units (ReLU)."""

    def __init__(self, config: VAEConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.hidden = _linear(config.latent_dim, config.prior_width, dtype, param_dtype, rngs)
        self.mu = _linear(config.prior_width, config.latent_dim, dtype, param_dtype, rngs)
        self.logvar = _linear(config.prior_width, config.latent_dim, dtype, param_dtype, rngs)

    def __call__(self, z2):
        h = nnx.relu(self.hidden(z2))
        return self.mu(h), self.logvar(h)


def with_labels(h, labels, num_classes: int):
    """h (N, F) with a conditional model's one-hot labels as its last num_classes columns; h itself for an
    unconditional model (labels None)."""
    if labels is None:
        return h
    return jnp.concatenate([h, jax.nn.one_hot(labels, num_classes, dtype=h.dtype)], axis=1)


def reparameterize(mu, logvar, eps):
    """z = mu + sigma * eps with sigma = exp(logvar / 2); eps is explicit so both twins draw the same."""
    return mu + jnp.exp(0.5 * logvar) * eps


class VAE(nnx.Module):
    """Encoder -> fc_mu / fc_logvar -> reparameterize -> decoder. Input: NHWC images in [0, 1]. A two-level
    model (config.hierarchy 2) draws z2 that way, then z1 from fc_mu_lower / fc_logvar_lower on the encoder's
    features and z2, and decodes both; prior_lower is p(z1 | z2).
    dtype: the parameters'. strided_conv ("native" or "space_to_depth"), transposed_conv ("native" or
    "subpixel") and output_transposed_conv ("native" or "col2im"): how the conv architecture computes its
    encoder's and decoder's resampling convs (vae_core/forms.py; None: default_forms() of the platform it
    is built on). compute_dtype: None, or
    "bfloat16" for mixed precision: every layer computes in bf16 (Flax's dtype) with float32 parameters
    (param_dtype), and mu, logvar and the logits come back in float32, so reparameterize, the losses and
    Adam stay float32."""

    def __init__(self, config: VAEConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, strided_conv: str | None = None,
                 transposed_conv: str | None = None, output_transposed_conv: str | None = None,
                 compute_dtype=None):
        if not isinstance(config, VAEConfig):
            raise TypeError(f"config must be a VAEConfig, got {type(config).__name__}")
        dtype = float_dtype(dtype)
        if dtype == jnp.float64 and not jax.config.jax_enable_x64:
            raise ValueError(f"a float64 model needs 64-bit JAX: enable it ({ENABLE_X64}) or build it with "
                             f"dtype=jnp.float32; {X64_CLI}")
        if jax.default_backend() == "cpu":  # before any allocation; on an accelerator its memory decides
            layout.check_fits_in_memory(config, dtype_name(dtype), dtype.itemsize)
        self.config = config
        self.compute_dtype = checks.check_compute_dtype(
            None if compute_dtype is None else dtype_name(float_dtype(compute_dtype)), dtype_name(dtype))
        compute = dtype if self.compute_dtype is None else jnp.dtype(self.compute_dtype)
        layers = {"dtype": compute, "param_dtype": dtype, "rngs": rngs}
        forms = resolve_forms(default_forms(), strided_conv=strided_conv, transposed_conv=transposed_conv,
                              output_transposed_conv=output_transposed_conv)
        conv = config.arch == "conv"
        self.encoder = ConvEncoder(config, strided_conv=forms["strided_conv"], **layers) if conv \
            else MLPEncoder(config, **layers)
        features = config.bottleneck_size + config.num_classes  # a conditional model's one-hot label last
        self.fc_mu = _linear(features, config.latent_dim, compute, dtype, rngs)
        self.fc_logvar = _linear(features, config.latent_dim, compute, dtype, rngs)
        if config.hierarchy == 2:  # q(z1 | x, z2): the features, z2, then a label; and p(z1 | z2)
            self.fc_mu_lower = _linear(features + config.latent_dim, config.latent_dim, compute, dtype, rngs)
            self.fc_logvar_lower = _linear(features + config.latent_dim, config.latent_dim, compute, dtype, rngs)
            self.prior_lower = LowerPrior(config, **layers)
        self.decoder = ConvDecoder(config, transposed_conv=forms["transposed_conv"],
                                   output_transposed_conv=forms["output_transposed_conv"], **layers) if conv \
            else MLPDecoder(config, **layers)
        if config.prior == "vamp":  # the VampPrior's learned images, NHWC (vae_core.layout.PSEUDO_INPUTS)
            c, h, w = config.image_shape
            self.pseudo_inputs = nnx.Param(jnp.zeros((config.pseudo_inputs, h, w, c), dtype))

    @property
    def dtype(self):
        return self.fc_mu.kernel.dtype

    @property
    def forms(self) -> dict[str, str]:
        """How this model computes each layer kind of vae_core.forms.FORMS (an MLP has only native ones)."""
        return forms_of(self)

    @property
    def memory_format(self) -> str:
        """Always "channels_last": the twin's images are NHWC (the torch twin's property of the same name)."""
        return "channels_last"

    @property
    def compiler_options(self) -> dict[str, str]:
        """The XLA options this twin's compiled functions (compile_train_step, evaluate,
        importance_log_weights) use for this model: compiler_options() of the platform its parameters are
        on (of the default platform while they are abstract or traced)."""
        kernel = self.fc_mu.kernel[...]
        concrete = isinstance(kernel, jax.Array) and not isinstance(kernel, jax.core.Tracer)
        return compiler_options(next(iter(kernel.devices())).platform if concrete else None)

    # `labels`: a class-conditional model's (num_classes > 0) class index of each image or latent, an
    # integer array of shape (N,); required exactly then. check_inputs=False skips the checks of the inputs
    # (type, shape, dtype, NaN, range: a device sync) and computes the same: for the training step, which
    # checks its batch once (under jit the checks see only shapes), and for loops over data checked once.
    def encode(self, x, *, labels=None, check_inputs: bool = True):
        """Images (N, H, W, C) -> (mu, logvar), each (N, latent_dim)."""
        if check_inputs:
            x = check_images(self, "x", x)
            labels = check_labels(self, labels, x.shape[0])
        return _compiled(self, _encoded, x, labels)

    def decode(self, z, *, labels=None, check_inputs: bool = True):
        """Latents (N, latent_dim) -> logits (N, H, W, C). A two-level model's z is the top latent z2, and
        z1 is p(z1 | z2)'s mean."""
        if check_inputs:
            z = check_latents(self, "z", z)
            labels = check_labels(self, labels, z.shape[0])
        return _compiled(self, _decoded, z, labels)

    def __call__(self, x, eps, *, labels=None, check_inputs: bool = True) -> VAEOutput:
        """x (N, H, W, C), eps (N, noise) or (K, N, noise): K samples of z per image (the IWAE bound's),
        each decoded; then z is (K, N, latent) and the logits (K * N, H, W, C), sample-major (row k * N + n
        decodes z[k, n]). noise is config.noise_dim: a two-level model's eps[..., :latent] draws z2 and
        eps[..., latent:] z1 (VAEOutput.lower)."""
        if check_inputs:
            x, eps, _, labels = self.check_batch(x, eps, labels=labels)
        return _compiled(self, _forwarded, x, eps, labels)

    def prior_components(self):
        """The VampPrior's components: the encoder's (mu, logvar) at the pseudo-inputs, clipped to the
        images' range (vae_core.layout.PSEUDO_INPUT_BOUNDS), (P, latent) each; None for N(0, I)."""
        return _compiled(self, _prior_components)

    def sample(self, n: int, seed: int = 0, *, labels=None):
        """n images from the model (p(z), then a two-level model's z1 ~ p(z1 | z2)), as the likelihood's
        mean images in [0, 1] (likelihoods.mean_image); the noise comes from vae_core's 'sample' stream, so
        both twins given the same seed and weights return the same images."""
        n = checks.check_count("n", n)
        labels = check_labels(self, labels, n)
        return _compiled(self, _sampled, *self._prior_noise(n, seed), labels)

    def prior_sample(self, n: int, seed: int = 0):
        """n latents z ~ p(z), (n, latent) (a two-level model's top latent z2): N(0, I), or the VampPrior's
        component of each (uniform) and z from it, both drawn by vae_core.seeds.prior_draw, so both twins
        draw the same latents."""
        return _compiled(self, _prior_latents, *self._prior_noise(n, seed))[0]

    def _prior_noise(self, n: int, seed: int):
        """vae_core.seeds.prior_draw's eps, (n, noise_dim), and the VampPrior's components (None: N(0, I))."""
        components = self.config.pseudo_inputs if self.config.prior == "vamp" else 0
        eps, drawn = seeds.prior_draw(seed, n, self.config.noise_dim, components)
        return jnp.asarray(eps, self.dtype), None if drawn is None else jnp.asarray(drawn)

    def reconstruct(self, x, *, labels=None, check_inputs: bool = True):
        """Decode the posterior mean (a two-level model's: z2's, then z1's given it): the likelihood's mean
        image in [0, 1], the shape of x."""
        if check_inputs:
            x = check_images(self, "x", x)
            labels = check_labels(self, labels, x.shape[0])
        return _compiled(self, _reconstructed, x, labels)

    def check_batch(self, x, eps, target=None, labels=None):
        """A training batch's checks (images x, noise eps, the reconstruction's target, labels), as the
        training step runs them once before it computes; returns them as jax arrays."""
        x = check_images(self, "x", x)
        eps = check_latents(self, "eps", eps, batch_size=x.shape[0], samples=True)
        labels = check_labels(self, labels, x.shape[0])
        if target is not None:
            target = check_images(self, "target", target)
            checks.check_same_shape("target", target.shape, "x", x.shape)
        return x, eps, target, labels


# The public methods compute under jax.jit, after their eager checks: one compiled program per shape
# instead of an op-by-op dispatch (the end-of-run pictures took 9 s eagerly, most of it compiling each op).
def _compiled(model: VAE, computation, *args):
    """computation(model, *args) under jax.jit with the model's compiler options; inside the caller's trace
    (its jax.jit or jax.grad), traced into it (a nested jit takes no compiler options)."""
    graphdef, state = nnx.split(model)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((state, args))):
        return computation(model, *args)
    return jit_for(_merged, model, static_argnums=(0, 2))(graphdef, state, computation, *args)


def _merged(graphdef, state, computation, *args):
    return computation(nnx.merge(graphdef, state), *args)


# What each public method computes, unchecked.
def _posterior(model: VAE, features, labels):
    """q(z | x)'s (mu, logvar) (z2's for two levels) from the encoder's features, in the model's dtype."""
    h = with_labels(features, labels, model.config.num_classes)
    return model.fc_mu(h).astype(model.dtype), model.fc_logvar(h).astype(model.dtype)


def _lower_posterior(model: VAE, features, z2, labels):
    """A two-level model's q(z1 | x, z2): (mu, logvar) from the features and z2 (a label last)."""
    h = with_labels(jnp.concatenate([features, z2], axis=1), labels, model.config.num_classes)
    return model.fc_mu_lower(h).astype(model.dtype), model.fc_logvar_lower(h).astype(model.dtype)


def _lower_prior(model: VAE, z2):
    """A two-level model's p(z1 | z2): (mu, logvar), in the model's dtype."""
    return tuple(t.astype(model.dtype) for t in model.prior_lower(z2))


def _encoded(model: VAE, x, labels):
    return _posterior(model, model.encoder(x), labels)


def _decoded(model: VAE, z, labels, lower=None):
    # a two-level model's z is z2, decoded with z1 = `lower`, or p(z1 | z2)'s mean where lower is None
    if model.config.hierarchy == 2:
        z = jnp.concatenate([_lower_prior(model, z)[0] if lower is None else lower, z], axis=1)
    return model.decoder(with_labels(z, labels, model.config.num_classes)).astype(model.dtype)


def _forwarded(model: VAE, x, eps, labels) -> VAEOutput:
    latent = model.config.latent_dim
    features = model.encoder(x)
    mu, logvar = _posterior(model, features, labels)
    z = reparameterize(mu, logvar, eps[..., :latent])
    samples = z.shape[0] if z.ndim == 3 else 1
    if samples > 1:  # one decoder batch of K * N, sample-major: each image's label K times
        labels = None if labels is None else jnp.tile(labels, samples)
    top = z.reshape(-1, latent)
    lower = None
    if model.config.hierarchy == 2:  # q(z1 | x, z2) of each z2 (each image's features K times)
        mu1, logvar1 = _lower_posterior(model, jnp.tile(features, (samples, 1)), top, labels)
        lower = LowerLevel(mu1, logvar1, reparameterize(mu1, logvar1, eps[..., latent:].reshape(-1, latent)),
                           *_lower_prior(model, top))
    logits = _decoded(model, top, labels, None if lower is None else lower.z)
    if lower is not None:  # shaped as z
        lower = LowerLevel(*(t.reshape(z.shape) for t in lower))
    return VAEOutput(mu, logvar, z, logits, _prior_components(model), lower)


def _prior_components(model: VAE):
    if model.config.prior != "vamp":
        return None
    lo, hi = layout.PSEUDO_INPUT_BOUNDS
    u = model.pseudo_inputs[...]
    # torch's F.hardtanh: the bound itself, of gradient 0, at and beyond it (jnp.clip's gradient at a bound
    # is 1/2, from jnp.maximum's tie)
    return _encoded(model, jnp.where(u <= lo, lo, jnp.where(u >= hi, hi, u)), None)


def _prior_latents(model: VAE, eps, components):
    """(z ~ p(z), a two-level model's noise for z1 or None) from prior_draw's eps and components."""
    latent = model.config.latent_dim
    z = eps[:, :latent]
    if components is not None:
        mu, logvar = _prior_components(model)
        z = reparameterize(mu[components], logvar[components], z)
    return z, eps[:, latent:] if model.config.hierarchy == 2 else None


def _sampled(model: VAE, eps, components, labels):
    z, lower_eps = _prior_latents(model, eps, components)
    lower = None if lower_eps is None else reparameterize(*_lower_prior(model, z), lower_eps)
    return mean_image(_decoded(model, z, labels, lower), model.config.likelihood)


def _reconstructed(model: VAE, x, labels):
    features = model.encoder(x)
    mu = _posterior(model, features, labels)[0]
    lower = _lower_posterior(model, features, mu, labels)[0] if model.config.hierarchy == 2 else None
    return mean_image(_decoded(model, mu, labels, lower), model.config.likelihood)


def as_input(array, model: VAE):
    """A canonical numpy batch (images NCHW, or latents) -> an array this model takes: NHWC, its dtype."""
    array = np.asarray(array)
    return jnp.asarray(array.transpose(0, 2, 3, 1) if array.ndim == 4 else array, model.dtype)


def as_labels(array, model: VAE):
    """Canonical class indices (numpy, shape (N,)) -> the int32 array this model takes."""
    return jnp.asarray(np.asarray(array), jnp.int32)


def to_numpy(array) -> np.ndarray:
    """This twin's output -> canonical numpy (images NHWC -> NCHW)."""
    array = np.asarray(array)
    return array.transpose(0, 3, 1, 2) if array.ndim == 4 else array

"""The VAE in JAX / Flax NNX (NHWC). Mirrors vae_torch/model.py layer for layer; the layout rules that map
these parameters onto the canonical (torch) names are in vae_core/layout.py."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vae_core import checks, layout, seeds
from vae_core.config import KERNEL, PADDING, RES_KERNEL, STRIDE, VAEConfig
from vae_core.layout import NATIVE_FORMS, SUBPIXEL_TAPS
from vae_core.outputs import VAEOutput
from vae_jax.likelihoods import mean_image

LAYOUT = "NHWC"  # images' axes in this twin (canonical arrays, checkpoints and vae_core: NCHW)

# How this twin computes each layer kind of vae_core.layout.FORMS on each JAX platform unless told: the
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

# How a float64 model or checkpoint gets the 64-bit JAX it needs, for the errors that ask for it.
ENABLE_X64 = ("JAX_ENABLE_X64=1 in the environment, or in code jax.config.update('jax_enable_x64', True) or "
              "`with jax.enable_x64(True):`")
X64_CLI = "with the twinvae command, --backend torch"


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
# tolerances of twinvae/parity/harness.py, docs/parity.md).
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
        self.strided_conv = checks.check_form("strided_conv", strided_conv, "native")
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


def conv_space_to_depth(x, kernel, bias):
    """nnx.Conv(k=4, s=2, p=1)(x) for NHWC x and its kernel (4, 4, C_in, C_out), as one contraction: x padded
    by 1 and folded space-to-depth by 2, so each output pixel reads a 2x2 window of folded pixels, and
    kernel tap (2r+p, 2s+q) multiplies window (r, s), folded channel (p, q, c). XLA's CPU convolution is
    slow here, above all in backward (weight gradients: docs/perf-log.md); its dot is not. An odd
    H or W gets one more row or column of padding, which the window never reads. Computes in x's dtype; a
    bf16 x with float32 parameters returns the float32 accumulation (see _precision)."""
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
    its sums that XLA runs fastest, col2im's (vae_core/layout.py; XLA's CPU convolutions are slow, its dots
    are not)."""
    return conv_transpose_col2im(x, kernel, bias)


def conv_transpose_col2im(x, kernel, bias):
    """Flax ConvTranspose(k=4, s=2, p=1, transpose_kernel=True)(x) for NHWC x and its kernel (4, 4, C_out,
    C_in), phase by phase: one matmul gives every input pixel times all 16 kernel taps, and output phase
    (a, b) sums, for each of its pixels, the four taps that reach it from the 2x2 neighbouring input pixels.
    Computes in x's dtype; a bf16 x with float32 parameters returns the float32 accumulation, as the layers
    do in mixed precision (see _precision)."""
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


class ConvDecoder(nnx.Module):
    """fc (+ ReLU where decoder_fc_relu) -> reshape to the encoder's last feature map -> stride-2
    transposed convs (ReLU between), each preceded by `res_blocks` residual blocks. `transposed_conv` says
    how all but the last are computed: "native" or "subpixel", `output_transposed_conv` the last, into the
    image's channels: "native" or "col2im" (each the same function of the same weights)."""

    def __init__(self, config: VAEConfig, *, dtype, param_dtype, rngs: nnx.Rngs, transposed_conv: str,
                 output_transposed_conv: str):
        self.transposed_conv = checks.check_form("transposed_conv", transposed_conv, "native")
        self.output_transposed_conv = checks.check_form("output_transposed_conv", output_transposed_conv,
                                                        "native")
        c, h, w = config.bottleneck_shape
        self.bottleneck_shape = (h, w, c)
        self.fc_relu = config.decoder_fc_relu
        channels = (config.image_shape[0], *config.conv_channels)[::-1]
        self.fc = _linear(config.latent_dim + config.num_classes, config.bottleneck_size, dtype, param_dtype,
                          rngs)  # z, then a label
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
        self.fc = _linear(config.latent_dim + config.num_classes, widths[0], dtype, param_dtype, rngs)  # z, label
        self.linears = nnx.List([_linear(a, b, dtype, param_dtype, rngs) for a, b in zip(widths[:-1], widths[1:])])

    def __call__(self, z):
        h = nnx.relu(self.fc(z))
        for i, linear in enumerate(self.linears):
            h = linear(h)
            if i < len(self.linears) - 1:
                h = nnx.relu(h)
        return h.reshape(-1, *self.output_shape)  # logits


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
    """Encoder -> fc_mu / fc_logvar -> reparameterize -> decoder. Input: NHWC images in [0, 1].
    dtype: the parameters'. strided_conv ("native" or "space_to_depth"), transposed_conv ("native" or
    "subpixel") and output_transposed_conv ("native" or "col2im"): how the conv architecture computes its
    encoder's and decoder's resampling convs (vae_core/layout.py; None: default_forms() of the platform it
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
            layout.check_fits_in_memory(config, str(dtype), dtype.itemsize)
        self.config = config
        self.compute_dtype = checks.check_compute_dtype(
            None if compute_dtype is None else str(float_dtype(compute_dtype)), str(dtype))
        compute = dtype if self.compute_dtype is None else jnp.dtype(self.compute_dtype)
        layers = {"dtype": compute, "param_dtype": dtype, "rngs": rngs}
        defaults = default_forms()
        forms = {kind: checks.check_form(kind, value, defaults[kind])  # checked for any arch
                 for kind, value in (("strided_conv", strided_conv), ("transposed_conv", transposed_conv),
                                     ("output_transposed_conv", output_transposed_conv))}
        conv = config.arch == "conv"
        self.encoder = ConvEncoder(config, strided_conv=forms["strided_conv"], **layers) if conv \
            else MLPEncoder(config, **layers)
        features = config.bottleneck_size + config.num_classes  # a conditional model's one-hot label last
        self.fc_mu = _linear(features, config.latent_dim, compute, dtype, rngs)
        self.fc_logvar = _linear(features, config.latent_dim, compute, dtype, rngs)
        self.decoder = ConvDecoder(config, transposed_conv=forms["transposed_conv"],
                                   output_transposed_conv=forms["output_transposed_conv"], **layers) if conv \
            else MLPDecoder(config, **layers)

    @property
    def dtype(self):
        return self.fc_mu.kernel.dtype

    @property
    def forms(self) -> dict[str, str]:
        """How this model computes each layer kind of vae_core.layout.FORMS (an MLP has only native ones)."""
        if self.config.arch != "conv":
            return dict(NATIVE_FORMS)
        return {"strided_conv": self.encoder.strided_conv, "transposed_conv": self.decoder.transposed_conv,
                "output_transposed_conv": self.decoder.output_transposed_conv}

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
    # integer array of shape (N,); required exactly then.
    def encode(self, x, *, labels=None):
        """Images (N, H, W, C) -> (mu, logvar), each (N, latent_dim)."""
        x = self._check_images("x", x)
        labels = self._check_labels(labels, x.shape[0])
        return _compiled_call(self, _encode_of, x, labels)

    def decode(self, z, *, labels=None):
        """Latents (N, latent_dim) -> logits (N, H, W, C)."""
        z = self._check_latents("z", z)
        labels = self._check_labels(labels, z.shape[0])
        return _compiled_call(self, _decode_of, z, labels)

    def __call__(self, x, eps, *, labels=None) -> VAEOutput:
        x, eps, _, labels = self._check_batch(x, eps, labels=labels)
        return _compiled_call(self, _forward_of, x, eps, labels)

    def sample(self, n: int, seed: int = 0, *, labels=None):
        """n images from the prior, as the likelihood's mean images in [0, 1] (likelihoods.mean_image); z
        comes from vae_core's 'sample' stream, so both twins given the same seed and weights return the
        same images."""
        n = checks.check_count("n", n)
        labels = self._check_labels(labels, n)
        z = seeds.standard_normal(seed, "sample", 0, (n, self.config.latent_dim))
        return _compiled_call(self, _sample_of, jnp.asarray(z, self.dtype), labels)

    def reconstruct(self, x, *, labels=None, check_inputs: bool = True):
        """Decode the posterior mean: the likelihood's mean image in [0, 1], the shape of x.
        check_inputs=False skips the checks of x and labels (shape, dtype, NaN, range: a device sync), for
        timing loops over data checked once; under jax.jit the value checks are skipped anyway."""
        if check_inputs:
            x = self._check_images("x", x)
            labels = self._check_labels(labels, x.shape[0])
        return _compiled_call(self, _reconstruct_of, x, labels)

    # Unchecked internals: the public methods above check their input, then call these; the training
    # step checks its batch once and calls them, so compiled code never holds a check.
    def _forward(self, x, eps, labels=None) -> VAEOutput:
        mu, logvar = self._encode(x, labels)
        z = reparameterize(mu, logvar, eps)
        return VAEOutput(mu, logvar, z, self._decode(z, labels))

    def _reconstruct(self, x, labels=None):
        return mean_image(self._decode(self._encode(x, labels)[0], labels), self.config.likelihood)

    def _encode(self, x, labels=None):
        h = with_labels(self.encoder(x), labels, self.config.num_classes)
        return self.fc_mu(h).astype(self.dtype), self.fc_logvar(h).astype(self.dtype)

    def _decode(self, z, labels=None):
        return self.decoder(with_labels(z, labels, self.config.num_classes)).astype(self.dtype)

    def _check_batch(self, x, eps, target=None, labels=None):
        x = self._check_images("x", x)
        eps = self._check_latents("eps", eps, batch_size=x.shape[0])
        labels = self._check_labels(labels, x.shape[0])
        if target is not None:
            target = self._check_images("target", target)
            checks.check_same_shape("target", target.shape, "x", x.shape)
        return x, eps, target, labels

    def _check_labels(self, labels, batch_size):
        checks.check_labels_given(labels is not None, self.config.num_classes)
        if labels is None:
            return None
        labels, dtype = _as_array("labels", labels)
        checks.check_label_batch("labels", labels.shape, dtype, batch_size)
        if not isinstance(labels, jax.core.Tracer):
            low, high = (int(v) for v in _min_max(labels))
            checks.check_label_values("labels", low, high, self.config.num_classes)
        return labels

    def _check_images(self, name, x):
        x, dtype = _as_array(name, x)
        checks.check_image_batch(name, x.shape, dtype, self.config.image_shape, "NHWC", str(self.dtype))
        check_values(name, x, bounds=(0.0, 1.0))
        return x

    def _check_latents(self, name, z, batch_size=None):
        z, dtype = _as_array(name, z)
        checks.check_latent_batch(name, z.shape, dtype, self.config.latent_dim, str(self.dtype),
                                  batch_size)
        check_values(name, z, bounds=None)
        return z


def _jit_for(fn, model: VAE):
    """fn(graphdef, state, ...) under jax.jit with the model's compiler options (the graphdef static): one
    jit, and one compile per shape, for each function and options."""
    return _jitted(fn, tuple(sorted(model.compiler_options.items())))


@functools.cache
def _jitted(fn, options: tuple[tuple[str, str], ...], static_argnums=0, donate_argnums=()):
    """One jax.jit of fn for each set of options, shared by every model and state that calls it: jax then
    compiles once per distinct structure, shapes and dtypes (the parity suite's cases repeat them)."""
    return jax.jit(fn, static_argnums=static_argnums, donate_argnums=donate_argnums,
                   compiler_options=dict(options))


# The public methods compute under jax.jit, after their eager checks: one compiled program per shape
# instead of an op-by-op dispatch (the end-of-run pictures took 9 s eagerly, most of it compiling each op).
def _compiled_call(model: VAE, fn, *args):
    graphdef, state = nnx.split(model)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((state, args))):
        return fn(graphdef, state, *args)  # inside the caller's trace: traced into it (a nested jit takes no
        # compiler options)
    return _jit_for(fn, model)(graphdef, state, *args)


def _encode_of(graphdef, state, x, labels):
    return nnx.merge(graphdef, state)._encode(x, labels)


def _decode_of(graphdef, state, z, labels):
    return nnx.merge(graphdef, state)._decode(z, labels)


def _forward_of(graphdef, state, x, eps, labels):
    return nnx.merge(graphdef, state)._forward(x, eps, labels)


def _sample_of(graphdef, state, z, labels):
    model = nnx.merge(graphdef, state)
    return mean_image(model._decode(z, labels), model.config.likelihood)


def _reconstruct_of(graphdef, state, x, labels):
    return nnx.merge(graphdef, state)._reconstruct(x, labels)


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


def float_dtype(dtype) -> jnp.dtype:
    """jnp.float32, 'float32' or np.float32 -> float32; anything but a float dtype is an error."""
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating-point dtype such as jnp.float32 or 'float64', got {dtype!r}")
    return dtype


def _as_array(name, x):
    """(jax array, the dtype it came with): a float64 numpy array stays float64 to the dtype check, not
    silently float32 as jnp.asarray would make it with 64-bit JAX off."""
    if isinstance(x, np.ndarray):
        return jnp.asarray(x), str(x.dtype)
    if not isinstance(x, jax.Array):
        raise TypeError(f"{name} must be a jax.Array or numpy array, got {type(x).__name__}")
    return x, str(x.dtype)


@jax.jit
def _min_max(x):
    return jnp.min(x), jnp.max(x)


def check_values(name, x, bounds):
    """NaN/inf and range checks on concrete arrays; skipped for tracers, so jitted code holds no checks."""
    if isinstance(x, jax.core.Tracer):
        return
    low, high = (float(v) for v in _min_max(x))  # min/max propagate NaN, and inf shows in one of them
    checks.check_values(name, np.isfinite(low) and np.isfinite(high), low, high, bounds)

"""The parity harness: both twins from the same canonical weights, fed the same batches and the same eps
(from vae_core's stream), compared quantity by quantity in the canonical (NCHW, torch-named) layout.

Error measure, per tensor: max|a - b| / max|b|, b the float64 torch reference (max|a - b| where b is all
zeros). A quantity's error is the largest over its tensors (and over steps, for training). A loss is a
sum, and its rounding follows the size of its terms, not of the sum: the continuous Bernoulli's terms
take both signs (its density exceeds 1) and nearly cancel on the harness' random images, so a loss's
error is relative to the reference's sum of its terms' magnitudes (loss_scales), which is |b| itself
for the other likelihoods.
float64: the JAX twin against the torch reference, both in float64 (64-bit JAX enabled inside
`jax.enable_x64` only). float32: each twin run in float32 against the float64 reference. bfloat16: mixed
precision (float32 parameters and inputs, layers computing in bf16: compute_dtype="bfloat16") against the
same float64 reference.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import vae_jax
import vae_torch
from twinvae import export as artifacts
from twinvae.compare import relative_error
from vae_core import export as export_spec
from vae_core import seeds
from vae_core.checks import PRECISIONS
from vae_core.config import VAEConfig
from vae_core.layout import FORMS, NATIVE_FORMS, init_weights

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
    return 2 * per_side + 2  # encoder, fc_mu / fc_logvar, decoder's fc, decoder


def tolerance(dtype: str, kind: str, config: VAEConfig) -> float:
    if dtype != "bfloat16":
        return TOLERANCES[dtype][kind]
    if kind in BF16_FIXED:
        return BF16_FIXED[kind]
    return BF16_MARGIN * np.sqrt(BF16_ROUNDINGS[kind] * layers_on_path(config)) * BF16_UNIT_ROUNDOFF


QUANTITY_KIND = {"mu": "forward", "logvar": "forward", "z": "forward", "logits": "forward",
                 "reconstruct": "forward",
                 "loss.total": "loss", "loss.reconstruction": "loss", "loss.kl": "loss", "grad": "grad",
                 "adam.loss": "adam_loss", "adam.params": "adam_params",
                 "adam.step1": "adam_step1", "sample": "sample", "decode": "sample",
                 "checkpoint": "checkpoint"}
# what compare_exports measures: an exported artifact's outputs
EXPORT_QUANTITY_KIND = {"export.mu": "forward", "export.logvar": "forward", "export.logits": "forward"}


@dataclass(frozen=True)
class Case:
    name: str
    config: VAEConfig
    batch_size: int = 8
    steps: int = 50  # Adam steps compared; 0 skips the training comparison
    seed: int = 0  # of the weights, the batches and the eps


CASES = [
    Case("conv 1x28x28 bernoulli (seed)", VAEConfig()),
    Case("conv 1x28x28 gaussian beta=0.5", VAEConfig(likelihood="gaussian", beta=0.5)),
    Case("conv 3x32x32 continuous Bernoulli beta=4",
         VAEConfig(image_shape=(3, 32, 32), conv_channels=(16, 32, 8), latent_dim=16,
                   likelihood="continuous_bernoulli", beta=4.0)),
    Case("conv 1x8x8 (digits)", VAEConfig(image_shape=(1, 8, 8), conv_channels=(16, 32), latent_dim=8)),
    Case("conv 1x28x28 residual blocks", VAEConfig(conv_channels=(8, 16), res_blocks=2, latent_dim=8)),
    Case("conv 3x12x20 (H != W) discretized logistic, no fc ReLU as in format 1",
         VAEConfig(image_shape=(3, 12, 20), conv_channels=(8, 16), latent_dim=6, decoder_fc_relu=False,
                   likelihood="discretized_logistic")),
    Case("conv 1x16x16 class-conditional, 10 classes",
         VAEConfig(image_shape=(1, 16, 16), conv_channels=(8, 16), latent_dim=8, num_classes=10)),
    Case("mlp 1x28x28 bernoulli (pytorch/examples)", VAEConfig(arch="mlp")),
    Case("mlp 3x32x32 gaussian beta=2", VAEConfig(arch="mlp", image_shape=(3, 32, 32), mlp_widths=(256, 64),
                                                  likelihood="gaussian", beta=2.0)),
    Case("mlp 1x8x8 discretized logistic, 17 levels",
         VAEConfig(arch="mlp", image_shape=(1, 8, 8), mlp_widths=(32,), latent_dim=4,
                   likelihood="discretized_logistic", levels=17)),
    Case("mlp 1x8x12 class-conditional, 3 classes, gaussian",
         VAEConfig(arch="mlp", image_shape=(1, 8, 12), mlp_widths=(32,), latent_dim=4, num_classes=3,
                   likelihood="gaussian")),
]


@dataclass
class Row:
    case: str
    quantity: str
    dtype: str
    twin: str  # the twin compared with the float64 torch reference, or a checkpoint's direction
    error: float
    where: str = ""  # the worst tensor / step, to locate a failure
    config: VAEConfig = field(default_factory=VAEConfig, repr=False)  # the case's, for bf16's tolerance
    tolerance: float = field(init=False)

    def __post_init__(self):
        kind = QUANTITY_KIND.get(self.quantity) or EXPORT_QUANTITY_KIND[self.quantity]
        self.tolerance = tolerance(self.dtype, kind, self.config)

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.error)) and self.error <= self.tolerance


def norm_error(a, b) -> float:
    """||a - b|| / ||b||, for bf16 gradients (see BF16_FIXED); NaN/inf anywhere is infinite."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    scale = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else float(np.linalg.norm(a))


def first_step_error(params: dict, ref_params: dict, ref_grads: dict, grad_tolerance: float) -> tuple[float, str]:
    """adam.step1: the parameters after the first Adam step, which moves each one by lr * g / (|g| + eps),
    about lr * sign(g). Where the reference gradient lies within the gradient tolerance of 0 (|g| <=
    grad_tolerance * max|g| of its tensor), a twin's gradient may round to the other sign, and that parameter
    then moves by up to 2 lr the other way: such elements are left out, so the rest hold the optimizer's
    maths to step1's tolerance. The measure is relative_error's (max over the kept elements / max|b|)."""
    errors = {}
    for key, b in ref_params.items():
        a, b = np.asarray(params[key], np.float64), np.asarray(b, np.float64)
        g = np.abs(np.asarray(ref_grads[key], np.float64))
        unsure = ~(np.isfinite(a) & np.isfinite(b))  # NaN and inf are always compared, never left out
        kept = (g > grad_tolerance * g.max()) | unsure if g.size else unsure
        errors[key] = relative_error(np.where(kept, a, b), b)  # a left-out element counts as exact
    key = max(errors, key=lambda k: errors[k] if not np.isnan(errors[k]) else np.inf)
    return errors[key], key


def worst(a: dict, b: dict, error=relative_error) -> tuple[float, str]:
    """The largest error over tensors, and where; NaN counts as the largest (it must never hide)."""
    errors = {key: error(a[key], b[key]) for key in b}
    key = max(errors, key=lambda k: errors[k] if not np.isnan(errors[k]) else np.inf)
    return errors[key], key


def device_from_env(device: str | None = None) -> str:
    """'cpu' or 'cuda', from the argument or TWINVAE_DEVICE; never assumed."""
    device = device or os.environ.get("TWINVAE_DEVICE", "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return device


def set_tf32(enabled: bool) -> None:
    """TF32 for float32 matmuls/convs on GPUs, set the same way in both frameworks."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if enabled else "float32")


# --- the twins behind one interface: numpy in, canonical numpy out --------------------------------------

def twin_name(backend: str, forms: dict) -> str:
    """"jax" for the native forms; else the forms that differ, e.g. "jax/space_to_depth+subpixel"."""
    different = [form for form in forms.values() if form != "native"]
    return backend + ("/" + "+".join(different) if different else "")


class TorchTwin:
    module = vae_torch

    def __init__(self, config, weights, dtype: str, device: str = "cpu", forms: dict = NATIVE_FORMS):
        self.name = twin_name("torch", forms)
        self.dtype, self.device = getattr(torch, PARAM_DTYPE[dtype]), device
        model = vae_torch.VAE(config, dtype=self.dtype, **forms, compute_dtype=COMPUTE_DTYPE[dtype])
        self.model = vae_torch.import_weights(model.to(device), weights)
        self.config = config
        self.state = None

    def tensor(self, a):
        return torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)

    def images(self, x):  # canonical NCHW already
        return self.tensor(x)

    def labels(self, y):
        return None if y is None else vae_torch.as_labels(y, self.model)

    def outputs(self, x, eps, y=None) -> tuple[dict, dict, dict]:
        """(forward outputs, losses, gradients) on one batch (y: its labels, for a conditional model); a
        forward pass without autograd, then one with its backward."""
        with torch.no_grad():
            out = self.model(self.images(x), self.tensor(eps), labels=self.labels(y))
        self.model.zero_grad(set_to_none=True)
        x = self.images(x)
        losses = vae_torch.vae_loss(self.model(x, self.tensor(eps), labels=self.labels(y)), x, self.config)
        losses.total.backward()
        grads = vae_torch.weights.to_canonical({k: p.grad for k, p in self.model.named_parameters()}, self.config)
        return ({name: value.cpu().numpy() for name, value in out._asdict().items()},
                {name: v.item() for name, v in losses._asdict().items()}, grads)

    @torch.no_grad()
    def loss_scales(self, x, eps, y=None) -> dict:
        """The size of each loss's terms: the batch mean of the pixels' |loss| summed, the KL (>= 0), and
        the reconstruction's plus beta times the KL's for the total."""
        x = self.images(x)
        out = self.model(x, self.tensor(eps), labels=self.labels(y))
        reconstruction = vae_torch.likelihoods.pixel_losses(out.logits, x, self.config.likelihood,
                                                            self.config.levels).abs()
        reconstruction = reconstruction.flatten(1).sum(1).mean().item()
        kl = vae_torch.kl_divergence(out.mu, out.logvar).mean().item()
        return {"total": reconstruction + self.config.beta * kl, "reconstruction": reconstruction, "kl": kl}

    def train_step(self, x, eps, y=None) -> tuple[float, dict]:
        if self.state is None:
            self.state = vae_torch.create_train_state(self.model)
        self.state, losses = vae_torch.train_step(self.state, self.images(x), self.tensor(eps),
                                                  labels=self.labels(y))
        return float(losses.total), vae_torch.export_weights(self.model)

    def generated(self, n, seed, z, x, z_labels=None, x_labels=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sample(n, seed), decode(z), reconstruct(x)): the model's public methods (a conditional
        model's samples and decodings take z_labels, its reconstructions x_labels)."""
        z_labels, x_labels = self.labels(z_labels), self.labels(x_labels)
        with torch.no_grad():
            decoded = self.model.decode(self.tensor(z), labels=z_labels)
        images = (self.model.sample(n, seed, labels=z_labels), decoded,
                  self.model.reconstruct(self.images(x), labels=x_labels))
        return tuple(image.cpu().numpy() for image in images)


# Adam's decays, as both twins' create_train_state default them: after one step from zero the first moment
# is (1 - b1) g, which is how JaxTwin reads the gradient its train step computed.
ADAM_BETAS = (0.9, 0.999)


class JaxTwin:
    module = vae_jax

    def __init__(self, config, weights, dtype: str, device: str = "cpu", forms: dict = NATIVE_FORMS):
        self.name = twin_name("jax", forms)
        self.dtype, self.device = jnp.dtype(PARAM_DTYPE[dtype]), jax.devices(device)[0]
        with jax.default_device(self.device):
            model = vae_jax.init_model(config, dtype=self.dtype, **forms, compute_dtype=COMPUTE_DTYPE[dtype])
            self.model = vae_jax.import_weights(model, weights)
        self.config = config
        self.state = self.step = None
        self._graphdef, self._params = nnx.split(self.model)
        # Every method is compared jitted, as the training step runs, each with the twin's own compiler
        # options, in programs shared by every twin of the same structure and shapes (beta is an argument),
        # so that cases and random examples that repeat a structure compile nothing again: the forward
        # pass with its losses, the three public methods that decode, and the train step.
        self._options = tuple(sorted(self.model.compiler_options.items()))
        self._static = dataclasses.replace(config, beta=1.0)

    def array(self, a):
        return jax.device_put(jnp.asarray(np.asarray(a), self.dtype), self.device)

    def images(self, x):  # canonical NCHW -> NHWC
        return self.array(np.asarray(x).transpose(0, 2, 3, 1))

    def labels(self, y):
        return None if y is None else jax.device_put(vae_jax.as_labels(y, self.model), self.device)

    def outputs(self, x, eps, y=None) -> tuple[dict, dict, dict]:
        """(forward outputs, losses, gradients) on one batch: the forward pass and its losses from one
        compiled function, the gradients from one step of the twin's compiled train step (the program the
        Adam comparison runs anyway), read from Adam's first moment, (1 - b1) g."""
        x, eps, y = self.images(x), self.array(eps), self.labels(y)
        out, losses = _jitted(_forward_and_losses, (0, 1), self._options)(
            self._graphdef, self._static, self._params, x, eps, y, self.config.beta)
        out = {name: np.asarray(value) for name, value in out._asdict().items()}
        out["logits"] = out["logits"].transpose(0, 3, 1, 2)
        state = vae_jax.create_train_state(self.model, betas=ADAM_BETAS)
        state, _ = vae_jax.compile_train_step(state)(state, x, eps, labels=y)
        grads = {key.removeprefix("exp_avg."): np.asarray(moment, np.float64) / (1 - ADAM_BETAS[0])
                 for key, moment in vae_jax.export_optimizer_state(state).items() if key.startswith("exp_avg.")}
        return out, {name: float(v) for name, v in losses._asdict().items()}, grads

    def train_step(self, x, eps, y=None) -> tuple[float, dict]:
        if self.state is None:
            self.state = vae_jax.create_train_state(self.model, betas=ADAM_BETAS)
            self.step = vae_jax.compile_train_step(self.state)
        self.state, losses = self.step(self.state, self.images(x), self.array(eps), labels=self.labels(y))
        return float(losses.total), vae_jax.weights.to_canonical(self.state.params, self.config)

    def generated(self, n, seed, z, x, z_labels=None, x_labels=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sample(n, seed), decode(z), reconstruct(x)), from one compiled function."""
        images = _jitted(_decodings, (0, 4, 5), self._options)(
            self._graphdef, self._params, self.array(z), self.images(x), n, seed, self.labels(z_labels),
            self.labels(x_labels))
        return tuple(np.asarray(a).transpose(0, 3, 1, 2) for a in images)


def _forward_and_losses(graphdef, config, params, x, eps, labels, beta):
    out = nnx.merge(graphdef, params)(x, eps, labels=labels)
    return out, vae_jax.vae_loss(out, x, config, beta)


def _decodings(graphdef, params, z, x, n, seed, z_labels, x_labels):
    model = nnx.merge(graphdef, params)
    return (model.sample(n, seed, labels=z_labels), model.decode(z, labels=z_labels),
            model.reconstruct(x, labels=x_labels))


@functools.cache
def _jitted(fn, static_argnums: tuple, options: tuple):
    """One jit of fn per set of compiler options, shared by every JaxTwin: a twin of a structure compiled
    before compiles nothing again."""
    return jax.jit(fn, static_argnums=static_argnums, compiler_options=dict(options))


# --- the comparisons -------------------------------------------------------------------------------------

def case_data(case: Case, seed: int = 0):
    """Deterministic batches (4 distinct, cycled) in [0, 1], their labels (None for an unconditional
    model) and the eps of every step, in float64; for the discretized logistic on its grid of levels."""
    rng = np.random.default_rng(seed)
    batches = [rng.random((case.batch_size, *case.config.image_shape)) for _ in range(4)]
    if case.config.likelihood == "discretized_logistic":
        steps = case.config.levels - 1
        batches = [np.round(b * steps) / steps for b in batches]
    classes = case.config.num_classes
    labels = [rng.integers(0, classes, case.batch_size) if classes else None for _ in batches]
    eps = [seeds.eps_for_step(seed, step, case.batch_size, case.config.latent_dim)
           for step in range(max(case.steps, 1))]
    return batches, labels, eps


# Which forms each twin is compared in (twin_forms): "default", its default on the device; "each", the
# native forms and the non-native form of every kind at once, so every form is compared; "all", those and
# every combination a device of its table runs by default.
FORM_SETS = ("default", "each", "all")


def twin_forms(module, config, device: str, forms: str) -> list[dict]:
    """The forms (a FORM_SETS name) a twin is compared in; an MLP has only the native ones."""
    if forms not in FORM_SETS:
        raise ValueError(f"forms must be one of {FORM_SETS}, got {forms!r}")
    if config.arch != "conv":
        return [NATIVE_FORMS]
    if forms == "default":
        return [module.default_forms(device)]
    candidates = [NATIVE_FORMS, {kind: choices[-1] for kind, choices in FORMS.items()}]
    if forms == "all":
        candidates += module.model.DEFAULT_FORMS.values()
    return [dict(f) for f in dict.fromkeys(tuple(f.items()) for f in candidates)]


@dataclass
class Compiles:
    """XLA compiles (programs, and the seconds they took, persistent-cache loads included)."""
    programs: int = 0
    seconds: float = 0.0
    comparing: int = 0  # compare() calls under way: only their compiles count


# What the comparisons of this process compiled, in all: the suite records each test's share.
COMPILED = Compiles()


def _count_compile(event: str, seconds: float, **_) -> None:
    if COMPILED.comparing and event == "/jax/core/compile/backend_compile_duration":
        COMPILED.programs += 1
        COMPILED.seconds += seconds


jax.monitoring.register_event_duration_secs_listener(_count_compile)


def compare(case: Case, dtype: str, device: str = "cpu", weights_fn=init_weights, steps=None,
            forms: str = "all") -> list[Row]:
    """Every quantity of one case in one dtype. float64: JAX vs the torch reference; float32: each twin vs
    the float64 torch reference. `weights_fn` is swappable so a test can feed deliberately bad weights.
    forms: which forms of each twin (FORM_SETS: "default", "each" or "all"). What it compiles is added to
    COMPILED."""
    COMPILED.comparing += 1
    try:
        if dtype == "float64":
            with jax.enable_x64(True):
                return _compare(case, dtype, device, weights_fn, steps, forms)
        return _compare(case, dtype, device, weights_fn, steps, forms)
    finally:
        COMPILED.comparing -= 1


def _compare(case, dtype, device, weights_fn, steps, forms) -> list[Row]:
    config = case.config
    steps = case.steps if steps is None else steps
    weights = {k: v.astype(PARAM_DTYPE[dtype]) for k, v in weights_fn(config, seed=case.seed).items()}
    # the reference is torch's native ConvTranspose2d; every other way of computing it is compared with it
    reference = TorchTwin(config, weights, "float64", device)
    twins = [twin(config, weights, dtype, device, twin_form) for twin in (TorchTwin, JaxTwin)
             for twin_form in twin_forms(twin.module, config, device, forms)
             if not (twin is TorchTwin and twin_form == NATIVE_FORMS and dtype == "float64")]
    # Inputs rounded to the run's dtype first, so the reference sees exactly the same numbers.
    batches, labels, eps = case_data(dataclasses.replace(case, steps=steps), case.seed)  # eps of every step
    batches = [b.astype(PARAM_DTYPE[dtype]) for b in batches]
    eps = [e.astype(PARAM_DTYPE[dtype]) for e in eps]
    rows = []

    def add(twin, quantity, error, where=""):
        rows.append(Row(case.name, quantity, dtype, twin.name, error, where, config))

    ref_out, ref_losses, ref_grads = reference.outputs(batches[0], eps[0], labels[0])
    ref_scales = reference.loss_scales(batches[0], eps[0], labels[0])
    z = seeds.standard_normal(1, "sample", 0, (5, config.latent_dim)).astype(PARAM_DTYPE[dtype])
    decoded = (5, 3, z, batches[1], np.arange(5) % config.num_classes if config.num_classes else None, labels[1])
    ref_generated = reference.generated(*decoded)
    for twin in twins:
        out, losses, grads = twin.outputs(batches[0], eps[0], labels[0])
        for name in ("mu", "logvar", "z", "logits"):
            add(twin, name, relative_error(out[name], ref_out[name]))
        for name in ("total", "reconstruction", "kl"):
            add(twin, f"loss.{name}", relative_error(losses[name], ref_losses[name], ref_scales[name]))
        add(twin, "grad", *worst(grads, ref_grads, norm_error if dtype == "bfloat16" else relative_error))
        for name, image, ref in zip(("sample", "decode", "reconstruct"), twin.generated(*decoded), ref_generated):
            add(twin, name, relative_error(image, ref))
    if dtype != "bfloat16":  # a mixed-precision model stores float32 weights: float32's rows cover it
        rows += _compare_checkpoints(case, dtype, weights)
    if steps:
        rows += _compare_adam(case, dtype, twins, reference, batches, labels, eps, steps, ref_grads)
    return rows


def _compare_checkpoints(case, dtype, weights) -> list[Row]:
    """A checkpoint written by each twin, read by the other: the weights must come back bitwise."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.safetensors")
        written = vae_torch.import_weights(vae_torch.VAE(case.config, dtype=getattr(torch, dtype)), weights)
        vae_torch.save_checkpoint(path, written, case.config, {"writer": "torch"})
        model, _, _ = vae_jax.load_checkpoint(path)
        read = vae_jax.export_weights(model)
        rows.append(Row(case.name, "checkpoint", dtype, "torch->jax", *worst(read, weights)))
        vae_jax.save_checkpoint(path, model, case.config, {"writer": "jax"})
        model, _, _ = vae_torch.load_checkpoint(path)
        read = vae_torch.export_weights(model)
        rows.append(Row(case.name, "checkpoint", dtype, "jax->torch", *worst(read, weights)))
    return rows


def _compare_adam(case, dtype, twins, reference, batches, labels, eps, steps, ref_grads) -> list[Row]:
    """Adam from the same weights on the same batches and eps; losses and all parameters every step."""
    loss_err = {twin.name: (0.0, "") for twin in twins}
    param_err, step1_err = dict(loss_err), dict(loss_err)
    for step in range(steps):
        x, y = batches[step % len(batches)], labels[step % len(batches)]
        scale = reference.loss_scales(x, eps[step], y)["total"]  # at the parameters the step's loss sees
        ref_loss, ref_params = reference.train_step(x, eps[step], y)
        for twin in twins:
            loss, params = twin.train_step(x, eps[step], y)
            e = relative_error(loss, ref_loss, scale)
            if not e <= loss_err[twin.name][0]:
                loss_err[twin.name] = (e, f"step {step + 1}")
            if step == 0:
                step1_err[twin.name] = first_step_error(params, ref_params, ref_grads,
                                                        tolerance(dtype, "grad", case.config))
            e, key = worst(params, ref_params)
            if not e <= param_err[twin.name][0]:
                param_err[twin.name] = (e, f"step {step + 1}, {key}")
    rows = []
    for twin in twins:
        for quantity, errors in (("adam.loss", loss_err), ("adam.step1", step1_err), ("adam.params", param_err)):
            rows.append(Row(case.name, quantity, dtype, twin.name, *errors[twin.name], case.config))
    return rows


def compare_exports(case: Case, dtype: str, device: str = "cpu", formats=tuple(export_spec.FORMATS),
                    parts=tuple(export_spec.PARTS), weights_fn=init_weights) -> list[Row]:
    """Each part exported in each format (from a checkpoint of the case's weights, as `twinvae export`
    does), run in its own runtime through twinvae.export.load, against the float64 torch reference on the
    harness' batch and eps: the artifact's outputs at the forward tolerance of its dtype, the same the
    twins are held to. Artifacts are lowered for `device`; ONNX is skipped in bf16 (float32 only)."""
    config = case.config
    weights = {k: v.astype("float32") for k, v in weights_fn(config, seed=0).items()}
    reference = TorchTwin(config, weights, "float64", device)
    batches, labels, eps = case_data(dataclasses.replace(case, steps=1))
    x, y, e = batches[0].astype("float32"), labels[0], eps[0].astype("float32")
    z = seeds.standard_normal(1, "sample", 0, (case.batch_size, config.latent_dim)).astype("float32")
    expected = _reference_parts(reference, x, e, z, y)
    formats = [f for f in formats if dtype == "float32" or f not in export_spec.FLOAT32_ONLY]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = os.path.join(folder, "model.safetensors")
        model = vae_torch.import_weights(vae_torch.VAE(config), weights)
        vae_torch.save_checkpoint(checkpoint, model, config, {"backend": "torch"})
        for format in formats:
            for part in parts:
                path = os.path.join(folder, f"{part}{export_spec.SUFFIXES[format]}")
                artifacts.export(checkpoint, format, part, path, dtype=dtype, platform=device)
                artifact = artifacts.load(path)
                nhwc = artifact.info["layout"] == "NHWC"
                given = {"images": x.transpose(0, 2, 3, 1) if nhwc else x, "eps": e, "z": z, "labels": y}
                outputs = artifact(**{s.name: given[s.name] for s in artifact.inputs})  # checked, as a user's
                outputs = outputs if isinstance(outputs, tuple) else (outputs,)
                for spec, value in zip(artifact.outputs, outputs):
                    value = value.transpose(0, 3, 1, 2) if nhwc and value.ndim == 4 else value
                    rows.append(Row(case.name, f"export.{spec.name}", dtype, f"{format} {part}",
                                    relative_error(value, expected[part][spec.name]), "", config))
    return rows


def _reference_parts(reference: TorchTwin, x, eps, z, y) -> dict:
    """What each part computes, by the float64 torch twin: {part: {output: canonical array}}."""
    model = reference.model
    labels = reference.labels(y)
    with torch.no_grad():
        out = model._forward(reference.tensor(x), reference.tensor(eps), labels)
        logits = model._decode(reference.tensor(z), labels)
    mu, logvar = out.mu.cpu().numpy(), out.logvar.cpu().numpy()
    return {"encoder": {"mu": mu, "logvar": logvar}, "decoder": {"logits": logits.cpu().numpy()},
            "vae": {"mu": mu, "logvar": logvar, "logits": out.logits.cpu().numpy()}}


def format_table(rows: list[Row]) -> str:
    header = ("| case | quantity | dtype | twin vs float64 torch | max err: max\\|a-b\\|/max\\|b\\| | tolerance "
              "| ok | worst at |")
    lines = [header, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r.case} | {r.quantity} | {r.dtype} | {r.twin} | {r.error:.2e} | {r.tolerance:.0e} | "
                     f"{'pass' if r.ok else 'FAIL'} | {r.where} |")
    return "\n".join(lines)


def format_summary(rows: list[Row]) -> str:
    """The largest error of each (quantity, dtype, twin) over all cases: the README's table."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.quantity, r.dtype, r.twin), []).append(r)
    lines = ["| quantity | dtype | twin vs float64 torch | largest max\\|a-b\\|/max\\|b\\| over cases "
             "| tolerance | ok | in case |", "|" + "---|" * 7]
    order = [*QUANTITY_KIND, *EXPORT_QUANTITY_KIND]
    for (quantity, dtype, twin), group in sorted(
            groups.items(), key=lambda kv: (kv[0][1] == "float32", order.index(kv[0][0]), kv[0][2])):
        top = max(group, key=lambda r: r.error if np.isfinite(r.error) else np.inf)
        ok = "pass" if all(r.ok for r in group) else "FAIL"
        lines.append(f"| {quantity} | {dtype} | {twin} | {top.error:.1e} | {top.tolerance:.0e} | {ok} "
                     f"| {top.case} |")
    return "\n".join(lines)


# The README's summary: the quantities in groups, the largest error of each group over every case and twin.
GROUPS = {"forward: mu, logvar, z, logits, reconstruct": ("mu", "logvar", "z", "logits", "reconstruct"),
          "losses: total, reconstruction, KL": ("loss.total", "loss.reconstruction", "loss.kl"),
          "gradients, every parameter": ("grad",),
          "Adam: the losses at every step": ("adam.loss",),
          "Adam: the parameters after the first step": ("adam.step1",),
          "Adam: the parameters at every step": ("adam.params",),
          "sampling (same seed) and decoding (same z)": ("sample", "decode"),
          "checkpoints, written by each twin, read by the other": ("checkpoint",)}


def format_groups(rows: list[Row]) -> str:
    """One line per group of GROUPS, one pair of columns (largest error, tolerance) per dtype compared."""
    dtypes = [d for d in ("float64", "float32", "bfloat16") if any(r.dtype == d for r in rows)]
    lines = ["| quantity | " + " | ".join(f"{d}: largest error | tolerance" for d in dtypes) + " |",
             "|---|" + "---|---|" * len(dtypes)]
    for label, quantities in GROUPS.items():
        cells = []
        for dtype in dtypes:
            group = [r for r in rows if r.quantity in quantities and r.dtype == dtype]
            if not group:
                cells += ["", ""]
                continue
            top = max(group, key=lambda r: r.error if np.isfinite(r.error) else np.inf)
            ok = "" if all(r.ok for r in group) else " FAIL"
            cells += [f"{top.error:.1e}{ok}", f"{max(r.tolerance for r in group):.0e}"]
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

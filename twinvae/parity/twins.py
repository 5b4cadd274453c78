"""The twins as the comparisons run them: a twin module from twinvae.twin.load_twin, one model of it built
from canonical weights in a dtype and a set of forms, fed canonical numpy and answering in canonical numpy
(the twin's own as_input and to_numpy convert the layout). Each runs as the trainer runs it by default:
torch eagerly, JAX compiled. Also the frameworks' settings a comparison runs under: its device, TF32 and
64-bit JAX."""

from __future__ import annotations

import contextlib
import functools
import os

import jax
import numpy as np
import torch
from flax import nnx

from twinvae.parity.tolerances import COMPUTE_DTYPE, PARAM_DTYPE
from twinvae.twin import Model, Twin, load_twin
from vae_core.config import VAEConfig
from vae_core.forms import NATIVE_FORMS

# Adam's decays, as both twins' create_train_state default them: after one step from zero the first moment
# is (1 - b1) g, which is how a compared twin reads the gradient its train step computed.
ADAM_BETAS = (0.9, 0.999)


def device_from_env(device: str | None = None) -> str:
    """'cpu' or 'cuda', from the argument or TWINVAE_DEVICE; never assumed."""
    device = device or os.environ.get("TWINVAE_DEVICE", "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return device


def check_device(device: str) -> None:
    """The device both twins run on must exist for torch and for JAX (ValueError or RuntimeError if not)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("torch sees no CUDA device here")
    jax.devices(device)


def set_tf32(enabled: bool) -> None:
    """TF32 for float32 matmuls/convs on GPUs, set the same way in both frameworks."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if enabled else "float32")


@contextlib.contextmanager
def comparing(dtype: str, device: str):
    """The frameworks as one comparison needs them: 64-bit JAX for float64 (inside this scope only), and
    `device` the default of torch and of JAX, so the models built and the arrays made inside live there."""
    x64 = jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()
    with x64, torch.device(device), jax.default_device(jax.devices(device)[0]):
        yield


def twin_name(backend: str, forms: dict) -> str:
    """"jax" for the native forms; else the forms that differ, e.g. "jax/space_to_depth+subpixel"."""
    different = [form for form in forms.values() if form != "native"]
    return backend + ("/" + "+".join(different) if different else "")


def compared_twin(backend: str, config: VAEConfig, weights: dict, dtype: str,
                  forms: dict = NATIVE_FORMS) -> ComparedTwin:
    """A backend's twin (load_twin's) with a model of the given weights, dtype ("float64", "float32" or
    "bfloat16": mixed precision) and forms, run as the trainer runs it: JAX compiled, torch eagerly."""
    twin = load_twin(backend, float64=dtype == "float64")
    return (JittedTwin if backend == "jax" else ComparedTwin)(twin, config, weights, dtype, forms)


class ComparedTwin:
    """One model of a twin, through the twin's public API only: numpy in, canonical numpy out. Its train
    step is the eager one (torch's); JittedTwin compiles."""

    def __init__(self, twin: Twin, config: VAEConfig, weights: dict, dtype: str, forms: dict = NATIVE_FORMS):
        self.twin, self.config, self.weights = twin, config, weights
        self.name = twin_name(twin.__name__.removeprefix("vae_"), forms)
        self.model_options = {"dtype": PARAM_DTYPE[dtype], **forms, "compute_dtype": COMPUTE_DTYPE[dtype]}
        self.model = self.new_model()
        self.state = self.step = None

    def new_model(self) -> Model:
        """A model of the twin's weights, dtype and forms."""
        return self.twin.import_weights(self.twin.init_model(self.config, **self.model_options), self.weights)

    def input(self, array):
        """A canonical numpy batch (images NCHW, or latents) as the model takes it."""
        return self.twin.as_input(np.asarray(array), self.model)

    def labels(self, y):
        return None if y is None else self.twin.as_labels(y, self.model)

    def step_function(self, state):
        """The train step this twin is compared with: the eager one."""
        return self.twin.train_step

    def forward(self, x, eps, y=None) -> dict:
        """The forward pass's outputs (mu, logvar, z, logits, a VampPrior's components as prior.mu and
        prior.logvar, and a two-level model's z1 as lower.mu, lower.logvar, lower.z, lower.prior_mu and
        lower.prior_logvar) on one batch (y: its labels, for a conditional model), unchecked."""
        out = self.model(self.input(x), self.input(eps), labels=self.labels(y), check_inputs=False)
        values = {name: self.twin.to_numpy(value) for name, value in out._asdict().items()
                  if name not in ("prior", "lower")}
        if out.prior is not None:
            values["prior.mu"], values["prior.logvar"] = (self.twin.to_numpy(v) for v in out.prior)
        if out.lower is not None:
            values.update({f"lower.{name}": self.twin.to_numpy(v) for name, v in out.lower._asdict().items()})
        return values

    def decode(self, z, y=None) -> np.ndarray:
        """The logits of the latents z (y: their labels), unchecked."""
        return self.twin.to_numpy(self.model.decode(self.input(z), labels=self.labels(y), check_inputs=False))

    def outputs(self, x, eps, y=None) -> tuple[dict, dict, dict]:
        """(forward outputs, losses, gradients) on one batch. The losses and gradients come from one train
        step of a model of their own (torch's step trains its model in place), from a fresh Adam state:
        the step's losses, and the gradients read from Adam's first moment, (1 - b1) g."""
        state = self.twin.create_train_state(self.new_model(), betas=ADAM_BETAS)
        state, losses = self.step_function(state)(state, self.input(x), self.input(eps), labels=self.labels(y))
        grads = {key.removeprefix("exp_avg."): np.asarray(moment, np.float64) / (1 - ADAM_BETAS[0])
                 for key, moment in self.twin.export_optimizer_state(state).items() if key.startswith("exp_avg.")}
        return self.forward(x, eps, y), {name: float(v) for name, v in losses._asdict().items()}, grads

    def loss_scales(self, x, eps, y=None) -> dict:
        """The size of each loss's terms: the batch mean of the pixels' |loss| summed, the KL (>= 0), and
        the reconstruction's plus beta times the KL's for the total. For the IWAE bound (eps of K samples)
        the pixels of every sample's decoding, and for its KL estimate, and the VampPrior's, the mean of
        |log p(z)| + |log q(z|x)|, the terms its rounding comes from (their difference, near the small KL at
        init, would not size it; a two-level model's four densities each taken whole, so that the levels
        cannot cancel); else the KL itself (a sum of closed forms, each >= 0)."""
        config, images, eps = self.config, self.input(x), self.input(np.asarray(eps))
        out = self.model(images, eps, labels=self.labels(y), check_inputs=False)
        decoded = self.input(np.concatenate([x] * (len(eps) if eps.ndim == 3 else 1)))  # as the logits' rows
        pixels = self.twin.to_numpy(self.twin.likelihoods.pixel_losses(out.logits, decoded, config.likelihood,
                                                                        config.levels))
        reconstruction = float(np.abs(pixels).reshape(len(pixels), -1).sum(1).mean())
        if config.importance_weighted or config.prior == "vamp":
            densities = [self.twin.log_prior(out.z, out.prior), self.twin.log_normal(out.z, out.mu, out.logvar)]
            if out.lower is not None:  # log p(z1|z2) and log q(z1|x,z2)
                lower = out.lower
                densities += [self.twin.log_normal(lower.z, lower.prior_mu, lower.prior_logvar),
                              self.twin.log_normal(lower.z, lower.mu, lower.logvar)]
            kl = float(sum(np.abs(self.twin.to_numpy(d)) for d in densities).mean())
        else:
            kl = float(self.twin.to_numpy(self.twin.kl_per_image(out)).mean())
        return {"total": reconstruction + config.beta * kl, "reconstruction": reconstruction, "kl": kl}

    def train_step(self, x, eps, y=None) -> tuple[float, dict]:
        """One Adam step of this twin's trajectory: the step's loss, and the parameters after it."""
        if self.state is None:
            self.state = self.twin.create_train_state(self.model, betas=ADAM_BETAS)
            self.step = self.step_function(self.state)
        self.state, losses = self.step(self.state, self.input(x), self.input(eps), labels=self.labels(y))
        return float(losses.total), self.twin.export_weights(self.state.model)

    def generated(self, *, n: int, seed: int, z, x, z_labels=None, x_labels=None) -> tuple[np.ndarray, ...]:
        """(sample(n, seed), decode(z), reconstruct(x)): the model's public methods (a conditional model's
        samples and decodings take z_labels, its reconstructions x_labels)."""
        images = self.decodings(n, seed, self.input(z), self.input(x), self.labels(z_labels),
                                self.labels(x_labels))
        return tuple(self.twin.to_numpy(image) for image in images)

    def decodings(self, n, seed, z, x, z_labels, x_labels) -> tuple:
        return decodings(self.model, n, seed, z, x, z_labels, x_labels)


class JittedTwin(ComparedTwin):
    """The JAX twin, compared as it trains: compiled. Its train step is its compiled one, and its three
    decodings are one program, jitted with the model's compiler options and shared by every twin of the same
    structure and shapes, so that cases and random examples that repeat a structure compile nothing again."""

    def step_function(self, state):
        return self.twin.compile_train_step(state)

    def decodings(self, n, seed, z, x, z_labels, x_labels) -> tuple:
        graphdef, params = nnx.split(self.model)
        options = tuple(sorted(self.model.compiler_options.items()))
        return _jitted(_merged_decodings, (0, 4, 5), options)(graphdef, params, z, x, n, seed, z_labels, x_labels)


def decodings(model: Model, n: int, seed: int, z, x, z_labels, x_labels) -> tuple:
    """sample(n, seed), decode(z) and reconstruct(x) of a model, the latter two unchecked."""
    return (model.sample(n, seed, labels=z_labels), model.decode(z, labels=z_labels, check_inputs=False),
            model.reconstruct(x, labels=x_labels, check_inputs=False))


def _merged_decodings(graphdef, params, z, x, n, seed, z_labels, x_labels):
    return decodings(nnx.merge(graphdef, params), n, seed, z, x, z_labels, x_labels)


@functools.cache
def _jitted(fn, static_argnums: tuple, options: tuple):
    """One jit of fn per set of compiler options, shared by every JittedTwin: a twin of a structure compiled
    before compiles nothing again."""
    return jax.jit(fn, static_argnums=static_argnums, compiler_options=dict(options))

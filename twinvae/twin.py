"""The one interface between the application and a twin: exactly what the application calls on vae_torch
or vae_jax, stated as Protocols, and load_twin, which imports a twin by its backend name. Arrays cross it
as the twin's own (`as_input` makes them from canonical numpy, `to_numpy` turns them back)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vae_core.checkpoint import read_safetensors_header
from vae_core.config import VAEConfig
from vae_core.outputs import VAELoss

BACKENDS = ("jax", "torch")
DEFAULT_BACKEND = "jax"  # the main job's, and every command's unless --backend says otherwise


@runtime_checkable
class Model(Protocol):
    """A twin's VAE: vae_torch.VAE (NCHW) or vae_jax.VAE (NHWC)."""

    config: VAEConfig

    @property
    def dtype(self) -> Any: ...

    @property
    def forms(self) -> dict[str, str]: ...

    @property
    def memory_format(self) -> str: ...

    @property
    def compiler_options(self) -> dict[str, str]: ...

    # labels: a class-conditional model's (config.num_classes > 0) class indices, as_labels' arrays;
    # check_inputs=False: the same computation without the input checks (for data checked once)
    def __call__(self, x, eps, *, labels=None, check_inputs: bool = True) -> Any: ...  # a VAEOutput

    def encode(self, x, *, labels=None, check_inputs: bool = True) -> tuple[Any, Any]: ...

    def decode(self, z, *, labels=None, check_inputs: bool = True) -> Any: ...

    def sample(self, n: int, seed: int = 0, *, labels=None) -> Any: ...

    def prior_sample(self, n: int, seed: int = 0) -> Any: ...  # latents z ~ p(z)

    def prior_components(self) -> tuple[Any, Any] | None: ...  # the VampPrior's (mu, logvar); None: N(0, I)

    def reconstruct(self, x, *, labels=None, check_inputs: bool = True) -> Any: ...


class Distributed(Protocol):
    """A twin's distributed.py: the data-parallel engine (DistributedDataParallel; a jax.sharding mesh).
    torch's compile_train_step also takes torch.compile's mode (None: eager) after the state."""

    def initialize(self, address: str | None = None, num_processes: int | None = None,
                   process_id: int | None = None) -> tuple[int, int]: ...

    def replicate(self, state, workers: int | None = None) -> Any: ...

    def compile_train_step(self, state, *, check_inputs: bool = True) -> Any: ...

    def any_process(self, flag: bool) -> bool: ...

    def shutdown(self, wait_for_peers: bool = True) -> None: ...


class Likelihoods(Protocol):
    """A twin's likelihoods.py: each likelihood's loss per pixel (the parity harness sizes a loss's
    rounding by its terms)."""

    def pixel_losses(self, logits, x, likelihood: str, levels: int | None = None) -> Any: ...


@runtime_checkable
class Twin(Protocol):
    """A twin module, as the application uses it (the twins' full public API is larger)."""

    LAYOUT: str
    distributed: Distributed
    likelihoods: Likelihoods

    def init_model(self, config: VAEConfig, seed: int = 0, dtype=..., strided_conv: str | None = None,
                   transposed_conv: str | None = None, output_transposed_conv: str | None = None,
                   compute_dtype=None) -> Model: ...

    def load_checkpoint(self, path, dtype=None, strided_conv: str | None = None,
                        transposed_conv: str | None = None, output_transposed_conv: str | None = None,
                        compute_dtype=None) -> tuple[Model, VAEConfig, dict]: ...

    def default_forms(self, device: str | None = None) -> dict[str, str]: ...

    def save_checkpoint(self, path, model: Model, config: VAEConfig, metadata: dict | None = None) -> None: ...

    def export_weights(self, model: Model) -> dict[str, np.ndarray]: ...

    def import_weights(self, model: Model, weights: dict) -> Model: ...

    def create_train_state(self, model: Model, learning_rate: float = 1e-3, betas=(0.9, 0.999),
                           eps: float = 1e-8, free_bits: float = 0.0) -> Any: ...

    def train_step(self, state, x, eps, beta=None, *, labels=None, target=None, learning_rate=None,
                   check_inputs: bool = True) -> tuple[Any, VAELoss]: ...

    def compile_train_step(self, state, *, check_inputs: bool = True) -> Any: ...

    def export_optimizer_state(self, state) -> dict[str, np.ndarray]: ...

    def import_optimizer_state(self, state, arrays: dict) -> Any: ...

    def evaluate(self, model: Model, x, eps, labels=None) -> VAELoss: ...

    def vae_loss(self, output, x, config: VAEConfig, beta=None) -> VAELoss: ...

    def kl_divergence(self, mu, logvar) -> Any: ...

    def importance_log_weights(self, model: Model, x, eps, labels=None) -> Any: ...

    def importance_terms(self, output, x, config: VAEConfig) -> tuple[Any, Any, Any]: ...

    def log_normal(self, z, mu, logvar) -> Any: ...

    def log_prior(self, z, prior=None) -> Any: ...

    def kl_per_image(self, output) -> Any: ...

    def mean_image(self, logits, likelihood: str) -> Any: ...

    # export (vae_core/export.py): a part as a traceable function, its inputs and outputs, an artifact
    def part_function(self, model: Model, part: str) -> Any: ...

    def part_signature(self, model: Model, part: str, batch: int | None = None) -> tuple[tuple, tuple]: ...

    def export_part(self, model: Model, part: str, format: str, path, *, batch: int | None = None,
                    platform: str | None = None, metadata: dict | None = None) -> dict: ...

    def load_part(self, path, format: str) -> Any: ...

    def as_input(self, array, model: Model) -> Any: ...

    def as_labels(self, array, model: Model) -> Any: ...

    def to_numpy(self, array) -> np.ndarray: ...


def load_twin(backend: str, *, float64: bool = False) -> Twin:
    """The twin module of a backend ("jax": vae_jax, "torch": vae_torch), with its distributed engine;
    imports that framework, and only that one. float64: this process computes in float64 too (a float64
    run or checkpoint), which JAX does only with its 64-bit switch, turned on here: a command-line user
    cannot set it."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if float64 and backend == "jax":
        import jax

        if not jax.config.jax_enable_x64:  # (inside `with jax.enable_x64(True)` it is on: left as it is)
            jax.config.update("jax_enable_x64", True)
    twin = importlib.import_module(f"vae_{backend}")
    importlib.import_module(f"vae_{backend}.distributed")  # sets twin.distributed
    if not isinstance(twin, Twin):
        names = [*Twin.__annotations__, *(name for name in vars(Twin) if not name.startswith("_"))]
        missing = [name for name in names if not hasattr(twin, name)]
        raise TypeError(f"vae_{backend} does not implement twinvae.twin.Twin: missing {missing}")
    return twin


def twin_for_checkpoint(backend: str, path) -> Twin:
    """load_twin for the checkpoint at path: float64 weights (by its header, the tensors unread) turn JAX's
    64-bit switch on. A path that is no file is left to the twin's load_checkpoint, which names it."""
    path = Path(path)
    header = read_safetensors_header(path, path.read_bytes()) if path.is_file() else {}
    return load_twin(backend, float64=any(isinstance(entry, dict) and entry.get("dtype") == "F64"
                                          for key, entry in header.items() if key != "__metadata__"))


def dtype_name(model: Model) -> str:
    """'float32' or 'float64': the model's parameter dtype, by name, for either twin."""
    return str(model.dtype).removeprefix("torch.")


def check_conditional(model: Model, source: str = "this model") -> int:
    """The model's class count, refusing an unconditional model where a --label was given."""
    if not model.config.num_classes:
        raise ValueError(f"--label needs a class-conditional model; {source} is unconditional (num_classes=0)")
    return model.config.num_classes


def check_label(model: Model, label: int | None, source: str = "this model") -> int | None:
    """One class index (a --label) checked against the model: None passes; refused for an unconditional
    model and outside 0 to num_classes - 1."""
    if label is not None and not 0 <= label < check_conditional(model, source):
        raise ValueError(f"--label {label} is not a class of {source} (0 to {model.config.num_classes - 1})")
    return label


def model_labels(twin: Twin, model: Model, labels: np.ndarray | None, what: str = "the images"):
    """A class-conditional model's labels (canonical numpy, (N,)) as its twin takes them; None for an
    unconditional model, which takes none."""
    if not model.config.num_classes:
        return None
    if labels is None:
        raise ValueError(f"this model is class-conditional (num_classes={model.config.num_classes}) and "
                         f"{what} have no labels")
    return twin.as_labels(labels, model)

"""What a training run is asked to do: TrainOptions (each default stated once, here), the learning-rate and
KL schedules, and the command line's flags turned into a model and options (options_from_flags,
config_from_flags) or, for a resumed run, into what they would change (changes_on_resume): pure, but for
the --config file read and the clock that names a default run folder. The CLI only parses and prints."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping

from twinvae.data import BINARIZE, DATASET_SHAPES
from twinvae.presets import PRESETS
from twinvae.twin import BACKENDS, DEFAULT_BACKEND
from vae_core import checks, parallel
from vae_core.config import VAEConfig

LR_SCHEDULES = ("constant", "cosine")
RESUMABLE = ("epochs", "backend", "devices", "nproc")  # the options a resume may change
DEFAULT_PRESET = "seed"  # the model without --preset or --config
DEFAULT_OUT = "runs/{dataset}-{backend}-%Y%m%d-%H%M%S"  # the run folder without --out (a time.strftime format)
# VAEConfig fields the flags override
CONFIG_FLAGS = ("arch", "latent_dim", "likelihood", "beta", "num_classes", "objective", "train_samples", "prior",
                "pseudo_inputs", "hierarchy", "prior_width")
FIELD_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),)}


def _check_field_types(options: TrainOptions) -> None:
    """Each option of the type its annotation names (a run.json edited by hand, a wrong JSON type): a
    TypeError naming the option, before any comparison fails on it."""
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        allowed = tuple(t for name in field.type.split(" | ") for t in FIELD_TYPES[name])
        if not isinstance(value, allowed) or isinstance(value, bool) and bool not in allowed:
            raise TypeError(f"option {field.name} must be {field.type.replace(' | ', ' or ')}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    backend: str = DEFAULT_BACKEND
    dataset: str = "digits"
    data_dir: str | None = None
    image_size: int | None = None  # folder dataset only
    channels: int = 1  # folder dataset only
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"  # or "cosine": decays to 0 at the end of the last epoch
    lr_warmup: int = 0  # steps over which the learning rate rises linearly to lr
    kl_warmup: int = 0  # steps over which beta rises linearly from beta/kl_warmup to beta
    free_bits: float = 0.0  # nats per latent dimension in the training objective (never in evaluation)
    denoise: float = 0.0  # > 0: train a denoising VAE on inputs with Gaussian noise of this sigma
    binarize: str | None = None  # "dynamic" or "threshold": binarised data (twinvae.data.binarized)
    dtype: str = "float32"
    seed: int = 0
    out: str = "runs/train"
    compile: bool | None = None  # None: each backend's fastest here (torch eager, jax jit)
    checkpoint_every: int = 0  # also save every this many steps (0: at the end of each epoch only)
    devices: int = 1  # jax: data-parallel over this many devices of a mesh (0: all it sees)
    nproc: int = 1  # torch: data-parallel over this many DistributedDataParallel processes on this machine

    def __post_init__(self):
        _check_field_types(self)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint-every must be >= 0 steps, got {self.checkpoint_every}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr-schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_warmup < 0:
            raise ValueError(f"lr-warmup must be >= 0 steps, got {self.lr_warmup}")
        if self.kl_warmup < 0:
            raise ValueError(f"kl-warmup must be >= 0 steps, got {self.kl_warmup}")
        checks.check_free_bits(self.free_bits)
        checks.check_noise(self.denoise)
        if self.binarize is not None and self.binarize not in BINARIZE:
            raise ValueError(f"binarize must be one of {BINARIZE} (or none), got {self.binarize!r}")
        if self.dtype not in checks.PRECISIONS:
            raise ValueError(f"dtype must be one of {tuple(checks.PRECISIONS)}, got {self.dtype!r}")
        if self.devices < 0:
            raise ValueError(f"devices must be a number >= 1, or 0 for all; got {self.devices}")
        if self.nproc < 1:
            raise ValueError(f"nproc must be at least 1 (processes), got {self.nproc}")
        if self.devices != 1 and self.backend != "jax":
            raise ValueError("devices is JAX's data parallelism (one process, a mesh of devices); torch's is "
                             "nproc (one process per device), or torchrun")
        if self.nproc != 1 and self.backend != "torch":
            raise ValueError("nproc is torch's data parallelism (DistributedDataParallel processes); JAX's is "
                             "devices (a mesh in one process)")
        if self.nproc > 1:
            parallel.check_divisible_batch(self.batch_size, self.nproc, "processes")
            if self.free_bits > 0:
                raise ValueError("free bits clamp the KL's mean over the global batch per latent dimension, "
                                 "which a DistributedDataParallel process does not see: not with nproc > 1 "
                                 "(JAX's devices support it)")

    @property
    def param_dtype(self) -> str:
        """The parameters' and the data's dtype: float32 for "bfloat16" (mixed precision)."""
        return checks.PRECISIONS[self.dtype][0]

    @property
    def compute_dtype(self) -> str | None:
        return checks.PRECISIONS[self.dtype][1]


def beta_at(step: int, beta: float, warmup: int) -> float:
    """KL weight of training step `step` (0-based): linear warm-up over `warmup` steps, then beta."""
    return beta if warmup <= 0 else beta * min(1.0, (step + 1) / warmup)


def learning_rate_at(step: int, options: TrainOptions, total_steps: int) -> float:
    """Learning rate of training step `step` (0-based): a linear warm-up over options.lr_warmup steps
    (from lr/lr_warmup up to lr), then constant, or a cosine from lr down to 0 at step total_steps."""
    if step < options.lr_warmup:
        return options.lr * (step + 1) / options.lr_warmup
    if options.lr_schedule == "constant":
        return options.lr
    progress = min(1.0, (step - options.lr_warmup) / max(1, total_steps - options.lr_warmup))
    return options.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


# --- the command line's flags ---------------------------------------------------------------------------------
# `flags`: each option's value by its name (argparse's dest), None where its flag was left out.

def resumable_flags() -> str:
    """The flags a resume may change, as a message names them: "--epochs, --backend, --devices and --nproc"."""
    flags = [f"--{name}" for name in RESUMABLE]
    return f"{', '.join(flags[:-1])} and {flags[-1]}"


def _given_options(flags: Mapping) -> dict:
    """The TrainOptions fields the command line gave."""
    return {field.name: flags[field.name] for field in dataclasses.fields(TrainOptions)
            if flags.get(field.name) is not None}


def options_from_flags(flags: Mapping) -> TrainOptions:
    """TrainOptions from the flags given, over the preset's tuned options (none with --config), over
    TrainOptions' defaults; the run folder by default DEFAULT_OUT, at this moment."""
    backend = flags.get("backend") or TrainOptions.backend
    tuned = {} if flags.get("config") else PRESETS[flags.get("preset") or DEFAULT_PRESET].training
    dataset = flags.get("dataset") or TrainOptions.dataset
    out = flags.get("out") or time.strftime(DEFAULT_OUT.format(dataset=dataset, backend=backend))
    return TrainOptions(**{**tuned, **_given_options(flags), "backend": backend, "out": out})


def _image_shape(flags: Mapping, dataset: str) -> tuple[int, int, int]:
    """The images' (C, H, W): a named dataset's, or the folder dataset's from --image-size and --channels."""
    image_size, channels = flags.get("image_size"), flags.get("channels")
    if dataset == "folder":
        if image_size is None:
            raise ValueError("the folder dataset needs --image-size (the square size its images are read at)")
        if image_size < 1:
            raise ValueError(f"--image-size must be a positive number of pixels, got {image_size}")
        return (channels or TrainOptions.channels, image_size, image_size)
    for flag, value in (("--image-size", image_size), ("--channels", channels)):
        if value is not None:
            raise ValueError(f"{flag} applies to the folder dataset only; {dataset} images are "
                             f"{DATASET_SHAPES[dataset]} (C, H, W)")
    return DATASET_SHAPES[dataset]


def config_from_flags(flags: Mapping, base: VAEConfig | None = None) -> VAEConfig:
    """The model: a preset or a --config file at the dataset's image shape (or `base`, a resumed run's,
    where neither is given), with the flags' overrides (CONFIG_FLAGS)."""
    dataset = flags.get("dataset") or TrainOptions.dataset
    shape = _image_shape(flags, dataset)
    if flags.get("config"):
        path = flags["config"]
        config = VAEConfig.from_json_file(path, "--config", image_shape=shape)
        if config.image_shape != shape:
            raise ValueError(f"--config {path}: image_shape {list(config.image_shape)} does not match the "
                             f"{dataset} images {shape}")
    elif flags.get("preset") or base is None:
        config = PRESETS[flags.get("preset") or DEFAULT_PRESET].config(shape)
    else:
        config = base
    overrides = {k: flags[k] for k in CONFIG_FLAGS if flags.get(k) is not None}
    return dataclasses.replace(config, **overrides)


def changes_on_resume(config: VAEConfig, stored: TrainOptions, flags: Mapping) -> list[str]:
    """What the flags given with --resume would change in the run it continues (its record's config and
    options), beyond the RESUMABLE options: each as the flag, or the model's field, with both values. Empty
    where they change nothing else; an option given at its stored value is no change."""
    differences = [f"--{name.replace('_', '-')} {value!r} (the run has {getattr(stored, name)!r})"
                   for name, value in _given_options(flags).items()
                   if name not in (*RESUMABLE, "out") and value != getattr(stored, name)]
    if flags.get("config") or flags.get("preset") or any(flags.get(k) is not None for k in CONFIG_FLAGS):
        channels = flags.get("channels")
        as_stored = {"dataset": stored.dataset, "image_size": flags.get("image_size") or stored.image_size,
                     "channels": channels or stored.channels if stored.dataset == "folder" else channels}
        given = config_from_flags({**flags, **as_stored}, base=config)
        differences += [f"the model's {name} {getattr(given, name)!r} (the run has {getattr(config, name)!r})"
                        for name in config.to_dict() if getattr(given, name) != getattr(config, name)]
    return differences

"""The one spec both twins implement: a frozen, JSON-serialisable VAE configuration."""

from __future__ import annotations

import dataclasses
import json
import numbers
from dataclasses import dataclass
from pathlib import Path

ARCHS = ("conv", "mlp")
LIKELIHOODS = ("bernoulli", "gaussian", "continuous_bernoulli", "discretized_logistic")
OBJECTIVES = ("elbo", "iwae")  # the training objective: the ELBO, or the IWAE bound (Burda et al. 2015)
PRIORS = ("standard", "vamp")  # p(z): N(0, I), or the VampPrior (Tomczak & Welling 2018)
HIERARCHIES = (1, 2)  # stochastic layers: one latent z, or z2 above z1 (Tomczak & Welling's HVAE)
KERNEL, STRIDE, PADDING = 4, 2, 1  # every resampling conv and transposed conv of the conv architecture
RES_KERNEL = 3  # the residual blocks' convs: 3x3, stride 1, padding 1 (the size stays)
# Fields added after checkpoint format 1 came out, with the value that files written before them (format 1
# checkpoints, run records) meant: a stored config that lacks one is read with that value, not the default.
LATER_FIELDS = {"res_blocks": 0, "decoder_fc_relu": False, "levels": 256, "num_classes": 0, "objective": "elbo",
                "train_samples": 1, "prior": "standard", "pseudo_inputs": 500, "hierarchy": 1,
                "prior_width": 300}


@dataclass(frozen=True)
class VAEConfig:
    """Architecture and loss of a VAE; both backends build the same model from it.

    image_shape is (C, H, W) whatever the backend's layout. `conv_channels` are the encoder's
    channels after each stride-2 conv (the decoder runs them in reverse); `res_blocks` residual blocks
    (x + conv3x3(relu(conv3x3(relu(x))))) follow each encoder conv and precede each decoder transposed
    conv, at that resolution; `decoder_fc_relu`: a ReLU after the conv decoder's fc, before the reshape (as
    in the reference model; checkpoints of format 1 were trained without it). `mlp_widths` are the
    encoder's hidden widths (the decoder mirrors them, with a ReLU after its fc always). `num_classes`:
    0 for an unconditional VAE; else a class-conditional one, whose one-hot label enters fc_mu / fc_logvar
    beside the encoder's flattened features and the decoder's fc beside z (its columns last in each).
    `levels`: the data's grey levels, which the discretized logistic's bins are (the others ignore it).
    `objective`: "elbo", or "iwae", the importance-weighted bound of `train_samples` = K samples of z per
    image (Burda et al. 2015; K = 1 is the ELBO, and trains exactly as "elbo" does). `prior`: "standard",
    N(0, I), or "vamp", the VampPrior: the mixture of the encoder's posteriors at `pseudo_inputs` learned
    images (Tomczak & Welling 2018; the count is used only by it). `hierarchy`: 1 stochastic layer, or 2:
    a top latent z2 and a lower z1, both latent_dim wide, with p(z2) p(z1 | z2) p(x | z1, z2) and
    q(z2 | x) q(z1 | x, z2) (Tomczak & Welling's HVAE); `prior` is then z2's, and p(z1 | z2) is a Gaussian
    whose mean and log-variance an MLP of one hidden layer, `prior_width` wide, computes from z2 (the width
    is used only by it). Only the fields of the chosen `arch` are used.
    """

    image_shape: tuple[int, int, int] = (1, 28, 28)
    latent_dim: int = 20
    arch: str = "conv"
    conv_channels: tuple[int, ...] = (32, 64)
    res_blocks: int = 0
    decoder_fc_relu: bool = True
    mlp_widths: tuple[int, ...] = (400,)
    num_classes: int = 0
    likelihood: str = "bernoulli"
    levels: int = 256
    beta: float = 1.0
    objective: str = "elbo"
    train_samples: int = 1
    prior: str = "standard"
    pseudo_inputs: int = 500
    hierarchy: int = 1
    prior_width: int = 300

    def __post_init__(self):
        # Normalise lists (from JSON) to tuples and numpy scalars to Python numbers, so configs hash,
        # compare and serialise by value.
        for name in ("image_shape", "conv_channels", "mlp_widths"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(_plain(v) for v in value))
        for name in ("latent_dim", "res_blocks", "num_classes", "levels", "beta", "train_samples",
                     "pseudo_inputs", "hierarchy", "prior_width"):
            object.__setattr__(self, name, _plain(getattr(self, name)))
        _validate(self)

    # Derived sizes, shared by both twins and the weight table.
    @property
    def num_pixels(self) -> int:
        c, h, w = self.image_shape
        return c * h * w

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the decoder's logits: the image's, but 2C channels for the discretized logistic
        (the first C its means, the next C its log-scales)."""
        c, h, w = self.image_shape
        return (2 * c if self.likelihood == "discretized_logistic" else c, h, w)

    @property
    def output_size(self) -> int:
        c, h, w = self.output_shape
        return c * h * w

    @property
    def importance_weighted(self) -> bool:
        """Whether training takes the IWAE bound of K > 1 samples per image, with eps (K, N, latent); else
        the ELBO (K = 1: objective "elbo", or "iwae" with one sample), with eps (N, latent)."""
        return self.objective == "iwae" and self.train_samples > 1

    @property
    def noise_dim(self) -> int:
        """The width of the reparameterisation noise eps per sample: latent_dim per stochastic layer (a
        two-level model's eps[..., :latent_dim] draws z2, eps[..., latent_dim:] z1)."""
        return self.latent_dim * self.hierarchy

    @property
    def total_stride(self) -> int:
        return STRIDE ** len(self.conv_channels) if self.arch == "conv" else 1

    @property
    def bottleneck_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the conv encoder's last feature map (what fc_mu reads, decoder.fc writes)."""
        _, h, w = self.image_shape
        s = self.total_stride
        return (self.conv_channels[-1], h // s, w // s)

    @property
    def bottleneck_size(self) -> int:
        if self.arch == "mlp":
            return self.mlp_widths[-1]
        c, h, w = self.bottleneck_shape
        return c * h * w

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict, complete: bool = False) -> VAEConfig:
        """From a dict such as to_dict() gives; missing fields take their defaults unless `complete` (a
        stored config, which must name every field but LATER_FIELDS, so that a default never stands in
        for a lost one; those it lacks take the value they had before they existed)."""
        if not isinstance(data, dict):
            raise ValueError(f"VAEConfig: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"VAEConfig: unknown field(s) {unknown}; known fields are {sorted(known)}")
        missing = sorted(known - set(data) - set(LATER_FIELDS))
        if complete and missing:
            raise ValueError(f"VAEConfig: missing field(s) {missing}")
        return cls(**({**LATER_FIELDS, **data} if complete else data))

    @classmethod
    def from_json(cls, text: str, complete: bool = False) -> VAEConfig:
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"VAEConfig: not valid JSON ({err})") from None
        return cls.from_dict(data, complete)

    @classmethod
    def from_json_file(cls, path, label: str = "config file", **defaults) -> VAEConfig:
        """A VAEConfig from a JSON file of its fields, the one reader of every config file. Fields the file
        leaves out take `defaults` (a dataset's image_shape), else VAEConfig's. A ValueError names the file
        as `label` PATH (label: how the command names it, e.g. "--config") and what is wrong with it: it
        cannot be read, is not JSON, holds no JSON object, or has unknown or invalid fields."""
        try:
            raw = Path(path).read_bytes()
        except OSError as err:
            raise ValueError(f"cannot read {label} {path}: {err.strerror}") from None
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{label} {path} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{label} {path} must hold a JSON object of VAEConfig fields, not a "
                             f"{type(data).__name__}")
        try:
            return cls.from_dict({**defaults, **data})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{label} {path}: {err}") from None


def check_bound_terms(config: VAEConfig, *, beta=None, free_bits: float = 0.0, kl_warmup: int = 0) -> None:
    """The IWAE bound of K > 1 samples (config.importance_weighted) has no KL term to weigh, warm up or
    clamp: beta other than 1 (None: config.beta), free bits or a KL warm-up with it are refused, naming the
    conflict. The VampPrior's KL is an estimate at the drawn z, with no per-dimension terms for free bits to
    clamp. The same message wherever one is asked for: the config, a train state, a step, a run."""
    if config.prior == "vamp" and free_bits:
        raise ValueError(f"free bits = {free_bits!r} conflicts with prior='vamp': the VampPrior's KL is estimated "
                         "at the drawn z, log q(z|x) - log p(z), with no per-dimension terms to clamp; train "
                         "with the standard prior or without free bits")
    if not config.importance_weighted:
        return
    beta = config.beta if beta is None else beta
    for name, value, neutral in (("beta", beta, 1), ("free bits", free_bits, 0), ("a KL warm-up (kl_warmup)",
                                                                                 kl_warmup, 0)):
        if value != neutral:
            raise ValueError(f"{name} = {value!r} conflicts with objective='iwae' and train_samples="
                             f"{config.train_samples}: the IWAE bound has no KL term to weigh, warm up or clamp "
                             "(it takes beta 1, no free bits, no KL warm-up); train with objective 'elbo' or "
                             "drop it")


def _plain(value):
    """numpy integers and floats -> int and float; anything else unchanged (validation judges it)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, int)):
        return float(value)
    return value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_ints(name: str, value, length: int | None = None) -> None:
    if not isinstance(value, tuple) or not value:
        raise ValueError(f"VAEConfig.{name} must be a non-empty tuple of positive ints, got {value!r}")
    if length is not None and len(value) != length:
        raise ValueError(f"VAEConfig.{name} must have {length} entries, got {value!r}")
    for v in value:
        if not _is_int(v) or v <= 0:
            raise ValueError(f"VAEConfig.{name} must hold positive ints, got {value!r}")


def _validate(cfg: VAEConfig) -> None:
    _positive_ints("image_shape", cfg.image_shape, length=3)
    if not _is_int(cfg.latent_dim) or cfg.latent_dim <= 0:
        raise ValueError(f"VAEConfig.latent_dim must be a positive int, got {cfg.latent_dim!r}")
    if not _is_int(cfg.res_blocks) or cfg.res_blocks < 0:
        raise ValueError(f"VAEConfig.res_blocks must be an int >= 0, got {cfg.res_blocks!r}")
    if not _is_int(cfg.num_classes) or cfg.num_classes < 0:
        raise ValueError(f"VAEConfig.num_classes must be an int >= 0 (0: unconditional), got {cfg.num_classes!r}")
    if not _is_int(cfg.levels) or cfg.levels < 2:
        raise ValueError(f"VAEConfig.levels must be an int >= 2 (the data's grey levels), got {cfg.levels!r}")
    if not isinstance(cfg.decoder_fc_relu, bool):
        raise ValueError(f"VAEConfig.decoder_fc_relu must be true or false, got {cfg.decoder_fc_relu!r}")
    if cfg.arch not in ARCHS:
        raise ValueError(f"VAEConfig.arch must be one of {ARCHS}, got {cfg.arch!r}")
    if cfg.likelihood not in LIKELIHOODS:
        raise ValueError(f"VAEConfig.likelihood must be one of {LIKELIHOODS}, got {cfg.likelihood!r}")
    if isinstance(cfg.beta, bool) or not isinstance(cfg.beta, (int, float)) or not cfg.beta >= 0 \
            or cfg.beta == float("inf"):
        raise ValueError(f"VAEConfig.beta must be a finite number >= 0, got {cfg.beta!r}")
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"VAEConfig.objective must be one of {OBJECTIVES}, got {cfg.objective!r}")
    if not _is_int(cfg.train_samples) or cfg.train_samples < 1:
        raise ValueError(f"VAEConfig.train_samples must be an int >= 1 (importance samples per image), got "
                         f"{cfg.train_samples!r}")
    if cfg.objective == "elbo" and cfg.train_samples != 1:
        raise ValueError(f"VAEConfig.train_samples = {cfg.train_samples} needs objective 'iwae': the ELBO is "
                         "trained on one sample per image")
    if cfg.prior not in PRIORS:
        raise ValueError(f"VAEConfig.prior must be one of {PRIORS}, got {cfg.prior!r}")
    if not _is_int(cfg.pseudo_inputs) or cfg.pseudo_inputs < 1:
        raise ValueError(f"VAEConfig.pseudo_inputs must be an int >= 1 (the VampPrior's learned images), got "
                         f"{cfg.pseudo_inputs!r}")
    if cfg.prior == "vamp" and cfg.num_classes:
        raise ValueError(f"VAEConfig.prior 'vamp' with num_classes = {cfg.num_classes} is not a model twinvae "
                         "builds: the VampPrior's components are the encoder's posteriors at its pseudo-inputs, "
                         "which a class-conditional encoder cannot take without a label; use prior 'standard'")
    if not _is_int(cfg.hierarchy) or cfg.hierarchy not in HIERARCHIES:
        raise ValueError(f"VAEConfig.hierarchy must be one of {HIERARCHIES} (stochastic layers), got "
                         f"{cfg.hierarchy!r}")
    if not _is_int(cfg.prior_width) or cfg.prior_width < 1:
        raise ValueError(f"VAEConfig.prior_width must be an int >= 1 (the hidden width of p(z1 | z2)), got "
                         f"{cfg.prior_width!r}")
    check_bound_terms(cfg)
    _positive_ints("conv_channels", cfg.conv_channels)
    _positive_ints("mlp_widths", cfg.mlp_widths)
    if cfg.arch == "conv":
        _, h, w = cfg.image_shape
        s = cfg.total_stride
        for axis, size in (("H", h), ("W", w)):
            if size % s:
                raise ValueError(
                    f"VAEConfig.image_shape: {axis}={size} is not divisible by the total stride {s} "
                    f"of {len(cfg.conv_channels)} stride-{STRIDE} convs (conv_channels={cfg.conv_channels})")

"""Input checks at the public API, shared by both twins. They see only shapes, dtype names and a few
reduced numbers, so they never import a framework; the twins skip the value checks while tracing."""

from __future__ import annotations

import numbers

LAYOUT_AXES = {"NCHW": (0, 1, 2), "NHWC": (1, 2, 0)}  # positions of C, H, W in the per-image shape


def image_shape_in(layout: str, chw: tuple[int, int, int]) -> tuple[int, int, int]:
    c, h, w = chw
    return (c, h, w) if layout == "NCHW" else (h, w, c)


def check_image_batch(name: str, shape: tuple[int, ...], dtype: str, chw: tuple[int, int, int],
                      layout: str, model_dtype: str) -> None:
    """x must be (N, *image) in the backend's layout, N >= 1, with the model's float dtype."""
    expected = image_shape_in(layout, chw)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or shape[1:] != expected or shape[0] < 1:
        hint = ""
        other = "NHWC" if layout == "NCHW" else "NCHW"
        if len(shape) == 4 and shape[1:] == image_shape_in(other, chw) and expected != shape[1:]:
            hint = f" (it looks like {other}; this backend takes {layout})"
        elif len(shape) == 3 and shape == expected:
            hint = " (add a batch dimension)"
        raise ValueError(f"{name} has shape {shape}, expected (N, {', '.join(map(str, expected))}) in "
                         f"{layout} layout with N >= 1{hint}")
    check_dtype(name, dtype, model_dtype)


def check_latent_batch(name: str, shape: tuple[int, ...], dtype: str, latent_dim: int, model_dtype: str,
                       batch_size: int | None = None, samples: bool = False) -> None:
    """z or eps must be (N, latent_dim), with N equal to the image batch where there is one; with
    `samples` (eps of the forward pass) also (K, N, latent_dim), K draws per image. latent_dim: the width
    (eps: the config's noise_dim)."""
    shape = tuple(int(s) for s in shape)
    n = "N" if batch_size is None else str(batch_size)
    rows = shape[-2:-1] if len(shape) in ((2, 3) if samples else (2,)) else ()
    if not rows or shape[-1] != latent_dim or min(shape) < 1 or (
            batch_size is not None and rows[0] != batch_size):
        expected = f"({n}, {latent_dim})" + (f" or (K, {n}, {latent_dim})" if samples else "")
        raise ValueError(f"{name} has shape {shape}, expected {expected}")
    check_dtype(name, dtype, model_dtype)


def check_train_samples(name: str, shape: tuple[int, ...], train_samples: int) -> None:
    """A training step's eps (or its forward pass's z) holds the config's train_samples draws per image:
    (N, noise_dim) for one, (K, N, noise_dim) for K > 1 (vae_core.seeds.eps_for_step draws either; noise_dim
    is latent_dim per stochastic layer, the forward pass's z latent_dim wide)."""
    shape = tuple(int(s) for s in shape)
    given = shape[0] if len(shape) == 3 else 1
    if given != train_samples or (train_samples == 1 and len(shape) != 2):
        expected = "(N, noise_dim)" if train_samples == 1 else f"({train_samples}, N, noise_dim)"
        raise ValueError(f"{name} has shape {shape}, but the model trains on train_samples={train_samples} "
                         f"sample(s) of z per image: expected {expected}")


def check_labels_given(given: bool, num_classes: int) -> None:
    """labels= is required exactly when the model is class-conditional (num_classes > 0)."""
    if num_classes and not given:
        raise ValueError(f"this model is class-conditional (num_classes={num_classes}): pass labels=, the "
                         "class index of each image or latent")
    if given and not num_classes:
        raise ValueError("labels= was given, but this model is unconditional (num_classes=0)")


def check_label_batch(name: str, shape: tuple[int, ...], dtype: str, batch_size: int) -> None:
    """Class labels must be integer indices, shape (N,) with N the batch's."""
    shape = tuple(int(s) for s in shape)
    if shape != (batch_size,):
        raise ValueError(f"{name} has shape {shape}, expected ({batch_size},): one class index per image")
    if not (dtype.startswith("int") or dtype.startswith("uint")):
        raise TypeError(f"{name} has dtype {dtype}; class labels are integer indices (int64 or int32)")


def check_label_values(name: str, low: int, high: int, num_classes: int) -> None:
    if low < 0 or high >= num_classes:
        raise ValueError(f"{name} has values in [{low}, {high}], expected class indices in [0, "
                         f"{num_classes - 1}] (num_classes={num_classes})")


def check_same_shape(name: str, shape: tuple[int, ...], other: str, other_shape: tuple[int, ...]) -> None:
    shape, other_shape = tuple(int(s) for s in shape), tuple(int(s) for s in other_shape)
    if shape != other_shape:
        raise ValueError(f"{name} has shape {shape} but {other} has {other_shape}; they must match")


def check_dtype(name: str, dtype: str, model_dtype: str) -> None:
    if dtype != model_dtype:
        raise TypeError(f"{name} has dtype {dtype} but the model computes in {model_dtype}; "
                        f"convert {name} (or the model) so they match")


def check_values(name: str, finite: bool, low: float, high: float, bounds: tuple[float, float] | None) -> None:
    """No NaN or inf; if `bounds` is given, every value inside it (images must lie in [0, 1])."""
    if not finite:
        raise ValueError(f"{name} contains NaN or inf")
    if bounds is not None and (low < bounds[0] or high > bounds[1]):
        raise ValueError(f"{name} has values in [{low:g}, {high:g}], expected them in "
                         f"[{bounds[0]:g}, {bounds[1]:g}] (scale images to [0, 1])")


def check_count(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{name} must be a positive int, got {n!r}")
    return int(n)


# The dtypes of a 0-d array (numpy, torch without its "torch." prefix, JAX) that stands for a real number.
REAL_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64",
                         "uint8", "uint16", "uint32", "uint64"})


def _as_real(value) -> float | None:
    """value as a float if it is a real number: a Python or numpy int or float (not a bool), or a 0-d array
    or tensor of a REAL_DTYPES dtype (duck-typed: vae_core imports no framework; the compiled steps pass
    beta as one); None for anything else (a str, bool, None, list, array of more dimensions)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    dtype = str(getattr(value, "dtype", "")).removeprefix("torch.")
    return float(value) if getattr(value, "shape", None) == () and dtype in REAL_DTYPES else None


def _finite_non_negative(value, what: str) -> float:
    number = _as_real(value)
    if number is None or not 0 <= number < float("inf"):
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return number


def check_noise(value) -> float:
    """Denoising noise level: the standard deviation of Gaussian pixel noise, a finite number >= 0."""
    return _finite_non_negative(value, "the noise level (sigma)")


def check_learning_rate(value) -> float:
    """A learning rate: a finite number >= 0 (a schedule may reach 0 at its very end)."""
    return _finite_non_negative(value, "learning rate")


def check_beta(value) -> float:
    """A step's KL weight: a finite number >= 0 (a warm-up starts near 0)."""
    return _finite_non_negative(value, "beta")


def check_free_bits(value) -> float:
    """Free bits: nats per latent dimension, a finite number >= 0."""
    return _finite_non_negative(value, "free_bits")


def check_adam(learning_rate, betas, eps) -> tuple[float, tuple[float, float], float]:
    """Adam's hyperparameters, checked alike in both twins (torch.optim.Adam checks its own, optax none and
    trains to NaN): learning rate and eps finite numbers >= 0, betas a pair of numbers in [0, 1).
    Returns them as floats."""
    rate = check_learning_rate(learning_rate)
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
    for i, beta in enumerate(betas):
        number = _as_real(beta)
        if number is None or not 0 <= number < 1:
            raise ValueError(f"betas[{i}] must be a number in [0, 1), got {beta!r}")
    return rate, (float(betas[0]), float(betas[1])), _finite_non_negative(eps, "eps")


COMPUTE_DTYPES = ("bfloat16",)  # mixed precision: the layers compute in this, parameters stay float32
# A precision by name -> (the parameters' and data's dtype, compute_dtype), as the trainer, the benchmark
# harness and the parity suite name them: "bfloat16" is mixed precision.
PRECISIONS = {"float32": ("float32", None), "float64": ("float64", None), "bfloat16": ("float32", "bfloat16")}


def check_compute_dtype(value: str | None, param_dtype: str) -> str | None:
    """The dtype a twin's layers compute in, by name: None (or the parameters' own dtype) is plain
    precision; "bfloat16" is mixed precision, which needs float32 parameters (the optimizer's update of a
    bf16 parameter would round away most steps)."""
    if value is None or value == param_dtype:
        return None
    if value not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be None, the parameters' dtype or one of {COMPUTE_DTYPES}, "
                         f"got {value!r}")
    if param_dtype != "float32":
        raise ValueError(f"compute_dtype={value!r} needs float32 parameters, got {param_dtype}")
    return value


"""The torch twin's input checks: what vae_core/checks.py needs to see of a tensor (its type, device, shape,
dtype name, range) and the checks of a model's images, latents and labels, which its public methods run
before computing; each returns its input. Mirrors vae_jax/checks.py."""

from __future__ import annotations

import torch

from vae_core import checks


def float_dtype(dtype) -> torch.dtype:
    """torch.float32, 'float32' or np.float32 -> torch.float32; anything but a float dtype is an error."""
    if not isinstance(dtype, torch.dtype):
        name = getattr(dtype, "__name__", None) or str(getattr(dtype, "name", dtype))
        dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype such as torch.float32 or 'float64', got {dtype!r}")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """A dtype's name as vae_core's checks compare them: torch.float32 -> 'float32'."""
    return str(dtype).removeprefix("torch.")


def as_array(name, x) -> tuple[torch.Tensor, str]:
    """(x, its dtype's name) for a torch.Tensor x; anything else is a TypeError naming `name`."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x, dtype_name(x.dtype)


def check_values(name, x, bounds):
    """NaN/inf and range checks; skipped if torch.compile traces a public method, so compiled code never
    holds a check (and never syncs the device for one)."""
    if torch.compiler.is_compiling():
        return
    with torch.no_grad():
        low, high = torch.aminmax(x.detach())
        finite = bool(torch.isfinite(low) & torch.isfinite(high))
    checks.check_values(name, finite, float(low), float(high), bounds)


# A model's inputs (`model`: a vae_torch.VAE). labels: a class-conditional model's class indices.
def check_labels(model, labels, batch_size):
    checks.check_labels_given(labels is not None, model.config.num_classes)
    if labels is None:
        return None
    dtype = _on_device("labels", labels, model)
    checks.check_label_batch("labels", tuple(labels.shape), dtype, batch_size)
    if not torch.compiler.is_compiling():
        low, high = torch.aminmax(labels)
        checks.check_label_values("labels", int(low), int(high), model.config.num_classes)
    return labels


def check_images(model, name, x):
    dtype = _on_device(name, x, model)
    checks.check_image_batch(name, tuple(x.shape), dtype, model.config.image_shape, "NCHW",
                             dtype_name(model.dtype))
    check_values(name, x, bounds=(0.0, 1.0))
    return x


def check_latents(model, name, z, batch_size=None, samples=False):
    # eps of the forward pass (samples) is noise_dim wide (both levels' noise); a latent z is latent_dim wide
    width = model.config.noise_dim if samples else model.config.latent_dim
    dtype = _on_device(name, z, model)
    checks.check_latent_batch(name, tuple(z.shape), dtype, width, dtype_name(model.dtype),
                              batch_size, samples)
    check_values(name, z, bounds=None)
    return z


def _on_device(name, x, model) -> str:
    """The dtype name of x, a tensor on the model's device."""
    x, dtype = as_array(name, x)
    device = model.fc_mu.weight.device
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but the model is on {device}")
    return dtype

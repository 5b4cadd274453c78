"""The JAX twin's input checks: what vae_core/checks.py needs to see of an array (its type, shape, dtype
name, range) and the checks of a model's images, latents and labels, which its public methods run before
computing; each returns its input as a jax.Array. Mirrors vae_torch/checks.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vae_core import checks

# How a float64 model or checkpoint gets the 64-bit JAX it needs, for the errors that ask for it.
ENABLE_X64 = ("JAX_ENABLE_X64=1 in the environment, or in code jax.config.update('jax_enable_x64', True) or "
              "`with jax.enable_x64(True):`")
X64_CLI = "with the twinvae command, --backend torch"


def float_dtype(dtype) -> jnp.dtype:
    """jnp.float32, 'float32' or np.float32 -> float32; anything but a float dtype is an error."""
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating-point dtype such as jnp.float32 or 'float64', got {dtype!r}")
    return dtype


def dtype_name(dtype) -> str:
    """A dtype's name as vae_core's checks compare them: jnp.float32 -> 'float32'."""
    return str(jnp.dtype(dtype))


def as_array(name, x) -> tuple[jax.Array, str]:
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


# A model's inputs (`model`: a vae_jax.VAE). labels: a class-conditional model's class indices.
def check_labels(model, labels, batch_size):
    checks.check_labels_given(labels is not None, model.config.num_classes)
    if labels is None:
        return None
    labels, dtype = as_array("labels", labels)
    checks.check_label_batch("labels", labels.shape, dtype, batch_size)
    if not isinstance(labels, jax.core.Tracer):
        low, high = (int(v) for v in _min_max(labels))
        checks.check_label_values("labels", low, high, model.config.num_classes)
    return labels


def check_images(model, name, x):
    x, dtype = as_array(name, x)
    checks.check_image_batch(name, x.shape, dtype, model.config.image_shape, "NHWC", dtype_name(model.dtype))
    check_values(name, x, bounds=(0.0, 1.0))
    return x


def check_latents(model, name, z, batch_size=None, samples=False):
    # eps of the forward pass (samples) is noise_dim wide (both levels' noise); a latent z is latent_dim wide
    width = model.config.noise_dim if samples else model.config.latent_dim
    z, dtype = as_array(name, z)
    checks.check_latent_batch(name, z.shape, dtype, width, dtype_name(model.dtype),
                              batch_size, samples)
    check_values(name, z, bounds=None)
    return z

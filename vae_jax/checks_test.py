import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_core.config import VAEConfig
from vae_jax import checks

pytestmark = pytest.mark.fast

CONFIG = VAEConfig(image_shape=(1, 8, 12), conv_channels=(4, 8), latent_dim=3)


def test_float_dtype_takes_jax_numpy_and_names_and_refuses_the_rest():
    assert checks.float_dtype(jnp.float32) == checks.float_dtype(np.float32) == checks.float_dtype("float32")
    with pytest.raises(TypeError, match="dtype must be a floating-point dtype"):
        checks.float_dtype("int32")
    assert checks.dtype_name(jnp.bfloat16) == "bfloat16"


def test_a_float64_numpy_input_keeps_its_dtype_to_the_check():
    """jnp.asarray would make it float32 with 64-bit JAX off, and the dtype check would pass it."""
    assert not jax.config.jax_enable_x64
    assert checks.as_array("x", np.zeros(2))[1] == "float64"
    model = vae_jax.init_model(CONFIG)
    with pytest.raises(TypeError, match="x has dtype float64 but the model computes in float32"):
        model.encode(np.zeros((2, 8, 12, 1)))


def test_the_checks_return_jax_arrays():
    model = vae_jax.init_model(CONFIG)
    images, noise = np.full((2, 8, 12, 1), 0.5, np.float32), np.zeros((2, 3), np.float32)
    x, eps, target, labels = model.check_batch(images, noise)
    assert isinstance(x, jax.Array) and isinstance(eps, jax.Array) and target is None and labels is None

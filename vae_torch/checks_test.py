import numpy as np
import pytest
import torch

import vae_torch
from vae_core.config import VAEConfig
from vae_torch import checks

pytestmark = pytest.mark.fast

CONFIG = VAEConfig(image_shape=(1, 8, 12), conv_channels=(4, 8), latent_dim=3)


def test_float_dtype_takes_torch_numpy_and_names_and_refuses_the_rest():
    assert checks.float_dtype(torch.float64) is torch.float64
    assert checks.float_dtype(np.float32) is checks.float_dtype("float32") is torch.float32
    with pytest.raises(TypeError, match="dtype must be a floating-point dtype"):
        checks.float_dtype("int32")
    assert checks.dtype_name(torch.bfloat16) == "bfloat16"


def test_an_input_on_another_device_is_named():
    model = vae_torch.init_model(CONFIG)
    with pytest.raises(ValueError, match="x is on meta but the model is on cpu"):
        model.encode(torch.zeros(2, 1, 8, 12, device="meta"))
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got ndarray"):
        model.encode(np.zeros((2, 1, 8, 12), np.float32))


def test_the_checks_return_their_input():
    model = vae_torch.init_model(CONFIG)
    x, eps = torch.rand(2, 1, 8, 12), torch.zeros(2, 3)
    assert model.check_batch(x, eps) == (x, eps, None, None)

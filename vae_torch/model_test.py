import numpy as np
import torch

import vae_torch
from vae_core.config import VAEConfig

CONFIG = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4, 8), latent_dim=2, num_classes=3)


def test_the_methods_that_return_images_build_no_graph_and_the_others_keep_autograd():
    """sample and reconstruct run under no_grad (nothing is kept for a backward pass over pictures);
    encode, decode and forward stay differentiable, for a user's gradients through the model."""
    model = vae_torch.init_model(CONFIG, 0)
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.random((3, 1, 8, 8), dtype=np.float32))
    z = torch.as_tensor(rng.standard_normal((3, 2)).astype(np.float32))
    labels = torch.tensor([0, 1, 2])
    assert not model.sample(3, labels=labels).requires_grad
    assert not model.reconstruct(x, labels=labels).requires_grad
    assert model.decode(z, labels=labels).requires_grad and model.encode(x, labels=labels)[0].requires_grad
    assert model(x, z, labels=labels).logits.requires_grad
    expected = vae_torch.likelihoods.mean_image(model._decode(model._encode(x, labels)[0], labels), "bernoulli")
    torch.testing.assert_close(model.reconstruct(x, labels=labels), expected.detach())

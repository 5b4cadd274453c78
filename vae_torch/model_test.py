import numpy as np
import pytest
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
    mu = model.encode(x, labels=labels, check_inputs=False)[0]
    expected = vae_torch.likelihoods.mean_image(model.decode(mu, labels=labels, check_inputs=False), "bernoulli")
    torch.testing.assert_close(model.reconstruct(x, labels=labels), expected.detach())


@pytest.mark.fast
def test_check_inputs_false_computes_the_same_and_skips_the_checks():
    """Each method with check_inputs=False returns exactly what the checked call does on valid input, and
    refuses nothing: images out of [0, 1] (which the checks refuse) still encode, decode and reconstruct."""
    model = vae_torch.init_model(CONFIG, 0)
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.random((3, 1, 8, 8), dtype=np.float32))
    eps = torch.as_tensor(rng.standard_normal((3, 2)).astype(np.float32))
    labels = torch.tensor([0, 1, 2])
    checked = {"encode": model.encode(x, labels=labels), "decode": model.decode(eps, labels=labels),
               "forward": model(x, eps, labels=labels), "reconstruct": model.reconstruct(x, labels=labels)}
    unchecked = {"encode": model.encode(x, labels=labels, check_inputs=False),
                 "decode": model.decode(eps, labels=labels, check_inputs=False),
                 "forward": model(x, eps, labels=labels, check_inputs=False),
                 "reconstruct": model.reconstruct(x, labels=labels, check_inputs=False)}
    for name in checked:
        for a, b in zip(*(_tensors(out[name]) for out in (checked, unchecked)), strict=True):
            assert torch.equal(a, b), name
    wrong_range = x * 255
    with pytest.raises(ValueError, match=r"expected them in \[0, 1\]"):
        model.reconstruct(wrong_range, labels=labels)
    model.encode(wrong_range, labels=labels, check_inputs=False)
    model(wrong_range, eps, labels=labels, check_inputs=False)
    assert model.reconstruct(wrong_range, labels=labels, check_inputs=False).shape == x.shape
    model.decode(torch.full((3, 2), float("nan")), labels=labels, check_inputs=False)  # NaN latents: unchecked


def _tensors(output) -> tuple:
    # (mu, logvar), a VAEOutput (without the standard prior's None components), or one
    return tuple(t for t in output if t is not None) if isinstance(output, tuple) else (output,)

"""The twins have the same file names and the same public names and signatures, so they cannot drift
apart. The only differences are listed here, each with its reason."""

import inspect
from pathlib import Path

import vae_jax
import vae_torch

# (name, parameter) pairs that exist in one twin only, by each ecosystem's convention.
ALLOWED = {
    ("VAE.__init__", "rngs"): "Flax NNX modules take their RNG streams at construction",
    ("compile_train_step", "mode"): "torch.compile's mode; jax.jit has none",
}


def _params(obj):
    return [p for p in inspect.signature(obj).parameters if p != "self"]


def _compare(name, torch_obj, jax_obj):
    torch_params = [p for p in _params(torch_obj) if (name, p) not in ALLOWED]
    jax_params = [p for p in _params(jax_obj) if (name, p) not in ALLOWED]
    assert torch_params == jax_params, (name, torch_params, jax_params)


def test_same_files():
    def names(pkg):
        return sorted(p.name for p in Path(pkg.__file__).parent.glob("*.py"))

    assert names(vae_torch) == names(vae_jax)


def test_same_public_names():
    assert vae_torch.__all__ == vae_jax.__all__
    assert vae_torch.LAYOUT == "NCHW" and vae_jax.LAYOUT == "NHWC"


def test_same_signatures():
    for name in vae_torch.__all__:
        torch_obj, jax_obj = getattr(vae_torch, name), getattr(vae_jax, name)
        if inspect.isfunction(torch_obj):
            _compare(name, torch_obj, jax_obj)
    _compare("VAE.__init__", vae_torch.VAE.__init__, vae_jax.VAE.__init__)
    _compare("VAE.__call__", vae_torch.VAE.forward, vae_jax.VAE.__call__)
    for method in ("encode", "decode", "sample", "reconstruct"):
        _compare(f"VAE.{method}", getattr(vae_torch.VAE, method), getattr(vae_jax.VAE, method))


def test_same_module_attributes():
    config = vae_torch.VAEConfig(image_shape=(1, 8, 8), conv_channels=(4,), latent_dim=2)
    torch_model, jax_model = vae_torch.init_model(config), vae_jax.init_model(config)
    for attr in ("encoder", "fc_mu", "fc_logvar", "decoder", "config", "dtype"):
        assert hasattr(torch_model, attr) and hasattr(jax_model, attr), attr
    assert hasattr(torch_model.encoder, "convs") and hasattr(jax_model.encoder, "convs")
    assert hasattr(torch_model.decoder, "deconvs") and hasattr(jax_model.decoder, "deconvs")


def test_allowed_differences_are_real():
    # A stale entry in ALLOWED would hide a drift: each must name a parameter one twin really has.
    objects = {"VAE.__init__": (vae_torch.VAE.__init__, vae_jax.VAE.__init__),
               "compile_train_step": (vae_torch.compile_train_step, vae_jax.compile_train_step)}
    for name, param in ALLOWED:
        in_torch, in_jax = (param in _params(obj) for obj in objects[name])
        assert in_torch != in_jax, (name, param)

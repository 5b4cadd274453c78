"""The twins have the same file names, the same public names in each file and the same signatures, so
they cannot drift apart. The only differences are listed here, each with its reason."""

import importlib
import inspect
from pathlib import Path

import vae_jax
import vae_jax.distributed
import vae_torch
import vae_torch.distributed

# The twins' modules; each twin's unit tests beside them (*_test.py) test its own idiom, and are not mirrored.
FILES = sorted(p.stem for p in Path(vae_torch.__file__).parent.glob("*.py")
               if p.stem != "__init__" and not p.stem.endswith("_test"))

# Parameters that exist in one twin only, by each ecosystem's convention.
ALLOWED = {
    ("VAE.__init__", "rngs"): "Flax NNX modules take their RNG streams at construction",
    ("compile_train_step", "mode"): "torch.compile's mode; jax.jit has none",
    ("compile_train_step", "compiler_options"): "XLA's options, for an ahead-of-time compile elsewhere",
    ("conv_transpose_subpixel", "weight"): "each twin takes its own layer's parameter: torch's weight ...",
    ("conv_transpose_subpixel", "kernel"): "... and Flax's kernel, in their own layouts",
    ("conv_transpose_col2im", "weight"): "the same for the output layer's form: torch's weight ...",
    ("conv_transpose_col2im", "kernel"): "... and Flax's kernel",
    ("conv_space_to_depth", "weight"): "the same for the encoder's convs: torch's weight ...",
    ("conv_space_to_depth", "kernel"): "... and Flax's kernel",
    ("initialize", "backend"): "torch chooses its collective library (gloo, NCCL); XLA has its own",
}
# Classes whose constructors differ by design: NNX layers take dtype/rngs; TrainState holds a torch
# optimizer in one twin and optax state (a pytree) in the other. Their public methods are still compared.
CONSTRUCTORS_DIFFER = {"ConvEncoder", "ConvDecoder", "ResBlock", "MLPEncoder", "MLPDecoder", "TrainState"}


def _params(obj):
    return [(p.name, p.kind) for p in inspect.signature(obj).parameters.values() if p.name != "self"]


def _compare(name, torch_obj, jax_obj):
    torch_params = [p for p in _params(torch_obj) if (name, p[0]) not in ALLOWED]
    jax_params = [p for p in _params(jax_obj) if (name, p[0]) not in ALLOWED]
    assert torch_params == jax_params, (name, torch_params, jax_params)


def _public(module):
    return {name: obj for name, obj in vars(module).items() if not name.startswith("_")
            and (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__}


def test_same_files():
    def names(pkg):
        return sorted(p.name for p in Path(pkg.__file__).parent.glob("*.py") if not p.stem.endswith("_test"))

    assert names(vae_torch) == names(vae_jax)


def test_same_public_names_file_by_file():
    assert vae_torch.__all__ == vae_jax.__all__
    assert vae_torch.LAYOUT == "NCHW" and vae_jax.LAYOUT == "NHWC"
    for file in FILES:
        torch_module = importlib.import_module(f"vae_torch.{file}")
        jax_module = importlib.import_module(f"vae_jax.{file}")
        assert sorted(_public(torch_module)) == sorted(_public(jax_module)), file


def test_same_signatures_file_by_file():
    for file in FILES:
        torch_public = _public(importlib.import_module(f"vae_torch.{file}"))
        jax_public = _public(importlib.import_module(f"vae_jax.{file}"))
        for name, torch_obj in torch_public.items():
            jax_obj = jax_public[name]
            if inspect.isfunction(torch_obj):
                _compare(name, torch_obj, jax_obj)
            elif name not in CONSTRUCTORS_DIFFER:
                _compare(f"{name}.__init__", torch_obj.__init__, jax_obj.__init__)
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
    torch_state, jax_state = vae_torch.create_train_state(torch_model), vae_jax.create_train_state(jax_model)
    assert isinstance(torch_state.model, vae_torch.VAE) and isinstance(jax_state.model, vae_jax.VAE)
    assert int(torch_state.step) == int(jax_state.step) == 0


def test_allowed_differences_are_real():
    # A stale entry in ALLOWED would hide a drift: each must name a parameter one twin really has.
    objects = {"VAE.__init__": (vae_torch.VAE.__init__, vae_jax.VAE.__init__),
               "compile_train_step": (vae_torch.compile_train_step, vae_jax.compile_train_step),
               "conv_transpose_subpixel": (vae_torch.model.conv_transpose_subpixel,
                                           vae_jax.model.conv_transpose_subpixel),
               "conv_transpose_col2im": (vae_torch.model.conv_transpose_col2im,
                                         vae_jax.model.conv_transpose_col2im),
               "conv_space_to_depth": (vae_torch.model.conv_space_to_depth, vae_jax.model.conv_space_to_depth),
               "initialize": (vae_torch.distributed.initialize, vae_jax.distributed.initialize)}
    for name, param in ALLOWED:
        in_torch, in_jax = (param in dict(_params(obj)) for obj in objects[name])
        assert in_torch != in_jax, (name, param)

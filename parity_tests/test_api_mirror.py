"""The twins have the same file names, the same public names in each file and the same signatures, and
build the same model (the same layers in the same order, config, parameters and dtype), so they cannot
drift apart. The only differences are listed here, each with its reason."""

import importlib
import inspect
from pathlib import Path

import numpy as np

import vae_jax
import vae_jax.distributed
import vae_torch
import vae_torch.distributed
from vae_core.forms import FORMS

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
# Public names that exist in one twin only, (file, name): each engine's own machinery.
ONE_TWIN_ONLY = {
    ("forms", "jit_for"): "JAX: the cached jax.jit with the model's XLA options that its methods, evaluate and "
                          "importance_log_weights share; torch computes eagerly, torch.compile has no options",
    ("forms", "jitted"): "JAX: that cache itself (one jit per function and options), also compile_train_step's "
                         "and cleared by the parity tests' fresh_traces fixture",
    ("train", "adam_transform"): "JAX: one optax transform per hyperparameters, a static field compared by "
                                 "identity, so states made alike share a compiled step; torch's Adam is an object",
    ("train", "move_train_state"): "torch: the model and fused Adam's state moved to another device in place "
                                   "(distributed.replicate, NCCL); JAX places arrays with jax.device_put",
}
# Classes whose constructors differ by design: NNX layers take dtype/rngs; TrainState holds a torch
# optimizer in one twin and optax state (a pytree) in the other. Their public methods are still compared.
CONSTRUCTORS_DIFFER = {"ConvEncoder", "ConvDecoder", "ResBlock", "MLPEncoder", "MLPDecoder", "LowerPrior",
                       "TrainState"}


def _params(obj):
    return [(p.name, p.kind) for p in inspect.signature(obj).parameters.values() if p.name != "self"]


def _compare(name, torch_obj, jax_obj):
    torch_params = [p for p in _params(torch_obj) if (name, p[0]) not in ALLOWED]
    jax_params = [p for p in _params(jax_obj) if (name, p[0]) not in ALLOWED]
    assert torch_params == jax_params, (name, torch_params, jax_params)


def _public(module):
    return {name: obj for name, obj in vars(module).items() if not name.startswith("_")
            and (inspect.isfunction(inspect.unwrap(obj)) or inspect.isclass(obj))  # functools.cache's too
            and obj.__module__ == module.__name__}


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
        names = [sorted(name for name in _public(module) if (file, name) not in ONE_TWIN_ONLY)
                 for module in (torch_module, jax_module)]
        assert names[0] == names[1], file


def test_one_twin_only_names_are_real():
    # A stale entry in ONE_TWIN_ONLY would hide a drift: each must name a public name of exactly one twin.
    for file, name in ONE_TWIN_ONLY:
        held = [name in _public(importlib.import_module(f"{twin}.{file}")) for twin in ("vae_torch", "vae_jax")]
        assert sum(held) == 1, (file, name, held)


def test_same_signatures_file_by_file():
    for file in FILES:
        torch_public = _public(importlib.import_module(f"vae_torch.{file}"))
        jax_public = _public(importlib.import_module(f"vae_jax.{file}"))
        for name, torch_obj in torch_public.items():
            if (file, name) in ONE_TWIN_ONLY:
                continue
            jax_obj = jax_public[name]
            if not inspect.isclass(torch_obj):
                _compare(name, torch_obj, jax_obj)
            elif name not in CONSTRUCTORS_DIFFER:
                _compare(f"{name}.__init__", torch_obj.__init__, jax_obj.__init__)
    _compare("VAE.__call__", vae_torch.VAE.forward, vae_jax.VAE.__call__)
    for method in ("encode", "decode", "sample", "reconstruct", "check_batch"):
        _compare(f"VAE.{method}", getattr(vae_torch.VAE, method), getattr(vae_jax.VAE, method))


CONV = vae_torch.VAEConfig(image_shape=(1, 8, 12), conv_channels=(4, 6), latent_dim=2, res_blocks=1,
                           num_classes=3)
MLP = vae_torch.VAEConfig(arch="mlp", image_shape=(1, 4, 6), mlp_widths=(7, 5), latent_dim=2)


def _layers(model) -> dict:
    """The layers a model is made of, by the names both twins give them: how many convs, deconvs or linears
    its encoder and decoder hold, and the residual blocks at each of their positions, in order."""
    layers = {}
    for part in ("encoder", "decoder"):
        module = getattr(model, part)
        for name in ("convs", "deconvs", "linears"):
            if hasattr(module, name):
                layers[f"{part}.{name}"] = len(getattr(module, name))
        if hasattr(module, "blocks"):
            layers[f"{part}.blocks"] = [len(blocks) for blocks in module.blocks]
    return layers


def _shapes(weights: dict) -> dict[str, tuple[int, ...]]:
    # (torch's export_weights lists them in state_dict order, the convs before the blocks; JAX's in
    # vae_core.layout's model order: a dict compares the names and shapes, not the order)
    return {key: tuple(np.shape(value)) for key, value in weights.items()}


def test_same_model_from_the_same_config():
    """Not only the same attribute names: the same layers in the same order, the same config, forms and
    dtype, the same canonical parameters (names and shapes), and training states that count alike."""
    native = dict.fromkeys(FORMS, "native")
    for config in (CONV, MLP):
        torch_model = vae_torch.init_model(config, **native)
        jax_model = vae_jax.init_model(config, **native)
        assert torch_model.config == jax_model.config == config
        assert _layers(torch_model) == _layers(jax_model), config.arch
        assert torch_model.forms == jax_model.forms == native
        assert vae_torch.checks.dtype_name(torch_model.dtype) == vae_jax.checks.dtype_name(jax_model.dtype)
        assert _shapes(vae_torch.export_weights(torch_model)) == _shapes(vae_jax.export_weights(jax_model))
    torch_state, jax_state = vae_torch.create_train_state(torch_model), vae_jax.create_train_state(jax_model)
    assert isinstance(torch_state.model, vae_torch.VAE) and isinstance(jax_state.model, vae_jax.VAE)
    assert int(torch_state.step) == int(jax_state.step) == 0
    x = np.random.default_rng(0).random((2, *MLP.image_shape), dtype=np.float32)
    eps = np.zeros((2, MLP.latent_dim), np.float32)
    jax_step = vae_jax.compile_train_step(jax_state)  # each twin's fast step: torch eager, JAX jitted
    for _ in range(2):
        torch_state, _ = vae_torch.train_step(torch_state, vae_torch.as_input(x, torch_state.model),
                                              vae_torch.as_input(eps, torch_state.model))
        jax_state, _ = jax_step(jax_state, vae_jax.as_input(x, jax_state.model),
                                vae_jax.as_input(eps, jax_state.model))
    assert int(torch_state.step) == int(jax_state.step) == 2


def test_allowed_differences_are_real():
    # A stale entry in ALLOWED would hide a drift: each must name a parameter one twin really has.
    objects = {"VAE.__init__": (vae_torch.VAE.__init__, vae_jax.VAE.__init__),
               "compile_train_step": (vae_torch.compile_train_step, vae_jax.compile_train_step),
               "conv_transpose_subpixel": (vae_torch.forms.conv_transpose_subpixel,
                                           vae_jax.forms.conv_transpose_subpixel),
               "conv_transpose_col2im": (vae_torch.forms.conv_transpose_col2im,
                                         vae_jax.forms.conv_transpose_col2im),
               "conv_space_to_depth": (vae_torch.forms.conv_space_to_depth, vae_jax.forms.conv_space_to_depth),
               "initialize": (vae_torch.distributed.initialize, vae_jax.distributed.initialize)}
    for name, param in ALLOWED:
        in_torch, in_jax = (param in dict(_params(obj)) for obj in objects[name])
        assert in_torch != in_jax, (name, param)

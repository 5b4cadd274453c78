"""Canonical weights for the JAX twin: Flax NNX parameters <-> PyTorch state_dict names and layouts, by
the layout table in vae_core/layout.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vae_core import layout
from vae_core.checkpoint import read_checkpoint, write_checkpoint
from vae_core.config import VAEConfig
from vae_jax.checks import ENABLE_X64, X64_CLI
from vae_jax.model import VAE


def _nnx_path(layer_name: str) -> tuple:
    """'decoder.deconvs.1' -> ('decoder', 'deconvs', 1): the module path of a canonical layer."""
    return tuple(int(part) if part.isdigit() else part for part in layer_name.split("."))


def to_canonical(tree, config: VAEConfig) -> dict[str, np.ndarray]:
    """Any tree shaped like the model's parameters (params, gradients, Adam moments) -> canonical dict."""
    flat = {path: np.asarray(value[...] if isinstance(value, nnx.Variable) else value)
            for path, value in nnx.to_flat_state(nnx.State(tree) if isinstance(tree, dict) else tree)}
    weights = {}
    for layer in layout.layer_specs(config):
        path = _nnx_path(layer.name)
        weight, bias = layout.from_jax_layout(layer, flat[path + ("kernel",)], flat[path + ("bias",)])
        weights[f"{layer.name}.weight"] = np.ascontiguousarray(weight)
        weights[f"{layer.name}.bias"] = np.ascontiguousarray(bias)
    if config.prior == "vamp":
        pseudo_inputs = flat[(layout.PSEUDO_INPUTS,)]
        weights[layout.PSEUDO_INPUTS] = np.ascontiguousarray(layout.pseudo_inputs_from_jax(pseudo_inputs))
    return weights


def export_weights(model: VAE) -> dict[str, np.ndarray]:
    """Canonical name -> numpy array in the canonical (torch) layout."""
    return to_canonical(nnx.state(model, nnx.Param), model.config)


def import_weights(model: VAE, weights: dict) -> VAE:
    """Load canonical weights (cast to the model's dtype); raises WeightsError naming every bad key."""
    layout.check_weights(weights, model.config)
    for layer in layout.layer_specs(model.config):
        module = model
        for part in _nnx_path(layer.name):
            module = module[part] if isinstance(part, int) else getattr(module, part)
        kernel, bias = layout.to_jax_layout(layer, np.asarray(weights[f"{layer.name}.weight"]),
                                          np.asarray(weights[f"{layer.name}.bias"]))
        module.kernel.set_value(jnp.asarray(kernel, model.dtype))
        module.bias.set_value(jnp.asarray(bias, model.dtype))
    if model.config.prior == "vamp":
        pseudo_inputs = layout.pseudo_inputs_to_jax(np.asarray(weights[layout.PSEUDO_INPUTS]))
        model.pseudo_inputs.set_value(jnp.asarray(pseudo_inputs, model.dtype))
    return model


def init_model(config: VAEConfig, seed: int = 0, dtype=jnp.float32, strided_conv: str | None = None,
               transposed_conv: str | None = None,
               output_transposed_conv: str | None = None, compute_dtype=None) -> VAE:
    """A VAE with vae_core's canonical initialisation: the same seed gives the same weights in vae_torch."""
    model = _new_model(config, dtype, compute_dtype, strided_conv=strided_conv, transposed_conv=transposed_conv,
                       output_transposed_conv=output_transposed_conv)
    return import_weights(model, layout.init_weights(config, seed))


def _new_model(config: VAEConfig, dtype, compute_dtype, **forms) -> VAE:
    # Flax's own init, about to be overwritten, is skipped: eval_shape builds the module with abstract
    # parameters, which import_weights then fills (drawing them compiled a random op per shape and dtype).
    return nnx.eval_shape(lambda: VAE(config, rngs=nnx.Rngs(0), dtype=dtype, **forms,
                                      compute_dtype=compute_dtype))


def save_checkpoint(path, model: VAE, config: VAEConfig, metadata: dict | None = None) -> None:
    """Atomically write one safetensors file: canonical weights, config, format version, metadata."""
    if model.config != config:
        raise ValueError(f"config {config} does not match the model's config {model.config}")
    write_checkpoint(path, export_weights(model), config, metadata)


def load_checkpoint(path, dtype=None, strided_conv: str | None = None, transposed_conv: str | None = None,
                    output_transposed_conv: str | None = None, compute_dtype=None) -> tuple[VAE, VAEConfig, dict]:
    """(model, config, metadata) from a checkpoint written by either twin; dtype defaults to the stored one."""
    weights, config, metadata = read_checkpoint(path)
    stored = next(iter(weights.values())).dtype
    if dtype is None and stored == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError(f"checkpoint {path} holds float64 weights but 64-bit JAX is off: enable it "
                         f"({ENABLE_X64}) or pass dtype=jnp.float32; {X64_CLI}")
    model = _new_model(config, stored if dtype is None else dtype, compute_dtype, strided_conv=strided_conv,
                       transposed_conv=transposed_conv, output_transposed_conv=output_transposed_conv)
    return import_weights(model, weights), config, metadata

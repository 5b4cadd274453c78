"""Canonical weights for the torch twin: the state_dict *is* the canonical layout, so export and import
are copies plus the checks of vae_core.layout."""

from __future__ import annotations

import numpy as np
import torch

from vae_core import layout
from vae_core.checkpoint import read_checkpoint, write_checkpoint
from vae_core.config import VAEConfig
from vae_torch.model import VAE

_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def to_canonical(tree: dict, config: VAEConfig) -> dict[str, np.ndarray]:
    """Any name -> tensor dict shaped like the model's parameters (state_dict, gradients, Adam moments)
    -> canonical numpy dict. torch's layout is the canonical one: this checks and copies."""
    weights = {key: value.detach().cpu().numpy().copy() for key, value in tree.items()}
    layout.check_weights(weights, config)
    return weights


def export_weights(model: VAE) -> dict[str, np.ndarray]:
    """Canonical name -> numpy array (a copy, on the host)."""
    return to_canonical(model.state_dict(), model.config)


def import_weights(model: VAE, weights: dict) -> VAE:
    """Load canonical weights (cast to the model's dtype); raises WeightsError naming every bad key."""
    layout.check_weights(weights, model.config)
    state = {key: torch.from_numpy(np.array(value)) for key, value in weights.items()}  # a writable copy
    model.load_state_dict(state, strict=True)  # load_state_dict copies into the params' dtype/device
    return model


def init_model(config: VAEConfig, seed: int = 0, dtype=torch.float32, strided_conv: str | None = None,
               transposed_conv: str | None = None,
               output_transposed_conv: str | None = None, compute_dtype=None) -> VAE:
    """A VAE with vae_core's canonical initialisation: the same seed gives the same weights in vae_jax."""
    model = _new_model(config, dtype, compute_dtype, strided_conv=strided_conv, transposed_conv=transposed_conv,
                       output_transposed_conv=output_transposed_conv)
    return import_weights(model, layout.init_weights(config, seed))


def _new_model(config: VAEConfig, dtype, compute_dtype, **forms) -> VAE:
    # torch's own init, about to be overwritten, must not consume the user's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        return VAE(config, dtype=dtype, **forms, compute_dtype=compute_dtype)


def save_checkpoint(path, model: VAE, config: VAEConfig, metadata: dict | None = None) -> None:
    """Atomically write one safetensors file: canonical weights, config, format version, metadata."""
    _check_same_config(model, config)
    write_checkpoint(path, export_weights(model), config, metadata)


def load_checkpoint(path, dtype=None, strided_conv: str | None = None, transposed_conv: str | None = None,
                    output_transposed_conv: str | None = None, compute_dtype=None) -> tuple[VAE, VAEConfig, dict]:
    """(model, config, metadata) from a checkpoint written by either twin; dtype defaults to the stored one."""
    weights, config, metadata = read_checkpoint(path)
    stored = _DTYPES[next(iter(weights.values())).dtype]
    model = _new_model(config, stored if dtype is None else dtype, compute_dtype, strided_conv=strided_conv,
                       transposed_conv=transposed_conv, output_transposed_conv=output_transposed_conv)
    return import_weights(model, weights), config, metadata


def _check_same_config(model: VAE, config: VAEConfig) -> None:
    if model.config != config:
        raise ValueError(f"config {config} does not match the model's config {model.config}")

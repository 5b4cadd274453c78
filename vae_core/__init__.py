"""twinvae's spec: what both twins implement and import (config, outputs, seeds, input checks, likelihood,
FLOP counts, the canonical weight layout, the layer forms, the checkpoint format, data-parallel slices).
Never imports torch, jax or the application (twinvae)."""

from vae_core.checkpoint import CheckpointError
from vae_core.config import VAEConfig
from vae_core.layout import WeightsError, canonical_shapes, init_weights
from vae_core.outputs import VAELoss, VAEOutput

__all__ = ["CheckpointError", "VAEConfig", "VAELoss", "VAEOutput", "WeightsError", "canonical_shapes",
           "init_weights"]

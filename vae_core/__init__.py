"""twinvae's framework-free core: the config both twins implement, seeds, canonical weights, input checks.
Never imports torch or jax."""

from vae_core.config import VAEConfig
from vae_core.outputs import VAELoss, VAEOutput
from vae_core.weights import CheckpointError, WeightsError, canonical_shapes, init_weights

__version__ = "0.1.0"

__all__ = ["CheckpointError", "VAEConfig", "VAELoss", "VAEOutput", "WeightsError", "__version__",
           "canonical_shapes", "init_weights"]

"""twinvae's JAX twin (NHWC, Flax NNX). Mirrors vae_torch name for name."""

from vae_core.config import VAEConfig
from vae_core.outputs import VAELoss, VAEOutput
from vae_jax.export import export_part, load_part, part_function, part_signature
from vae_jax.forms import compiler_options, default_forms
from vae_jax.likelihoods import mean_image
from vae_jax.losses import (
    importance_terms,
    kl_divergence,
    kl_normal_per_dim,
    kl_per_image,
    log_likelihood,
    log_normal,
    log_prior,
    reconstruction_loss,
    vae_loss,
)
from vae_jax.model import LAYOUT, VAE, as_input, as_labels, reparameterize, to_numpy
from vae_jax.train import (
    TrainState,
    compile_train_step,
    create_train_state,
    evaluate,
    export_optimizer_state,
    import_optimizer_state,
    importance_log_weights,
    train_step,
)
from vae_jax.weights import export_weights, import_weights, init_model, load_checkpoint, save_checkpoint

__all__ = [
    "LAYOUT", "VAE", "TrainState", "VAEConfig", "VAELoss", "VAEOutput", "as_input", "as_labels",
    "compile_train_step", "compiler_options", "create_train_state", "default_forms", "evaluate",
    "export_optimizer_state", "export_part", "export_weights", "import_optimizer_state", "import_weights",
    "importance_log_weights", "importance_terms", "init_model", "kl_divergence",
    "kl_normal_per_dim", "kl_per_image", "load_checkpoint",
    "load_part", "log_likelihood", "log_normal", "log_prior", "mean_image", "part_function", "part_signature",
    "reconstruction_loss", "reparameterize", "save_checkpoint", "to_numpy", "train_step", "vae_loss",
]

"""The case catalogue: the models the twins are compared on, the batches, labels and eps each case feeds
them, and the forms each twin is compared in. Framework-free (a twin module is passed in where its table of
forms is read)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vae_core import seeds
from vae_core.config import VAEConfig
from vae_core.forms import FORMS, NATIVE_FORMS


@dataclass(frozen=True)
class Case:
    name: str
    config: VAEConfig
    batch_size: int = 8
    steps: int = 50  # Adam steps compared; 0 skips the training comparison
    seed: int = 0  # of the weights, the batches and the eps


CASES = [
    Case("conv 1x28x28 bernoulli (seed)", VAEConfig()),
    Case("conv 1x28x28 gaussian beta=0.5", VAEConfig(likelihood="gaussian", beta=0.5)),
    Case("conv 3x32x32 continuous Bernoulli beta=4",
         VAEConfig(image_shape=(3, 32, 32), conv_channels=(16, 32, 8), latent_dim=16,
                   likelihood="continuous_bernoulli", beta=4.0)),
    Case("conv 1x8x8 (digits)", VAEConfig(image_shape=(1, 8, 8), conv_channels=(16, 32), latent_dim=8)),
    Case("conv 1x28x28 residual blocks", VAEConfig(conv_channels=(8, 16), res_blocks=2, latent_dim=8)),
    Case("conv 3x12x20 (H != W) discretized logistic, no fc ReLU as in format 1",
         VAEConfig(image_shape=(3, 12, 20), conv_channels=(8, 16), latent_dim=6, decoder_fc_relu=False,
                   likelihood="discretized_logistic")),
    Case("conv 1x16x16 class-conditional, 10 classes",
         VAEConfig(image_shape=(1, 16, 16), conv_channels=(8, 16), latent_dim=8, num_classes=10)),
    Case("mlp 1x28x28 bernoulli (pytorch/examples)", VAEConfig(arch="mlp")),
    Case("mlp 3x32x32 gaussian beta=2", VAEConfig(arch="mlp", image_shape=(3, 32, 32), mlp_widths=(256, 64),
                                                  likelihood="gaussian", beta=2.0)),
    Case("mlp 1x8x8 discretized logistic, 17 levels",
         VAEConfig(arch="mlp", image_shape=(1, 8, 8), mlp_widths=(32,), latent_dim=4,
                   likelihood="discretized_logistic", levels=17)),
    Case("mlp 1x8x12 class-conditional, 3 classes, gaussian",
         VAEConfig(arch="mlp", image_shape=(1, 8, 12), mlp_widths=(32,), latent_dim=4, num_classes=3,
                   likelihood="gaussian")),
    Case("conv 1x8x8 iwae K=3, class-conditional, 3 classes",
         VAEConfig(image_shape=(1, 8, 8), conv_channels=(8, 16), latent_dim=4, num_classes=3, objective="iwae",
                   train_samples=3)),
    Case("conv 1x8x8 vampprior, 6 pseudo-inputs, beta 0.5",
         VAEConfig(image_shape=(1, 8, 8), conv_channels=(8, 16), latent_dim=4, prior="vamp", pseudo_inputs=6,
                   beta=0.5)),
    Case("mlp 1x8x12 vampprior, 5 pseudo-inputs, iwae K=2, gaussian",
         VAEConfig(arch="mlp", image_shape=(1, 8, 12), mlp_widths=(32,), latent_dim=4, prior="vamp",
                   pseudo_inputs=5, objective="iwae", train_samples=2, likelihood="gaussian")),
    Case("conv 1x12x8 two levels (hvae), class-conditional, 3 classes",
         VAEConfig(image_shape=(1, 12, 8), conv_channels=(8, 16), latent_dim=4, hierarchy=2, prior_width=6,
                   num_classes=3)),
    Case("mlp 1x10x8 two levels, vampprior, 4 pseudo-inputs, iwae K=2",
         VAEConfig(arch="mlp", image_shape=(1, 10, 8), mlp_widths=(24,), latent_dim=3, hierarchy=2, prior_width=5,
                   prior="vamp", pseudo_inputs=4, objective="iwae", train_samples=2)),
]


def case_data(case: Case, seed: int = 0):
    """Deterministic batches (4 distinct, cycled) in [0, 1], their labels (None for an unconditional
    model) and the eps of every step (K samples per image for the IWAE bound's train_samples K), in float64;
    for the discretized logistic on its grid of levels."""
    rng = np.random.default_rng(seed)
    batches = [rng.random((case.batch_size, *case.config.image_shape)) for _ in range(4)]
    if case.config.likelihood == "discretized_logistic":
        steps = case.config.levels - 1
        batches = [np.round(b * steps) / steps for b in batches]
    classes = case.config.num_classes
    labels = [rng.integers(0, classes, case.batch_size) if classes else None for _ in batches]
    eps = [seeds.eps_for_step(seed, step, case.batch_size, case.config.noise_dim,
                              samples=case.config.train_samples) for step in range(max(case.steps, 1))]
    return batches, labels, eps


# Which forms each twin is compared in (twin_forms): "default", its default on the device; "each", the
# native forms and the non-native form of every kind at once, so every form is compared; "all", those and
# every combination a device of its table runs by default.
FORM_SETS = ("default", "each", "all")


def twin_forms(module, config, device: str, forms: str) -> list[dict]:
    """The forms (a FORM_SETS name) a twin is compared in; an MLP has only the native ones."""
    if forms not in FORM_SETS:
        raise ValueError(f"forms must be one of {FORM_SETS}, got {forms!r}")
    if config.arch != "conv":
        return [NATIVE_FORMS]
    if forms == "default":
        return [module.default_forms(device)]
    candidates = [NATIVE_FORMS, {kind: choices[-1] for kind, choices in FORMS.items()}]
    if forms == "all":
        candidates += module.forms.DEFAULT_FORMS.values()
    return [dict(f) for f in dict.fromkeys(tuple(f.items()) for f in candidates)]

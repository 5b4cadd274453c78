"""Random architectures (hypothesis, fixed seeds, 20 examples: 12 conv in two draws of 6, 8 mlp): eager
torch vs jitted JAX in float64 over the whole 50-step Adam trajectory, each twin in its default forms on the
device (test_parity.py compares every form on the standard cases).

An example is an architecture (everything that fixes the compiled programs' shapes: image, widths, depth,
residual blocks, latent size, classes, likelihood, the objective and its samples, the prior, the
stochastic layers, batch) with a
beta (1 for the IWAE bound, which has none) and a seed of the weights, batches and eps. The architectures are drawn
once, from a fixed seed, few per test (ARCHITECTURES_PER_DRAW), and hypothesis draws the examples over
them: examples that share an architecture share its compiled programs (the harness's and the twins' jits
take beta and the data as arguments), so the 50 steps of each are nearly free. The split into three tests
lets two test processes share the work."""

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from twinvae.parity import cases, comparisons, report
from vae_core.config import LIKELIHOODS, VAEConfig

SIZES = (8, 16)  # both divide by 2**3, the deepest conv encoder drawn
WIDTHS = (1, 5, 12)  # conv channels, and (x4) mlp widths
BETAS = (0.0, 0.5, 1.0, 3.0)
SEEDS = (0, 1)
TRAIN_SAMPLES = (1, 1, 2, 3)  # K > 1: the IWAE bound of K samples; 1: the ELBO
PSEUDO_INPUTS = (0, 0, 2, 5)  # P > 0: the VampPrior of P pseudo-inputs (an unconditional model's); 0: N(0, I)
HIERARCHIES = (1, 1, 2)  # stochastic layers: 2, z2 above z1, with p(z1 | z2) of a random hidden width
ARCHITECTURES_PER_DRAW = 3


def architecture(rng: np.random.Generator, arch: str) -> tuple[VAEConfig, int]:
    """One random architecture of `arch` and its batch size (beta left at its default: drawn per example)."""
    depth = int(rng.integers(1, 4))
    return VAEConfig(
        image_shape=(int(rng.choice((1, 3))), int(rng.choice(SIZES)), int(rng.choice(SIZES))),
        latent_dim=int(rng.choice((1, 4, 12))),
        arch=arch,
        conv_channels=tuple(int(w) for w in rng.choice(WIDTHS, depth)),
        res_blocks=int(rng.integers(0, 3)),
        mlp_widths=tuple(4 * int(w) for w in rng.choice(WIDTHS, depth)),
        num_classes=int(rng.choice((0, 3))),
        likelihood=str(rng.choice(LIKELIHOODS)),
    ), int(rng.choice((1, 3)))


def with_objective(drawn: tuple[VAEConfig, int], rng: np.random.Generator) -> tuple[VAEConfig, int]:
    """The architecture with a random number of training samples, the IWAE bound's where it is above 1
    (from a stream of its own, so the other draws are those of before the objective existed)."""
    config, batch_size = drawn
    k = int(rng.choice(TRAIN_SAMPLES))
    return dataclasses.replace(config, objective="iwae" if k > 1 else "elbo", train_samples=k), batch_size


def with_prior(drawn: tuple[VAEConfig, int], rng: np.random.Generator) -> tuple[VAEConfig, int]:
    """The architecture with a random prior: the VampPrior of a random number of pseudo-inputs, where the
    model is unconditional (the VampPrior refuses labels), or N(0, I); from a stream of its own."""
    config, batch_size = drawn
    p = int(rng.choice(PSEUDO_INPUTS))
    if not p or config.num_classes:
        return drawn
    return dataclasses.replace(config, prior="vamp", pseudo_inputs=p), batch_size


def with_hierarchy(drawn: tuple[VAEConfig, int], rng: np.random.Generator) -> tuple[VAEConfig, int]:
    """The architecture with a random number of stochastic layers, and for two p(z1 | z2)'s hidden width;
    from a stream of its own."""
    config, batch_size = drawn
    levels, width = int(rng.choice(HIERARCHIES)), int(rng.choice(WIDTHS))
    return dataclasses.replace(config, hierarchy=levels, prior_width=width), batch_size


def architectures(arch: str, draw: int) -> list[tuple[VAEConfig, int]]:
    rng = np.random.default_rng([20261127, draw, ["conv", "mlp"].index(arch)])
    objectives = np.random.default_rng([20261127, draw, ["conv", "mlp"].index(arch), 1])
    priors = np.random.default_rng([20261127, draw, ["conv", "mlp"].index(arch), 2])
    hierarchies = np.random.default_rng([20261127, draw, ["conv", "mlp"].index(arch), 3])
    return [with_hierarchy(with_prior(with_objective(architecture(rng, arch), objectives), priors), hierarchies)
            for _ in range(ARCHITECTURES_PER_DRAW)]


def betas(shape: tuple[VAEConfig, int]):
    """The betas an architecture is trained with: any of BETAS, but 1 for the IWAE bound."""
    return st.sampled_from((1.0,) if shape[0].importance_weighted else BETAS)


@pytest.mark.parametrize("arch, draw, examples", [("conv", 0, 6), ("conv", 1, 6), ("mlp", 0, 8)])
def test_random_configs_agree_in_float64(arch, draw, examples):
    drawn = []

    @seed(20261127 + draw)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(shape_and_beta=st.sampled_from(architectures(arch, draw)).flatmap(
        lambda shape: st.tuples(st.just(shape), betas(shape))), weights_seed=st.sampled_from(SEEDS))
    def agree(shape_and_beta, weights_seed):
        (config, batch_size), beta = shape_and_beta
        config = dataclasses.replace(config, beta=beta)
        drawn.append((config, weights_seed))
        case = cases.Case(f"random {config} seed {weights_seed}", config, batch_size=batch_size,
                          seed=weights_seed)
        failed = [r for r in comparisons.compare(case, "float64", forms="default") if not r.ok]
        assert not failed, "\n" + report.format_table(failed)

    agree()
    assert len(set(drawn)) == examples  # every example a distinct (architecture, beta, seed)

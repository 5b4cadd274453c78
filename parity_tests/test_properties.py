"""Random architectures (hypothesis, fixed seeds, 14 examples: 8 conv in two draws of 4, 6 mlp): eager
torch vs jitted JAX in float64, each twin in its default forms on the device (test_parity.py compares every
form on the standard cases). The sizes are drawn from small fixed sets, so that examples repeat shapes and
the session's JAX compilation cache (conftest.py) serves the repeats; the split lets two test processes
share the work."""

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from twinvae.parity import harness
from vae_core.config import LIKELIHOODS, VAEConfig

SIZES = (8, 16)  # both divide by 2**3, the deepest conv encoder drawn
WIDTHS = (1, 5, 12)  # conv channels, and (x4) mlp widths


@st.composite
def configs(draw, arch: str):
    depth = draw(st.integers(1, 3))
    return VAEConfig(
        image_shape=(draw(st.sampled_from((1, 3))), draw(st.sampled_from(SIZES)), draw(st.sampled_from(SIZES))),
        latent_dim=draw(st.sampled_from((1, 4, 12))),
        arch=arch,
        conv_channels=tuple(draw(st.lists(st.sampled_from(WIDTHS), min_size=depth, max_size=depth))),
        res_blocks=draw(st.integers(0, 1)),  # two blocks a resolution: the standard case of test_parity.py
        mlp_widths=tuple(4 * w for w in draw(st.lists(st.sampled_from(WIDTHS), min_size=depth, max_size=depth))),
        num_classes=draw(st.sampled_from((0, 3))),
        likelihood=draw(st.sampled_from(LIKELIHOODS)),
        beta=draw(st.sampled_from([0.0, 0.5, 1.0, 3.0])),
    )


@pytest.mark.parametrize("arch, draw, examples", [("conv", 0, 4), ("conv", 1, 4), ("mlp", 0, 6)])
def test_random_configs_agree_in_float64(arch, draw, examples):
    @seed(20261127 + draw)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(config=configs(arch), batch_size=st.sampled_from((1, 3)))
    def agree(config, batch_size):
        case = harness.Case(f"random {config}", config, batch_size=batch_size, steps=2)
        failed = [r for r in harness.compare(case, "float64", forms="default") if not r.ok]
        assert not failed, "\n" + harness.format_table(failed)

    agree()

"""Random architectures (hypothesis, fixed seed, 4 examples): eager torch vs jitted JAX in float64."""

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from twinvae.parity import harness
from vae_core.config import VAEConfig


@st.composite
def configs(draw):
    arch = draw(st.sampled_from(["conv", "mlp"]))
    channels = draw(st.integers(1, 3))
    depth = draw(st.integers(1, 3))
    stride = 2**depth if arch == "conv" else 1
    height = stride * draw(st.integers(1, max(1, 24 // stride)))
    width = stride * draw(st.integers(1, max(1, 24 // stride)))
    return VAEConfig(
        image_shape=(channels, height, width),
        latent_dim=draw(st.integers(1, 12)),
        arch=arch,
        conv_channels=tuple(draw(st.lists(st.integers(1, 12), min_size=depth, max_size=depth))),
        res_blocks=draw(st.integers(0, 2)),
        mlp_widths=tuple(draw(st.lists(st.integers(1, 48), min_size=depth, max_size=depth))),
        likelihood=draw(st.sampled_from(["bernoulli", "gaussian"])),
        beta=draw(st.sampled_from([0.0, 0.5, 1.0, 3.0])),
    )


@seed(20261127)
@settings(max_examples=4, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), batch_size=st.integers(1, 5))
def test_random_configs_agree_in_float64(config, batch_size):
    case = harness.Case(f"random {config}", config, batch_size=batch_size, steps=2)
    failed = [r for r in harness.compare(case, "float64", forms="each") if not r.ok]
    assert not failed, "\n" + harness.format_table(failed)

import numpy as np
import pytest

from vae_core import layout as core
from vae_core.config import VAEConfig

# The canonical layout, version 1. A rename or reshape here is a format change: bump FORMAT_VERSION,
# update the README's table, and keep reading the old names.
GOLDEN_CONV = {
    "encoder.convs.0.weight": (32, 1, 4, 4), "encoder.convs.0.bias": (32,),
    "encoder.convs.1.weight": (64, 32, 4, 4), "encoder.convs.1.bias": (64,),
    "fc_mu.weight": (20, 3136), "fc_mu.bias": (20,),
    "fc_logvar.weight": (20, 3136), "fc_logvar.bias": (20,),
    "decoder.fc.weight": (3136, 20), "decoder.fc.bias": (3136,),
    "decoder.deconvs.0.weight": (64, 32, 4, 4), "decoder.deconvs.0.bias": (32,),
    "decoder.deconvs.1.weight": (32, 1, 4, 4), "decoder.deconvs.1.bias": (1,),
}
GOLDEN_MLP = {
    "encoder.linears.0.weight": (400, 784), "encoder.linears.0.bias": (400,),
    "fc_mu.weight": (20, 400), "fc_mu.bias": (20,),
    "fc_logvar.weight": (20, 400), "fc_logvar.bias": (20,),
    "decoder.fc.weight": (400, 20), "decoder.fc.bias": (400,),
    "decoder.linears.0.weight": (784, 400), "decoder.linears.0.bias": (784,),
}


def test_golden_key_lists():
    assert list(core.canonical_shapes(VAEConfig()).items()) == list(GOLDEN_CONV.items())
    assert list(core.canonical_shapes(VAEConfig(arch="mlp")).items()) == list(GOLDEN_MLP.items())
    assert core.num_parameters(VAEConfig()) == 258_025


def test_the_discretized_logistic_widens_only_the_last_layer():
    """Its decoder writes 2C channels (means, then log-scales): the same keys, the last layer twice as
    wide (the file format of issue 17)."""
    for arch, golden, last in (("conv", GOLDEN_CONV, "decoder.deconvs.1"),
                               ("mlp", GOLDEN_MLP, "decoder.linears.0")):
        wide = core.canonical_shapes(VAEConfig(arch=arch, likelihood="discretized_logistic"))
        assert list(wide) == list(golden)
        changed = {key: shape for key, shape in wide.items() if shape != golden[key]}
        widened = {"conv": {f"{last}.weight": (32, 2, 4, 4), f"{last}.bias": (2,)},
                   "mlp": {f"{last}.weight": (1568, 400), f"{last}.bias": (1568,)}}[arch]
        assert changed == widened


def test_a_conditional_model_widens_the_inputs_of_fc_mu_fc_logvar_and_decoder_fc():
    """num_classes more input columns, the same keys (the file format of issue 17)."""
    for arch, golden in (("conv", GOLDEN_CONV), ("mlp", GOLDEN_MLP)):
        wide = core.canonical_shapes(VAEConfig(arch=arch, num_classes=10))
        assert list(wide) == list(golden)
        changed = {key: shape for key, shape in wide.items() if shape != golden[key]}
        features = {"conv": 3136, "mlp": 400}[arch]
        assert changed == {"fc_mu.weight": (20, features + 10), "fc_logvar.weight": (20, features + 10),
                           "decoder.fc.weight": (features, 30)}


def test_label_columns_follow_the_image_columns_unpermuted():
    # fc_mu on [NCHW-flattened map, one-hot] with the torch weight == on [NHWC-flattened map, one-hot] with
    # the converted kernel: the label's rows are the kernel's last ones, the torch weight's last columns
    layer = core.LayerSpec("fc_mu", "linear_from_image", 2 * 3 * 5 + 4, 6, (2, 3, 5))
    rng = np.random.default_rng(3)
    weight, bias, fmap = rng.standard_normal((6, 34)), rng.standard_normal(6), rng.standard_normal((2, 3, 5))
    one_hot = np.eye(4)[2]
    kernel, _ = core.to_jax_layout(layer, weight, bias)
    np.testing.assert_array_equal(kernel[30:], weight[:, 30:].T)
    np.testing.assert_allclose(np.concatenate([fmap.transpose(1, 2, 0).reshape(-1), one_hot]) @ kernel,
                               weight @ np.concatenate([fmap.reshape(-1), one_hot]))


def test_a_two_level_model_adds_its_lower_level_between_the_heads_and_the_decoder():
    """q(z1 | x, z2) reads the features, z2 and a label, in that order; p(z1 | z2) is prior_width wide; the
    decoder's fc reads z1, z2 and a label: the golden keys of docs/model.md, in model order."""
    config = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4, 6), latent_dim=5, num_classes=3, hierarchy=2,
                       prior_width=7)
    shapes = core.canonical_shapes(config)
    names = [key.removesuffix(".weight") for key in shapes if key.endswith(".weight")]
    assert names == ["encoder.convs.0", "encoder.convs.1", "fc_mu", "fc_logvar", "fc_mu_lower", "fc_logvar_lower",
                     "prior_lower.hidden", "prior_lower.mu", "prior_lower.logvar", "decoder.fc",
                     "decoder.deconvs.0", "decoder.deconvs.1"]
    features = 6 * 2 * 2
    assert shapes["fc_mu.weight"] == (5, features + 3) and shapes["fc_mu_lower.weight"] == (5, features + 5 + 3)
    assert shapes["prior_lower.hidden.weight"] == (7, 5) and shapes["prior_lower.logvar.weight"] == (5, 7)
    assert shapes["decoder.fc.weight"] == (features, 5 + 5 + 3)


@pytest.mark.parametrize("config", [
    VAEConfig(image_shape=(3, 8, 12), conv_channels=(4, 6), latent_dim=5),
    VAEConfig(arch="mlp", image_shape=(3, 4, 6), mlp_widths=(7, 5), latent_dim=2),
    VAEConfig(image_shape=(3, 8, 12), conv_channels=(4, 6), latent_dim=5, num_classes=3),
    VAEConfig(arch="mlp", image_shape=(3, 4, 6), mlp_widths=(7, 5), latent_dim=2, num_classes=3),
    VAEConfig(image_shape=(3, 8, 12), conv_channels=(4, 6), latent_dim=5, num_classes=3, hierarchy=2,
              prior_width=4),
    VAEConfig(arch="mlp", image_shape=(3, 4, 6), mlp_widths=(7, 5), latent_dim=2, hierarchy=2),
], ids=["conv", "mlp", "conv-conditional", "mlp-conditional", "conv-two-levels-conditional", "mlp-two-levels"])
def test_layout_rules_round_trip_exactly(config):
    for layer in core.layer_specs(config):
        rng = np.random.default_rng(0)
        weight = rng.standard_normal(layer.weight_shape)
        bias = rng.standard_normal(layer.out_features)
        kernel, jax_bias = core.to_jax_layout(layer, weight, bias)
        back = core.from_jax_layout(layer, kernel, jax_bias)
        assert np.array_equal(back[0], weight) and np.array_equal(back[1], bias), layer


def test_flatten_rule_matches_an_nhwc_activation():
    # fc_mu applied to an NCHW-flattened map with the torch weight == applied to the NHWC-flattened map
    # with the converted kernel.
    layer = core.LayerSpec("fc_mu", "linear_from_image", 2 * 3 * 5, 4, (2, 3, 5))
    rng = np.random.default_rng(1)
    weight, bias, fmap = rng.standard_normal((4, 30)), rng.standard_normal(4), rng.standard_normal((2, 3, 5))
    kernel, _ = core.to_jax_layout(layer, weight, bias)
    np.testing.assert_allclose(fmap.transpose(1, 2, 0).reshape(-1) @ kernel, weight @ fmap.reshape(-1))


def test_unflatten_rule_matches_an_nhwc_activation():
    # decoder.fc then view(C, H, W) with the torch weight == the converted kernel then reshape(H, W, C).
    layer = core.LayerSpec("decoder.fc", "linear_to_image", 4, 2 * 3 * 5, (2, 3, 5))
    rng = np.random.default_rng(2)
    weight, bias, z = rng.standard_normal((30, 4)), rng.standard_normal(30), rng.standard_normal(4)
    kernel, jax_bias = core.to_jax_layout(layer, weight, bias)
    nchw = (weight @ z + bias).reshape(2, 3, 5)
    np.testing.assert_allclose((z @ kernel + jax_bias).reshape(3, 5, 2), nchw.transpose(1, 2, 0))


def test_init_is_seeded_and_torch_like():
    config = VAEConfig()
    a, b = core.init_weights(config, 0), core.init_weights(config, 0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["fc_mu.weight"], core.init_weights(config, 1)["fc_mu.weight"])
    assert np.abs(a["fc_mu.weight"]).max() <= 1 / np.sqrt(3136)
    assert np.abs(a["decoder.deconvs.0.weight"]).max() <= 1 / np.sqrt(32 * 16)  # torch: fan_in from dim 1


GIB = 2**30


@pytest.mark.parametrize("config", [
    VAEConfig(res_blocks=1, num_classes=3), VAEConfig(arch="mlp", mlp_widths=(400, 200), num_classes=3),
    VAEConfig(likelihood="discretized_logistic"),
], ids=["conv", "mlp", "discretized-logistic"])
def test_every_layer_names_the_config_fields_of_its_sizes(config):
    fields = {f"conv_channels[{i}]" for i in range(len(config.conv_channels))} | {
        f"mlp_widths[{i}]" for i in range(len(config.mlp_widths))} | {"image_shape", "latent_dim", "num_classes"}
    for layer in core.layer_specs(config):
        assert set(layer.fields) <= fields, layer


@pytest.mark.parametrize("config, training, message", [
    (VAEConfig(latent_dim=10**9), False,
     "the model's parameters need 34.2 TiB in float32, more than this machine's 24.0 GiB of memory: "
     "fc_mu.weight (1000000000 × 3136, 1000000000 set by latent_dim) alone needs 11.4 TiB; lower latent_dim"),
    (VAEConfig(arch="mlp", mlp_widths=(10**8,)), False,
     "the model's parameters need 607.2 GiB in float32, more than this machine's 24.0 GiB of memory: "
     "encoder.linears.0.weight (100000000 × 784, 100000000 set by mlp_widths[0]) alone needs 292.1 GiB; "
     "lower mlp_widths[0]"),
    (VAEConfig(conv_channels=(32, 10**6)), True,  # fits, but not with its gradients and Adam's moments
     "training needs 59.8 GiB in float32 (the parameters, their gradients and Adam's two moments), more than "
     "this machine's 24.0 GiB of memory: fc_mu.weight (20 × 49000000, 49000000 set by conv_channels[1]) alone "
     "needs 14.6 GiB; lower conv_channels[1]"),
    (VAEConfig(num_classes=10**9), False,
     "the model's parameters need 11.6 TiB in float32, more than this machine's 24.0 GiB of memory: "
     "decoder.fc.weight (3136 × 1000000020, 1000000020 set by num_classes) alone needs 11.4 TiB; "
     "lower num_classes"),
])
def test_a_model_larger_than_memory_is_refused_naming_its_largest_weight_and_field(
        monkeypatch, config, training, message):
    monkeypatch.setattr(core, "physical_memory", lambda: 24 * GIB)
    with pytest.raises(ValueError) as info:
        core.check_fits_in_memory(config, "float32", 4, training)
    assert str(info.value) == message


def test_the_memory_check_counts_copies_and_bytes(monkeypatch):
    config = VAEConfig()
    need = 4 * core.num_parameters(config)  # float32
    monkeypatch.setattr(core, "physical_memory", lambda: need)
    core.check_fits_in_memory(config, "float32", 4)
    with pytest.raises(ValueError, match="parameters need 2.0 MiB in float64"):
        core.check_fits_in_memory(config, "float64", 8)
    with pytest.raises(ValueError, match="training needs 3.9 MiB in float32"):
        core.check_fits_in_memory(config, "float32", 4, training=True)
    monkeypatch.setattr(core, "physical_memory", lambda: None)  # a system that does not say: no check
    core.check_fits_in_memory(VAEConfig(latent_dim=10**9), "float32", 4, training=True)


def test_this_machine_reports_its_memory_and_refuses_a_model_larger_than_any():
    if core.physical_memory() is None:
        pytest.skip("this system does not report its physical memory")
    assert core.physical_memory() > GIB
    with pytest.raises(ValueError, match="lower latent_dim$"):
        core.check_fits_in_memory(VAEConfig(latent_dim=10**12), "float32", 4)


def test_the_vampprior_adds_its_pseudo_inputs_last_and_leaves_the_layers_draws():
    """One canonical key, "pseudo_inputs", (P, C, H, W), after every layer's; its init is Tomczak &
    Welling's normal (0.05, 0.01) drawn after the layers', so the layers are the standard prior's model."""
    vamp = VAEConfig(prior="vamp", pseudo_inputs=300)
    shapes = core.canonical_shapes(vamp)
    assert list(shapes)[:-1] == list(GOLDEN_CONV) and list(shapes)[-1] == core.PSEUDO_INPUTS
    assert shapes[core.PSEUDO_INPUTS] == (300, 1, 28, 28)
    assert core.num_parameters(vamp) == 258_025 + 300 * 784
    weights, standard = core.init_weights(vamp, 3, np.float64), core.init_weights(VAEConfig(), 3, np.float64)
    assert all(np.array_equal(weights[k], standard[k]) for k in standard)
    pseudo = weights[core.PSEUDO_INPUTS]
    assert abs(pseudo.mean() - 0.05) < 1e-3 and abs(pseudo.std() - 0.01) < 1e-3
    assert core.PSEUDO_INPUT_BOUNDS == (0.0, 1.0)
    back = core.pseudo_inputs_from_jax(core.pseudo_inputs_to_jax(pseudo))
    assert core.pseudo_inputs_to_jax(pseudo).shape == (300, 28, 28, 1) and np.array_equal(back, pseudo)
    with pytest.raises(core.WeightsError, match=r"missing key .pseudo_inputs. \(expected shape \(300, 1, 28"):
        core.check_weights(standard, vamp)

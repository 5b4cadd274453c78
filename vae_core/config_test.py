import json

import pytest

from vae_core.config import VAEConfig, check_bound_terms


def test_defaults_are_the_seed_model():
    config = VAEConfig()
    assert config.image_shape == (1, 28, 28) and config.conv_channels == (32, 64) and config.latent_dim == 20
    assert config.bottleneck_shape == (64, 7, 7) and config.bottleneck_size == 3136
    assert VAEConfig(arch="mlp").bottleneck_size == 400


def test_json_round_trip():
    config = VAEConfig(image_shape=(3, 32, 16), latent_dim=7, conv_channels=(8, 16, 32), res_blocks=2,
                       likelihood="gaussian", beta=0.25)
    text = config.to_json()
    assert VAEConfig.from_json(text) == config
    assert json.loads(text)["image_shape"] == [3, 32, 16]
    assert hash(VAEConfig.from_json(text)) == hash(config)


@pytest.mark.parametrize("kwargs, words", [
    ({"image_shape": (1, 30, 28)}, "H=30 is not divisible by the total stride 4"),
    ({"image_shape": (1, 28, 26), "conv_channels": (8, 8, 8)}, "H=28 is not divisible by the total stride 8"),
    ({"image_shape": (1, 28)}, "image_shape must have 3 entries"),
    ({"image_shape": (0, 28, 28)}, "image_shape must hold positive ints"),
    ({"latent_dim": 0}, "latent_dim must be a positive int, got 0"),
    ({"latent_dim": 2.5}, "latent_dim must be a positive int, got 2.5"),
    ({"arch": "resnet"}, "arch must be one of ('conv', 'mlp'), got 'resnet'"),
    ({"likelihood": "poisson"},
     "likelihood must be one of ('bernoulli', 'gaussian', 'continuous_bernoulli', 'discretized_logistic'), "
     "got 'poisson'"),
    ({"levels": 1}, "levels must be an int >= 2 (the data's grey levels), got 1"),
    ({"num_classes": -1}, "num_classes must be an int >= 0 (0: unconditional), got -1"),
    ({"num_classes": True}, "num_classes must be an int >= 0 (0: unconditional), got True"),
    ({"beta": -1.0}, "beta must be a finite number >= 0, got -1.0"),
    ({"beta": float("nan")}, "beta must be a finite number >= 0, got nan"),
    ({"conv_channels": ()}, "conv_channels must be a non-empty tuple"),
    ({"res_blocks": -1}, "res_blocks must be an int >= 0, got -1"),
    ({"res_blocks": 1.5}, "res_blocks must be an int >= 0, got 1.5"),
    ({"decoder_fc_relu": 1}, "decoder_fc_relu must be true or false, got 1"),
    ({"mlp_widths": (400, -1)}, "mlp_widths must hold positive ints, got (400, -1)"),
    ({"objective": "vlb"}, "objective must be one of ('elbo', 'iwae'), got 'vlb'"),
    ({"objective": "iwae", "train_samples": 0}, "train_samples must be an int >= 1 (importance samples"),
    ({"objective": "iwae", "train_samples": 2.0}, "train_samples must be an int >= 1 (importance samples"),
    ({"train_samples": 5}, "train_samples = 5 needs objective 'iwae'"),
    ({"objective": "iwae", "train_samples": 5, "beta": 0.5},
     "beta = 0.5 conflicts with objective='iwae' and train_samples=5: the IWAE bound has no KL term"),
    ({"prior": "gaussian"}, "prior must be one of ('standard', 'vamp'), got 'gaussian'"),
    ({"prior": "vamp", "pseudo_inputs": 0}, "pseudo_inputs must be an int >= 1 (the VampPrior's learned images)"),
    ({"prior": "vamp", "num_classes": 3}, "prior 'vamp' with num_classes = 3 is not a model twinvae builds"),
    ({"hierarchy": 3}, "hierarchy must be one of (1, 2) (stochastic layers), got 3"),
    ({"hierarchy": True}, "hierarchy must be one of (1, 2) (stochastic layers), got True"),
    ({"hierarchy": 2, "prior_width": 0},
     "prior_width must be an int >= 1 (the hidden width of p(z1 | z2)), got 0"),
])
def test_invalid_configs_name_the_field_and_value(kwargs, words):
    with pytest.raises(ValueError) as info:
        VAEConfig(**kwargs)
    assert words in str(info.value)


def test_mlp_ignores_conv_divisibility():
    assert VAEConfig(arch="mlp", image_shape=(1, 7, 5)).num_pixels == 35


def test_from_json_rejects_unknown_fields_and_bad_json():
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['latent'\]"):
        VAEConfig.from_dict({"latent": 3})
    with pytest.raises(ValueError, match="not valid JSON"):
        VAEConfig.from_json("{")


def test_a_config_file_is_read_and_each_fault_named(tmp_path):
    """VAEConfig.from_json_file, the reader of every --config: defaults for what the file leaves out, and a
    message naming the file for each way it can be wrong."""
    path = tmp_path / "c.json"
    path.write_text('{"image_shape": [1, 8, 8], "conv_channels": [4], "latent_dim": 2}')
    assert VAEConfig.from_json_file(str(path)).conv_channels == (4,)
    path.write_text('{"conv_channels": [4]}')
    assert VAEConfig.from_json_file(path, image_shape=(3, 8, 8)).image_shape == (3, 8, 8)  # the caller's default
    path.write_text('{"image_shape": [1, 8, 8], "colour": "red"}')
    with pytest.raises(ValueError, match=r"c.json: VAEConfig: unknown field"):
        VAEConfig.from_json_file(str(path))
    for text, words in (('{"latent_dim": 3,', f"--config {path} is not valid JSON: Expecting property name"),
                        ("[1, 2]", f"--config {path} must hold a JSON object of VAEConfig fields, not a list"),
                        (b"\xff\xfe\x00", f"--config {path} is not valid JSON"),
                        ('{"latent_dim": -3}', f"--config {path}: VAEConfig.latent_dim must be a positive int"),
                        ('{"conv_channels": "wide"}', f"--config {path}: VAEConfig.conv_channels must be")):
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(ValueError) as info:
            VAEConfig.from_json_file(path, "--config")
        assert words in str(info.value)
    for missing in (tmp_path / "missing.json", tmp_path):  # no file, a folder
        with pytest.raises(ValueError, match=f"cannot read --config {missing}: "):
            VAEConfig.from_json_file(missing, "--config")


def test_a_complete_config_may_lack_only_fields_added_after_format_1():
    """Checkpoints written before `res_blocks` and `decoder_fc_relu` existed still load, meaning no
    residual blocks and no ReLU after the decoder's fc, though a new config has that ReLU; any other
    missing field is an error."""
    assert VAEConfig().decoder_fc_relu is True and VAEConfig.from_dict({}).decoder_fc_relu is True
    old = {k: v for k, v in VAEConfig().to_dict().items()
           if k not in ("res_blocks", "decoder_fc_relu", "levels", "num_classes")}
    assert VAEConfig.from_dict(old, complete=True) == VAEConfig(decoder_fc_relu=False)  # unconditional
    assert VAEConfig.from_dict({**old, "decoder_fc_relu": True}, complete=True).decoder_fc_relu is True
    del old["latent_dim"]
    with pytest.raises(ValueError, match=r"missing field\(s\) \['latent_dim'\]"):
        VAEConfig.from_dict(old, complete=True)


def test_the_iwae_bound_refuses_what_weighs_its_kl_and_one_sample_is_the_elbo():
    """beta, free bits and a KL warm-up act on the ELBO's KL term, which the IWAE bound of K > 1 samples
    has not: each is refused with it, by name; with one sample (the ELBO) and the ELBO itself they pass."""
    iwae = VAEConfig(objective="iwae", train_samples=4)
    assert iwae.importance_weighted and not VAEConfig(objective="iwae").importance_weighted
    for kwargs, words in (({"beta": 2.0}, "beta = 2.0 conflicts"), ({"free_bits": 0.5}, "free bits = 0.5"),
                          ({"kl_warmup": 100}, "a KL warm-up (kl_warmup) = 100")):
        with pytest.raises(ValueError, match="train_samples=4: the IWAE bound has no KL term") as info:
            check_bound_terms(iwae, **kwargs)
        assert words in str(info.value)
        check_bound_terms(VAEConfig(objective="iwae", beta=0.5), **kwargs)  # one sample: the ELBO's terms
        check_bound_terms(VAEConfig(beta=0.5), **kwargs)
    check_bound_terms(iwae, beta=1.0, free_bits=0.0, kl_warmup=0)


def test_a_stored_config_without_the_objective_or_prior_is_the_elbo_of_the_standard_prior():
    """Checkpoints and run records written before `objective`, `train_samples`, `prior`, `pseudo_inputs`,
    `hierarchy` and `prior_width` existed load as the ELBO, one sample, N(0, I), one stochastic layer; a
    config with them round-trips."""
    later = ("objective", "train_samples", "prior", "pseudo_inputs", "hierarchy", "prior_width")
    old = {k: v for k, v in VAEConfig().to_dict().items() if k not in later}
    assert VAEConfig.from_dict(old, complete=True) == VAEConfig()
    for config in (VAEConfig(objective="iwae", train_samples=5), VAEConfig(prior="vamp", pseudo_inputs=7),
                   VAEConfig(hierarchy=2, prior_width=9)):
        assert VAEConfig.from_json(config.to_json(), complete=True) == config


def test_two_levels_draw_noise_for_both_and_take_any_prior_objective_and_labels():
    """eps is latent_dim wide per stochastic layer (z2's columns, then z1's); a two-level model combines
    with the VampPrior on z2, the IWAE bound, labels and free bits (2 latent terms)."""
    assert VAEConfig().noise_dim == 20 and VAEConfig(hierarchy=2, latent_dim=7).noise_dim == 14
    VAEConfig(hierarchy=2, prior="vamp", objective="iwae", train_samples=3)
    VAEConfig(hierarchy=2, num_classes=4)
    check_bound_terms(VAEConfig(hierarchy=2), free_bits=0.5)


def test_the_vampprior_refuses_free_bits_by_name():
    """Its KL is an estimate at the drawn z, with no per-dimension terms: free bits are refused; beta and a
    KL warm-up, which weigh the whole estimate, pass."""
    vamp = VAEConfig(prior="vamp")
    with pytest.raises(ValueError, match="free bits = 0.5 conflicts with prior='vamp': the VampPrior's KL is"):
        check_bound_terms(vamp, free_bits=0.5)
    check_bound_terms(vamp, beta=0.5, kl_warmup=100)
    check_bound_terms(VAEConfig(), free_bits=0.5)

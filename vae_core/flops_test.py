import pytest

from vae_core.config import VAEConfig
from vae_core.flops import (
    forward_flops,
    layer_flops,
    layer_outputs,
    step_bytes,
    step_flops,
    train_step_flops,
)
from vae_core.layout import num_parameters


def test_seed_model_counts_by_hand():
    flops = layer_flops(VAEConfig())
    assert flops == {
        "encoder.convs.0": 2 * 1 * 32 * 16 * 14 * 14, "encoder.convs.1": 2 * 32 * 64 * 16 * 7 * 7,
        "fc_mu": 2 * 3136 * 20, "fc_logvar": 2 * 3136 * 20, "decoder.fc": 2 * 20 * 3136,
        "decoder.deconvs.0": 2 * 64 * 32 * 16 * 7 * 7, "decoder.deconvs.1": 2 * 32 * 1 * 16 * 14 * 14,
    }
    assert forward_flops(VAEConfig()) == 7_200_256
    assert train_step_flops(VAEConfig()) == 3 * 7_200_256 - 200_704  # 21.4 MFLOP


def test_mlp_counts():
    assert forward_flops(VAEConfig(arch="mlp")) == 2 * (784 * 400 + 2 * 400 * 20 + 20 * 400 + 400 * 784)


def test_seed_model_bytes_by_hand():
    config = VAEConfig()
    outputs = {"encoder.convs.0": 32 * 14 * 14, "encoder.convs.1": 64 * 7 * 7, "fc_mu": 20, "fc_logvar": 20,
               "decoder.fc": 3136, "decoder.deconvs.0": 32 * 14 * 14, "decoder.deconvs.1": 28 * 28}
    assert layer_outputs(config) == outputs
    weights = (32 * 16 + 32) + (64 * 32 * 16 + 64) + 2 * (3136 * 20 + 20) + (20 * 3136 + 3136) \
        + (64 * 32 * 16 + 32) + (32 * 16 + 1)
    assert num_parameters(config) == weights == 258_025
    activations = sum(outputs.values())  # 19,640 per image
    # inference: images read, each activation written + read, the weights read, float32
    assert step_bytes(config, "infer", 1) == 4 * (784 + 2 * activations) + 4 * weights
    # training at b=4096: 5 passes over the activations and z, the images twice, eps once, and the weights,
    # gradients and both moments read and written: 1.64 GB
    per_image = 4 * 5 * (activations + 20) + 4 * (2 * 784 + 20)
    assert step_bytes(config, "train", 4096) == 4096 * per_image + 8 * 4 * weights == 1_644_821_792
    # mixed precision halves the activations' bytes, not the data's or the parameters'
    assert step_bytes(config, "train", 1, "bfloat16") == 2 * 5 * (activations + 20) + 4 * (2 * 784 + 20) \
        + 8 * 4 * weights


def test_bytes_grow_with_the_batch_and_refuse_unknown_names():
    config = VAEConfig(arch="mlp")
    per_image = step_bytes(config, "train", 2) - step_bytes(config, "train", 1)
    assert step_bytes(config, "train", 10) == step_bytes(config, "train", 1) + 9 * per_image
    assert step_flops(config, "train", 3) == 3 * train_step_flops(config)
    with pytest.raises(ValueError, match="kind must be one of"):
        step_bytes(config, "eval", 1)
    with pytest.raises(ValueError, match="dtype must be one of"):
        step_bytes(config, "train", 1, "float16")


def test_k_samples_decode_k_times_and_the_vampprior_encodes_its_pseudo_inputs_per_step():
    seed = VAEConfig()
    decoder = sum(v for k, v in layer_flops(seed).items() if k.startswith("decoder."))
    iwae = VAEConfig(objective="iwae", train_samples=5)
    assert forward_flops(seed, 5) == forward_flops(seed) + 4 * decoder
    assert train_step_flops(iwae) == 3 * (forward_flops(seed) + 4 * decoder) - layer_flops(seed)["encoder.convs.0"]
    encoder = forward_flops(seed) - decoder
    vamp = VAEConfig(prior="vamp", pseudo_inputs=500)
    assert step_flops(vamp, "train", 128) == step_flops(seed, "train", 128) + 3 * 500 * encoder
    assert step_flops(vamp, "infer", 128) == step_flops(seed, "infer", 128)
    assert num_parameters(vamp) == num_parameters(seed) + 500 * 784
    assert step_bytes(iwae, "train", 1) > step_bytes(seed, "train", 1)
    assert step_bytes(vamp, "train", 1) > step_bytes(seed, "train", 1) + 8 * 4 * 500 * 784

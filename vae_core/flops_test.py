from vae_core.config import VAEConfig
from vae_core.flops import forward_flops, layer_flops, train_step_flops


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

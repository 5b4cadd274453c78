"""One analytic FLOP count for both twins: every benchmark rate divides by it.

Counted: the multiply-adds of convolutions, transposed convolutions and linear layers, as 2 FLOPs each,
useful work only (a stride-2 transposed conv scatters each input pixel through k*k taps; the zeros an
implementation may insert are not counted). Not counted: biases, activations, the loss, the optimizer
(together under 1% for the seed model). A training step is the forward pass, the weight gradients (as
much again) and the input gradients (as much again, except the first layer's: the images need none).
"""

from __future__ import annotations

from vae_core.config import VAEConfig
from vae_core.layout import layer_specs


def layer_flops(config: VAEConfig) -> dict[str, int]:
    """Forward FLOPs per image of every layer, by canonical layer name, in model order."""
    _, h, w = config.image_shape
    flops = {}
    for layer in layer_specs(config):
        macs = layer.in_features * layer.out_features
        if layer.kind == "conv":  # output pixels: the input's divided by the stride
            h, w = h // layer.stride, w // layer.stride
            macs *= layer.kernel**2 * h * w
        elif layer.kind == "conv_transpose":  # input pixels, each through k*k taps
            macs *= layer.kernel**2 * h * w
            h, w = h * layer.stride, w * layer.stride
        flops[layer.name] = 2 * macs
    return flops


def forward_flops(config: VAEConfig) -> int:
    return sum(layer_flops(config).values())


def inference_flops(config: VAEConfig) -> int:
    """encode (mu and logvar) + decode(mu), per image."""
    return forward_flops(config)


def train_step_flops(config: VAEConfig) -> int:
    """forward + weight gradients + input gradients (none for the first layer), per image."""
    first = next(iter(layer_flops(config).values()))
    return 3 * forward_flops(config) - first

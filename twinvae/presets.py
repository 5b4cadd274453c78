"""The named models of `--preset`, each with the training options it was tuned with (flags given
explicitly win over them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vae_core.config import VAEConfig


@dataclass(frozen=True)
class Preset:
    model: dict  # VAEConfig fields; the image shape is the dataset's
    training: dict = field(default_factory=dict)  # TrainOptions fields

    def config(self, image_shape: tuple[int, int, int] = (1, 28, 28)) -> VAEConfig:
        return VAEConfig(image_shape=image_shape, **self.model)


PRESETS = {
    "seed": Preset({"arch": "conv", "conv_channels": (32, 64), "latent_dim": 20}),  # the seed's conv VAE
    "mlp": Preset({"arch": "mlp", "mlp_widths": (400,), "latent_dim": 20}),  # pytorch/examples
    # twice the seed's width, a residual block at each resolution, a higher peak rate with a cosine decay
    "resnet": Preset({"arch": "conv", "conv_channels": (64, 128), "res_blocks": 1, "latent_dim": 20},
                     {"lr": 2e-3, "lr_schedule": "cosine", "lr_warmup": 200}),
    # two stochastic layers of 40 each, as Tomczak & Welling's ConvHVAE, on the seed's encoder and decoder
    # (their gated convolutions and 300-unit gated layers are beyond 2 cores' epochs)
    "hvae": Preset({"arch": "conv", "conv_channels": (32, 64), "latent_dim": 40, "hierarchy": 2,
                    "prior_width": 300}),
}

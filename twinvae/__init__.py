"""twinvae's application, above both twins: the `twinvae` command, the trainer, evaluation, the apps, data,
pictures and the installed parity harness. It reaches a twin only through twinvae.twin."""

__version__ = "0.2.0"

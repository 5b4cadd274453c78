import os

from twinvae.parity import harness

# The parity tests run on the CPU unless TWINVAE_DEVICE names another device (cuda on a GPU machine).
# TF32 is set explicitly in both frameworks (off unless TWINVAE_TF32=1): torch's cuDNN default is on.
os.environ.setdefault("TWINVAE_DEVICE", "cpu")
harness.set_tf32(os.environ.get("TWINVAE_TF32") == "1")

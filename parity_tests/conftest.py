import os

# The parity tests run on the CPU unless TWINVAE_DEVICE names another device (e.g. cuda on a GPU machine).
os.environ.setdefault("TWINVAE_DEVICE", "cpu")

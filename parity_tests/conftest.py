import os

# Parity runs on the CPU unless TWINVAE_DEVICE says otherwise; keep XLA from grabbing all cores' threads
# in ways that differ between runs.
os.environ.setdefault("TWINVAE_DEVICE", "cpu")

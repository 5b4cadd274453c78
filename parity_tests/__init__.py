"""The proof that vae_torch and vae_jax agree: `python -m parity_tests` prints the table; pytest runs it."""

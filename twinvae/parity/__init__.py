"""The parity harness, installed with twinvae: `harness` compares the twins quantity by quantity against
the float64 torch reference; `cli` is `twinvae parity` (and `python -m parity_tests`)."""

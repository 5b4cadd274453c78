"""The parity harness, installed with twinvae: `comparisons` compares the twins (`twins`, through
twinvae.twin) quantity by quantity against the float64 torch reference, on the `cases`, by the `measures`,
held to the `tolerances`, and `report` tabulates the rows; `compiles` counts what the comparisons compile;
`cli` is `twinvae parity` (and `python -m parity_tests`)."""

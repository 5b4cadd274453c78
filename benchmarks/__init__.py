"""The benchmark harness: jit-compiled Flax vs torch.compile vs eager PyTorch, run by `python -m benchmarks`
(or `twinvae bench`). See README, "Benchmarks"."""

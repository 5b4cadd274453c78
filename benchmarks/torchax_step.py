"""`python -m benchmarks.torchax_step [--aot v5e:2x2] [--batch-size 4096]`: the torch twin's training step
run through JAX by torchax, checked on the CPU against the JAX twin, then compiled for a TPU chip as
benchmarks/aot.py compiles the JAX twin's (estimates, not measurements).

The torch step as written (fused Adam, loss.backward()) does not trace. What is lowered here is the torch
twin's forward and loss (its unchecked internals, as its own training step calls them), made a JAX function
of the weights by torchax.extract_jax, differentiated by jax.value_and_grad and stepped by optax's Adam:
one jitted step. Needs `pip install torchax --no-deps` (its extras pull an unpinned jax) and, for --aot,
the tpu-aot extra.

torchax 0.0.13 names named-tensor overloads (aten.prod.dim_Dimname and the like) that torch 2.13 no longer
has, and fails on import; `_allow_removed_overloads` lets those lookups return placeholders that nothing
calls (this VAE uses no named tensors), while torchax builds its tables.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from twinvae.results import make_results_folder, results_origin, write_results


@contextlib.contextmanager
def _allow_removed_overloads():
    """Within: a lookup of a removed named-tensor overload gives a placeholder (yields their list)."""
    import torch._ops

    lookup, missing = torch._ops.OpOverloadPacket.__getattr__, []

    def getattr_(packet, name):
        try:
            return lookup(packet, name)
        except AttributeError:
            if "name" not in name.lower():
                raise
            missing.append(f"{packet._qualified_op_name}.{name}")
            return missing[-1]  # a hashable placeholder, only ever a dict key in torchax's tables

    torch._ops.OpOverloadPacket.__getattr__ = getattr_
    try:
        yield missing
    finally:
        torch._ops.OpOverloadPacket.__getattr__ = lookup


def build_step(config, learning_rate: float = 1e-3):
    """(weights, loss_fn(weights, x, eps), step(weights, opt_state, x, eps)): the torch twin through JAX."""
    import jax
    import optax
    import torch

    import vae_torch

    class Loss(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x, eps):
            output = self.model(x, eps, check_inputs=False)
            return vae_torch.vae_loss(output, x, config, check_inputs=False).total

    with _allow_removed_overloads() as missing:  # torchax builds its op tables on import and first use
        import torchax

        weights, function = torchax.extract_jax(Loss(vae_torch.init_model(config, seed=0)))
    optimizer = optax.adam(learning_rate)

    def loss_fn(weights, x, eps):
        return function(weights, (x, eps))

    @jax.jit
    def step(weights, opt_state, x, eps):
        loss, grads = jax.value_and_grad(loss_fn)(weights, x, eps)
        updates, opt_state = optimizer.update(grads, opt_state, weights)
        return optax.apply_updates(weights, updates), opt_state, loss

    return weights, loss_fn, step, optimizer, missing


def check_against_jax_twin(config, weights, loss_fn, batch_size: int = 8) -> dict:
    """The torchax loss and gradients against the JAX twin's, from the same canonical weights, on the CPU."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import vae_jax
    from twinvae.compare import relative_error
    from vae_core import seeds

    rng = seeds.rng(0, "data")
    x = rng.random((batch_size, *config.image_shape)).astype(np.float32)
    eps = seeds.eps_for_step(0, 0, batch_size, config.noise_dim, "float32")
    loss, grads = jax.value_and_grad(loss_fn)(weights, jnp.asarray(x), jnp.asarray(eps))
    model = vae_jax.init_model(config, seed=0)
    graphdef, params = nnx.split(model)

    def jax_loss(params):
        twin = nnx.merge(graphdef, params)
        xj = vae_jax.as_input(x, twin)
        return vae_jax.vae_loss(twin(xj, jnp.asarray(eps)), xj, config).total

    reference, reference_grads = jax.value_and_grad(jax_loss)(params)
    canonical = vae_jax.weights.to_canonical(reference_grads, config)
    errors = {key.removeprefix("model."): relative_error(np.asarray(g), canonical[key.removeprefix("model.")])
              for key, g in grads.items()}
    return {"loss": float(loss), "jax_twin_loss": float(reference),
            "loss_error": relative_error(np.asarray(loss), np.asarray(reference)),
            "max_gradient_error": max(errors.values())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.torchax_step", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--aot", metavar="TOPOLOGY", help="also compile the step for one chip of this TPU topology")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--markdown", metavar="FILE", help="also write what is printed to this file, after the command")
    args = p.parse_args(argv)
    command = "python -m benchmarks.torchax_step " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = []

    def report(line: str) -> None:  # printed, and the file so far written again, whole
        print(line)
        lines.append(line)
        if args.markdown:
            write_results(args.markdown, f"{results_origin(command)}.\n\n" + "\n\n".join(lines) + "\n")

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    import jax
    import jax.numpy as jnp

    from vae_core.config import VAEConfig

    make_results_folder(args.markdown)
    config = VAEConfig()
    weights, loss_fn, step, optimizer, missing = build_step(config)
    report(f"torchax: {len(missing)} removed overloads stood in for: {', '.join(missing)}")
    check = check_against_jax_twin(config, weights, loss_fn)
    report(f"CPU, float32, batch 8: loss {check['loss']:.6f} (JAX twin {check['jax_twin_loss']:.6f}, relative "
          f"error {check['loss_error']:.1e}); largest gradient error {check['max_gradient_error']:.1e}")
    if not args.aot:
        return 0
    from jax.sharding import SingleDeviceSharding

    from benchmarks import aot

    device = aot.aot_device(args.aot)
    on_chip = SingleDeviceSharding(device)

    def abstract(a):
        return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_chip)

    c, h, w = config.image_shape
    point = aot.aot_point(args.aot, "train", ("native", "native"), args.batch_size, "float32", config=config)
    x = jax.ShapeDtypeStruct((args.batch_size, c, h, w), jnp.float32, sharding=on_chip)  # NCHW: the torch twin's
    eps = jax.ShapeDtypeStruct((args.batch_size, config.noise_dim), jnp.float32, sharding=on_chip)
    with jax.default_matmul_precision(point.precision):
        compiled = step.lower(jax.tree.map(abstract, weights), jax.tree.map(abstract, optimizer.init(weights)),
                              x, eps).compile()
    row = aot.analyse(compiled, point, device)
    report(f"{row['chip']} ({device.device_kind}), torch twin via torchax, training, batch {args.batch_size}, "
          f"float32, precision default: XLA {row['xla_flops'] / 1e9:.1f} GFLOP, {row['xla_bytes'] / 1e9:.3f} GB "
          f"({row['bytes_vs_minimum']:.2f}x the analytic minimum), HBM {row['hbm_total'] / 2**20:.0f} MiB; "
          f"est. {1e3 * row['step_s']:.3f} ms ({row['bound']}-bound)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

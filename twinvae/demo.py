"""`twinvae demo`: one config, both twins. Train a few Adam steps in torch on the embedded digits, write a
checkpoint, read it in JAX, and show that both twins compute the same numbers on held-out digits, then
continue training both from that checkpoint on the same batches and eps."""

from __future__ import annotations

import os
import time

import numpy as np

from twinvae.compare import relative_error
from twinvae.data import load_digits
from twinvae.results import markdown_table
from twinvae.twin import Model, Twin, load_twin
from vae_core import seeds
from vae_core.config import VAEConfig

DIGITS_CONFIG = VAEConfig(image_shape=(1, 8, 8), conv_channels=(16, 32), latent_dim=8)
# The demo fails (exit 1) if the twins' forward pass, losses or samples differ by more than this.
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}


def run_demo(out: str = "runs/demo", seed: int = 0, steps: int = 20, batch_size: int = 64,
             dtype: str = "float32") -> int:
    for name, value in (("steps", steps), ("batch size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    torch_twin, jax_twin = (load_twin(backend, float64=dtype == "float64") for backend in ("torch", "jax"))
    config = DIGITS_CONFIG
    digits = load_digits()
    train_x, test_x = digits.train_x.astype(dtype), digits.test_x.astype(dtype)
    per_epoch = len(train_x) // batch_size
    if per_epoch < 1:
        raise ValueError(f"batch size {batch_size} is larger than the {len(train_x)} training digits")
    batches = []
    for i in range(2 * steps):  # a fresh permutation of the training set each epoch, from the 'data' stream
        epoch, k = divmod(i, per_epoch)
        order = seeds.epoch_order(seed, epoch, len(train_x))
        batches.append(train_x[order[k * batch_size:(k + 1) * batch_size]])
    eps = [seeds.eps_for_step(seed, i, batch_size, config.noise_dim, dtype) for i in range(2 * steps)]

    print(f"config: {config.to_json()}\ndata: digits, {len(train_x)} train / {len(test_x)} test, {dtype}")
    start = time.perf_counter()
    model, losses = _train(torch_twin, torch_twin.init_model(config, seed, dtype), batches[:steps], eps[:steps])
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "torch_model.safetensors")
    torch_twin.save_checkpoint(path, model, config, {"trained_by": "torch", "steps": steps})
    print(f"torch: {steps} Adam steps ({time.perf_counter() - start:.1f}s), loss {losses[-1]:.3f}, "
          f"checkpoint written to {path}")

    torch_model, _, _ = torch_twin.load_checkpoint(path)
    jax_model, _, metadata = jax_twin.load_checkpoint(path)
    print(f"jax: read the checkpoint (metadata {metadata})\n")
    x = test_x[:batch_size]
    e = seeds.eps_for_step(seed + 1, 0, len(x), config.noise_dim, dtype)
    rows = [(name, t, j) for (name, t), (_, j) in zip(_held_out(torch_twin, torch_model, x, e),
                                                      _held_out(jax_twin, jax_model, x, e))]
    checked = len(rows)  # the rows above must agree within TOLERANCE; training rows are shown, not judged
    t_model, t_losses = _train(torch_twin, torch_model, batches[steps:], eps[steps:])
    j_model, j_losses = _train(jax_twin, jax_model, batches[steps:], eps[steps:], compiled=True)
    rows.append((f"{steps} more Adam steps: losses", np.array(t_losses), np.array(j_losses)))
    t_w, j_w = torch_twin.export_weights(t_model), jax_twin.export_weights(j_model)
    rows.append((f"{steps} more Adam steps: params", np.concatenate([t_w[k].ravel() for k in t_w]),
                 np.concatenate([j_w[k].ravel() for k in t_w])))

    def show(v):
        return f"{v:.4f}" if np.ndim(v) == 0 else f"shape {np.shape(v)}"

    print(markdown_table([f"quantity ({len(x)} held-out digits)", "torch", "jax", "max|jax-torch|/max|torch|"],
                         [[name, show(t), show(j), f"{relative_error(j, t):.1e}"] for name, t, j in rows]))
    print(f"\nfinal losses: torch {t_losses[-1]:.4f}, jax {j_losses[-1]:.4f}")
    worst = max(relative_error(j, t) for _, t, j in rows[:checked])
    if not worst <= TOLERANCE[dtype]:
        print(f"the twins disagree: {worst:.1e} > {TOLERANCE[dtype]:.0e}")
        return 1
    print(f"the twins agree: largest error {worst:.1e} <= {TOLERANCE[dtype]:.0e}")
    return 0


def _train(twin: Twin, model: Model, batches: list, eps: list, compiled: bool = False) -> tuple[Model, list]:
    """Adam from a fresh state, one step per batch and eps: the trained model and each step's loss.
    compiled: the twin's compiled step (JAX's, as the trainer runs it), else its eager one (torch's)."""
    state = twin.create_train_state(model)
    step = twin.compile_train_step(state) if compiled else twin.train_step
    losses = []
    for x, e in zip(batches, eps):
        state, loss = step(state, twin.as_input(x, model), twin.as_input(e, model))
        losses.append(float(loss.total))
    return state.model, losses


def _held_out(twin: Twin, model: Model, x, e) -> list[tuple[str, object]]:
    """What the table compares on held-out digits x (eps e), in canonical numpy: the forward pass, its
    losses and 8 samples."""
    images = twin.as_input(x, model)
    out = model(images, twin.as_input(e, model))
    losses = twin.vae_loss(out, images, model.config)
    values = [(name, twin.to_numpy(value)) for name, value in out._asdict().items() if value is not None]
    values += [(f"loss.{name}", float(twin.to_numpy(value))) for name, value in losses._asdict().items()]
    return [*values, ("sample(8, seed=1)", twin.to_numpy(model.sample(8, seed=1)))]

"""`twinvae demo`: one config, both twins. Train a few Adam steps in torch on the embedded digits, write a
checkpoint, read it in JAX, and show that both twins compute the same numbers on held-out digits, then
continue training both from that checkpoint on the same batches and eps."""

from __future__ import annotations

import os
import time

import numpy as np

from twinvae.compare import relative_error
from twinvae.data import load_digits
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
    import jax

    with jax.enable_x64(dtype == "float64"):
        return _demo(out, seed, steps, batch_size, dtype)


def _demo(out, seed, steps, batch_size, dtype) -> int:
    import jax.numpy as jnp
    import torch

    import vae_jax
    import vae_torch

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
    eps = [seeds.eps_for_step(seed, i, batch_size, config.latent_dim, dtype) for i in range(2 * steps)]

    def nhwc(a):
        return jnp.asarray(a.transpose(0, 2, 3, 1))

    print(f"config: {config.to_json()}\ndata: digits, {len(train_x)} train / {len(test_x)} test, {dtype}")
    start = time.perf_counter()
    state = vae_torch.create_train_state(vae_torch.init_model(config, seed, getattr(torch, dtype)))
    for i in range(steps):
        state, losses = vae_torch.train_step(state, torch.as_tensor(batches[i]), torch.as_tensor(eps[i]))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "torch_model.safetensors")
    vae_torch.save_checkpoint(path, state.model, config, {"trained_by": "torch", "steps": steps})
    print(f"torch: {steps} Adam steps ({time.perf_counter() - start:.1f}s), loss {float(losses.total):.3f}, "
          f"checkpoint written to {path}")

    torch_model, _, _ = vae_torch.load_checkpoint(path)
    jax_model, _, metadata = vae_jax.load_checkpoint(path)
    print(f"jax: read the checkpoint (metadata {metadata})\n")
    x = test_x[:batch_size]
    e = seeds.eps_for_step(seed + 1, 0, len(x), config.latent_dim, dtype)
    with torch.no_grad():
        t_out = torch_model(torch.as_tensor(x), torch.as_tensor(e))
        t_loss = vae_torch.vae_loss(t_out, torch.as_tensor(x), config)
    j_out = jax_model(nhwc(x), jnp.asarray(e))
    j_loss = vae_jax.vae_loss(j_out, nhwc(x), config)
    rows = [(name, np.asarray(t_out[i]), np.asarray(j_out[i])) for i, name in enumerate(("mu", "logvar", "z"))]
    rows.append(("logits", t_out.logits.numpy(), np.asarray(j_out.logits).transpose(0, 3, 1, 2)))
    rows += [(f"loss.{n}", float(t_loss[i]), float(j_loss[i])) for i, n in enumerate(t_loss._fields)]
    rows.append(("sample(8, seed=1)", torch_model.sample(8, seed=1).numpy(),
                 np.asarray(jax_model.sample(8, seed=1)).transpose(0, 3, 1, 2)))

    t_state = vae_torch.create_train_state(torch_model)
    j_state = vae_jax.create_train_state(jax_model)
    j_step = vae_jax.compile_train_step(j_state)
    t_losses, j_losses = [], []
    for i in range(steps, 2 * steps):
        t_state, t_l = vae_torch.train_step(t_state, torch.as_tensor(batches[i]), torch.as_tensor(eps[i]))
        j_state, j_l = j_step(j_state, nhwc(batches[i]), jnp.asarray(eps[i]))
        t_losses.append(float(t_l.total))
        j_losses.append(float(j_l.total))
    checked = len(rows)  # the rows above must agree within TOLERANCE; training rows are shown, not judged
    rows.append((f"{steps} more Adam steps: losses", np.array(t_losses), np.array(j_losses)))
    t_w = vae_torch.export_weights(t_state.model)
    j_w = vae_jax.export_weights(j_state.model)
    rows.append((f"{steps} more Adam steps: params", np.concatenate([t_w[k].ravel() for k in t_w]),
                 np.concatenate([j_w[k].ravel() for k in t_w])))

    print(f"| quantity ({len(x)} held-out digits) | torch | jax | max|jax-torch|/max|torch| |")
    print("|---|---|---|---|")
    for name, t, j in rows:
        show = (lambda v: f"{v:.4f}") if np.ndim(t) == 0 else (lambda v: f"shape {np.shape(v)}")
        print(f"| {name} | {show(t)} | {show(j)} | {relative_error(j, t):.1e} |")
    print(f"\nfinal losses: torch {t_losses[-1]:.4f}, jax {j_losses[-1]:.4f}")
    worst = max(relative_error(j, t) for _, t, j in rows[:checked])
    if not worst <= TOLERANCE[dtype]:
        print(f"the twins disagree: {worst:.1e} > {TOLERANCE[dtype]:.0e}")
        return 1
    print(f"the twins agree: largest error {worst:.1e} <= {TOLERANCE[dtype]:.0e}")
    return 0

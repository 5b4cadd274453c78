"""One Adam training step, eager or compiled whole with torch.compile. Mirrors vae_jax/train.py:
`state, losses = train_step(state, x, eps)` in both twins."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vae_core import checks, layout
from vae_core.config import check_bound_terms
from vae_core.likelihood import nats_offset
from vae_core.outputs import VAELoss
from vae_torch.checks import dtype_name
from vae_torch.losses import importance_terms, kl_per_image, reconstruction_loss, vae_loss
from vae_torch.model import VAE


@dataclass
class TrainState:
    model: VAE
    optimizer: torch.optim.Adam
    step: int = 0
    free_bits: float = 0.0  # nats per latent dimension, in the training objective only (see vae_loss)
    ddp: torch.nn.Module | None = None  # the model's DistributedDataParallel wrapper (distributed.replicate)


def create_train_state(model: VAE, learning_rate: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                       free_bits: float = 0.0) -> TrainState:
    """Adam with torch.optim.Adam's defaults (the same maths as optax.adam), fused: one kernel updates every
    parameter (faster than the per-parameter loop: docs/perf-log.md);
    free_bits >= 0 nats per latent dimension for the training objective. The learning rate is a tensor
    (in the model's dtype), so a schedule changes it in place and a compiled step does not recompile.
    Create the state after moving the model to its device: Adam's state lives beside the parameters."""
    learning_rate, betas, eps = checks.check_adam(learning_rate, betas, eps)
    free_bits = checks.check_free_bits(free_bits)
    check_bound_terms(model.config, free_bits=free_bits)
    device = next(model.parameters()).device
    if device.type == "cpu":  # Adam's state lives beside the parameters: host memory only for a CPU model
        layout.check_fits_in_memory(model.config, dtype_name(model.dtype), model.dtype.itemsize, training=True)
    rate = torch.tensor(learning_rate, dtype=model.dtype, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=rate, betas=betas, eps=eps, fused=True)
    for p in model.parameters():
        optimizer.state[p] = _adam_slot(p, 0, torch.zeros_like(p), torch.zeros_like(p))
    return TrainState(model, optimizer, free_bits=free_bits)


def move_train_state(state: TrainState, device: torch.device) -> TrainState:
    """The model and all of Adam's state (moments, step counts, learning rate) to `device`, in place:
    fused Adam needs every one of them beside the parameters."""
    state.model.to(device)  # moves each parameter's data; the Parameters, Adam's keys, stay the same
    for p, slot in state.optimizer.state.items():
        state.optimizer.state[p] = _adam_slot(p, int(slot["step"]), slot["exp_avg"].to(device),
                                              slot["exp_avg_sq"].to(device))
    for group in state.optimizer.param_groups:
        group["lr"] = group["lr"].to(device)
    return state


def _adam_slot(p, step: int, exp_avg, exp_avg_sq) -> dict:
    # the state fused Adam would create lazily: a float32 step count on the parameter's device (a float64
    # model still trains float64-exactly against optax: the float64 parity cases, eager and compiled)
    return {"step": torch.tensor(float(step), dtype=torch.float32, device=p.device),
            "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}


def export_optimizer_state(state: TrainState) -> dict[str, np.ndarray]:
    """Adam's moments in canonical layout ('exp_avg.<key>', 'exp_avg_sq.<key>') and its step count."""
    names = {p: key for key, p in state.model.named_parameters()}
    arrays = {"step": np.asarray(int(state.step), np.int64)}
    for p, slot in state.optimizer.state.items():
        for moment in ("exp_avg", "exp_avg_sq"):
            arrays[f"{moment}.{names[p]}"] = slot[moment].detach().cpu().numpy().copy()
    return arrays


def import_optimizer_state(state: TrainState, arrays: dict) -> TrainState:
    """Load Adam's moments and step count (canonical layout, from either twin) into `state`, in place."""
    model = state.model
    for moment in ("exp_avg", "exp_avg_sq"):
        layout.check_weights({k.removeprefix(f"{moment}."): v for k, v in arrays.items()
                            if k.startswith(f"{moment}.")}, model.config)
    step = int(np.asarray(arrays["step"]).reshape(-1)[0])  # 0-d, or (1,) after a safetensors round trip
    for key, p in model.named_parameters():
        # each moment in its parameter's strides (channels_last too), as Adam makes them: the update's
        # rounding follows the layout, and a resumed run must round as the uninterrupted one did
        state.optimizer.state[p] = _adam_slot(
            p, step, *(torch.empty_like(p).copy_(torch.as_tensor(np.asarray(arrays[f"{moment}.{key}"])))
                       for moment in ("exp_avg", "exp_avg_sq")))
    state.step = step
    return state


def train_step(state: TrainState, x, eps, beta=None, *, labels=None, target=None, learning_rate=None,
               check_inputs: bool = True) -> tuple[TrainState, VAELoss]:
    """Forward, backward and Adam update on one batch; updates `state` in place and returns it with the
    step's losses (before the update, detached). labels: a class-conditional model's class indices (N,).
    The reconstruction is scored against `target` (default x): a denoising VAE encodes noisy images x and
    reconstructs the clean target. learning_rate replaces the optimizer's from this step on, as a schedule
    does. eps: (N, noise_dim), or (K, N, noise_dim) for config.train_samples K > 1 (the IWAE bound; beta
    then 1; noise_dim: latent_dim per stochastic layer).
    check_inputs=False skips the batch checks, for loops that validated their data once."""
    return _run(_step_body, state, x, eps, beta, labels, target, learning_rate, check_inputs)


def compile_train_step(state: TrainState, mode: str = "default", *, check_inputs: bool = True):
    """train_step with its body (forward, backward, Adam) compiled by torch.compile. Inputs are checked
    eagerly before entering the compiled code; beta is passed as a tensor so a changing beta (KL warm-up)
    does not recompile. Shapes are specialised (dynamic=False): a new batch size compiles anew."""
    # A mode is a set of Inductor options (torch.compile takes a mode or options, not both). On a CPU one
    # more: Inductor turns its layout optimisation on per graph, for any graph with a forward convolution;
    # the backward graph has none, so unforced it copies the activations that feed each 1-channel conv's
    # backward into a layout oneDNN then copies back (docs/perf-log.md).
    # Not forced on a GPU, where it is unmeasured.
    options = torch._inductor.list_mode_options(mode or "default", dynamic=False)
    if next(state.model.parameters()).device.type == "cpu":
        options = {**options, "force_layout_optimization": True}
    compiled = torch.compile(_step_body, dynamic=False, options=options)

    def step(state: TrainState, x, eps, beta=None, *, labels=None, target=None, learning_rate=None,
             ) -> tuple[TrainState, VAELoss]:
        model = state.model
        if check_inputs:  # here, before beta becomes a tensor (a str would fail in torch.as_tensor)
            beta = _check_step(model, x, eps, target, labels, beta)
        beta = torch.as_tensor(model.config.beta if beta is None else beta, dtype=model.dtype, device=x.device)
        return _run(compiled, state, x, eps, beta, labels, target, learning_rate, check_inputs=False)

    return step


@torch.no_grad()
def evaluate(model: VAE, x, eps, labels=None) -> VAELoss:
    """Per-image negative ELBO terms at beta = 1 (shape (N,) each; the KL kl_per_image's), for test-set
    figures; unchecked."""
    out = model(x, eps, labels=labels, check_inputs=False)
    reconstruction = reconstruction_loss(out.logits, x, model.config.likelihood, model.config.levels)
    kl = kl_per_image(out)
    return VAELoss(reconstruction + kl, reconstruction, kl)


@torch.no_grad()
def importance_log_weights(model: VAE, x, eps, labels=None):
    """log p(x|z) + log p(z) - log q(z|x) for z = mu + sigma * eps, eps of shape (K, N, noise_dim): (K, N),
    in nats (losses.importance_terms, the IWAE objective's terms; a two-level model's z is (z1, z2)). Their
    log-mean-exp over K is the IWAE bound on log p(x) (on log p(x | label) for a conditional model);
    unchecked."""
    out = model(x, eps, labels=labels, check_inputs=False)
    reconstruction, log_pz, log_qz = importance_terms(out, x, model.config)
    offset = nats_offset(model.config.likelihood, model.config.num_pixels)
    log_px = -reconstruction - offset if offset else -reconstruction
    return log_px + log_pz - log_qz


def _check_step(model: VAE, x, eps, target, labels, beta):
    """A training step's checks: its batch (model.check_batch), eps of the config's train_samples and beta
    (a number, 1 for the IWAE bound); returns beta, checked (None stays None)."""
    model.check_batch(x, eps, target, labels)
    checks.check_train_samples("eps", tuple(eps.shape), model.config.train_samples)
    if beta is not None:
        beta = checks.check_beta(beta)
        check_bound_terms(model.config, beta=beta)
    return beta


def _run(body, state: TrainState, x, eps, beta, labels, target, learning_rate, check_inputs: bool,
         ) -> tuple[TrainState, VAELoss]:
    model = state.model
    if check_inputs:
        _check_step(model, x, eps, target, labels, beta)
    if learning_rate is not None:  # in place: the compiled step reads the same tensor
        rate = checks.check_learning_rate(learning_rate)
        for group in state.optimizer.param_groups:
            group["lr"].fill_(rate)
    model.train()
    losses = body(model if state.ddp is None else state.ddp, state.optimizer, x, eps,
                  model.config.beta if beta is None else beta, state.free_bits, x if target is None else target,
                  labels)
    state.step += 1
    return state, losses


def _step_body(model, optimizer, x, eps, beta, free_bits, target, labels) -> VAELoss:
    # model: the VAE, or its DistributedDataParallel wrapper, whose forward sets up the gradients'
    # all-reduce in backward
    vae = getattr(model, "module", model)
    # (DDP's forward passes keywords on, and checks the batch inside it as before: unchanged there)
    output = vae(x, eps, labels=labels, check_inputs=False) if vae is model else model(x, eps, labels=labels)
    optimizer.zero_grad(set_to_none=True)
    losses = vae_loss(output, target, vae.config, beta, free_bits=free_bits, check_inputs=False)
    losses.total.backward()
    optimizer.step()
    return VAELoss(*(loss.detach() for loss in losses))


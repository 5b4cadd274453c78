"""One Adam training step, eager or compiled whole with torch.compile. Mirrors vae_jax/train.py:
`state, losses = train_step(state, x, eps)` in both twins."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vae_core.outputs import VAELoss
from vae_torch.losses import vae_loss
from vae_torch.model import VAE


@dataclass
class TrainState:
    model: VAE
    optimizer: torch.optim.Adam
    step: int = 0


def create_train_state(model: VAE, learning_rate: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                       ) -> TrainState:
    """Adam with torch.optim.Adam's defaults (the same maths as optax.adam)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, betas=betas, eps=eps)
    # torch creates Adam's state lazily, with a float32 `step` unless the default dtype is float64, and
    # torch.compile computes the bias corrections in the step's dtype: a float64 model needs a float64
    # step to stay float64-exact. So the state is made here, in the model's dtype.
    for p in model.parameters():
        optimizer.state[p] = {"step": torch.zeros((), dtype=model.dtype), "exp_avg": torch.zeros_like(p),
                              "exp_avg_sq": torch.zeros_like(p)}
    return TrainState(model, optimizer)


def train_step(state: TrainState, x, eps, beta=None) -> tuple[TrainState, VAELoss]:
    """Forward, backward and Adam update on one batch; updates `state` in place and returns it.
    Losses are detached tensors of the step's loss (before the update)."""
    model, optimizer = state.model, state.optimizer
    model.train()
    optimizer.zero_grad(set_to_none=True)
    losses = vae_loss(model(x, eps), x, model.config, beta)
    losses.total.backward()
    optimizer.step()
    state.step += 1
    return state, VAELoss(*(loss.detach() for loss in losses))


def compile_train_step(state: TrainState, mode: str = "default"):
    """train_step compiled whole (forward, backward, Adam) with torch.compile. Inputs are checked
    eagerly before entering the compiled code; beta is passed as a tensor so a changing beta (KL warm-up)
    does not recompile."""
    compiled = torch.compile(_compiled_body, mode=mode)

    def step(state: TrainState, x, eps, beta=None) -> tuple[TrainState, VAELoss]:
        model = state.model
        model._check_images("x", x)
        model._check_latents("eps", eps, batch_size=x.shape[0])
        beta = model.config.beta if beta is None else beta
        beta = torch.as_tensor(beta, dtype=model.dtype, device=x.device)
        model.train()
        losses = compiled(model, state.optimizer, x, eps, beta)
        state.step += 1
        return state, losses

    return step


def _compiled_body(model, optimizer, x, eps, beta):
    optimizer.zero_grad(set_to_none=True)
    losses = vae_loss(model(x, eps), x, model.config, beta)
    losses.total.backward()
    optimizer.step()
    return VAELoss(*(loss.detach() for loss in losses))

"""One Adam training step: a pure function of (state, batch, eps) that jax.jit sees whole. Mirrors
vae_torch/train.py: `state, losses = train_step(state, x, eps)` in both twins."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from vae_core.outputs import VAELoss
from vae_jax.losses import vae_loss
from vae_jax.model import VAE


class TrainState(struct.PyTreeNode):
    params: nnx.State
    opt_state: optax.OptState
    step: jax.Array
    graphdef: nnx.GraphDef = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @property
    def model(self) -> VAE:
        return nnx.merge(self.graphdef, self.params)


def create_train_state(model: VAE, learning_rate: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                       ) -> TrainState:
    """Adam with torch.optim.Adam's defaults (optax.adam is the same maths)."""
    tx = optax.adam(learning_rate, b1=betas[0], b2=betas[1], eps=eps)
    graphdef, params = nnx.split(model, nnx.Param)
    return TrainState(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32),
                      graphdef=graphdef, tx=tx)


def train_step(state: TrainState, x, eps, beta=None) -> tuple[TrainState, VAELoss]:
    """Forward, backward and Adam update on one batch; returns the new state and the step's losses
    (before the update). Pure: jit it whole (compile_train_step does, with donation)."""
    def loss_fn(params):
        model = nnx.merge(state.graphdef, params)
        losses = vae_loss(model(x, eps), x, model.config, beta)
        return losses.total, losses

    grads, losses = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1), losses


def compile_train_step(state: TrainState):
    """train_step under jax.jit, the state donated. Inputs are checked eagerly before entering the
    compiled code; beta is passed as an array so a changing beta (KL warm-up) does not recompile."""
    compiled = jax.jit(train_step, donate_argnums=0)
    model = state.model

    def step(state: TrainState, x, eps, beta=None) -> tuple[TrainState, VAELoss]:
        x = model._check_images("x", x)
        eps = model._check_latents("eps", eps, batch_size=x.shape[0])
        beta = jnp.asarray(model.config.beta if beta is None else beta, model.dtype)
        return compiled(state, x, eps, beta)

    return step

"""One Adam training step: a pure function of (state, batch, eps) that jax.jit sees whole. Mirrors
vae_torch/train.py: `state, losses = train_step(state, x, eps)` in both twins."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from vae_core import checks, layout
from vae_core.config import check_bound_terms
from vae_core.likelihood import nats_offset
from vae_core.outputs import VAELoss
from vae_jax.checks import dtype_name
from vae_jax.forms import jit_for, jitted
from vae_jax.losses import importance_terms, kl_per_image, reconstruction_loss, vae_loss
from vae_jax.model import VAE
from vae_jax.weights import import_weights, to_canonical


class TrainState(struct.PyTreeNode):
    params: nnx.State
    opt_state: optax.OptState  # Adam's moments and count (optax.scale_by_adam's state)
    step: jax.Array
    learning_rate: jax.Array  # the last one used: train_step's learning_rate argument overrides it
    graphdef: nnx.GraphDef = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    free_bits: float = struct.field(pytree_node=False, default=0.0)  # nats per latent dim (see vae_loss)
    mesh: jax.sharding.Mesh | None = struct.field(pytree_node=False, default=None)  # distributed.replicate

    @property
    def model(self) -> VAE:
        return nnx.merge(self.graphdef, self.params)


def create_train_state(model: VAE, learning_rate: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                       free_bits: float = 0.0) -> TrainState:
    """Adam with torch.optim.Adam's defaults: optax.scale_by_adam, then times -learning_rate (optax.adam's
    maths, with the rate a value in the state so a schedule can change it without recompiling). The state
    holds a copy of the model's parameters, so the compiled step can donate them and `model` stays usable;
    the trained model is `state.model` (in vae_torch it is the same object, trained in place). free_bits
    >= 0 nats per latent dimension for the training objective."""
    learning_rate, betas, eps = checks.check_adam(learning_rate, betas, eps)
    free_bits = checks.check_free_bits(free_bits)
    check_bound_terms(model.config, free_bits=free_bits)
    tx = adam_transform(*betas, eps)
    graphdef, params = nnx.split(model, nnx.Param)
    if all(d.platform == "cpu" for d in jax.tree.leaves(params)[0].devices()):  # else an accelerator's memory
        layout.check_fits_in_memory(model.config, dtype_name(model.dtype), model.dtype.itemsize, training=True)
    params = jax.tree.map(jnp.copy, params)
    return _where_params_are(TrainState(
        params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32),
        learning_rate=jnp.asarray(learning_rate, model.dtype), graphdef=graphdef, tx=tx, free_bits=free_bits))


@functools.cache
def adam_transform(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """One transform per set of hyperparameters: it is a static field of TrainState, compared by identity, so
    states made alike share one compiled step (compile_train_step) instead of tracing and compiling it again."""
    return optax.scale_by_adam(b1=b1, b2=b2, eps=eps)


def _where_params_are(state: TrainState) -> TrainState:
    """Every array of the state committed to the parameters' placement. The compiled step's outputs are
    committed; a first state that is not (new arrays, or parameters put on a device beside uncommitted
    ones) would compile the step a second time on the second step (measured: a second 3-13 s compile)."""
    placement = jax.tree.leaves(state.params)[0].sharding
    return jax.device_put(state, placement)


def export_optimizer_state(state: TrainState) -> dict[str, np.ndarray]:
    """Adam's moments in canonical layout ('exp_avg.<key>', 'exp_avg_sq.<key>', torch's names for optax's
    mu and nu) and its step count."""
    adam = state.opt_state
    arrays = {"step": np.asarray(int(adam.count), np.int64)}
    for moment, tree in (("exp_avg", adam.mu), ("exp_avg_sq", adam.nu)):
        arrays.update({f"{moment}.{k}": v for k, v in to_canonical(tree, state.model.config).items()})
    return arrays


def import_optimizer_state(state: TrainState, arrays: dict) -> TrainState:
    """A new state with Adam's moments and step count (canonical layout, from either twin)."""
    config = state.model.config
    moments = {}
    for moment in ("exp_avg", "exp_avg_sq"):
        weights = {k.removeprefix(f"{moment}."): v for k, v in arrays.items() if k.startswith(f"{moment}.")}
        layout.check_weights(weights, config)
        # a scratch model takes the moments through the tested weight import; its params are the tree
        model = nnx.merge(state.graphdef, jax.tree.map(jnp.copy, state.params))
        moments[moment] = nnx.state(import_weights(model, weights), nnx.Param)
    step = int(np.asarray(arrays["step"]).reshape(-1)[0])  # 0-d, or (1,) after a safetensors round trip
    adam = state.opt_state._replace(count=jnp.asarray(step, state.opt_state.count.dtype), mu=moments["exp_avg"],
                                    nu=moments["exp_avg_sq"])
    return _where_params_are(state.replace(opt_state=adam, step=jnp.asarray(step, jnp.int32)))


def train_step(state: TrainState, x, eps, beta=None, *, labels=None, target=None, learning_rate=None,
               check_inputs: bool = True) -> tuple[TrainState, VAELoss]:
    """Forward, backward and Adam update on one batch; returns the new state and the step's losses
    (before the update). Pure: jit it whole (compile_train_step does, with donation). labels: a
    class-conditional model's class indices (N,). The reconstruction is scored against `target` (default
    x): a denoising VAE encodes noisy images x and reconstructs the clean target. learning_rate (a number
    or 0-d array) replaces the state's from this step on, as a schedule does. eps: (N, noise_dim), or (K, N,
    noise_dim) for config.train_samples K > 1 (the IWAE bound; beta then 1; noise_dim: latent_dim per
    stochastic layer). check_inputs=False skips the
    batch checks, for loops that validated their data once (under jit they see only shapes)."""
    model = nnx.merge(state.graphdef, state.params)
    if check_inputs:
        x, eps, target, labels, beta = _check_step(model, x, eps, target, labels, beta)
        if learning_rate is not None:  # concrete values here: under jit check_inputs is off
            checks.check_learning_rate(learning_rate)
    beta = model.config.beta if beta is None else beta
    target = x if target is None else target

    def loss_fn(params):
        output = nnx.merge(state.graphdef, params)(x, eps, labels=labels, check_inputs=False)
        losses = vae_loss(output, target, model.config, beta, free_bits=state.free_bits, check_inputs=False)
        return losses.total, losses

    grads, losses = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    lr = state.learning_rate if learning_rate is None else jnp.asarray(learning_rate, state.learning_rate.dtype)
    params = optax.apply_updates(state.params, jax.tree.map(lambda u: -lr * u, updates))
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1, learning_rate=lr), losses


# one object, so that jitted's cache shares its jit between every compile_train_step
_unchecked_train_step = functools.partial(train_step, check_inputs=False)


def compile_train_step(state: TrainState, *, check_inputs: bool = True, compiler_options: dict | None = None):
    """train_step under jax.jit, the state donated, compiled with `compiler_options` (None: the model's,
    VAE.compiler_options; ahead-of-time compiles for another platform name that platform's). With
    check_inputs (the default) the batch is checked eagerly before entering the compiled code and beta is
    passed as an array, so a changing beta (KL warm-up) does not recompile; with check_inputs=False this is
    the bare jitted function (it has `.lower` for ahead-of-time compilation)."""
    model = state.model
    options = model.compiler_options if compiler_options is None else compiler_options
    compiled = jitted(_unchecked_train_step, tuple(sorted(options.items())), static_argnums=(),
                      donate_argnums=0)
    if not check_inputs:
        return compiled

    def step(state: TrainState, x, eps, beta=None, *, labels=None, target=None, learning_rate=None,
             ) -> tuple[TrainState, VAELoss]:
        x, eps, target, labels, beta = _check_step(model, x, eps, target, labels, beta)
        beta = jnp.asarray(model.config.beta if beta is None else beta, model.dtype)
        if learning_rate is not None:
            learning_rate = jnp.asarray(checks.check_learning_rate(learning_rate), model.dtype)
        return compiled(state, x, eps, beta, labels=labels, target=target, learning_rate=learning_rate)

    return step


def evaluate(model: VAE, x, eps, labels=None) -> VAELoss:
    """Per-image negative ELBO terms at beta = 1 (shape (N,) each; the KL kl_per_image's), for test-set
    figures; unchecked."""
    graphdef, params = nnx.split(model)
    return jit_for(_evaluate, model)(graphdef, params, jnp.asarray(x), jnp.asarray(eps), _labels(labels))


def _evaluate(graphdef, params, x, eps, labels) -> VAELoss:
    model = nnx.merge(graphdef, params)
    out = model(x, eps, labels=labels, check_inputs=False)
    reconstruction = reconstruction_loss(out.logits, x, model.config.likelihood, model.config.levels)
    kl = kl_per_image(out)
    return VAELoss(reconstruction + kl, reconstruction, kl)


def importance_log_weights(model: VAE, x, eps, labels=None):
    """log p(x|z) + log p(z) - log q(z|x) for z = mu + sigma * eps, eps of shape (K, N, noise_dim): (K, N),
    in nats (losses.importance_terms, the IWAE objective's terms; a two-level model's z is (z1, z2)). Their
    log-mean-exp over K is the IWAE bound on log p(x) (on log p(x | label) for a conditional model);
    unchecked."""
    graphdef, params = nnx.split(model)
    return jit_for(_importance_log_weights, model)(graphdef, params, jnp.asarray(x), jnp.asarray(eps),
                                                _labels(labels))


def _importance_log_weights(graphdef, params, x, eps, labels):
    model = nnx.merge(graphdef, params)
    out = model(x, eps, labels=labels, check_inputs=False)
    reconstruction, log_pz, log_qz = importance_terms(out, x, model.config)
    offset = nats_offset(model.config.likelihood, model.config.num_pixels)
    log_px = -reconstruction - offset if offset else -reconstruction
    return log_px + log_pz - log_qz


def _check_step(model: VAE, x, eps, target, labels, beta):
    """A training step's checks: its batch (model.check_batch), eps of the config's train_samples and beta
    (a number, 1 for the IWAE bound); returns the batch as jax arrays and beta, checked (None stays None)."""
    x, eps, target, labels = model.check_batch(x, eps, target, labels)
    checks.check_train_samples("eps", tuple(eps.shape), model.config.train_samples)
    if beta is not None:
        beta = checks.check_beta(beta)
        check_bound_terms(model.config, beta=beta)
    return x, eps, target, labels, beta


def _labels(labels):
    return None if labels is None else jnp.asarray(labels)

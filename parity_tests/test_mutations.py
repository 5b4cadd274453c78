"""Mutation check: the parity comparisons catch a broken twin, and say where it is broken.

The JAX twin is broken in five ways, each with pytest's monkeypatch (nothing on disk changes): a transposed
weight on import, a wrong padding in the encoder's stride-2 conv, a missing ReLU, the KL's sign flipped,
and Adam's epsilon inside the square root. Each broken twin is compared with the torch reference by
`comparisons.compare` on the fast tier's two configs (the 8x8 conv and the 8x8 MLP case of cases.CASES) in
float64, in the twins' default forms on the device, over a few Adam steps. Each mutation must fail the
quantities that see it (the KL's sign `loss.kl`, Adam's epsilon an `adam.*` row, a layer's bug the forward
output after that layer) and pass those that cannot see it (a decoder bug leaves `mu` exact, Adam's bug
leaves forward, losses and gradients exact), and the torch twin's own rows stay exact. The unmutated
control runs the same comparison and must pass every row, so no mutation test passes vacuously.

Every test here is marked `fast`: `pytest -m fast` (the fast tier) includes this file.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import vae_jax.losses
import vae_jax.model
import vae_jax.train
import vae_jax.weights
from twinvae.parity import cases, comparisons, report, tolerances, twins
from vae_core.config import PADDING

STEPS = 3  # Adam steps compared: a few suffice, float64 tells a bug (>= 1e-8) from rounding (~1e-14)
_CASES = {case.name: case for case in cases.CASES}
CONFIGS = {"conv": _CASES["conv 1x8x8 (digits)"], "mlp": _CASES["mlp 1x8x8 discretized logistic, 17 levels"]}

FORWARD = frozenset({"mu", "logvar", "z", "logits", "reconstruct"})
DECODER_ONLY = frozenset({"sample", "decode"})  # z (or the seed's z) -> decoder: the encoder never runs
ADAM = frozenset(q for q in tolerances.QUANTITY_KIND if q.startswith("adam."))


pytestmark = [pytest.mark.fast, pytest.mark.usefixtures("fresh_traces")]  # conftest.py: no stale traces


def _overlay(monkeypatch, module, name: str, **overrides) -> None:
    """`module.name` (a module the JAX twin imported) replaced, for that twin alone, by a copy of it with
    `overrides`: the torch twin, vae_core and optax themselves stay untouched."""
    base = getattr(module, name)
    monkeypatch.setattr(module, name, types.SimpleNamespace(**{**vars(base), **overrides}))


# --- the mutations: each mutation(monkeypatch) breaks the JAX twin as the next comparison builds it -------

def transposed_weight(monkeypatch) -> None:
    """The encoder's first layer imported transposed (vae_jax.weights' layout.to_jax_layout): the conv
    kernel's two spatial axes swapped (kH <-> kW), or the MLP's first Linear reading the image's rows as its
    columns (its H and W input axes swapped; no Linear of the MLP case is square)."""
    right = vae_jax.weights.layout.to_jax_layout

    def wrong(layer, weight, bias):
        kernel, bias = right(layer, weight, bias)
        if layer.name == "encoder.convs.0":  # (kH, kW, C_in, C_out)
            kernel = np.swapaxes(kernel, 0, 1)
        elif layer.name == "encoder.linears.0":  # (H * W * C, out), the NHWC image flattened
            c, h, w = layer.image
            assert h == w, "the H <-> W swap keeps the kernel's shape only for a square image"
            kernel = kernel.reshape(h, w, c, -1).swapaxes(0, 1).reshape(kernel.shape)
        return kernel, bias

    _overlay(monkeypatch, vae_jax.weights, "layout", to_jax_layout=wrong)


def one_sided_padding(monkeypatch) -> None:
    """The encoder's stride-2 convs padded by 2 on the top and left and 0 on the bottom and right instead of
    1 on each side (same output size, one pixel off), in both of their forms: the space-to-depth contraction
    (the CPU default), as its input shifted one pixel down and right, and lax's native conv (the GPU
    default), as the nnx.Conv's padding."""
    encoder_init, space_to_depth = vae_jax.model.ConvEncoder.__init__, vae_jax.model.conv_space_to_depth

    def encoder_with_one_sided_padding(self, config, **kwargs):  # its convs are the stride-2 ones
        encoder_init(self, config, **kwargs)
        for layer in self.convs:
            layer.padding = ((2 * PADDING, 0),) * 2

    def shifted(x, kernel, bias):
        h, w = x.shape[1:3]
        return space_to_depth(jnp.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0)))[:, :h, :w], kernel, bias)

    monkeypatch.setattr(vae_jax.model.ConvEncoder, "__init__", encoder_with_one_sided_padding)
    monkeypatch.setattr(vae_jax.model, "conv_space_to_depth", shifted)


def missing_relu(monkeypatch) -> None:
    """The ReLU after the decoder's fc made the identity: the conv decoder's fc_relu switched off (both
    cases have decoder_fc_relu=True), the MLP decoder's call without it."""
    conv_init = vae_jax.model.ConvDecoder.__init__

    def conv_decoder_init(self, *args, **kwargs):
        conv_init(self, *args, **kwargs)
        self.fc_relu = False

    def mlp_decoder_call(self, z):  # MLPDecoder.__call__, with h = self.fc(z) for nnx.relu(self.fc(z))
        h = self.fc(z)
        for i, linear in enumerate(self.linears):
            h = linear(h)
            if i < len(self.linears) - 1:
                h = nnx.relu(h)
        return h.reshape(-1, *self.output_shape)

    monkeypatch.setattr(vae_jax.model.ConvDecoder, "__init__", conv_decoder_init)
    monkeypatch.setattr(vae_jax.model.MLPDecoder, "__call__", mlp_decoder_call)


def wrong_kl_sign(monkeypatch) -> None:
    """KL(q || p) negated per latent dimension (vae_jax.losses.kl_per_dim, which the loss, the training step
    and kl_divergence all call)."""
    kl_per_dim = vae_jax.losses.kl_per_dim
    monkeypatch.setattr(vae_jax.losses, "kl_per_dim", lambda mu, logvar: -kl_per_dim(mu, logvar))


def adam_eps_inside_sqrt(monkeypatch) -> None:
    """Adam's update m / (sqrt(v + eps)) instead of m / (sqrt(v) + eps): the transform create_train_state
    builds is optax.scale_by_adam(b1, b2, eps=0, eps_root=eps)."""
    scale_by_adam = optax.scale_by_adam

    def eps_inside(b1=0.9, b2=0.999, eps=1e-8, **kwargs):
        return scale_by_adam(b1=b1, b2=b2, eps=0.0, eps_root=eps, **kwargs)

    _overlay(monkeypatch, vae_jax.train, "optax", scale_by_adam=eps_inside)


@dataclass(frozen=True)
class Mutation:
    name: str
    apply: Callable
    caught_by: frozenset  # every one of these quantities must fail
    untouched: frozenset  # quantities the mutation cannot reach: every one must still pass
    archs: tuple = ("conv", "mlp")  # the configs it applies to


MUTATIONS = [
    # the encoder's first layer: everything from mu on fails; decoding a given z never meets it
    Mutation("transposed-weight", transposed_weight, frozenset({"mu", "logits", "grad"}), DECODER_ONLY),
    # the MLP has no padding
    Mutation("one-sided-padding", one_sided_padding, frozenset({"mu", "logits", "grad"}),
             DECODER_ONLY | {"checkpoint"}, archs=("conv",)),
    # in the decoder: the encoder's outputs (and the KL, a function of them alone) stay exact
    Mutation("missing-relu", missing_relu, frozenset({"logits", "decode", "sample", "loss.reconstruction"}),
             frozenset({"mu", "logvar", "z", "loss.kl", "checkpoint"})),
    # the model is right, its KL term is not
    Mutation("wrong-kl-sign", wrong_kl_sign, frozenset({"loss.kl", "loss.total"}),
             FORWARD | DECODER_ONLY | {"loss.reconstruction", "checkpoint"}),
    # only the optimizer: every quantity of the model, its losses and its gradients stays exact
    Mutation("adam-eps-inside-sqrt", adam_eps_inside_sqrt, frozenset({"adam.step1", "adam.params"}),
             frozenset(tolerances.QUANTITY_KIND) - ADAM - frozenset(tolerances.PRIOR_QUANTITIES)),
]


def _compare(case: cases.Case) -> list[report.Row]:
    return comparisons.compare(case, "float64", twins.device_from_env(), steps=STEPS, forms="default")


def _twin_rows(rows: list[report.Row], backend: str) -> list[report.Row]:
    """The rows of one backend's twins (all their forms), and for "jax" the checkpoint rows, which read or
    write through the JAX twin's weight import and export."""
    return [r for r in rows
            if r.twin.split("/")[0] == backend or (backend == "jax" and r.quantity == "checkpoint")]


@pytest.mark.parametrize("arch", CONFIGS)
def test_unmutated_twins_pass(arch):
    """The control: the very comparison the mutations fail passes every row."""
    rows = _compare(CONFIGS[arch])
    assert {r.quantity for r in _twin_rows(rows, "jax")} == tolerances.compared_quantities(CONFIGS[arch].config)
    failed = [r for r in rows if not r.ok]
    assert not failed, "\n" + report.format_table(failed)


@pytest.mark.parametrize("mutation, arch", [
    pytest.param(m, arch, id=f"{m.name}-{arch}") for m in MUTATIONS for arch in m.archs])
def test_mutated_jax_twin_fails(monkeypatch, mutation, arch):
    mutation.apply(monkeypatch)
    rows = _compare(CONFIGS[arch])
    table = "\n" + report.format_table(rows)
    jax_rows = _twin_rows(rows, "jax")
    failed = {r.quantity for r in jax_rows if not r.ok}
    assert failed, f"{mutation.name} went unnoticed{table}"
    assert mutation.caught_by <= failed, f"{mutation.name}: {sorted(mutation.caught_by - failed)} passed{table}"
    assert not failed & mutation.untouched, \
        f"{mutation.name} cannot reach {sorted(failed & mutation.untouched)}, yet they failed{table}"
    # the torch twins were not mutated: their rows (in their default forms) against the reference stay exact
    assert all(r.ok for r in _twin_rows(rows, "torch")), table

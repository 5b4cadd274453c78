"""How XLA's CPU compiler options change the JAX twin's speed, layer by layer and for the whole step:

    python -m benchmarks.xla_options --batch-sizes 128,512 --out benchmarks/results/cpu-xla-options.md

Each of the seed model's layers in each of its forms (vae_core.forms.FORMS), forward and backward (the
gradients with respect to its parameters and its input, as in training), and compile_train_step's step in
the default and the native forms, each compiled under every variant of VARIANTS: the twin's own options
(vae_jax.forms.compiler_options("cpu")) updated with the variant's. One process, JAX's default threads.
Each figure is the best of --repeats runs of about --seconds each, after the compile and one untimed call,
the variants interleaved within each row so that drift touches them alike; beside it, the baseline's time
over the variant's (above 1: the variant is faster). A variant XLA cannot compile says so in its cell."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from twinvae import allocator
from twinvae.presets import PRESETS
from twinvae.results import make_results_folder, markdown_table, publish_results, results_origin
from vae_core.config import VAEConfig
from vae_core.forms import FORMS, NATIVE_FORMS

PROG = "python -m benchmarks.xla_options"

# Compile options take an enum's own names (XLA_FLAGS's lower-case "individual_dot" is refused there); a
# repeated enum takes them comma-separated.
FUSION = "LIBRARY_FUSION_TYPE_"

# What each variant sets on top of the twin's own options; "baseline" is those options alone.
VARIANTS = {
    "baseline": {},
    "onednn": {"xla_cpu_use_onednn": True},
    "onednn custom call": {"xla_cpu_use_onednn": True, "xla_cpu_experimental_onednn_custom_call": True},
    "onednn fusion dot": {"xla_cpu_use_onednn": True,
                          "xla_cpu_experimental_onednn_fusion_type": FUSION + "INDIVIDUAL_DOT"},
    "onednn fusion conv": {"xla_cpu_use_onednn": True,
                           "xla_cpu_experimental_onednn_fusion_type": FUSION + "INDIVIDUAL_CONVOLUTION"},
    "xnn graph greedy": {"xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY"},
    "no ynn": {"xla_cpu_experimental_ynn_fusion_type": ""},  # XLA's own kernels throughout
    "ynn dots": {"xla_cpu_experimental_ynn_fusion_type": FUSION + "INDIVIDUAL_DOT"},
    "ynn dots+reductions": {"xla_cpu_experimental_ynn_fusion_type": f"{FUSION}INDIVIDUAL_DOT,{FUSION}REDUCE"},
}


@dataclass(frozen=True)
class Layer:
    """A layer of the seed model: its kind in vae_core.forms.FORMS (None: native only), its modules in
    the model, the shapes of what it reads past the batch axis (NHWC), and its native form."""

    kind: str | None
    modules: Callable
    inputs: tuple[tuple[int, ...], ...]
    native: Callable  # (modules, *inputs) -> outputs


def _call_module(module, x):
    return module(x)


def _linears(modules, features, z):  # fc_mu and fc_logvar read the same features, as in the model
    fc_mu, fc_logvar, decoder_fc = modules
    return fc_mu(features), fc_logvar(features), decoder_fc(z)


TARGETS = {
    "encoder conv 1->32": Layer("strided_conv", lambda m: m.encoder.convs[0], ((28, 28, 1),), _call_module),
    "encoder conv 32->64": Layer("strided_conv", lambda m: m.encoder.convs[1], ((14, 14, 32),), _call_module),
    "decoder deconv 64->32": Layer("transposed_conv", lambda m: m.decoder.deconvs[0], ((7, 7, 64),),
                                   _call_module),
    "decoder deconv 32->1": Layer("output_transposed_conv", lambda m: m.decoder.deconvs[1], ((14, 14, 32),),
                                  _call_module),
    "linears": Layer(None, lambda m: (m.fc_mu, m.fc_logvar, m.decoder.fc), ((3136,), (20,)), _linears),
}
TRAIN_STEP = "training step"
# each whole-step target's model: the seed model, and the resnet preset (whose 3x3 convolutions and wider
# dots an option can treat otherwise than the seed's layers)
TRAIN_STEPS = {TRAIN_STEP: VAEConfig(), f"resnet {TRAIN_STEP}": PRESETS["resnet"].config()}
TRAIN_STEP_FORMS = {"default": {}, "native": NATIVE_FORMS}

# vae_jax.forms's function, of (x, kernel, bias), for each form other than the native one
FORM_FUNCTIONS = {"space_to_depth": "conv_space_to_depth", "subpixel": "conv_transpose_subpixel",
                  "col2im": "conv_transpose_col2im"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="128,512", help="comma-separated (default 128,512)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs, the best kept (default 5)")
    p.add_argument("--seconds", type=float, default=0.3, help="about how long each timed run lasts (default 0.3)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated, of: {', '.join(VARIANTS)} (default all; baseline always)")
    p.add_argument("--targets", default=",".join([*TARGETS, *TRAIN_STEPS]),
                   help=f"comma-separated, of: {', '.join([*TARGETS, *TRAIN_STEPS])} (default all)")
    p.add_argument("--out", help="write the tables here too (markdown)")
    return p


def _names(text: str, known: list[str], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"{PROG}: error: unknown {what} {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(known)}")
    return list(dict.fromkeys(names))


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(size) for size in text.split(",")]
    except ValueError:
        raise SystemExit(f"{PROG}: error: --batch-sizes must be comma-separated integers, got {text!r}") from None
    if min(sizes) < 1:
        raise SystemExit(f"{PROG}: error: --batch-sizes must be at least 1, got {text!r}")
    return sizes


def variant_options(names: list[str]) -> dict[str, dict]:
    """Each variant's compiler options: the twin's own on the CPU, updated with the variant's."""
    from vae_jax.forms import compiler_options

    own = compiler_options("cpu")
    return {name: {**own, **VARIANTS[name]} for name in names}


def layer_forms(target: str) -> tuple[str, ...]:
    if target in TRAIN_STEPS:
        return tuple(TRAIN_STEP_FORMS)
    kind = TARGETS[target].kind
    return FORMS[kind] if kind else ("native",)


def _apply(layer: Layer, form: str) -> Callable:
    """The layer's outputs in `form`, a function of (its modules, *its inputs), as the model computes it."""
    from vae_jax import forms

    if form == "native":
        return layer.native
    function = getattr(forms, FORM_FUNCTIONS[form])
    return lambda module, x: function(x, module.kernel[...], module.bias[...])


def layer_compiler(target: str, form: str, batch: int) -> tuple[str, Callable]:
    """(the row's form, a function of compiler options -> one call of the layer's forward and backward)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    import vae_jax

    layer = TARGETS[target]
    model = vae_jax.init_model(VAEConfig(), 0, **({layer.kind: form} if layer.kind else {}))
    graphdef, params = nnx.split(layer.modules(model))  # the parameters of the model built in this form
    apply = _apply(layer, form)
    rng = np.random.default_rng(0)
    inputs = tuple(jnp.asarray(rng.random((batch, *shape), np.float32)) for shape in layer.inputs)

    def outputs(params, inputs):
        return jax.tree.leaves(apply(nnx.merge(graphdef, params), *inputs))

    cotangents = [jnp.asarray(rng.standard_normal(o.shape, np.float32))
                  for o in jax.eval_shape(outputs, params, inputs)]

    def pulled_back(params, inputs, cotangents):  # its gradient is the backward pass of these cotangents
        return sum(jnp.sum(o * c) for o, c in zip(outputs(params, inputs), cotangents))

    gradients = jax.grad(pulled_back, argnums=(0, 1))  # the parameters' and the input's, as in training

    def compile_with(options: dict) -> Callable:
        compiled = jax.jit(gradients, compiler_options=options).lower(params, inputs, cotangents).compile()
        return lambda: jax.block_until_ready(compiled(params, inputs, cotangents))

    return form, compile_with


def train_step_compiler(target: str, forms_name: str, batch: int) -> tuple[str, Callable]:
    """As layer_compiler, for one step of compile_train_step of the target's model in the default or the
    native forms."""
    import jax
    import jax.numpy as jnp

    import vae_jax

    model = vae_jax.init_model(TRAIN_STEPS[target], 0, **TRAIN_STEP_FORMS[forms_name])
    forms_text = "+".join(v for v in model.forms.values() if v != "native") or "native"
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((batch, *model.config.image_shape[1:], model.config.image_shape[0]), np.float32))
    eps = jnp.asarray(rng.standard_normal((batch, model.config.noise_dim), np.float32))
    # one state through every variant's step: each donates the state it is given and returns the next
    state = [vae_jax.create_train_state(model, 1e-3)]

    def compile_with(options: dict) -> Callable:
        step = vae_jax.compile_train_step(state[0], check_inputs=False, compiler_options=options)
        compiled = step.lower(state[0], x, eps, 1.0).compile()

        def call():
            state[0], _ = jax.block_until_ready(compiled(state[0], x, eps, 1.0))

        return call

    label = forms_name if forms_name == forms_text else f"{forms_name} ({forms_text})"
    return label, compile_with


def compiled_calls(compile_with: Callable, options: dict[str, dict]) -> dict[str, Callable | str]:
    """Each variant's call, or why XLA did not compile it."""
    import jax

    calls = {}
    for name, variant in options.items():
        try:
            calls[name] = compile_with(variant)
        except jax.errors.JaxRuntimeError as error:  # an option refused, or a pass that fails on this graph
            calls[name] = f"fails to compile: {str(error).splitlines()[0]}"
    return calls


def _calls_per_run(call: Callable, seconds: float) -> int:
    call()  # warm-up
    start = time.perf_counter()
    call()
    return max(1, round(seconds / (time.perf_counter() - start)))


def best_ms(calls: dict[str, Callable], repeats: int, seconds: float) -> dict[str, float]:
    """Each call's milliseconds, the best of `repeats` runs of about `seconds`, the calls interleaved."""
    counts = {name: _calls_per_run(call, seconds) for name, call in calls.items()}
    best = dict.fromkeys(calls, math.inf)
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(counts[name]):
                call()
            best[name] = min(best[name], (time.perf_counter() - start) / counts[name])
    return {name: 1e3 * seconds_per_call for name, seconds_per_call in best.items()}


def measure_row(compile_with: Callable, options: dict[str, dict], repeats: int, seconds: float) -> dict:
    """Each variant's milliseconds per call, or why it has none."""
    calls = compiled_calls(compile_with, options)
    timed = best_ms({name: call for name, call in calls.items() if callable(call)}, repeats, seconds)
    return {name: timed.get(name, calls[name]) for name in options}


def _cell(value: float | str, baseline: float | str) -> str:
    if isinstance(value, str):
        return value.replace("|", "\\|")
    if isinstance(baseline, str):
        return f"{value:.3g} ms"
    return f"{value:.3g} ms ({baseline / value:.2f}x)"


def table(rows: dict[tuple[str, str], dict], variants: list[str]) -> str:
    """A row per (target, form), a column per variant."""
    return markdown_table(["target", "form", *variants],
                          [[target, form, *(_cell(times[name], times["baseline"]) for name in variants)]
                           for (target, form), times in rows.items()])


def report(command: str, results: dict[int, dict], options: dict[str, dict], args) -> str:
    own = options["baseline"]
    legend = [f"- {name}: {VARIANTS[name] or 'nothing more'}" for name in options]
    text = [f"{results_origin(command)}; seed model, float32, JAX's default threads, best of {args.repeats} "
            f"runs of about {args.seconds} s each. Layers: one forward and backward (the gradients with respect "
            f"to the parameters and the input); {TRAIN_STEP}: one step of compile_train_step (resnet: the resnet "
            f"preset's model). Each cell: ms per "
            f"call (baseline time / variant time: above 1, the variant is faster).", "",
            f"Variants: the twin's own CPU options {own} updated with", *legend]
    for batch, rows in results.items():
        text += ["", f"Batch {batch}:", "", table(rows, list(options))]
    return "\n".join(text) + "\n"


def main(argv=None) -> int:
    allocator.keep_freed_memory()  # as twinvae's commands: before JAX starts its threads
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    batch_sizes = _batch_sizes(args.batch_sizes)
    variants = _names("baseline," + args.variants, list(VARIANTS), "variant")
    targets = _names(args.targets, [*TARGETS, *TRAIN_STEPS], "target")
    if args.repeats < 1 or not args.seconds > 0:
        raise SystemExit(f"{PROG}: error: --repeats must be at least 1 and --seconds above 0")
    make_results_folder(args.out)  # a bad path fails before the minutes of work
    options = variant_options(variants)
    results = {batch: {} for batch in batch_sizes}
    for target in targets:
        for form in layer_forms(target):
            for batch in batch_sizes:
                label, compile_with = (train_step_compiler(target, form, batch) if target in TRAIN_STEPS
                                       else layer_compiler(target, form, batch))
                results[batch][(target, label)] = measure_row(compile_with, options, args.repeats, args.seconds)
    text = report(f"{PROG} {shlex.join(argv)}", results, options, args)
    publish_results(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

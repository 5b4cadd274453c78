"""`python -m benchmarks --device tpu --aot v5e:2x2,v4:2x2x1,...`: the JAX twin's training and inference
steps compiled ahead of time for one chip of each TPU topology, on a machine without a TPU; and
`python -m benchmarks --device cuda --aot H100 --gpu-target-config FILE`: the same for a GPU, without one.

libtpu (`pip install -e ".[tpu-aot]"`) gives compile-only TPU devices; the CUDA plugin (jax[cuda12]) gives
a compile-only GPU from an XLA GpuTargetConfigProto (text format: the device's limits, as in XLA's
xla/tools/hlo_opt/gpu_specs/*.txtpb). Each step is lowered on ShapeDtypeStructs placed on such a device
and compiled, and XLA's cost and memory analyses are read back (XLA's GPU compiler gives no cost analysis:
there the analytic FLOPs and the compiled HLO's operations summed stand in). Nothing runs: every time here
is an ESTIMATE, max(flops / the chip's peak, bytes / its HBM bandwidth), from the vendor's figures
(benchmarks/chips.py), never a measurement, and no parity is claimed. Writes results.json and results.md.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import time
from dataclasses import dataclass

from benchmarks.chips import GPU_PASSES, TPU_PASSES, chip_for
from benchmarks.hlo import top_operations
from benchmarks.points import Point
from twinvae.results import machine_record, markdown_table, publish_results, results_origin, write_results
from vae_core.checks import PRECISIONS
from vae_core.config import VAEConfig
from vae_core.flops import step_bytes, step_flops
from vae_core.forms import FORMS as LAYER_KINDS
from vae_core.forms import NATIVE_FORMS

# The forms compiled, by the rows' "form", the encoder's and the decoder's (strided_conv/transposed_conv):
# each names the layer kinds of vae_core.forms.FORMS it computes otherwise than natively (the output layer
# goes with the decoder's others: the JAX twin's col2im output layer is its sub-pixel form's sums). All
# native, the CPU's, then the two mixed ones.
FORMS = {
    ("native", "native"): {},
    ("space_to_depth", "subpixel"): {"strided_conv": "space_to_depth", "transposed_conv": "subpixel",
                                     "output_transposed_conv": "col2im"},
    ("native", "subpixel"): {"transposed_conv": "subpixel", "output_transposed_conv": "col2im"},
    ("space_to_depth", "native"): {"strided_conv": "space_to_depth"},
}
BATCHES = (128, 1024, 4096, 16384)
REFERENCE_BATCH = 4096
MODEL = VAEConfig()  # the seed model
SMOKE_CONFIG = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4, 8), latent_dim=2)


def form_of(forms: dict[str, str]) -> tuple[str, str]:
    """The key of FORMS that names `forms` (every layer kind's form); ValueError if none does."""
    key = (forms["strided_conv"], forms["transposed_conv"])
    if key not in FORMS or {**NATIVE_FORMS, **FORMS[key]} != forms:
        raise ValueError(f"the forms {forms} are none of benchmarks.aot.FORMS")
    return key


@dataclass(frozen=True)
class AotPoint:
    """One compile: a harness point (benchmarks/points.py: the model, batch size, dtype and kind) for one
    chip, in one of FORMS, at one matmul precision."""
    topology: str  # a TPU topology ("v5e:2x2") or a GPU ("H100")
    point: Point
    form_key: tuple[str, str]  # a key of FORMS
    precision: str  # jax_default_matmul_precision: TPU "default" (one bf16 pass) or "highest"; GPU
    # "tensorfloat32"

    @property
    def form(self) -> str:
        return "/".join(self.form_key)

    @property
    def forms(self) -> dict[str, str]:
        """Every layer kind's form (vae_core.forms.FORMS), as init_model takes them."""
        return {**NATIVE_FORMS, **FORMS[self.form_key]}

    @property
    def passes(self) -> int:
        if self.point.dtype == "bfloat16":
            return 1
        return (TPU_PASSES if ":" in self.topology else GPU_PASSES)[self.precision]

    def fields(self) -> dict:
        """What a row says of its point: the chip, the kind, the forms (every layer kind's), the batch size,
        the dtype and the precision."""
        return {"topology": self.topology, "kind": self.point.kind, "form": self.form,
                **self.forms, "batch_size": self.point.batch_size,
                "dtype": self.point.dtype, "precision": self.precision}


def aot_point(topology: str, kind: str, form_key: tuple[str, str], batch_size: int, dtype: str,
              precision: str = "default", config: VAEConfig = MODEL) -> AotPoint:
    """An AotPoint of the harness's point (config, batch_size, dtype, kind)."""
    return AotPoint(topology, Point(config, batch_size, dtype, kind), form_key, precision)


def first_chip_grid(topology: str) -> list[AotPoint]:
    """The full grid of the first topology (about 36 compiles): every form at the reference batch, in
    both precisions, both kinds; the native and the CPU's forms over every batch; float32 training at
    `highest` as well (what a parity-grade run would use)."""
    points = []
    for kind in ("train", "infer"):
        for form in FORMS:
            for dtype in ("float32", "bfloat16"):
                points.append(aot_point(topology, kind, form, REFERENCE_BATCH, dtype))
        for form in list(FORMS)[:2]:
            for batch in BATCHES:
                if batch == REFERENCE_BATCH:
                    continue
                for dtype in ("float32", "bfloat16") if kind == "train" else ("float32",):
                    points.append(aot_point(topology, kind, form, batch, dtype))
    for form in list(FORMS)[:2]:
        points.append(aot_point(topology, "train", form, REFERENCE_BATCH, "float32", "highest"))
    return points


def other_chip_grid(topology: str, forms) -> list[AotPoint]:
    """Training at the reference batch, float32 and bf16, in each of `forms` (keys of FORMS: the default
    and the best)."""
    return [aot_point(topology, "train", form, REFERENCE_BATCH, dtype)
            for form in dict.fromkeys(forms) for dtype in ("float32", "bfloat16")]


def gpu_grid(gpu: str) -> list[AotPoint]:
    """Every form at the reference batch: training in TF32 and bf16, inference in TF32."""
    return [aot_point(gpu, kind, form, REFERENCE_BATCH, dtype,
                      "tensorfloat32" if dtype == "float32" else "default")
            for kind in ("train", "infer") for form in FORMS
            for dtype in (("float32", "bfloat16") if kind == "train" else ("float32",))]


def smoke_grid(topology: str) -> list[AotPoint]:
    return [aot_point(topology, kind, form, 8, "float32", config=SMOKE_CONFIG)
            for kind in ("train", "infer") for form in list(FORMS)[:2]]


# --- compiling one point --------------------------------------------------------------------------------

def aot_device(target: str, gpu_target_config: str | None = None):
    """A compile-only device: one chip of a TPU topology, or the GPU a target config describes."""
    from jax.experimental import topologies

    if ":" in target:
        return topologies.get_topology_desc(topology_name=target, platform="tpu").devices[0]
    with open(gpu_target_config) as f:
        config = f.read()
    return topologies.get_topology_desc("aot", "cuda", target_config=config, topology="1x1x1").devices[0]


def compile_point(aot: AotPoint, device) -> dict:
    """Lower and compile one step for `device`; XLA's analyses, the estimate and the top operations."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import SingleDeviceSharding

    import vae_jax
    from benchmarks.jax_backend import inference_step

    on_chip = SingleDeviceSharding(device)

    def abstract(a):
        return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_chip)

    point, config = aot.point, aot.point.config
    dtype, compute_dtype = PRECISIONS[point.dtype]
    model = vae_jax.init_model(config, dtype=dtype, compute_dtype=compute_dtype, **aot.forms)
    options = vae_jax.compiler_options(device.platform)  # the chip's, not those of the CPU the model is on
    c, h, w = config.image_shape
    x = jax.ShapeDtypeStruct((point.batch_size, h, w, c), jnp.dtype(dtype), sharding=on_chip)
    start = time.perf_counter()
    with jax.default_matmul_precision(aot.precision):
        if point.kind == "train":
            state = vae_jax.create_train_state(model)
            step = vae_jax.compile_train_step(state, check_inputs=False, compiler_options=options)
            eps = jax.ShapeDtypeStruct((point.batch_size, config.noise_dim), jnp.dtype(dtype), sharding=on_chip)
            beta = jax.ShapeDtypeStruct((), jnp.dtype(dtype), sharding=on_chip)
            lowered = step.lower(jax.tree.map(abstract, state), x, eps, beta)
        else:
            step, params = inference_step(model, options)
            lowered = step.lower(jax.tree.map(abstract, params), x)
        compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    return {**aot.fields(), **analyse(compiled, aot, device), "compile_s": compile_s}


def analyse(compiled, aot: AotPoint, device) -> dict:
    """XLA's cost and memory analyses of a step compiled for `aot`'s chip, and the time they estimate."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    memory = compiled.memory_analysis()
    chip = chip_for(aot.topology)
    hlo = compiled.as_text()
    point = aot.point
    analytic = step_flops(point.config, point.kind, point.batch_size)
    if cost:
        flops, nbytes = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    else:  # XLA's GPU compiler: the analytic FLOPs, and the compiled operations' bytes summed
        cost = {}
        flops = analytic
        nbytes = float(sum(op["bytes"] for op in top_operations(hlo, n=None)))
    compute_s, memory_s = chip.matmul_seconds(flops, aot.passes), chip.memory_seconds(nbytes)
    step_s = max(compute_s, memory_s)
    hbm = {name: int(getattr(memory, f"{name}_size_in_bytes"))
           for name in ("argument", "output", "alias", "temp", "generated_code")}
    minimum = step_bytes(point.config, point.kind, point.batch_size, point.dtype)
    return {"chip": chip.name, "device_kind": device.device_kind, "xla_flops": flops, "xla_bytes": nbytes,
            "cost_source": "XLA cost analysis" if cost else "analytic FLOPs; the compiled HLO's bytes summed",
            "xla_transcendentals": float(cost.get("transcendentals", 0.0)),
            "analytic_flops": analytic, "analytic_bytes": minimum,
            "bytes_vs_minimum": nbytes / minimum, "hbm": hbm,
            "hbm_total": hbm["argument"] + hbm["output"] - hbm["alias"] + hbm["temp"] + hbm["generated_code"],
            "compute_s": compute_s, "memory_s": memory_s, "step_s": step_s,
            "bound": "compute" if compute_s >= memory_s else "memory",
            "images_per_s": point.batch_size / step_s if step_s else None,
            "top_ops": top_operations(hlo)}


# --- the run --------------------------------------------------------------------------------------------

def best_form(rows: list[dict]) -> tuple[str, str]:
    """The form (a key of FORMS) with the shortest estimated float32 training step at the reference batch."""
    candidates = [r for r in rows if (r["kind"], r["batch_size"], r["dtype"], r["precision"])
                  == ("train", REFERENCE_BATCH, "float32", "default")]
    best = min(candidates, key=lambda r: r["step_s"])
    return form_of({kind: best[kind] for kind in LAYER_KINDS})


def run(topologies: list[str], grid: str, gpu_target_config: str | None = None, progress=print) -> dict:
    """Every point of the grid compiled for each topology (the first chip's grid in full, the others' in the
    default and the best forms): the rows of results.json."""
    import vae_jax

    platform = "gpu" if gpu_target_config else "tpu"
    default = form_of(vae_jax.default_forms(platform))
    rows = []
    for topology in topologies:
        chip_for(topology)  # an unknown chip fails before any compile
    for i, topology in enumerate(topologies):
        device = aot_device(topology, gpu_target_config)
        if grid == "smoke":
            points = smoke_grid(topology)
        elif gpu_target_config:
            points = gpu_grid(topology)
        elif i == 0:
            points = first_chip_grid(topology)
        else:
            points = other_chip_grid(topology, [default, best_form(rows)])
        for aot in points:
            rows.append(row := compile_point(aot, device))
            progress(f"{topology} {aot.point.kind} {aot.form} b={aot.point.batch_size} {aot.point.dtype} "
                     f"{aot.precision}: compiled in {row['compile_s']:.0f} s, est. {1e3 * row['step_s']:.3f} ms "
                     f"({row['bound']})")
    config = SMOKE_CONFIG if grid == "smoke" else MODEL
    return {"config": config.to_dict(), "platform": platform, "default_form": "/".join(default), "rows": rows,
            "reference_batch": 8 if grid == "smoke" else REFERENCE_BATCH}


def plugin_versions() -> dict[str, str]:
    """The versions of the installed compile-only backends: libtpu, JAX's CUDA plugin."""
    found = {}
    for package in ("libtpu", "jax-cuda12-plugin"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def main(topologies: list[str], grid: str, out: str, argv: list[str],
         gpu_target_config: str | None = None) -> int:
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")  # silences libtpu's probing for a chip
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # no chip to share: let two compile at once
    # the CUDA plugin checks its libraries against the driver's by calling cuInit, which fails without a GPU
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
    results = run(topologies, grid, gpu_target_config)
    results["meta"] = {**machine_record(plugin_versions()), "command": "python -m benchmarks " + " ".join(argv)}
    os.makedirs(out, exist_ok=True)
    write_results(os.path.join(out, "results.json"), json.dumps(results, indent=1))
    publish_results(markdown(results), os.path.join(out, "results.md"))
    print(f"wrote {out}/results.json, {out}/results.md")
    return 0


# --- the report -----------------------------------------------------------------------------------------

def _gb(value) -> str:
    return f"{value / 1e9:.3f}"


def _mib(value) -> str:
    return f"{value / 2**20:.0f}"


ROWS_HEADER = ["chip", "kind", "form", "batch", "dtype", "precision", "XLA GFLOP", "analytic GFLOP", "XLA GB",
               "vs min", "transc. M", "HBM MiB (args/temps/out/code)", "compile s", "est. ms", "est. images/s",
               "bound"]


def row_cells(r: dict) -> list[str]:
    hbm = r["hbm"]
    return [r["chip"], r["kind"], r["form"], r["batch_size"], r["dtype"], r["precision"],
            f"{r['xla_flops'] / 1e9:.1f}", f"{r['analytic_flops'] / 1e9:.1f}", _gb(r["xla_bytes"]),
            f"{r['bytes_vs_minimum']:.2f}", f"{r['xla_transcendentals'] / 1e6:.1f}",
            f"{_mib(r['hbm_total'])} ({_mib(hbm['argument'])}/{_mib(hbm['temp'])}/{_mib(hbm['output'])}/"
            f"{_mib(hbm['generated_code'])})", f"{r['compile_s']:.0f}", f"{1e3 * r['step_s']:.3f}",
            f"{r['images_per_s']:,.0f}", r["bound"]]


def top_operations_tables(results: dict) -> list[str]:
    """Per form, the largest operations of the float32 training step at the reference batch, precision
    default, on the first chip."""
    rows, batch = results["rows"], results["reference_batch"]
    first = rows[0]["topology"] if rows else None
    lines = []
    for r in rows:
        if (r["topology"], r["kind"], r["batch_size"], r["dtype"], r["precision"]) == \
                (first, "train", batch, "float32", "default"):
            lines += [f"{r['chip']}, {r['form']}:", "",
                      markdown_table(["operation", "opcode", "MB", "result", "from"],
                                     [[op["name"], op["opcode"], f"{op['bytes'] / 1e6:.1f}", f"`{op['shape']}`",
                                       op["source"][:90]] for op in r["top_ops"]]), ""]
    return lines


def markdown(results: dict) -> str:
    """results.md: where it was compiled, how the estimates are made, a row per compile, the top operations."""
    meta = results["meta"]
    gpu = results.get("platform") == "gpu"
    passes = ("TF32 counts as 2 bf16 passes (half the dense bf16 rate), a bf16 (mixed-precision) step's "
              "matmuls as 1. XLA's GPU compiler gives no cost analysis: the FLOPs are the analytic count, the "
              "bytes the compiled HLO's operations summed (operands + results)" if gpu else
              "A float32 matmul runs as bf16 passes: 1 at precision `default`, 6 at `highest`; a bf16 "
              "(mixed-precision) step's are 1")
    lines = [f"{results_origin(meta['command'], meta)}; compiled on this machine, without the chips.", "",
             "**Estimated from compile-only analysis, not measured**: step = max(flops / (bf16 peak / passes), "
             f"bytes / HBM bandwidth), with the vendor's figures (benchmarks/chips.py). {passes}. \"vs min\": "
             "the bytes over the analytic minimum (vae_core/flops.py). HBM: arguments + outputs - aliased + "
             "temps + generated code. The forms are encoder/decoder (strided_conv/transposed_conv); the JAX "
             f"twin's {'GPU' if gpu else 'TPU'} default is {results['default_form']}.", "",
             markdown_table(ROWS_HEADER, [row_cells(r) for r in results["rows"]]),
             "", "Top operations by bytes (operands + result, logical sizes) of the float32 training step at "
             f"batch {results['reference_batch']}, precision default, per form, on the first chip:", "",
             *top_operations_tables(results)]
    return "\n".join(lines)

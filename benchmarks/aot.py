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
import re
import time
from dataclasses import asdict, dataclass

from benchmarks.chips import GPU_PASSES, TPU_PASSES, chip_for
from twinvae.environment import cpu_name, git_commit
from vae_core.checks import PRECISIONS
from vae_core.config import VAEConfig
from vae_core.flops import step_bytes, step_flops

# (strided_conv, transposed_conv): all native, the CPU's, then the two mixed ones
FORMS = (("native", "native"), ("space_to_depth", "subpixel"), ("native", "subpixel"),
         ("space_to_depth", "native"))
BATCHES = (128, 1024, 4096, 16384)
REFERENCE_BATCH = 4096


@dataclass(frozen=True)
class AotPoint:
    topology: str  # a TPU topology ("v5e:2x2") or a GPU ("H100")
    kind: str  # "train" or "infer"
    strided_conv: str
    transposed_conv: str
    batch_size: int
    dtype: str  # "float32" or "bfloat16" (mixed precision)
    precision: str  # jax_default_matmul_precision: TPU "default" (one bf16 pass) or "highest"; GPU
    # "tensorfloat32"

    @property
    def form(self) -> str:
        return f"{self.strided_conv}/{self.transposed_conv}"

    @property
    def passes(self) -> int:
        if self.dtype == "bfloat16":
            return 1
        return (TPU_PASSES if ":" in self.topology else GPU_PASSES)[self.precision]


def first_chip_grid(topology: str) -> list[AotPoint]:
    """The full grid of the first topology (about 36 compiles): every form at the reference batch, in
    both precisions, both kinds; the native and the CPU's forms over every batch; float32 training at
    `highest` as well (what a parity-grade run would use)."""
    points = []
    for kind in ("train", "infer"):
        for strided, transposed in FORMS:
            for dtype in ("float32", "bfloat16"):
                points.append(AotPoint(topology, kind, strided, transposed, REFERENCE_BATCH, dtype, "default"))
        for strided, transposed in FORMS[:2]:
            for batch in BATCHES:
                if batch == REFERENCE_BATCH:
                    continue
                for dtype in ("float32", "bfloat16") if kind == "train" else ("float32",):
                    points.append(AotPoint(topology, kind, strided, transposed, batch, dtype, "default"))
    for strided, transposed in FORMS[:2]:
        points.append(AotPoint(topology, "train", strided, transposed, REFERENCE_BATCH, "float32", "highest"))
    return points


def other_chip_grid(topology: str, forms) -> list[AotPoint]:
    """Training at the reference batch, float32 and bf16, in each of `forms` (the default and the best)."""
    return [AotPoint(topology, "train", strided, transposed, REFERENCE_BATCH, dtype, "default")
            for strided, transposed in dict.fromkeys(forms) for dtype in ("float32", "bfloat16")]


def gpu_grid(gpu: str) -> list[AotPoint]:
    """Every form at the reference batch: training in TF32 and bf16, inference in TF32."""
    return [AotPoint(gpu, kind, strided, transposed, REFERENCE_BATCH, dtype,
                     "tensorfloat32" if dtype == "float32" else "default")
            for kind in ("train", "infer") for strided, transposed in FORMS
            for dtype in (("float32", "bfloat16") if kind == "train" else ("float32",))]


def smoke_grid(topology: str) -> list[AotPoint]:
    return [AotPoint(topology, kind, strided, transposed, 8, "float32", "default")
            for kind in ("train", "infer") for strided, transposed in FORMS[:2]]


SMOKE_CONFIG = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4, 8), latent_dim=2)


# --- compiling one point --------------------------------------------------------------------------------

def aot_device(target: str, gpu_target_config: str | None = None):
    """A compile-only device: one chip of a TPU topology, or the GPU a target config describes."""
    from jax.experimental import topologies

    if ":" in target:
        return topologies.get_topology_desc(topology_name=target, platform="tpu").devices[0]
    with open(gpu_target_config) as f:
        config = f.read()
    return topologies.get_topology_desc("aot", "cuda", target_config=config, topology="1x1x1").devices[0]


def compile_point(point: AotPoint, config: VAEConfig, device) -> dict:
    """Lower and compile one step for `device`; XLA's analyses, the estimate and the top operations."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import SingleDeviceSharding

    import vae_jax
    from benchmarks.jax_backend import inference_step

    on_chip = SingleDeviceSharding(device)

    def abstract(a):
        return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_chip)

    dtype, compute_dtype = PRECISIONS[point.dtype]
    # the output layer as the others: the JAX twin's col2im output layer is its sub-pixel form's sums
    output = "col2im" if point.transposed_conv == "subpixel" else "native"
    model = vae_jax.init_model(config, dtype=dtype, compute_dtype=compute_dtype, strided_conv=point.strided_conv,
                               transposed_conv=point.transposed_conv, output_transposed_conv=output)
    options = vae_jax.compiler_options(device.platform)  # the chip's, not those of the CPU the model is on
    c, h, w = config.image_shape
    x = jax.ShapeDtypeStruct((point.batch_size, h, w, c), jnp.dtype(dtype), sharding=on_chip)
    start = time.perf_counter()
    with jax.default_matmul_precision(point.precision):
        if point.kind == "train":
            state = vae_jax.create_train_state(model)
            step = vae_jax.compile_train_step(state, check_inputs=False, compiler_options=options)
            eps = jax.ShapeDtypeStruct((point.batch_size, config.latent_dim), jnp.dtype(dtype), sharding=on_chip)
            beta = jax.ShapeDtypeStruct((), jnp.dtype(dtype), sharding=on_chip)
            lowered = step.lower(jax.tree.map(abstract, state), x, eps, beta)
        else:
            step, params = inference_step(model, options)
            lowered = step.lower(jax.tree.map(abstract, params), x)
        compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    return {**asdict(point), "form": point.form, **analyse(compiled, point, config, device),
            "compile_s": compile_s}


def analyse(compiled, point: AotPoint, config: VAEConfig, device) -> dict:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    memory = compiled.memory_analysis()
    chip = chip_for(point.topology)
    hlo = compiled.as_text()
    if cost:
        flops, nbytes = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    else:  # XLA's GPU compiler: the analytic FLOPs, and the compiled operations' bytes summed
        cost = {}
        flops = step_flops(config, point.kind, point.batch_size)
        nbytes = float(sum(op["bytes"] for op in top_operations(hlo, n=None)))
    compute_s, memory_s = chip.matmul_seconds(flops, point.passes), chip.memory_seconds(nbytes)
    step_s = max(compute_s, memory_s)
    hbm = {name: int(getattr(memory, f"{name}_size_in_bytes"))
           for name in ("argument", "output", "alias", "temp", "generated_code")}
    minimum = step_bytes(config, point.kind, point.batch_size, point.dtype)
    return {"chip": chip.name, "device_kind": device.device_kind, "xla_flops": flops, "xla_bytes": nbytes,
            "cost_source": "XLA cost analysis" if cost else "analytic FLOPs; the compiled HLO's bytes summed",
            "xla_transcendentals": float(cost.get("transcendentals", 0.0)),
            "analytic_flops": step_flops(config, point.kind, point.batch_size), "analytic_bytes": minimum,
            "bytes_vs_minimum": nbytes / minimum, "hbm": hbm,
            "hbm_total": hbm["argument"] + hbm["output"] - hbm["alias"] + hbm["temp"] + hbm["generated_code"],
            "compute_s": compute_s, "memory_s": memory_s, "step_s": step_s,
            "bound": "compute" if compute_s >= memory_s else "memory",
            "images_per_s": point.batch_size / step_s if step_s else None,
            "top_ops": top_operations(hlo)}


# --- the compiled HLO's largest operations --------------------------------------------------------------

_ELEMENT_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4,
                  "u32": 4, "f64": 8, "s64": 8, "u64": 8}
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.*)$")
_OPCODE = re.compile(r" ([a-z][a-z0-9\-]*)\(")
_FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "copy-done", "after-all"}


def _shape_bytes(shape: str) -> int:
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        count = 1
        for d in filter(None, dims.split(",")):
            count *= int(d)
        total += count * _ELEMENT_BYTES.get(dtype, 4)
    return total


def top_operations(hlo_text: str, n: int | None = 8) -> list[dict]:
    """The entry computation's operations by the logical bytes they read and write (operands + result,
    before the TPU's tiling pads them), largest first (n of them; None: all): the targets of the next
    change."""
    entry = hlo_text[hlo_text.index("\nENTRY "):]
    entry = entry[:entry.index("\n}")]
    sizes, ops = {}, []
    for line in entry.splitlines()[1:]:
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, rhs = match.groups()
        # the opcode: the first "name(" outside the result's shape, whose tuples and tilings nest parentheses
        call = next((m for m in _OPCODE.finditer(rhs)
                     if rhs.count("(", 0, m.start()) == rhs.count(")", 0, m.start())), None)
        if call is None:
            continue
        shape, opcode = rhs[:call.start()], call.group(1)
        operands, _, rest = rhs[call.end():].partition(")")
        sizes[name] = _shape_bytes(shape)
        if opcode in _FREE:
            continue
        read = sum(sizes.get(o, 0) for o in re.findall(r"%([\w.\-]+)", operands))
        source = re.search(r'op_name="([^"]+)"', rest)
        ops.append({"name": name, "opcode": opcode, "bytes": read + sizes[name], "shape": _ARRAY.sub(
                        lambda m: f"{m.group(1)}[{m.group(2)}]", re.sub(r"\{[^}]*\}", "", shape)),
                    "source": source.group(1) if source else ""})
    return sorted(ops, key=lambda op: -op["bytes"])[:n]


# --- the run --------------------------------------------------------------------------------------------

def best_form(rows: list[dict]) -> tuple[str, str]:
    """The form with the shortest estimated float32 training step at the reference batch."""
    candidates = [r for r in rows if (r["kind"], r["batch_size"], r["dtype"], r["precision"])
                  == ("train", REFERENCE_BATCH, "float32", "default")]
    best = min(candidates, key=lambda r: r["step_s"])
    return best["strided_conv"], best["transposed_conv"]


def run(topologies: list[str], grid: str, gpu_target_config: str | None = None, progress=print) -> dict:
    import vae_jax

    config = SMOKE_CONFIG if grid == "smoke" else VAEConfig()
    platform = "gpu" if gpu_target_config else "tpu"
    default = vae_jax.default_forms(platform)
    default = (default["strided_conv"], default["transposed_conv"])
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
        for point in points:
            rows.append(row := compile_point(point, config, device))
            progress(f"{topology} {point.kind} {point.form} b={point.batch_size} {point.dtype} {point.precision}: "
                     f"compiled in {row['compile_s']:.0f} s, est. {1e3 * row['step_s']:.3f} ms ({row['bound']})")
    return {"config": config.to_dict(), "platform": platform, "default_form": "/".join(default), "rows": rows,
            "reference_batch": 8 if grid == "smoke" else REFERENCE_BATCH}


def environment(argv: list[str]) -> dict:
    import jax
    import jaxlib

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    plugins = ", ".join(f"{name} {version(name)}" for name in ("libtpu", "jax-cuda12-plugin") if version(name))
    return {"command": "python -m benchmarks " + " ".join(argv), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "cpu": cpu_name(), "jax": jax.__version__, "jaxlib": jaxlib.__version__, "plugins": plugins,
            "git_commit": git_commit(short=True)}


def main(topologies: list[str], grid: str, out: str, argv: list[str],
         gpu_target_config: str | None = None) -> int:
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")  # silences libtpu's probing for a chip
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # no chip to share: let two compile at once
    # the CUDA plugin checks its libraries against the driver's by calling cuInit, which fails without a GPU
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
    results = run(topologies, grid, gpu_target_config)
    results["meta"] = environment(argv)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(results))
    print(markdown(results))
    print(f"wrote {out}/results.json, {out}/results.md")
    return 0


# --- the report -----------------------------------------------------------------------------------------

def _gb(value) -> str:
    return f"{value / 1e9:.3f}"


def _mib(value) -> str:
    return f"{value / 2**20:.0f}"


def markdown(results: dict) -> str:
    meta, rows = results["meta"], results["rows"]
    gpu = results.get("platform") == "gpu"
    plugins = meta.get("plugins") or f"libtpu {meta.get('libtpu')}"
    passes = ("TF32 counts as 2 bf16 passes (half the dense bf16 rate), a bf16 (mixed-precision) step's "
              "matmuls as 1. XLA's GPU compiler gives no cost analysis: the FLOPs are the analytic count, the "
              "bytes the compiled HLO's operations summed (operands + results)" if gpu else
              "A float32 matmul runs as bf16 passes: 1 at precision `default`, 6 at `highest`; a bf16 "
              "(mixed-precision) step's are 1")
    lines = [f"Command: `{meta['command']}` ({meta['date']}; compiled on {meta['cpu']}; jax {meta['jax']}, "
             f"jaxlib {meta['jaxlib']}, {plugins}; commit {meta['git_commit']}).", "",
             "**Estimated from compile-only analysis, not measured**: step = max(flops / (bf16 peak / passes), "
             f"bytes / HBM bandwidth), with the vendor's figures (benchmarks/chips.py). {passes}. \"vs min\": "
             "the bytes over the analytic minimum (vae_core/flops.py). HBM: arguments + outputs - aliased + "
             "temps + generated code. The forms are encoder/decoder (strided_conv/transposed_conv); the JAX "
             f"twin's {'GPU' if gpu else 'TPU'} default is {results['default_form']}.", "",
             "| chip | kind | form | batch | dtype | precision | XLA GFLOP | analytic GFLOP | XLA GB | vs min "
             "| transc. M | HBM MiB (args/temps/out/code) | compile s | est. ms | est. images/s | bound |",
             "|" + "---|" * 16]
    for r in rows:
        hbm = r["hbm"]
        lines.append(
            f"| {r['chip']} | {r['kind']} | {r['form']} | {r['batch_size']} | {r['dtype']} | {r['precision']} "
            f"| {r['xla_flops'] / 1e9:.1f} "
            f"| {r['analytic_flops'] / 1e9:.1f} | {_gb(r['xla_bytes'])} | {r['bytes_vs_minimum']:.2f} "
            f"| {r['xla_transcendentals'] / 1e6:.1f} | {_mib(r['hbm_total'])} ({_mib(hbm['argument'])}/"
            f"{_mib(hbm['temp'])}/{_mib(hbm['output'])}/{_mib(hbm['generated_code'])}) | {r['compile_s']:.0f} "
            f"| {1e3 * r['step_s']:.3f} | {r['images_per_s']:,.0f} | {r['bound']} |")
    batch = results["reference_batch"]
    lines += ["", "Top operations by bytes (operands + result, logical sizes) of the float32 training step at "
              f"batch {batch}, precision default, per form, on the first chip:", ""]
    first = rows[0]["topology"] if rows else None
    for r in rows:
        if (r["topology"], r["kind"], r["batch_size"], r["dtype"], r["precision"]) != \
                (first, "train", batch, "float32", "default"):
            continue
        lines += [f"{r['chip']}, {r['form']}:", "",
                  "| operation | opcode | MB | result | from |", "|---|---|---|---|---|"]
        lines += [f"| {op['name']} | {op['opcode']} | {op['bytes'] / 1e6:.1f} | `{op['shape']}` | "
                  f"{op['source'][:90]} |" for op in r["top_ops"]]
        lines.append("")
    return "\n".join(lines)

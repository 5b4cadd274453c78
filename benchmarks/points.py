"""What one measurement is, the synthetic data every worker builds alike, and the modes each backend has.
Framework-free: the coordinator and both workers share it."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass

import numpy as np

from vae_core import seeds
from vae_core.checks import PRECISIONS
from vae_core.config import VAEConfig
from vae_core.forms import NATIVE_FORMS

# A mode is how a backend runs the step, with variants: "-subpixel" (the decoder's sub-pixel transposed
# convs), "-native" (every layer kind in its native form: vae_core.forms.FORMS), where the backend's
# default on the device differs (vae_*.forms.DEFAULT_FORMS), and "-channels-last" (torch's NHWC memory
# format for the model and the batch). "onnxruntime" and "stablehlo" run the twin's exported artifact in its
# runtime (benchmarks/artifacts.py), inference only.
MODES = {
    "torch": ("eager", "eager-channels-last", "eager-channels-last-native", "eager-subpixel", "compile-default",
              "compile-default-channels-last", "compile-max-autotune", "compile-reduce-overhead", "onnxruntime"),
    "jax": ("jit", "jit-native", "nnx-jit", "stablehlo"),
}
VARIANTS = ("-native", "-subpixel", "-channels-last")  # stripped in this order: "eager-channels-last-native"


def split_mode(mode: str) -> tuple[str, dict]:
    """'compile-default-channels-last' -> ('compile-default', {'channels_last': True, 'forms': {}}); forms: the
    keyword arguments of init_model that set them ({}: the backend's defaults)."""
    options = {"channels_last": False, "forms": {}}
    for variant in VARIANTS:
        if mode.endswith(variant):
            mode = mode.removesuffix(variant)
            if variant == "-channels-last":
                options["channels_last"] = True
            elif variant == "-subpixel":
                options["forms"] = {"transposed_conv": "subpixel"}
            else:
                options["forms"] = dict(NATIVE_FORMS)
    return mode, options
KINDS = ("train", "infer")
N_BATCHES = 4  # distinct synthetic batches, cycled, already on the device
# bfloat16: the first loss sums thousands of terms, so its error sits far below bf16's 2^-8 (parity_tests
# measures ~5e-5); 1e-2 still refuses a wrong layout, which is off by O(1).
GATE_RTOL = {"float32": 1e-4, "float64": 1e-10, "bfloat16": 1e-2}


@dataclass(frozen=True)
class Point:
    """One (config, batch size, dtype, kind): every (backend, mode) is measured on it, in alternation."""
    config: VAEConfig
    batch_size: int
    dtype: str  # a key of vae_core.checks.PRECISIONS
    kind: str  # "train" (forward, backward, Adam) or "infer" (encode + decode)

    def to_dict(self) -> dict:
        return {**asdict(self), "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> Point:
        return cls(VAEConfig.from_dict(d["config"]), d["batch_size"], d["dtype"], d["kind"])

    @property
    def label(self) -> str:
        c, h, w = self.config.image_shape
        return f"{self.config.arch} {c}x{h}x{w} {self.kind} b={self.batch_size} {self.dtype}"


def synthetic_batches(point: Point, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """N_BATCHES (images NCHW in [0, 1], eps) pairs, the same in every worker."""
    rng = seeds.rng(seed, "data", step=10_000)
    shape = (point.batch_size, *point.config.image_shape)
    dtype = PRECISIONS[point.dtype][0]
    return [(rng.random(shape).astype(dtype),
             seeds.eps_for_step(seed, i, point.batch_size, point.config.noise_dim, dtype))
            for i in range(N_BATCHES)]


def compile_seconds(call) -> tuple[float, float]:
    """(compile seconds, first call's value) for a callable that compiles on first use: three calls, the
    compile time is what the first two took beyond two steady (third) calls. The second call counts too:
    JAX re-lowers when its inputs turn from uncommitted to committed arrays, and torch may recompile
    once on a guard, without either being a steady-state cost. `call` must return after a device sync."""
    times, first = [], None
    for i in range(3):
        start = time.perf_counter()
        value = call(i)
        times.append(time.perf_counter() - start)
        first = value if i == 0 else first
    return max(0.0, times[0] + times[1] - 2 * times[2]), first


def ints(text: str) -> list[int]:
    """argparse type: comma-separated positive integers."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_conv_arguments(parser: argparse.ArgumentParser) -> None:
    """--channels and --res-blocks, the conv model's, for the benchmark and its profiler."""
    parser.add_argument("--channels", type=ints, default=[32, 64], help="conv channels (default 32,64)")
    parser.add_argument("--res-blocks", type=int, default=0, help="residual blocks per resolution (default 0; "
                        "the resnet preset: --channels 64,128 --res-blocks 1)")

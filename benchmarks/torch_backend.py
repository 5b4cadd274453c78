"""The torch side of a benchmark worker: eager and torch.compile modes of vae_torch's own step."""

from __future__ import annotations

import functools

import torch

import vae_torch
from benchmarks import artifacts, peak
from benchmarks.points import MODES, Point, compile_seconds, split_mode, synthetic_batches
from vae_core.checks import PRECISIONS
from vae_core.flops import inference_flops, train_step_flops


class TorchBackend:
    """The torch twin in one benchmark mode (benchmarks/backend.py's Backend)."""

    def __init__(self, mode: str, device: str, threads: int, tf32: bool) -> None:
        if mode not in MODES["torch"]:
            raise ValueError(f"unknown torch mode {mode!r}; modes: {MODES['torch']}")
        self.mode, self.device_name, self.threads, self.tf32 = mode, device, threads, tf32
        torch.set_num_threads(threads)
        set_tf32(tf32)
        self.device = torch.device("cuda" if device == "cuda" else "cpu")

    def info(self) -> dict:
        name = torch.cuda.get_device_name() if self.device.type == "cuda" else "cpu"
        return {"torch": torch.__version__, "device": name, "threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(), "tf32": self.tf32,
                "float32_matmul_precision": torch.get_float32_matmul_precision(),
                "cuda": torch.version.cuda, "mkldnn": torch.backends.mkldnn.is_available()}

    def unavailable(self, point: Point) -> str | None:
        if self.device_name == "tpu":
            return "torch on TPU needs torch_xla, which does not match the pinned torch"
        if self.device_name == "cuda" and not torch.cuda.is_available():
            return "torch sees no CUDA device"
        if split_mode(self.mode)[0] == "compile-reduce-overhead" and self.device_name != "cuda":
            return "reduce-overhead means CUDA graphs: CUDA only"
        if self.mode in artifacts.MODES:
            return artifacts.unavailable(self.mode, point)
        return None

    def matmul_peak(self, sizes: list[int], precisions: list[str]) -> list[dict]:
        results = []
        for precision in precisions:
            if precision == "tf32" and self.device.type != "cuda":
                continue
            set_tf32(precision == "tf32")
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            for n in sizes:
                results.append(peak.measure(
                    "torch", precision, n, torch.matmul,
                    lambda a, dtype=dtype: torch.as_tensor(a, device=self.device).to(dtype),
                    lambda c: c.float().cpu().numpy(), self._sync))
        set_tf32(self.tf32)
        return results

    def bandwidth(self, n: int, min_seconds: float) -> dict:
        out = torch.empty(n, device=self.device)
        return peak.measure_bandwidth("torch", n, lambda a, b: torch.add(a, b, out=out),
                                      lambda a: torch.as_tensor(a, device=self.device), lambda c: c.cpu().numpy(),
                                      self._sync, min_seconds)

    def setup(self, point: Point, weights_path: str) -> dict:
        if self.mode in artifacts.MODES:
            return self._setup_artifact(point, weights_path)
        torch._dynamo.reset()
        torch._dynamo.config.error_on_recompile = False
        dtype, compute_dtype = PRECISIONS[point.dtype]
        base, variant = split_mode(self.mode)
        model, config, _ = vae_torch.load_checkpoint(weights_path, dtype=dtype, compute_dtype=compute_dtype,
                                                     **variant["forms"])
        if config != point.config:
            raise ValueError("the weights file's config differs from the benchmark point's")
        layout = torch.channels_last if variant["channels_last"] else torch.contiguous_format
        self.model = model.to(self.device, memory_format=layout)
        self.batches = [(torch.as_tensor(x, device=self.device).contiguous(memory_format=layout),
                         torch.as_tensor(e, device=self.device)) for x, e in synthetic_batches(point)]
        self.kind, self.i = point.kind, 0
        compiled = base.startswith("compile-")
        torch_mode = base.removeprefix("compile-")
        if point.kind == "train":
            self.state = vae_torch.create_train_state(self.model)
            if compiled:
                self.fn = vae_torch.compile_train_step(self.state, torch_mode, check_inputs=False)
            else:
                self.fn = functools.partial(vae_torch.train_step, check_inputs=False)
        else:
            self.model.eval()
            reconstruct = functools.partial(self.model.reconstruct, check_inputs=False)
            self.fn = torch.compile(reconstruct, mode=torch_mode, dynamic=False) if compiled else reconstruct
        # the first call compiles; its value, from the canonical weights, is the gate
        compile_s, gate = compile_seconds(lambda i: self._gate(self._call(*self.batches[i])))
        result = {"gate": gate, "compile_s": compile_s if compiled else None, "forms": model.forms}
        if self.mode == "eager":
            result["torch_flop_counter"] = self._flop_count(point)
        return result

    def _setup_artifact(self, point: Point, weights_path: str) -> dict:
        likelihood = point.config.likelihood
        self.kind, self.i = "artifact", 0
        self.fn, self.batches, setup = artifacts.artifact_setup(
            self.mode, point, weights_path, self.device.type, self.threads,
            lambda logits: self._gate(vae_torch.mean_image(torch.as_tensor(logits), likelihood)))
        return setup

    def _call(self, x, eps):
        if self.kind == "artifact":
            return self.fn(x, eps)
        if self.kind == "train":
            self.state, losses = self.fn(self.state, x, eps)
            return losses.total
        with torch.inference_mode():
            return self.fn(x)

    def _gate(self, out) -> float:
        # train: the first step's loss, from the canonical weights; infer: the sum of the reconstructions
        return float(out.double().sum().cpu())

    def _flop_count(self, point: Point) -> dict:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self._call(*self.batches[2])
        analytic = train_step_flops if point.kind == "train" else inference_flops
        return {"per_image": counter.get_total_flops() / point.batch_size,
                "analytic_per_image": analytic(point.config)}

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.i = (self.i + 1) % len(self.batches)
            out = self._call(*self.batches[self.i])
        self._sync(out)

    def freeze(self) -> None:
        torch._dynamo.config.error_on_recompile = self.mode.startswith("compile-")

    def check_no_recompile(self) -> None:
        pass  # with error_on_recompile set, a recompilation raises inside run()

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def peak_memory(self) -> int | None:
        return torch.cuda.max_memory_allocated() if self.device.type == "cuda" else None

    def _sync(self, out=None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def set_tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    torch.set_float32_matmul_precision("high" if enabled else "highest")


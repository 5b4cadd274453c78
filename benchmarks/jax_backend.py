"""The JAX side of a benchmark worker: `jax.jit` of vae_jax's pure step (compiled ahead of time, state
donated) and NNX's own `nnx.jit` over the module and an nnx.Optimizer, to show its overhead."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import vae_jax
from benchmarks import artifacts, peak
from benchmarks.points import MODES, Point, compile_seconds, split_mode, synthetic_batches
from vae_core.checks import PRECISIONS

PLATFORMS = {"cpu": "cpu", "cuda": "gpu", "tpu": "tpu"}
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # one per XLA compilation, any function


def inference_step(model, compiler_options: dict | None = None):
    """(reconstruct jitted over the model's split state, that state): the inference step, compiled with
    `compiler_options` (None: the model's, as the twin's own compiled functions)."""
    graphdef, params = nnx.split(model)
    options = model.compiler_options if compiler_options is None else compiler_options
    return jax.jit(lambda params, x: nnx.merge(graphdef, params).reconstruct(x, check_inputs=False),
                   compiler_options=options), params


class JaxBackend:
    """The JAX twin in one benchmark mode (benchmarks/backend.py's Backend)."""

    def __init__(self, mode: str, device: str, threads: int, tf32: bool) -> None:
        if mode not in MODES["jax"]:
            raise ValueError(f"unknown jax mode {mode!r}; modes: {MODES['jax']}")
        self.mode, self.device_name, self.threads, self.tf32 = mode, device, threads, tf32
        jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "float32")
        jax.config.update("jax_compilation_cache_dir", os.environ["TWINVAE_BENCH_CACHE"])
        self.traces = self.compiles = 0
        self.state = self.params = None  # set by the jax.jit modes
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **kwargs) -> None:
        if event == COMPILE_EVENT:
            self.compiles += 1

    def info(self) -> dict:
        devices = self._devices()
        import jaxlib

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                "device": devices[0].device_kind if devices else None, "platform": PLATFORMS[self.device_name],
                "matmul_precision": jax.config.jax_default_matmul_precision,
                "xla_flags": os.environ.get("XLA_FLAGS", "")}

    def _devices(self):
        try:
            return jax.devices(PLATFORMS[self.device_name])
        except RuntimeError:
            return []

    def unavailable(self, point: Point) -> str | None:
        if not self._devices():
            return f"jax sees no {PLATFORMS[self.device_name]} device"
        if self.mode in artifacts.MODES:
            return artifacts.unavailable(self.mode, point)
        return None

    def matmul_peak(self, sizes: list[int], precisions: list[str]) -> list[dict]:
        device = self._devices()[0]
        results = []
        for precision in precisions:
            if precision == "tf32" and self.device_name != "cuda":
                continue
            dtype = jnp.bfloat16 if precision == "bf16" else jnp.float32
            lax_precision = jax.lax.Precision.HIGHEST if precision == "float32" else jax.lax.Precision.DEFAULT
            matmul = jax.jit(lambda a, b, p=lax_precision: jnp.matmul(a, b, precision=p))
            for n in sizes:
                results.append(peak.measure(
                    "jax", precision, n, matmul,
                    lambda a, dtype=dtype: jax.device_put(jnp.asarray(a, dtype), device),
                    lambda c: np.asarray(c.astype(jnp.float32)), jax.block_until_ready))
        return results

    def bandwidth(self, n: int, min_seconds: float) -> dict:
        device = self._devices()[0]
        return peak.measure_bandwidth("jax", n, jax.jit(jnp.add), lambda a: jax.device_put(a, device), np.asarray,
                                      jax.block_until_ready, min_seconds)

    def setup(self, point: Point, weights_path: str) -> dict:
        if self.mode in artifacts.MODES:
            return self._setup_artifact(point, weights_path)
        jax.config.update("jax_enable_x64", point.dtype == "float64")
        device = self._devices()[0]
        dtype, compute_dtype = PRECISIONS[point.dtype]
        with jax.default_device(device):
            model, config, _ = vae_jax.load_checkpoint(weights_path, dtype=dtype, compute_dtype=compute_dtype,
                                                       **split_mode(self.mode)[1]["forms"])
        if config != point.config:
            raise ValueError("the weights file's config differs from the benchmark point's")
        self.batches = [(jax.device_put(x.transpose(0, 2, 3, 1), device), jax.device_put(e, device))
                        for x, e in synthetic_batches(point)]
        self.kind, self.i = point.kind, 0
        self.beta = jax.device_put(jnp.asarray(config.beta, dtype), device)
        setup = self._setup_jit if split_mode(self.mode)[0] == "jit" else self._setup_nnx_jit
        return {**setup(model, point), "forms": model.forms}

    def _setup_jit(self, model, point: Point) -> dict:
        x, eps = self.batches[0]
        start = time.perf_counter()
        if point.kind == "train":
            self.state = vae_jax.create_train_state(model)
            jitted = vae_jax.compile_train_step(self.state, check_inputs=False)
            self.fn = jitted.lower(self.state, x, eps, self.beta).compile()  # ahead of time: cannot recompile
        else:
            jitted, self.params = inference_step(model)
            self.fn = jitted.lower(self.params, x).compile()
        compile_s = time.perf_counter() - start
        cost = self.fn.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        gate = self._gate(self._call(x, eps))
        return {"gate": gate, "compile_s": compile_s, "compiler_options": model.compiler_options,
                "xla_flops_per_image": float(cost.get("flops", float("nan"))) / point.batch_size if cost else None}

    def _setup_nnx_jit(self, model, point: Point) -> dict:
        worker = self

        if point.kind == "train":
            config = model.config
            self.model, self.optimizer = model, nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

            @nnx.jit(donate_argnums=(0, 1))
            def step(model, optimizer, x, eps, beta):
                worker.traces += 1  # runs only while tracing

                def loss_fn(model):
                    # the public API: under nnx.jit its checks see tracers and add nothing to the step
                    losses = vae_jax.vae_loss(model(x, eps), x, config, beta)
                    return losses.total, losses

                (_, losses), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
                optimizer.update(model, grads)
                return losses
        else:
            self.model = model

            @nnx.jit
            def step(model, x):
                worker.traces += 1
                return model.reconstruct(x, check_inputs=False)

        self.fn = step
        # the first call compiles; its value, from the canonical weights, is the gate
        compile_s, gate = compile_seconds(lambda i: self._gate(self._call(*self.batches[i])))
        return {"gate": gate, "compile_s": compile_s, "compiler_options": {}}  # nnx.jit takes none: XLA's defaults

    def _setup_artifact(self, point: Point, weights_path: str) -> dict:
        likelihood = point.config.likelihood
        self.kind, self.i = "artifact", 0
        self.fn, self.batches, setup = artifacts.artifact_setup(
            self.mode, point, weights_path, self.device_name, self.threads,
            lambda logits: self._gate(vae_jax.mean_image(logits, likelihood)))
        return setup

    def _call(self, x, eps):
        if self.kind == "artifact":
            return self.fn(x, eps)
        if self.state is not None or self.params is not None:  # the jax.jit modes
            if self.kind == "train":
                self.state, losses = self.fn(self.state, x, eps, self.beta)
                return losses.total
            return self.fn(self.params, x)
        if self.kind == "train":
            return self.fn(self.model, self.optimizer, x, eps, self.beta).total
        return self.fn(self.model, x)

    def _gate(self, out) -> float:
        # train: the first step's loss, from the canonical weights; infer: the sum of the reconstructions
        return float(np.asarray(out, np.float64).sum())

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.i = (self.i + 1) % len(self.batches)
            out = self._call(*self.batches[self.i])
        jax.block_until_ready((out, self.state))

    def freeze(self) -> None:
        self.frozen = (self.traces, self.compiles)

    def check_no_recompile(self) -> None:
        traces, compiles = self.traces - self.frozen[0], self.compiles - self.frozen[1]
        if traces or compiles:
            raise RuntimeError(f"{self.mode} traced {traces} and compiled {compiles} times after warm-up")

    def reset_peak_memory(self) -> None:
        pass  # a fresh worker per point: the device's peak is this point's

    def peak_memory(self) -> int | None:
        stats = self._devices()[0].memory_stats() if self.device_name != "cpu" else None
        return stats.get("peak_bytes_in_use") if stats else None

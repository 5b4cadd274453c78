"""The accelerators' published figures, in one table: what estimated rows divide by (compile-only TPU
analysis) and what measured GPU rows are set beside. Vendors publish bf16 (and int8) matmul peaks, dense;
NVIDIA's datasheets also print figures "with sparsity", twice the dense ones: the dense ones are here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chip:
    name: str
    bf16_tflops: float  # dense bf16 matmul peak of one chip, TFLOP/s
    hbm_gb_per_s: float  # HBM bandwidth of one chip, GB/s (10^9 bytes)
    hbm_gib: float  # HBM capacity of one chip
    source: str

    def matmul_seconds(self, flops: float, passes: int = 1) -> float:
        """Time of `flops` at the bf16 peak; a float32 matmul on a TPU runs as `passes` bf16 passes."""
        return flops * passes / (self.bf16_tflops * 1e12)

    def memory_seconds(self, nbytes: float) -> float:
        return nbytes / (self.hbm_gb_per_s * 1e9)


# Keyed by the generation in a TPU topology name ("v5e:2x2" -> "v5e") or by the GPU's name.
CHIPS = {
    "v4": Chip("TPU v4", 275, 1200, 32, "https://cloud.google.com/tpu/docs/v4"),
    "v5e": Chip("TPU v5e", 197, 819, 16, "https://cloud.google.com/tpu/docs/v5e"),
    "v5p": Chip("TPU v5p", 459, 2765, 95, "https://cloud.google.com/tpu/docs/v5p"),
    "v6e": Chip("TPU v6e (Trillium)", 918, 1640, 32, "https://cloud.google.com/tpu/docs/v6e"),
    "H100": Chip("NVIDIA H100 SXM", 989, 3350, 80, "https://www.nvidia.com/en-us/data-center/h100/"),
    "H200": Chip("NVIDIA H200 SXM", 989, 4800, 141, "https://www.nvidia.com/en-us/data-center/h200/"),
}

# bf16 passes of one float32 matmul on a TPU at each jax_default_matmul_precision: "default" rounds the
# operands to bf16 (one pass), "high" is bf16_3x, "highest" bf16_6x (XLA's TPU emulation of float32).
# A mixed-precision (bf16) step's matmuls are one pass at any setting.
TPU_PASSES = {"default": 1, "high": 3, "highest": 6}


# The same for a GPU's float32 matmul in TF32 ("tensorfloat32"): Hopper's dense TF32 rate is half its
# dense bf16 rate (494.7 of 989.4 TFLOP/s on an H100 SXM).
GPU_PASSES = {"tensorfloat32": 2}


def chip_for(target: str) -> Chip:
    """A TPU topology ("v5e:2x2": its generation's chip) or a GPU by name ("H100")."""
    if ":" in target:
        return tpu_chip(target)
    if target not in CHIPS:
        known = ", ".join(k for k in CHIPS if not k.startswith("v"))
        raise ValueError(f"no published figures for GPU {target!r}; known: {known}")
    return CHIPS[target]


def tpu_chip(topology: str) -> Chip:
    generation = topology.split(":")[0]
    if generation not in CHIPS:
        known = ", ".join(k for k in CHIPS if k.startswith("v"))
        raise ValueError(f"no published figures for TPU {generation!r} (from topology {topology!r}); "
                         f"known: {known}")
    return CHIPS[generation]

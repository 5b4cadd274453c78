"""The parity tables: a comparison's rows (each with its tolerance and verdict), the full table, the
summary (the largest error of each quantity over all cases) and the README's table of groups.
Framework-free."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from twinvae.parity.tolerances import EXPORT_QUANTITY_KIND, LOWER_QUANTITIES, QUANTITY_KIND, tolerance
from twinvae.results import markdown_table
from vae_core.config import VAEConfig


@dataclass
class Row:
    """One quantity of one twin in one dtype: its error against the float64 torch reference, and whether that
    is within its tolerance."""

    case: str
    quantity: str
    dtype: str
    twin: str  # the twin compared with the float64 torch reference, or a checkpoint's direction
    error: float
    where: str = ""  # the worst tensor / step, to locate a failure
    config: VAEConfig = field(default_factory=VAEConfig, repr=False)  # the case's, for bf16's tolerance
    tolerance: float = field(init=False)

    def __post_init__(self):
        kind = QUANTITY_KIND.get(self.quantity) or EXPORT_QUANTITY_KIND[self.quantity]
        self.tolerance = tolerance(self.dtype, kind, self.config)

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.error)) and self.error <= self.tolerance


def format_table(rows: list[Row]) -> str:
    header = ["case", "quantity", "dtype", "twin vs float64 torch", "max err: max\\|a-b\\|/max\\|b\\|",
              "tolerance", "ok", "worst at"]
    return markdown_table(header, [[r.case, r.quantity, r.dtype, r.twin, f"{r.error:.2e}", f"{r.tolerance:.0e}",
                                     "pass" if r.ok else "FAIL", r.where] for r in rows])


def format_summary(rows: list[Row]) -> str:
    """The largest error of each (quantity, dtype, twin) over all cases: the README's table."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.quantity, r.dtype, r.twin), []).append(r)
    order = [*QUANTITY_KIND, *EXPORT_QUANTITY_KIND]
    table = []
    for (quantity, dtype, twin), group in sorted(
            groups.items(), key=lambda kv: (kv[0][1] == "float32", order.index(kv[0][0]), kv[0][2])):
        top = max(group, key=lambda r: r.error if np.isfinite(r.error) else np.inf)
        ok = "pass" if all(r.ok for r in group) else "FAIL"
        table.append([quantity, dtype, twin, f"{top.error:.1e}", f"{top.tolerance:.0e}", ok, top.case])
    return markdown_table(["quantity", "dtype", "twin vs float64 torch",
                           "largest max\\|a-b\\|/max\\|b\\| over cases", "tolerance", "ok", "in case"], table)


# The README's summary: the quantities in groups, the largest error of each group over every case and twin.
GROUPS = {"forward: mu, logvar, z, logits, reconstruct, the VampPrior's components, z1 of two levels": (
    "mu", "logvar", "z", "logits", "reconstruct", "prior.mu", "prior.logvar", *LOWER_QUANTITIES),
          "losses: total, reconstruction, KL": ("loss.total", "loss.reconstruction", "loss.kl"),
          "gradients, every parameter": ("grad",),
          "Adam: the losses at every step": ("adam.loss",),
          "Adam: the parameters after the first step": ("adam.step1",),
          "Adam: the parameters at every step": ("adam.params",),
          "sampling (same seed) and decoding (same z)": ("sample", "decode"),
          "checkpoints, written by each twin, read by the other": ("checkpoint",)}


def format_groups(rows: list[Row]) -> str:
    """One line per group of GROUPS, one pair of columns (largest error, tolerance) per dtype compared."""
    dtypes = [d for d in ("float64", "float32", "bfloat16") if any(r.dtype == d for r in rows)]
    table = []
    for label, quantities in GROUPS.items():
        cells = []
        for dtype in dtypes:
            group = [r for r in rows if r.quantity in quantities and r.dtype == dtype]
            if not group:
                cells += ["", ""]
                continue
            top = max(group, key=lambda r: r.error if np.isfinite(r.error) else np.inf)
            ok = "" if all(r.ok for r in group) else " FAIL"
            cells += [f"{top.error:.1e}{ok}", f"{max(r.tolerance for r in group):.0e}"]
        if any(cells):
            table.append([label, *cells])
    header = ["quantity", *(cell for d in dtypes for cell in (f"{d}: largest error", "tolerance"))]
    return markdown_table(header, table)

"""`python -m docs.curves`: the test curves of docs/training.md's VAE family, from the runs' training
records, into docs/results/convergence.md and docs/results/twins-at-10-epochs.md (which `python
docs/refresh.py` then shows).

Convergence: how far each long run got, and where its test curve points. For each
run in RUNS it reads the test negative ELBO of every epoch from the run's training record (RESULTS/NAME.md)
and fits two curves to the second half of its epochs, least squares in a and b with the shape parameter on
a grid: T(e) = a + b exp(-e / tau), which levels off soon, and T(e) = a + b e^-p with p >= 0.5, which
keeps falling for long. Their limits a bracket where the curve goes; with the run's IWAE bound at K = 1000
(RESULTS/NAME-evaluation.md) less the gap between its last negative ELBO and that bound, they predict the
converged bound. A fit, not a measurement: the same curve under another schedule or model is not covered.

The twins at 10 epochs: each variant's test negative ELBO after 10 epochs in torch and in JAX, the same
seed, beside the seed noise: the spread of the seed model's over the seeds of SEED_RUNS (torch).

`--check` changes nothing and exits 1 if a file differs from what the records give (docs/curves_test.py)."""

from __future__ import annotations

import sys

import numpy as np

from docs.likelihoods import RESULTS, evaluation, sync, table_rows
from twinvae.results import markdown_table

TABLE = RESULTS / "convergence.md"
TWINS_TABLE = RESULTS / "twins-at-10-epochs.md"
RUNS = ("fmnist-binarized-torch-s0-e50", "fmnist-iwae5-torch-s0", "fmnist-vamp-torch-s0", "fmnist-hvae-torch-s0",
        "fmnist-hvae-vamp-torch-s0")
# each fit's basis b(e; shape) and the grid of its shape parameter
FITS = {"exponential": (lambda e, tau: np.exp(-e / tau), np.round(np.arange(1.0, 300.0, 0.5), 1)),
        "power law": (lambda e, p: e ** -p, np.round(np.arange(0.5, 3.001, 0.01), 2))}
HEADER = ["run", "epochs", "last test negative ELBO", "its last 10 epochs' improvement",
          "exponential fit: limit (tau)", "power-law fit: limit (p)", "largest residual (exp., power)",
          "IWAE bound (K = 1000)", "predicted converged IWAE bound"]


def test_curve(name: str) -> np.ndarray:
    """The test negative ELBO of every epoch of the run's training record (its `test total` column)."""
    header, _, *rows = table_rows((RESULTS / f"{name}.md").read_text())
    column = header.index("test total")
    return np.array([float(row[column]) for row in rows if row[0].isdigit()])


def fit(curve: np.ndarray, kind: str) -> tuple[float, float, float, float]:
    """(a, b, shape, largest residual) of T(e) = a + b basis(e; shape), e counted from 1, fitted to the
    curve's second half: for each shape of the kind's grid the least-squares a and b, then the shape of
    the smallest squared error."""
    basis, grid = FITS[kind]
    epochs = np.arange(1, len(curve) + 1, dtype=np.float64)[len(curve) // 2:]
    values = curve[len(curve) // 2:]
    best = None
    for shape in grid:
        design = np.stack([np.ones_like(epochs), basis(epochs, shape)], axis=1)
        (a, b), *_ = np.linalg.lstsq(design, values, rcond=None)
        residual = values - design @ (a, b)
        if best is None or residual @ residual < best[0]:
            best = (residual @ residual, a, b, shape, np.abs(residual).max())
    return tuple(float(v) for v in best[1:])


def row(name: str) -> list[str]:
    curve = test_curve(name)
    (a_exp, _, tau, error_exp), (a_pow, _, p, error_pow) = fit(curve, "exponential"), fit(curve, "power law")
    figures = evaluation(name)
    bound = float(figures["IWAE -log p(x)"])
    gap = float(figures["negative ELBO"]) - bound  # the evaluation's ELBO is the last epoch's checkpoint's
    return [f"[{name}](results/{name}.md)", str(len(curve)), f"{curve[-1]:.3f}", f"{curve[-11] - curve[-1]:.2f}",
            f"{a_exp:.2f} ({tau:g})", f"{a_pow:.2f} ({p:g})", f"{error_exp:.3f}, {error_pow:.3f}", f"{bound:.2f}",
            f"{min(a_pow, a_exp) - gap:.1f} to {max(a_pow, a_exp) - gap:.1f}"]


def table() -> str:
    return ("Command: `python -m docs.curves`, from the runs' training records and evaluations (each names "
            "its command): nats per image on dynamically binarised Fashion-MNIST's test set. The fits' limits "
            "are where curves of those shapes go, not measurements (a power law's p at its grid's edge, 0.5, says "
            "the data would take a flatter one, whose limit is lower still); the predicted bound is each limit "
            "less the gap between the last negative ELBO and its IWAE bound.\n\n"
            + markdown_table(HEADER, [row(name) for name in RUNS]) + "\n")


# (variant, torch run, JAX run): the same options and seed in each twin
TWIN_RUNS = [("seed", "fmnist-binarized-torch-s0", "fmnist-binarized-jax-s0"),
             ("IWAE objective K = 5", "fmnist-iwae5-torch-s0", "fmnist-iwae5-jax-s0"),
             ("VampPrior of 500 pseudo-inputs", "fmnist-vamp-torch-s0", "fmnist-vamp-jax-s0"),
             ("hvae preset (two levels)", "fmnist-hvae-torch-s0", "fmnist-hvae-jax-s0")]
SEED_RUNS = ("fmnist-binarized-torch-s0", "fmnist-binarized-torch-s1", "fmnist-binarized-torch-s2")
EPOCH = 10
TWINS_HEADER = ["variant", "torch", "JAX", "JAX - torch", "in seed-noise standard deviations"]


def twins_table() -> str:
    noise = np.array([test_curve(name)[EPOCH - 1] for name in SEED_RUNS])
    spread = float(noise.std(ddof=1))
    rows = []
    for variant, torch_run, jax_run in TWIN_RUNS:
        a, b = (test_curve(name)[EPOCH - 1] for name in (torch_run, jax_run))
        rows.append([f"{variant} ([torch](results/{torch_run}.md), [JAX](results/{jax_run}.md))", f"{a:.3f}",
                     f"{b:.3f}", f"{b - a:+.3f}", f"{(b - a) / spread:+.2f}"])
    seeds = ", ".join(f"{value:.3f}" for value in noise)
    return (f"Command: `python -m docs.curves`, from the runs' training records (each names its command): the "
            f"test negative ELBO after {EPOCH} epochs, nats per image on dynamically binarised Fashion-MNIST, "
            f"seed 0 in both twins. The seed noise: the seed model's after {EPOCH} epochs in torch over seeds 0, "
            f"1, 2 ({seeds}), standard deviation {spread:.3f} nats.\n\n"
            + markdown_table(TWINS_HEADER, rows) + "\n")


def main(argv: list[str]) -> int:
    return sync({TABLE: table(), TWINS_TABLE: twins_table()}, argv, "python -m docs.curves")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

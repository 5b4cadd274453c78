"""`python docs/likelihoods.py`: the Fashion-MNIST results table of docs/training.md, one row per run in RUNS,
gathered from the results files that `twinvae train` and `twinvae evaluate --markdown` wrote into
docs/results/, into docs/results/likelihoods.md (which `python docs/refresh.py` then shows). It copies
figures, never computes them; `--check` changes nothing and exits 1 if the table differs from its files
(docs/likelihoods_test.py runs that in the test suite)."""

from __future__ import annotations

import sys
from pathlib import Path

from twinvae.results import markdown_table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
TABLE = RESULTS / "likelihoods.md"

# (run name, the data and likelihood it was trained and scored on, the model); each run has its training
# record RESULTS/NAME.md and its evaluation RESULTS/NAME-evaluation.md. The links are relative to
# docs/training.md, which shows the table.
RUNS = [
    ("fmnist-binarized-torch-s0", "binarised (dynamic), Bernoulli", "seed"),
    ("fmnist-binarized-jax-s0", "binarised (dynamic), Bernoulli", "seed"),
    ("fmnist-binarized-torch-s0-e50", "binarised (dynamic), Bernoulli", "seed"),
    ("fmnist-resnet-binarized-torch-s0", "binarised (dynamic), Bernoulli", "resnet"),
    ("fmnist-iwae5-torch-s0", "binarised (dynamic), Bernoulli", "seed, IWAE objective K = 5"),
    ("fmnist-vamp-torch-s0", "binarised (dynamic), Bernoulli", "seed, VampPrior of 500 pseudo-inputs"),
    ("fmnist-hvae-torch-s0", "binarised (dynamic), Bernoulli", "hvae (two levels of 40)"),
    ("fmnist-hvae-vamp-torch-s0", "binarised (dynamic), Bernoulli", "hvae, VampPrior of 500 pseudo-inputs on z2"),
    ("fmnist-logistic-torch-s0", "8-bit, discretized logistic", "seed"),
    ("fmnist-logistic-jax-s0", "8-bit, discretized logistic", "seed"),
    ("fmnist-resnet-logistic-torch-s0", "8-bit, discretized logistic", "resnet"),
    ("fmnist-cb-torch-s0", "grey levels, continuous Bernoulli (a density)", "seed"),
    ("fmnist-cb-jax-s0", "grey levels, continuous Bernoulli (a density)", "seed"),
    ("fmnist-resnet-cb-lr1e-3-torch-s0", "grey levels, continuous Bernoulli (a density)", "resnet, lr 1e-3"),
    ("fmnist-seed-torch-s0", "grey levels, BCE (not a likelihood)", "seed"),
    ("fmnist-resnet-torch-s0", "grey levels, BCE (not a likelihood)", "resnet"),
]
HEADER = ["data, likelihood", "model", "twin", "epochs", "negative ELBO", "IWAE bound", "K", "bits/dim (IWAE)",
          "Frechet distance (in-domain)", "results"]
FRECHET = "Frechet distance (in-domain, comparable only with itself)"  # `evaluate --fid`'s column


def table_rows(text: str) -> list[list[str]]:
    """The cells of every row of the markdown tables in `text`, header and separator rows included."""
    return [[cell.strip() for cell in line.strip()[1:-1].split("|")]
            for line in text.splitlines() if line.startswith("|")]


def evaluation(name: str) -> dict[str, str]:
    """The figures of one `twinvae evaluate --markdown` file, by column (its second bits/dim column,
    the IWAE bound's, as `bits/dim (IWAE)`)."""
    header, _, cells = table_rows((RESULTS / f"{name}-evaluation.md").read_text())
    if header[:8] != ["checkpoint", "backend", "test images", "K", "negative ELBO", "bits/dim",
                      "IWAE -log p(x)", "bits/dim"]:
        raise ValueError(f"{name}-evaluation.md is not a `twinvae evaluate --markdown` file: header {header}")
    figures = dict(zip(header, cells))
    figures["bits/dim (IWAE)"] = cells[7]
    return figures


def epochs(name: str) -> int:
    """How many epochs the run's training record lists."""
    rows = table_rows((RESULTS / f"{name}.md").read_text())
    return sum(1 for row in rows if row[0].isdigit())


def row(name: str, data: str, model: str) -> list[str]:
    f = evaluation(name)
    return [data, model, f["backend"], str(epochs(name)), f["negative ELBO"], f["IWAE -log p(x)"], f["K"],
            f["bits/dim (IWAE)"], f"{f[FRECHET]} (floor {f['floor']})" if FRECHET in f else "not measured",
            f"[{name}](results/{name}-evaluation.md)"]


def table() -> str:
    return ("Command: `python docs/likelihoods.py`, from the runs' results files (each names its commands). "
            "Fashion-MNIST test set, seed 0, nats per image; the continuous Bernoulli's are nats of a density on "
            "[0, 1] and the grey-level BCE's bound no likelihood, so neither has bits/dim nor compares with the "
            "others. The Frechet distance (`twinvae evaluate --fid`: 10,000 prior samples against the grey test "
            "images, in the features of twinvae's own classifier) is comparable only with itself, never with a "
            "published FID; its floor is as many training images' distance.\n\n"
            + markdown_table(HEADER, [row(*run) for run in RUNS]) + "\n")


def sync(tables: dict[Path, str], argv: list[str], command: str) -> int:
    """Write each table to its file; with argv ["--check"] write nothing and return 1 if any file differs,
    naming it and the `command` that rewrites it."""
    if argv == ["--check"]:
        stale = [path for path, text in tables.items() if not path.is_file() or path.read_text() != text]
        for path in stale:
            print(f"{path.relative_to(ROOT)} differs from the files it is made from; run {command}")
        return 1 if stale else 0
    for path, text in tables.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


def main(argv: list[str]) -> int:
    return sync({TABLE: table()}, argv, "python docs/likelihoods.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

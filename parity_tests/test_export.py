"""Parity carried into the exported artifacts: each format x part, run in its own runtime through
twinvae.export.load, agrees with the float64 torch reference at the forward tolerance the twins are held
to (float32 and mixed bf16; ONNX is float32 only), on the seed model and a residual one. Labels as an
input (a class-conditional model's artifacts): twinvae/export_test.py, and `twinvae parity --export`
over every case."""

import pytest

import vae_jax.export
from twinvae.parity import cases, comparisons, report
from vae_core import export as export_spec

CASES = {case.name: case for case in cases.CASES}
EXPORT_CASES = ["conv 1x28x28 bernoulli (seed)", "conv 1x28x28 residual blocks"]


def _expected_rows(dtype: str) -> set:
    formats = [f for f in export_spec.FORMATS if dtype == "float32" or f not in export_spec.FLOAT32_ONLY]
    return {(f"export.{output}", f"{format} {part}") for format in formats
            for part, (_, outputs) in export_spec.PARTS.items() for output in outputs}


@pytest.mark.parametrize("name, dtype", [
    pytest.param(name, dtype, id=f"{name}-{dtype}",
                 marks=[pytest.mark.fast] if (name, dtype) == (EXPORT_CASES[0], "float32") else [])
    for name in EXPORT_CASES for dtype in ("float32", "bfloat16")])
def test_every_artifact_computes_what_the_twins_do(name, dtype):
    rows = comparisons.compare_exports(CASES[name], dtype)
    assert {(r.quantity, r.twin) for r in rows} == _expected_rows(dtype)
    failed = [r for r in rows if not r.ok]
    assert not failed, report.format_table(failed)


def test_an_artifact_that_computes_something_else_fails(monkeypatch):
    real = vae_jax.export.part_function

    def off_by_a_thousandth(model, part):
        run = real(model, part)
        return lambda *inputs: tuple(out * 1.001 for out in run(*inputs))

    monkeypatch.setattr(vae_jax.export, "part_function", off_by_a_thousandth)
    rows = comparisons.compare_exports(CASES[EXPORT_CASES[0]], "float32", formats=("stablehlo",),
                                       parts=("decoder",))
    assert [r.quantity for r in rows] == ["export.logits"] and not rows[0].ok

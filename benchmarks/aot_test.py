"""The TPU ahead-of-time path: its pieces everywhere, one small compile wherever libtpu is installed (the
tpu-aot extra; CI leaves it out, docs/devices/tpu.md says why)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from benchmarks import aot, chips, hlo
from benchmarks.points import Point
from vae_core.forms import FORMS

HLO = """HloModule jit_step

%fused_computation (p: f32[8,4]) -> f32[8,4] {
  %p = f32[8,4]{1,0} parameter(0)
  ROOT %neg = f32[8,4]{1,0} negate(%p)
}

ENTRY %main.1 (x.1: f32[8,4], w.1: f32[4,16]) -> (f32[8,16], f32[8,4]) {
  %x.1 = f32[8,4]{1,0:T(8,128)} parameter(0), metadata={op_name="x"}
  %w.1 = f32[4,16]{1,0} parameter(1)
  %dot.2 = f32[8,16]{1,0} dot(%x.1, %w.1), lhs_contracting_dims={1}, metadata={op_name="jit(step)/dot_general"}
  %copy-start.1 = (bf16[8,16]{1,0:T(8,128)(2,1)}, bf16[8,16]{1,0}, u32[]{:S(2)}) copy-start(%dot.2)
  %fusion.3 = f32[8,4]{1,0} fusion(%x.1), kind=kLoop, calls=%fused_computation
  ROOT %tuple.4 = (f32[8,16]{1,0}, f32[8,4]{1,0}) tuple(%dot.2, %fusion.3)
}
"""


def test_top_operations_count_operands_and_results_of_the_entry_only():
    ops = hlo.top_operations(HLO)
    assert [(op["name"], op["opcode"], op["bytes"]) for op in ops] == [
        ("copy-start.1", "copy-start", 4 * 128 + 2 * 128 + 2 * 128 + 4),  # a tuple result, nested tilings
        ("dot.2", "dot", 4 * (32 + 64 + 128)),  # x and w read, the result written
        ("fusion.3", "fusion", 4 * (32 + 32)),
    ]
    assert ops[1]["source"] == "jit(step)/dot_general" and ops[1]["shape"] == "f32[8,16]"
    assert ops[0]["shape"] == "(bf16[8,16], bf16[8,16], u32[])"


def test_the_grid_is_the_documented_one():
    first = aot.first_chip_grid("v5e:2x2")
    assert len(first) == len(set(first)) == 36
    assert {p.form for p in first} == {"/".join(f) for f in aot.FORMS}
    assert {p.precision for p in first if (p.point.dtype, p.point.kind) == ("float32", "train")} == {"default",
                                                                                                    "highest"}
    forms = [("native", "native"), ("native", "native")]  # the default and the best may be the same
    assert [(p.form, p.point.dtype) for p in aot.other_chip_grid("v4:2x2x1", forms)] == [
        ("native/native", "float32"), ("native/native", "bfloat16")]


def test_every_compile_names_a_form_of_every_layer_kind():
    """The grid's forms come from the one table of layer kinds (vae_core.forms.FORMS): each point builds
    its model in a form of every kind, the output layer included, and its row records them all."""
    for key, forms in aot.FORMS.items():
        assert set(forms) <= set(FORMS) and all(forms[kind] in FORMS[kind] for kind in forms), key
        assert aot.form_of({**dict.fromkeys(FORMS, "native"), **forms}) == key
    cpu = aot.aot_point("v5e:2x2", "train", ("space_to_depth", "subpixel"), 8, "float32")
    assert cpu.forms == {"strided_conv": "space_to_depth", "transposed_conv": "subpixel",
                         "output_transposed_conv": "col2im"}
    assert {k: v for k, v in cpu.fields().items() if k in FORMS} == cpu.forms and cpu.fields()["form"] == cpu.form
    import vae_jax

    for platform in ("tpu", "gpu"):  # the twin's defaults, which the other chips compile, are in the table
        assert aot.FORMS[aot.form_of(vae_jax.default_forms(platform))] is not None
    with pytest.raises(ValueError, match="none of benchmarks.aot.FORMS"):
        aot.form_of({"strided_conv": "native", "transposed_conv": "subpixel", "output_transposed_conv": "native"})


def test_estimates_divide_by_the_passes_a_float32_matmul_takes():
    chip = chips.tpu_chip("v5e:2x2")
    assert chip.matmul_seconds(197e12) == pytest.approx(1.0)
    assert chip.matmul_seconds(197e12, passes=chips.TPU_PASSES["highest"]) == pytest.approx(6.0)
    assert chip.memory_seconds(819e9) == pytest.approx(1.0)
    assert aot.AotPoint("v5e:2x2", Point(aot.SMOKE_CONFIG, 8, "bfloat16", "train"), ("native", "native"),
                        "highest").passes == 1
    with pytest.raises(ValueError, match="no published figures for TPU 'v9'"):
        chips.tpu_chip("v9:2x2")


def test_an_unknown_chip_or_a_missing_target_config_is_a_clear_error(tmp_path):
    for args, message in [(["--device", "tpu", "--aot", "v9:2x2"], "--aot: no published figures for TPU 'v9'"),
                          (["--device", "cuda", "--aot", "H100", "--gpu-target-config", str(tmp_path / "none")],
                           "no such file")]:
        run = subprocess.run([sys.executable, "-m", "benchmarks", *args], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode != 0 and message in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_a_point_compiled_for_this_cpu_makes_a_row_of_the_report():
    """compile_point and the report without libtpu: the smoke grid's first points compiled for this machine's
    CPU (the estimates with a v5e's figures, which is all a row needs), every column filled."""
    import jax

    rows = [aot.compile_point(point, jax.devices("cpu")[0]) for point in aot.smoke_grid("v5e:2x2")[::2]]
    assert [(r["kind"], r["form"], r["output_transposed_conv"]) for r in rows] == [
        ("train", "native/native", "native"), ("infer", "native/native", "native")]
    assert all(r["chip"] == "TPU v5e" and r["step_s"] == max(r["compute_s"], r["memory_s"]) > 0 for r in rows)
    results = {"meta": {**aot.machine_record(), "command": "python -m benchmarks --aot v5e:2x2"}, "rows": rows,
               "platform": "tpu", "default_form": "native/native", "reference_batch": 8}
    report = aot.markdown(results)
    assert report.startswith("Command: `python -m benchmarks --aot v5e:2x2`; ")
    assert report.count("| TPU v5e |") == 2 and "TPU v5e, native/native:" in report


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed (the tpu-aot extra)")
def test_a_small_model_compiles_for_a_tpu_chip(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    run = subprocess.run([sys.executable, "-m", "benchmarks", "--device", "tpu", "--aot", "v5e:2x2", "--aot-grid",
                          "smoke", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["rows"]
    assert [(r["kind"], r["form"]) for r in rows] == [
        ("train", "native/native"), ("train", "space_to_depth/subpixel"),
        ("infer", "native/native"), ("infer", "space_to_depth/subpixel")]
    for r in rows:
        assert r["device_kind"] == "TPU v5 lite" and r["chip"] == "TPU v5e"
        # XLA's count, of the layers' multiply-adds and more, on the same scale as the analytic one
        assert 0.5 < r["xla_flops"] / r["analytic_flops"] < 3
        assert r["xla_bytes"] > 0 and r["hbm"]["argument"] > 0 and r["hbm_total"] > 0
        assert r["step_s"] == max(r["compute_s"], r["memory_s"]) > 0
        assert r["top_ops"] and [op["bytes"] for op in r["top_ops"]] == sorted(
            (op["bytes"] for op in r["top_ops"]), reverse=True)
    report = (tmp_path / "results.md").read_text()
    assert "Estimated from compile-only analysis, not measured" in report and "| TPU v5e | train |" in report


@pytest.mark.skipif(importlib.util.find_spec("torchax") is None, reason="torchax not installed")
def test_the_torch_twin_through_torchax_matches_the_jax_twin(capsys):
    from benchmarks import torchax_step

    tpu = importlib.util.find_spec("libtpu") is not None  # then compiled for a chip too, at a small batch
    assert torchax_step.main(["--aot", "v5e:2x2", "--batch-size", "8"] if tpu else []) == 0
    out = capsys.readouterr().out.splitlines()
    assert not tpu or any(x.startswith("TPU v5e (TPU v5 lite), torch twin via torchax") for x in out), out
    line = next(x for x in out if x.startswith("CPU, float32"))
    loss_error, gradient_error = (float(v.rstrip(")")) for v in
                                  (line.split("relative error ")[1].split(")")[0], line.split("error ")[-1]))
    assert loss_error < 1e-6 and gradient_error < 1e-4, line

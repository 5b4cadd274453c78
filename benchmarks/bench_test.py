"""The harness itself: gate and summary logic, and `python -m benchmarks --quick` end to end (smoke: no
speed assertions)."""

import csv
import inspect
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import coordinator, peak, points, profile, report
from benchmarks.backend import Backend, backend_class
from benchmarks.points import Point, compile_seconds, synthetic_batches
from vae_core.config import VAEConfig

POINT = Point(VAEConfig(image_shape=(1, 8, 8), conv_channels=(4,), latent_dim=2), 16, "float32", "train")


def _entries(**gates):
    return {tuple(key.split("_", 1)): {"status": "ok", "gate": value, "times": []} for key, value in gates.items()}


def test_gate_passes_agreeing_twins():
    entries = _entries(torch_eager=100.0, **{"torch_compile-default": 100.00001}, jax_jit=100.00002,
                       **{"jax_nnx-jit": 100.0})
    coordinator.gate(entries, POINT)
    assert all(e["status"] == "ok" for e in entries.values())


def test_gate_refuses_both_twins_when_they_disagree():
    entries = _entries(torch_eager=100.0, jax_jit=101.0)
    coordinator.gate(entries, POINT)
    assert all(e["status"] == "refused" and "twins disagree" in e["reason"] for e in entries.values())


def test_gate_refuses_a_mode_that_differs_from_its_baseline():
    entries = _entries(torch_eager=100.0, **{"torch_compile-default": 100.5}, jax_jit=100.0)
    coordinator.gate(entries, POINT)
    assert entries[("torch", "compile-default")]["status"] == "refused"
    assert entries[("torch", "eager")]["status"] == entries[("jax", "jit")]["status"] == "ok"


def test_summary_is_median_and_iqr_of_images_per_second():
    entry = {"times": [0.1, 0.2, 0.4, 0.2, 0.1], "steps_per_repeat": 2}
    summary = coordinator.summarise(entry, POINT, flops_per_image=1e6, peak_gflops=1.0)
    images = 2 * 16 / np.array(entry["times"])
    assert summary["images_per_s"] == pytest.approx(np.median(images))
    assert summary["iqr"] == pytest.approx(np.percentile(images, 75) - np.percentile(images, 25))
    assert summary["gflops"] == pytest.approx(np.median(images) * 1e6 / 1e9)
    assert summary["fraction_of_peak"] == pytest.approx(summary["gflops"])


def test_bandwidth_counts_three_arrays_and_refuses_a_wrong_kernel():
    n = 1 << 16
    right = peak.measure_bandwidth("numpy", n, np.add, np.asarray, np.asarray, lambda c: None, min_seconds=0.01)
    wrong = peak.measure_bandwidth("numpy", n, lambda a, b: a + a, np.asarray, np.asarray, lambda c: None,
                                   min_seconds=0.01)
    assert right["valid"] and not wrong["valid"] and right["gb_per_s"] > 0
    assert peak.best_bandwidth([wrong, right]) is right and peak.best_bandwidth([wrong]) is None


def test_bandwidth_arrays_outgrow_the_cache_unless_the_memory_cannot_hold_them(monkeypatch):
    wanted = 8 * peak.last_level_cache_bytes()  # whatever this machine's last-level cache is
    monkeypatch.setattr(peak, "available_memory_bytes", lambda: 2**50)
    assert peak.bandwidth_elements("cpu") * 4 == wanted >= 8 * 2**20
    monkeypatch.setattr(peak, "available_memory_bytes", lambda: peak.HOST_MEMORY_SHARE * wanted // 2)
    assert peak.bandwidth_elements("cpu") * 4 == wanted // 2  # a twelfth of what is available


def test_roofline_names_the_limit_that_binds():
    # 100 GFLOP/s of matmul, 10 GB/s: the ridge sits at 10 FLOP/byte
    memory = report.roofline(flops=4e9, nbytes=1e9, peak_gflops=100.0, bandwidth_gb_s=10.0)
    assert memory == {"intensity": 4.0, "attainable_gflops": 40.0, "bound": "memory"}
    compute = report.roofline(flops=40e9, nbytes=1e9, peak_gflops=100.0, bandwidth_gb_s=10.0)
    assert compute == {"intensity": 40.0, "attainable_gflops": 100.0, "bound": "compute"}
    assert report.roofline(4e9, 1e9, 100.0, None)["attainable_gflops"] is None


class FakeClock:
    """time.perf_counter and time.sleep, as benchmarks.points calls them, without the waiting: a sleep moves
    the clock on by exactly its seconds."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_compile_seconds_counts_the_first_two_calls_beyond_steady_ones(monkeypatch):
    durations = [0.30, 0.12, 0.02]  # a compile, a re-lowering, then steady
    clock = FakeClock()
    monkeypatch.setattr(points, "time", clock)

    def call(i):
        clock.sleep(durations[i])
        return f"value {i}"

    seconds, first = compile_seconds(call)
    assert first == "value 0"
    assert seconds == pytest.approx(0.30 + 0.12 - 2 * 0.02)


def test_every_worker_gets_the_same_batches():
    a, b = synthetic_batches(POINT), synthetic_batches(POINT)
    assert all(np.array_equal(x1, x2) and np.array_equal(e1, e2) for (x1, e1), (x2, e2) in zip(a, b))
    assert a[0][0].min() >= 0 and a[0][0].max() <= 1 and a[0][0].dtype == np.float32


# The smoke runs' bandwidth arrays: 1 MiB, not the real runs' 8x the last-level cache (256 MiB each here, 3
# arrays in each of 3 libraries); these tests check the harness, not the figure
SMOKE_BANDWIDTH = ["--bandwidth-mib", "1"]


def test_quick_run_end_to_end(tmp_path):
    out = tmp_path / "bench"
    # torch.compile's modes left out (a minute of compiling on 2 cores): their step is compile_train_step,
    # checked against eager in parity_tests/test_compile.py; `python -m benchmarks --quick` runs them
    # the exported artifacts' modes infer only: their training rows are listed as unavailable
    modes = "eager,jit,nnx-jit,onnxruntime,stablehlo"
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--modes", modes, "--out", str(out),
                             "--no-progress", *SMOKE_BANDWIDTH], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    rows = {(r["backend"], r["mode"], r["kind"]): r for r in results["rows"]}
    artifacts = [("torch", "onnxruntime"), ("jax", "stablehlo")]
    pairs = [("torch", "eager"), ("jax", "jit"), ("jax", "nnx-jit"), *artifacts]
    assert set(rows) == {(b, m, k) for b, m in pairs for k in ("train", "infer")}
    for backend, mode in artifacts:
        train = rows.pop((backend, mode, "train"))
        assert train["status"] == "unavailable" and "inference only" in train["reason"]
    for key, row in rows.items():
        mode = key[1]
        assert row["status"] == "ok", row
        assert row["images_per_s"] > 0 and row["repeats"] == 5 and row["fraction_of_peak"] > 0
        assert row["fraction_of_attainable"] > 0 and row["bound"] in ("compute", "memory")
        assert (row["compile_s"] is None) == (mode == "eager")
        assert row["rss_delta_mb"] > 1 and row["device_peak_mb"] is None  # the model and its step's buffers
    assert any(p["valid"] and p["library"] in ("torch", "jax", "numpy") for p in results["peak"])
    assert {b["library"] for b in results["bandwidth"] if b["valid"]} == {"numpy", "torch", "jax"}
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(results["rows"])
    assert "| backend | mode |" in (out / "results.md").read_text()
    assert (out / "throughput.png").stat().st_size > 10_000


def test_a_bandwidth_size_of_zero_is_refused():
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit, match="--bandwidth-mib must be above 0, got 0.0"):
        main(["--bandwidth-mib", "0"])


def test_roofline_only_measures_the_peaks_and_the_bandwidth(tmp_path):
    run = subprocess.run([sys.executable, "-m", "benchmarks", "--roofline-only", "--backends", "torch",
                          "--peak-sizes", "256", "--peak-seconds", "0.02", "--no-progress", *SMOKE_BANDWIDTH,
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["rows"] == [] and not (tmp_path / "throughput.png").exists()
    libraries = {"numpy", "torch"}
    assert {p["library"] for p in results["peak"]} == {b["library"] for b in results["bandwidth"]} == libraries
    assert "Memory bandwidth (best valid): " in (tmp_path / "results.md").read_text()


def test_a_mode_the_device_lacks_is_listed_as_unavailable():
    import torch

    from benchmarks.torch_backend import TorchBackend

    threads = torch.get_num_threads()  # a Backend sets the process's thread count: keep it
    reason = TorchBackend("compile-reduce-overhead", "cpu", threads=threads, tf32=False).unavailable(POINT)
    assert reason == "reduce-overhead means CUDA graphs: CUDA only"
    assert TorchBackend("eager", "cpu", threads=threads, tf32=False).unavailable(POINT) is None


def protocol_mismatches(cls) -> list[str]:
    """Each method of benchmarks.backend.Backend that `cls` lacks, or has with another signature."""
    methods = [name for name, value in vars(Backend).items()
               if callable(value) and (name == "__init__" or not name.startswith("_"))]
    found = []
    for name in methods:
        if not callable(getattr(cls, name, None)):
            found.append(f"{cls.__name__} has no {name}")
        elif inspect.signature(getattr(cls, name)) != inspect.signature(getattr(Backend, name)):
            found.append(f"{cls.__name__}.{name}{inspect.signature(getattr(cls, name))} is not "
                         f"{name}{inspect.signature(getattr(Backend, name))}")
    return found


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_each_backend_has_the_protocol_s_methods_with_its_signatures(name):
    assert protocol_mismatches(backend_class(name)) == []


def test_a_backend_that_drops_or_renames_a_method_is_found():
    from benchmarks.torch_backend import TorchBackend

    namespace = {k: v for k, v in vars(TorchBackend).items() if k != "freeze"}
    namespace["run_steps"], namespace["setup"] = namespace.pop("run"), lambda self, point: {}
    assert protocol_mismatches(type("Planted", (), namespace)) == [
        "Planted.setup(self, point) is not setup(self, point: 'Point', weights_path: 'str') -> 'dict'",
        "Planted has no run", "Planted has no freeze"]


@pytest.fixture
def profile_here(monkeypatch):
    """benchmarks.profile.main in this process, not in the worker process it starts by itself (a second
    import of both frameworks): TWINVAE_BENCH_CACHE, the mark of that process, names the session's JAX
    cache. The process-wide settings a Backend makes (torch's threads and TF32, JAX's matmul precision and
    cache folder) are put back after."""
    import jax
    import torch

    monkeypatch.setenv("TWINVAE_BENCH_CACHE", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax_options = {name: getattr(jax.config, name) for name in ("jax_default_matmul_precision",
                                                                 "jax_compilation_cache_dir")}
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    for flags in (torch.backends.cuda.matmul, torch.backends.cudnn):
        monkeypatch.setattr(flags, "allow_tf32", flags.allow_tf32)  # put back by monkeypatch
    yield profile.main
    for name, value in jax_options.items():
        jax.config.update(name, value)
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision(precision)


@pytest.mark.parametrize("backend, op", [("torch", "aten::convolution_backward"), ("jax", "dot_general")])
def test_profile_names_the_step_s_ops(profile_here, capsys, backend, op):
    # a small batch and few steps: the table must hold the backend's convolution/matmul work, with shapes
    assert profile_here(["--backend", backend, "--batch-size", "8", "--steps", "3", "--threads", "1"]) == 0
    stdout = capsys.readouterr().out
    header, command, _, total, _, columns, _, *rows = stdout.strip().splitlines()
    assert "batch 8" in header and "ms per step" in header and command.startswith("Command: ")
    assert columns.startswith("| ms per step | share | op | shape |") and 0 < len(rows) <= 25
    assert any(op in row for row in rows), stdout
    times = [float(row.split("|")[1]) for row in rows]
    assert times == sorted(times, reverse=True) and times[0] > 0


def test_profile_runs_itself_as_a_benchmark_worker(monkeypatch):
    """Outside a worker's environment the profiler starts itself again in one: the threads asked for, its
    own fresh compilation caches (the tests above run it in place)."""
    monkeypatch.delenv("TWINVAE_BENCH_CACHE", raising=False)
    started = []

    def run(args, env):
        started.append((args, env, os.path.isdir(env["TWINVAE_BENCH_CACHE"])))
        return subprocess.CompletedProcess(args, 3)

    monkeypatch.setattr(profile, "subprocess", SimpleNamespace(run=run))
    argv = ["--backend", "torch", "--threads", "1"]
    assert profile.main(argv) == 3
    ((args, env, cache_existed),) = started
    assert args == [sys.executable, "-m", "benchmarks.profile", *argv] and cache_existed
    assert env["OMP_NUM_THREADS"] == env["TWINVAE_BENCH_THREADS"] == "1"
    assert env["TORCHINDUCTOR_CACHE_DIR"].startswith(env["TWINVAE_BENCH_CACHE"])
    assert env["TWINVAE_BENCH_CACHE"] != os.environ.get("JAX_COMPILATION_CACHE_DIR")


def test_profile_refuses_a_mode_the_backend_lacks():
    with pytest.raises(SystemExit, match="jax has no mode 'eager'"):
        profile.main(["--backend", "jax", "--mode", "eager"])


def test_iwae_speed_table_names_every_form_and_allocator(tmp_path):
    """Each allocator in a process of its own: the one that keeps freed memory maps fewer fresh pages per
    call than the default (a count of page faults, which other processes on the cores do not move, unlike
    the kernel's share of the time)."""
    from benchmarks import iwae

    out = tmp_path / "new folder" / "iwae.md"  # made by the run
    argv = ["--backend", "torch", "--images", "4", "--k", "500", "--repeats", "1", "--out", str(out)]
    assert iwae.main(argv) == 0
    text = out.read_text()
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| torch |")]
    kept, default = "freed memory kept (glibc: one arena, no mmap)", "the system's default"
    assert [row[1:3] for row in rows] == [["default (col2im)", kept], ["native (native)", kept],
                                          ["default (col2im)", default], ["native (native)", default]]
    assert all(float(row[3].replace(",", "")) > 0 for row in rows) and "torch 2." in text.splitlines()[0]
    assert all(0 <= float(row[4].rstrip("%")) <= 100 for row in rows)
    faults = [float(row[5].replace(",", "")) for row in rows]
    assert max(faults[:2]) < min(faults[2:]) / 2, faults
    with pytest.raises(SystemExit, match="at least 1"):
        iwae.main(["--k", "0"])


def test_the_trainer_is_set_against_its_step(tmp_path):
    """python -m benchmarks.trainer: the harness's step and the trainer's last epoch, in a process of each
    (torch alone here, on the digits: 22 steps an epoch at batch 64)."""
    from benchmarks import trainer

    out = tmp_path / "new folder" / "trainer.md"
    assert trainer.main(["--backend", "torch", "--dataset", "digits", "--batch-size", "64", "--repeats", "1",
                         "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("Command: `python -m benchmarks.trainer --backend torch --dataset digits")
    (row,) = [line for line in text.splitlines() if line.startswith("| torch (eager-channels-last) |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    step_ms, steps_s, epoch_s = (float(cells[i].split()[0]) for i in (1, 2, 3))
    assert step_ms > 0 and steps_s == pytest.approx(22 * step_ms / 1e3, abs=0.01) and epoch_s > 0
    assert cells[4].endswith("%") and all(float(c) >= 0 for c in cells[5:])
    with pytest.raises(SystemExit, match="at least 1"):
        trainer.main(["--epochs", "0"])


def test_xla_options_table_names_every_target_form_and_variant(tmp_path):
    """python -m benchmarks.xla_options: a row per (target, form), a column per variant, each cell a time
    and its ratio to the baseline (two cheap targets, a short run)."""
    from benchmarks import xla_options

    out = tmp_path / "new folder" / "x.md"  # made by the run
    argv = ["--batch-sizes", "4", "--repeats", "1", "--seconds", "0.01", "--variants", "baseline,ynn dots",
            "--targets", "decoder deconv 32->1,linears", "--out", str(out)]
    assert xla_options.main(argv) == 0
    text = out.read_text()
    assert text.startswith("Command: `python -m benchmarks.xla_options --batch-sizes 4") and "Batch 4:" in text
    header, separator, *rows = [line for line in text.splitlines() if line.startswith("|")]
    assert header == "| target | form | baseline | ynn dots |" and separator == "|---|---|---|---|"
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    assert [row[:2] for row in cells] == [["decoder deconv 32->1", "native"], ["decoder deconv 32->1", "col2im"],
                                          ["linears", "native"]]
    for row in cells:
        (baseline, baseline_ratio), (variant, ratio) = ([float(v.strip("(x)")) for v in cell.split(" ms ")]
                                                        for cell in row[2:])
        assert baseline > 0 and variant > 0 and baseline_ratio == 1.0
        # the times print at 3 significant digits (each within 0.5% of its value) and the ratio of the
        # unrounded ones at 2 decimals: the ratio of the printed times is within about 0.015 of it
        assert ratio == pytest.approx(baseline / variant, rel=0.01, abs=0.02)
    with pytest.raises(SystemExit, match="unknown variant 'onednn fusion everything'"):
        xla_options.main(["--variants", "onednn fusion everything"])

"""Turning the coordinator's results into rows, the printed table, results.json / .csv / .md and the plot."""

from __future__ import annotations

import csv
import io
import json
import os
import sys

from benchmarks.coordinator import summarise
from benchmarks.peak import best_bandwidth, best_peak
from benchmarks.points import Point
from twinvae.results import (
    FRAMEWORKS,
    machine_record,
    markdown_table,
    publish_results,
    results_origin,
    write_results,
)
from vae_core.flops import inference_flops, step_bytes, train_step_flops

COLUMNS = ["backend", "mode", "kind", "batch", "dtype", "model", "status", "images_per_s", "iqr", "gflops",
           "fraction_of_peak", "intensity", "attainable_gflops", "fraction_of_attainable", "bound",
           "vs_torch_eager", "forms", "compile_s", "rss_delta_mb", "device_peak_mb", "repeats", "reason"]


def peak_for(results: dict, tf32: bool, dtype: str = "float32") -> dict | None:
    """The roofline a point's rates divide by: the best matmul of its precision (for bf16 points, bf16's:
    mixed precision is held to the hardware's bf16 rate, not credited against float32's)."""
    fallback = best_peak(results["peak"], "tf32" if tf32 else "float32")
    return (best_peak(results["peak"], "bf16") or fallback) if dtype == "bfloat16" else fallback


def roofline(flops: float, nbytes: float, peak_gflops: float | None, bandwidth_gb_s: float | None) -> dict:
    """The attainable rate of a step that does `flops` and must move `nbytes`: min(matmul peak, arithmetic
    intensity x bandwidth); compute-bound where the peak is the lower of the two."""
    intensity = flops / nbytes
    if not peak_gflops or not bandwidth_gb_s:
        return {"intensity": intensity, "attainable_gflops": None, "bound": None}
    memory_gflops = intensity * bandwidth_gb_s
    return {"intensity": intensity, "attainable_gflops": min(peak_gflops, memory_gflops),
            "bound": "compute" if peak_gflops <= memory_gflops else "memory"}


def rows(results: dict, tf32: bool) -> list[dict]:
    """A row per (point, backend, mode): its status, and where it was timed its rates and roofline."""
    table = []
    bandwidth = best_bandwidth(results.get("bandwidth", []))
    for item in results["points"]:
        point = Point.from_dict(item["point"])
        peak = peak_for(results, tf32, point.dtype)
        flops = (train_step_flops if point.kind == "train" else inference_flops)(point.config)
        nbytes = step_bytes(point.config, point.kind, point.batch_size, point.dtype)
        limits = roofline(flops * point.batch_size, nbytes, peak["gflops"] if peak else None,
                          bandwidth["gb_per_s"] if bandwidth else None)
        c, h, w = point.config.image_shape
        channels = point.config.conv_channels if point.config.arch == "conv" else point.config.mlp_widths
        model = f"{point.config.arch} {c}x{h}x{w} {'-'.join(map(str, channels))} z{point.config.latent_dim}"
        group = []
        for entry in item["results"]:
            row = {"backend": entry["backend"], "mode": entry["mode"], "kind": point.kind,
                   "batch": point.batch_size, "dtype": point.dtype, "model": model, "status": entry["status"],
                   "reason": entry.get("reason", ""), "compile_s": entry.get("compile_s"),
                   "forms": "/".join((entry.get("forms") or {}).values()),
                   "rss_delta_mb": _mb(entry.get("rss_delta")), "device_peak_mb": _mb(entry.get("device_peak"))}
            if entry["status"] == "ok" and entry["times"]:
                row.update(summarise(entry, point, flops, peak["gflops"] if peak else None), **limits)
                attainable = limits["attainable_gflops"]
                row["fraction_of_attainable"] = row["gflops"] / attainable if attainable else None
            group.append(row)
        eager = next((r for r in group if (r["backend"], r["mode"]) == ("torch", "eager") and "images_per_s" in r),
                     None)
        for row in group:
            if eager and "images_per_s" in row:
                row["vs_torch_eager"] = row["images_per_s"] / eager["images_per_s"]
        table += group
    return table


def _mb(value):
    return None if value is None else value / 2**20


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


THROUGHPUT_HEADER = ["backend", "mode", "forms", "kind", "batch", "images/s (median)", "IQR", "GFLOP/s",
                     "% of peak", "% of attainable", "bound", "vs torch eager", "compile s", "mem MB"]


def throughput_cells(r: dict) -> list[str]:
    """One row of the throughput table; a mode not timed gives its status and the first line of the reason."""
    if r["status"] != "ok":
        reason = r["reason"].splitlines()[0][:120] if r["reason"] else ""
        return [r["backend"], r["mode"], "", r["kind"], r["batch"], f"{r['status']}: {reason}", *[""] * 8]
    memory = r["device_peak_mb"] if r["device_peak_mb"] is not None else r["rss_delta_mb"]
    fraction, attainable = (None if r.get(key) is None else 100 * r[key]
                            for key in ("fraction_of_peak", "fraction_of_attainable"))
    return [r["backend"], r["mode"], r["forms"], r["kind"], r["batch"], f"{r['images_per_s']:,.0f}",
            f"{r['iqr']:,.0f}", f"{r['gflops']:.1f}", _fmt(fraction, ".1f"), _fmt(attainable, ".1f"),
            r.get("bound") or "", _fmt(r.get("vs_torch_eager"), ".2f"), _fmt(r["compile_s"], ".1f"),
            _fmt(memory, ".0f")]


def throughput_table(table: list[dict]) -> str:
    return markdown_table(THROUGHPUT_HEADER, [throughput_cells(r) for r in table])


def flop_table(results: dict) -> str:
    """The analytic count beside XLA's cost analysis and torch's FlopCounterMode, per image."""
    cells = []
    for item in results["points"]:
        point = Point.from_dict(item["point"])
        analytic = (train_step_flops if point.kind == "train" else inference_flops)(point.config)
        xla = next((e.get("xla_flops_per_image") for e in item["results"] if e.get("xla_flops_per_image")), None)
        counter = next((e["torch_flop_counter"]["per_image"] for e in item["results"]
                        if e.get("torch_flop_counter")), None)
        cells.append([item["label"], f"{analytic / 1e6:.2f}", _flop_cell(xla, analytic),
                      _flop_cell(counter, analytic)])
    return markdown_table(["point", "analytic MFLOP/image", "XLA cost analysis", "torch FlopCounterMode"], cells)


def _flop_cell(value, analytic) -> str:
    return "" if value is None else f"{value / 1e6:.2f} ({100 * (value / analytic - 1):+.1f}%)"


def bandwidth_table(results: dict) -> str:
    return markdown_table(["library", "kernel", "array MiB", "GB/s", "checked", "counts"],
                          [[r["library"], r["kernel"], f"{r['array_mib']:.0f}", f"{r['gb_per_s']:.1f}",
                            "exact" if r["valid"] else "WRONG", "yes" if r["valid"] else "no"]
                           for r in results.get("bandwidth", [])])


def peak_table(results: dict) -> str:
    return markdown_table(["library", "precision", "n", "GFLOP/s", "rel. error vs float64", "counts"],
                          [[r["library"], r["precision"], r["n"], f"{r['gflops']:.1f}",
                            f"{r['relative_error']:.1e}", "yes" if r["valid"] else "no"] for r in results["peak"]])


def run_meta(argv: list[str], results: dict, options) -> dict:
    """results.json's record of the run: the machine (with the versions the workers reported), the command,
    the threads, the device and TF32, and each backend's own report."""
    measured = {name: info[name] for info in results["info"].values() for name in FRAMEWORKS if name in info}
    return {**machine_record(measured), "command": "python -m benchmarks " + " ".join(argv),
            "threads": options.threads, "device": options.device, "tf32": options.tf32,
            "backends": results["info"]}


def write_all(out: str, results: dict, table: list[dict], tf32: bool) -> list[str]:
    """results.json, results.csv and results.md (printed too), each written atomically, and the plot."""
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, name) for name in ("results.json", "results.csv", "results.md")]
    write_results(paths[0], json.dumps({**results, "rows": table}, indent=1))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(table)
    write_results(paths[1], text.getvalue())
    publish_results(markdown(results, table, tf32), paths[2])
    written = list(paths)
    # --roofline-only has no rows to plot
    plotted = plot(table, os.path.join(out, "throughput.png"), results["meta"]) if table else None
    if plotted:
        written.append(plotted)
    return written


def markdown(results: dict, table: list[dict], tf32: bool) -> str:
    """results.md: where it ran, the roofline, the throughput table, the FLOP counts and the measurements."""
    meta = results["meta"]
    unavailable = "".join(f"; {name} unavailable: {info['unavailable']}" for name, info in meta["backends"].items()
                          if "unavailable" in info)
    peaks = []
    for dtype in sorted({r["dtype"] for r in table}) or ["float32"]:
        peak = peak_for(results, tf32, dtype)
        if peak and peak not in peaks:
            peaks.append(peak)
    peak_line = "; ".join(f"{p['gflops']:.0f} GFLOP/s ({p['library']}, {p['precision']}, n={p['n']})"
                          for p in peaks) or "not measured"
    bandwidth = best_bandwidth(results.get("bandwidth", []))
    bandwidth_line = (f"{bandwidth['gb_per_s']:.1f} GB/s ({bandwidth['library']}, STREAM add, "
                      f"{bandwidth['array_mib']:.0f} MiB arrays)") if bandwidth else "not measured"
    return (f"{results_origin(meta['command'], meta)}; {meta['cores']} cores, {meta['threads']} threads, device "
            f"{meta['device']}, Python {meta['python']}{unavailable}.\n\n"
            f"Roofline (best valid matmul): {peak_line}. Memory bandwidth "
            f"(best valid): {bandwidth_line}. Attainable = min(matmul peak, arithmetic intensity x bandwidth), "
            "the intensity from the analytic FLOP and byte counts (vae_core/flops.py); a row is compute-bound "
            "where the peak is the lower.\n\n"
            f"{throughput_table(table)}\n\nFLOP counts per image:\n\n{flop_table(results)}\n\n"
            f"Matmul peak measurements:\n\n{peak_table(results)}\n\n"
            f"Memory bandwidth measurements:\n\n{bandwidth_table(results)}\n")


def plot(table: list[dict], path: str, meta: dict) -> str | None:
    """Throughput vs batch size, one line per backend/mode, one panel per kind. Needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return None
    kinds = sorted({r["kind"] for r in table}, reverse=True)
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        lines = {}
        for r in table:
            if r["kind"] == kind and "images_per_s" in r:
                label = f"{r['backend']} {r['mode']}"
                lines.setdefault(label, []).append((r["batch"], r["images_per_s"], r["iqr"]))
        for label, points in sorted(lines.items()):
            points.sort()
            xs, ys, iqr = zip(*points)
            ax.errorbar(xs, ys, yerr=[v / 2 for v in iqr], marker="o", capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("images / s (median, bars: IQR)")
        ax.set_title(f"{kind} ({'forward+backward+Adam' if kind == 'train' else 'encode+decode'})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{meta['cpu']}, {meta['threads']} threads, {meta['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

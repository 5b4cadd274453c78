"""The results module: the provenance line, the machine record, the markdown table and the atomic write that
every results file shares."""

import os

from twinvae import results

MACHINE = {"date": "2026-12-06 23:54 UTC", "twinvae": "0.9.0", "git_commit": "79f3502", "cpu": "AMD EPYC",
           "cores": 2, "usable_cores": 1, "python": "3.11.7", "platform": "Linux",
           "versions": {"numpy": "2.4.6", "jax": "0.10.2"}}


def test_the_provenance_line_names_the_command_when_where_and_the_versions():
    assert results.results_origin("python -m benchmarks.iwae --repeats 3", MACHINE) == (
        "Command: `python -m benchmarks.iwae --repeats 3`; 2026-12-06 23:54 UTC, twinvae 0.9.0, commit 79f3502, "
        "AMD EPYC, "
        "usable cores: 1, numpy 2.4.6, jax 0.10.2")
    assert "commit unknown" in results.results_origin("x", {**MACHINE, "git_commit": ""})
    line = results.results_origin("twinvae evaluate")  # this process, now
    assert line.startswith("Command: `twinvae evaluate`; ") and results.cpu_name() in line


def test_the_machine_record_takes_the_versions_the_measuring_processes_reported():
    record = results.machine_record({"torch": "9.9", "numpy": "0.0"})
    assert record["versions"]["torch"] == "9.9" and record["versions"]["numpy"] == "0.0"
    assert record["usable_cores"] == len(os.sched_getaffinity(0)) and record["cores"] == os.cpu_count()
    assert record["cpu"] == results.cpu_name() and record["date"].endswith(" UTC")


def test_a_markdown_table_has_a_header_a_separator_and_a_line_per_row():
    assert results.markdown_table(["a", "b"], [[1, "x"], ["", 2.5]]) == (
        "| a | b |\n|---|---|\n| 1 | x |\n|  | 2.5 |")
    assert results.markdown_table(["only"], []) == "| only |\n|---|"


def test_results_are_printed_and_written_whole(tmp_path, capsys):
    out = tmp_path / "new folder" / "r.md"
    results.make_results_folder(str(out))
    results.publish_results("Command: `x`\n\n| a |\n", str(out))
    assert out.read_text() == "Command: `x`\n\n| a |\n" and capsys.readouterr().out == "Command: `x`\n\n| a |\n\n"
    results.publish_results("new", str(out))
    assert out.read_text() == "new" and os.listdir(out.parent) == ["r.md"]  # replaced, no temp file left
    results.publish_results("printed only", None)
    assert capsys.readouterr().out.endswith("printed only\n")

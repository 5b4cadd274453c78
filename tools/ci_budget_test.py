"""The CI budget checker on synthetic JUnit reports: within and over budget, unreadable inputs, and a
recorded budget read back by the checker."""

import json

import pytest

from tools import ci_budget


def report(path, times, root="testsuites"):
    """A JUnit report as pytest writes it, one test case per (classname, name): seconds."""
    cases = "".join(f'<testcase classname="{cls}" name="{name}" time="{seconds}"/>'
                    for (cls, name), seconds in times.items())
    suite = f'<testsuite name="pytest" tests="{len(times)}">{cases}</testsuite>'
    path.write_text(f'<?xml version="1.0" encoding="utf-8"?>{f"<{root}>{suite}</{root}>" if root else suite}')
    return path


def budget(path, total, tests=None):
    path.write_text(json.dumps({"total_seconds": total, "tests": tests or {}}))
    return path


@pytest.fixture
def reports(tmp_path):
    """The parallel run's report (under xdist, both workers' test cases in one file) and the serial run's."""
    parallel = {("a_test", "test_one"): 10.0, ("a_test.TestB", "test_two[x]"): 20.5}
    return [report(tmp_path / "parallel.xml", parallel),
            report(tmp_path / "serial.xml", {("c_test", "test_serial"): 30.0}, root=None)]


def run(capsys, *argv):
    status = ci_budget.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_within_budget_prints_one_line(tmp_path, reports, capsys):
    status, out, err = run(capsys, "check", *reports, "--budget", budget(tmp_path / "b.json", 100))
    assert status == 0 and not err
    assert out.count("\n") == 1 and "60.5 s" in out and "100 s" in out and "39.5 s margin" in out


def test_empty_tests_map_and_budget_of_exactly_the_total(tmp_path, reports, capsys):
    assert run(capsys, "check", *reports, "--budget", budget(tmp_path / "b.json", 60.5))[0] == 0


def test_over_budget_names_the_grown_tests_first(tmp_path, reports, capsys):
    recorded = {"a_test::test_one": 9.0, "a_test.TestB::test_two[x]": 2.5, "c_test::test_serial": 30.0}
    status, out, _ = run(capsys, "check", *reports, "--budget", budget(tmp_path / "b.json", 50, recorded))
    assert status == 1
    assert "OVER BUDGET" in out and "60.5 s" in out and "50 s" in out and "10.5 s over" in out
    lines = [line for line in out.splitlines() if "::" in line]
    assert [line.split()[-1] for line in lines] == ["a_test.TestB::test_two[x]", "a_test::test_one"]
    assert "+18.0 s" in lines[0] and "was 2.5 s" in lines[0]  # c_test did not grow: not listed


def test_over_budget_lists_new_slow_tests(tmp_path, reports, capsys):
    status, out, _ = run(capsys, "check", *reports, "--budget", budget(tmp_path / "b.json", 50))
    assert status == 1
    assert "c_test::test_serial" in out.splitlines()[2] and "new, not recorded" in out


def test_only_the_top_growth_is_listed(tmp_path, capsys):
    many = report(tmp_path / "r.xml", {("t", f"test_{i}"): float(i) for i in range(30)})
    status, out, _ = run(capsys, "check", many, "--budget", budget(tmp_path / "b.json", 1))
    assert status == 1 and out.count("::") == ci_budget.SHOWN and "t::test_29" in out and "t::test_19" not in out


@pytest.mark.parametrize("content, message", [
    (None, "cannot read the report"),
    ("<testsuites><testcase", "not valid XML"),
    ("<html></html>", "not a JUnit report"),
    ('<testsuite><testcase classname="a" name="b" time="soon"/></testsuite>', "not seconds"),
], ids=["missing", "corrupt", "not junit", "bad time"])
def test_an_unreadable_report_is_one_line_naming_it(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.xml"
    if content is not None:
        bad.write_text(content)
    status, out, err = run(capsys, "check", bad, "--budget", budget(tmp_path / "b.json", 100))
    assert status == 2 and not out
    assert err.count("\n") == 1 and str(bad) in err and message in err


@pytest.mark.parametrize("content, message", [
    (None, "cannot read the budget"),
    ("{not json", "not valid JSON"),
    ('{"tests": {}}', "total_seconds"),
    ('{"total_seconds": "soon", "tests": {}}', "total_seconds"),
    ('{"total_seconds": 0, "tests": {}}', "total_seconds"),
    ('{"total_seconds": 100, "tests": {"a::b": "slow"}}', "test ids to seconds"),
    ("[1100]", "total_seconds"),
], ids=["missing", "corrupt", "no total", "text total", "zero total", "text test time", "not a map"])
def test_an_unreadable_budget_is_one_line_naming_it(tmp_path, reports, capsys, content, message):
    bad = tmp_path / "budget.json"
    if content is not None:
        bad.write_text(content)
    status, out, err = run(capsys, "check", *reports, "--budget", bad)
    assert status == 2 and not out
    assert err.count("\n") == 1 and str(bad) in err and message in err


def test_record_then_check_round_trips(tmp_path, reports, capsys):
    path = tmp_path / "budget.json"
    budget(path, 1)  # refreshed in place
    status, out, _ = run(capsys, "record", *reports, "--budget", path, "--headroom", "1.5")
    assert status == 0 and str(path) in out
    assert json.loads(path.read_text()) == {"total_seconds": 91, "tests": {
        "c_test::test_serial": 30.0, "a_test.TestB::test_two[x]": 20.5, "a_test::test_one": 10.0}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["budget.json", "parallel.xml", "serial.xml"]
    assert run(capsys, "check", *reports, "--budget", path)[0] == 0


def test_record_keeps_the_slowest_tests(tmp_path, capsys):
    many = report(tmp_path / "r.xml", {("t", f"test_{i}"): float(i) for i in range(40)})
    path = tmp_path / "budget.json"
    assert run(capsys, "record", many, "--budget", path)[0] == 0
    tests = json.loads(path.read_text())["tests"]
    assert len(tests) == ci_budget.SLOWEST and min(tests.values()) == 10.0 and "t::test_39" in tests


def test_check_and_failed_record_write_nothing(tmp_path, reports, capsys):
    path = budget(tmp_path / "b.json", 1)
    before, text = sorted(tmp_path.iterdir()), path.read_text()
    assert run(capsys, "check", *reports, "--budget", path)[0] == 1
    assert run(capsys, "record", tmp_path / "missing.xml", "--budget", path)[0] == 2
    status, _, err = run(capsys, "record", *reports, "--budget", tmp_path / "no" / "b.json")
    assert status == 2 and "cannot write the budget" in err
    assert sorted(tmp_path.iterdir()) == before and path.read_text() == text


def test_the_repository_budget_is_valid():
    assert ci_budget.read_budget(ci_budget.BUDGET).total_seconds > 0

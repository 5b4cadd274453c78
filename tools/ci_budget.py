"""The CI tier's test-time budget: the summed time of every test case in pytest's JUnit reports
(`--junitxml`; under xdist the sum over both workers), against `.ci/budget.json`.

    python -m tools.ci_budget check REPORT.xml [REPORT.xml ...]
    python -m tools.ci_budget record REPORT.xml [REPORT.xml ...] [--headroom 1.25]

The budget holds the whole tier, not one test: no test asserts its own time, where a slow machine would make
it flaky; the tier's total drifts slowly and is checked once, after the runs. `check` exits 1 over budget and
names the tests that grew most against their recorded times (the slowest 30 of the recorded run), so the
cause is in the CI log; it writes nothing. `record` writes the budget from a run: its total times the
headroom, rounded up, and its slowest tests. A report or budget that cannot be read is one line naming the
file, exit status 2.

The budget file: {"total_seconds": 1100, "tests": {"<classname>::<name>": seconds, ...}}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

BUDGET = Path(__file__).resolve().parent.parent / ".ci" / "budget.json"
SLOWEST = 30  # tests recorded in the budget file
SHOWN = 10  # grown tests printed when over budget


class InputError(Exception):
    """A report or budget file that cannot be read; its message is one line naming the file."""


@dataclass(frozen=True)
class Budget:
    """The summed test time allowed, and the recorded seconds of the slowest tests by id."""
    total_seconds: float
    tests: dict[str, float]


@dataclass(frozen=True)
class Growth:
    """One test's time in this run against its recorded time (None: not in the budget file)."""
    test: str
    seconds: float
    recorded: float | None

    @property
    def grown(self) -> float:
        return self.seconds - (self.recorded or 0.0)


def read_reports(paths: list[Path]) -> dict[str, float]:
    """Each test case's seconds by its id, `classname::name` as JUnit gives them, summed over the reports."""
    times: dict[str, float] = {}
    for path in paths:
        try:
            root = ET.parse(path).getroot()
        except OSError as error:
            raise InputError(f"{path}: cannot read the report ({error.strerror or error})") from None
        except ET.ParseError as error:
            raise InputError(f"{path}: not valid XML ({error})") from None
        if root.tag not in ("testsuites", "testsuite"):
            raise InputError(f"{path}: not a JUnit report (its root is <{root.tag}>, not <testsuites>)")
        for case in root.iter("testcase"):
            test = f"{case.get('classname', '')}::{case.get('name', '')}"
            try:
                seconds = float(case.get("time", "0"))
            except ValueError:
                raise InputError(f"{path}: test case {test} has time {case.get('time')!r}, not seconds") from None
            times[test] = times.get(test, 0.0) + seconds
    return times


def _seconds(value) -> bool:
    """Whether a JSON value is a time: a finite number, at least 0 (true and false are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def read_budget(path: Path) -> Budget:
    """The budget file, checked: a positive total_seconds and a map of test ids to seconds (may be empty)."""
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise InputError(f"{path}: cannot read the budget ({error.strerror or error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: the budget is not valid JSON ({error})") from None
    if not isinstance(data, dict) or not _seconds(data.get("total_seconds")) or not data["total_seconds"]:
        raise InputError(f"{path}: the budget needs a positive number total_seconds")
    tests = data.get("tests", {})
    if not isinstance(tests, dict) or not all(_seconds(s) for s in tests.values()):
        raise InputError(f"{path}: the budget's tests must map test ids to seconds")
    return Budget(float(data["total_seconds"]), {k: float(v) for k, v in tests.items()})


def grown(times: dict[str, float], budget: Budget, shown: int = SHOWN) -> list[Growth]:
    """The tests that grew most in seconds against their recorded times; a test not recorded grew from 0."""
    growth = [Growth(test, seconds, budget.tests.get(test)) for test, seconds in times.items()]
    return sorted((g for g in growth if g.grown > 0), key=lambda g: -g.grown)[:shown]


def check(reports: list[Path], budget_path: Path) -> int:
    """Exit status 0 within budget (one line: total, budget, margin), 1 over it (with the grown tests)."""
    budget = read_budget(budget_path)
    times = read_reports(reports)
    total = math.fsum(times.values())
    margin = budget.total_seconds - total
    if margin >= 0:
        print(f"ci_budget: test time {total:.1f} s within the budget of {budget.total_seconds:g} s "
              f"({budget_path}): {margin:.1f} s margin ({margin / budget.total_seconds:.0%})")
        return 0
    print(f"ci_budget: OVER BUDGET: test time {total:.1f} s, budget {budget.total_seconds:g} s ({budget_path}): "
          f"{-margin:.1f} s over ({-margin / budget.total_seconds:.0%}), summed over {len(times)} tests")
    print(f"The tests that grew most against their recorded times (top {SHOWN}):")
    for g in grown(times, budget):
        was = "new, not recorded" if g.recorded is None else f"was {g.recorded:.1f} s"
        print(f"  {g.grown:+8.1f} s  {g.seconds:8.1f} s ({was})  {g.test}")
    print("Make them faster, or, where the growth is meant, re-record: python -m tools.ci_budget record REPORT...")
    return 1


def record(reports: list[Path], budget_path: Path, headroom: float) -> int:
    """Write the budget from a run: its total times headroom, rounded up, and its SLOWEST tests' times."""
    times = read_reports(reports)
    total = math.fsum(times.values())
    slowest = sorted(times.items(), key=lambda item: -item[1])[:SLOWEST]
    data = {"total_seconds": max(1, math.ceil(total * headroom)),
            "tests": {test: round(seconds, 2) for test, seconds in slowest}}
    _write_atomically(budget_path, json.dumps(data, indent=2) + "\n")
    print(f"ci_budget: recorded {budget_path}: budget {data['total_seconds']} s "
          f"(test time {total:.1f} s x {headroom:g}), the slowest {len(slowest)} tests")
    return 0


def _write_atomically(path: Path, text: str) -> None:
    """A temporary file in the same folder, then os.replace: a reader sees the old file or the new, whole."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as file:
                file.write(text)
            os.chmod(tmp, 0o644)  # mkstemp's file is the owner's only
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as error:
        raise InputError(f"{path}: cannot write the budget ({error.strerror or error})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.ci_budget", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary in (("check", "compare the reports' summed test time with the budget"),
                          ("record", "write the budget file from the reports")):
        command = commands.add_parser(name, help=summary)
        command.add_argument("reports", nargs="+", type=Path, metavar="REPORT.xml", help="pytest --junitxml files")
        command.add_argument("--budget", type=Path, default=BUDGET, help="the budget file (default: %(default)s)")
    commands.choices["record"].add_argument("--headroom", type=float, default=1.25,
                                            help="total_seconds = test time x this, rounded up (default 1.25)")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return check(args.reports, args.budget)
        if not args.headroom >= 1:
            parser.error("--headroom must be at least 1")
        return record(args.reports, args.budget, args.headroom)
    except InputError as error:
        print(f"ci_budget: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

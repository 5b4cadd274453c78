"""The end-of-run list of the costliest compiles (conftest.py's terminal summary) ranks the tests by the
seconds their comparisons compiled, from any phase's report, and lists no test that compiled nothing."""

from types import SimpleNamespace

import conftest


def _report(nodeid, compiles=None):
    return SimpleNamespace(nodeid=nodeid, user_properties=[("xla_compiles", compiles)] if compiles else [])


def test_the_costliest_compiles_come_first_and_at_most_n():
    stats = {"passed": [_report("a", [3, 1.5]), _report("b", [40, 9.0]), _report("none")],
             "": [_report("c", [7, 4.25])], "failed": [_report("d", [1, 0.1])], "skipped": [_report("e", [9, 99])]}
    assert conftest.costliest_compiles(stats) == [(9.0, 40, "b"), (4.25, 7, "c"), (1.5, 3, "a"), (0.1, 1, "d")]
    assert conftest.costliest_compiles(stats, n=2) == [(9.0, 40, "b"), (4.25, 7, "c")]
    assert conftest.costliest_compiles({}) == []

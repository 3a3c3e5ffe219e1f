"""EXEC-021: the exit status is one pure function of outcome and signal."""
import signal

import pytest

from hazrun.exit_code import exit_code_for
from hazrun.outcome import Cause, RunOutcome, TaskResult, TaskState, Violation, ViolationKind

OK = TaskResult("a:x", TaskState.SUCCEEDED)
HIT = TaskResult("b:x", TaskState.CACHED)
FAIL = TaskResult("c:x", TaskState.FAILED, Cause.EXIT_CODE, exit_code=1)
SKIP = TaskResult("d:x", TaskState.SKIPPED, Cause.UPSTREAM_FAILED, upstream="c:x")
OVERLAP = Violation(ViolationKind.OUTPUT_OVERLAP, ("a:x", "b:x"), "out/f")


def outcome(*results, violations=(), cancelled=False):
    return RunOutcome([r.label for r in results], {r.label: r for r in results},
                      list(violations), 0.0, cancelled)


@pytest.mark.parametrize("results,violations,sig,expected", [
    ((OK, HIT), (), None, 0),
    ((), (), None, 0),
    ((OK, FAIL, SKIP), (), None, 1),
    ((OK, HIT), (OVERLAP,), None, 3),
    ((FAIL,), (OVERLAP,), None, 1),
    ((OK,), (), signal.SIGINT, 130),
    ((FAIL,), (OVERLAP,), signal.SIGINT, 130),
    ((FAIL,), (), signal.SIGTERM, 143),
])
def test_exec_021_exit_code_table(results, violations, sig, expected):
    assert exit_code_for(outcome(*results, violations=violations), sig) == expected


def test_exec_021_library_cancel_without_signal_is_130():
    assert exit_code_for(outcome(OK, cancelled=True), None) == 130

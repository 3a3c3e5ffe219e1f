"""The values a run produces: task states, causes, results, violations.

States and causes are enums whose values are the spec's words (EXEC-009,
CLI-003), so they serialise as written in the spec.
"""
from __future__ import annotations

import enum
from dataclasses import field
from typing import Any, Dict, List, Optional, Tuple

from .values import record, value


class TaskState(str, enum.Enum):
    """EXEC-009: every task of a run ends in exactly one of these."""

    SUCCEEDED = "succeeded"   # ran fresh and exited 0
    CACHED = "cached"         # restored from a cache hit
    FAILED = "failed"         # exit code, signal, timeout or spawn error
    SKIPPED = "skipped"       # never started: failure cascade or violation
    CANCELLED = "cancelled"   # caught by cancellation

    @property
    def ok(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.CACHED)


class Cause(str, enum.Enum):
    """Why a task ended failed, skipped or cancelled (CLI-003)."""

    EXIT_CODE = "exit_code"
    SIGNAL = "signal"
    TIMEOUT = "timeout"
    SPAWN_ERROR = "spawn_error"
    UPSTREAM_FAILED = "upstream_failed"
    RUNTIME_CYCLE = "runtime_cycle"
    OUTPUT_OVERLAP = "output_overlap"
    SIGNALLED = "signalled"
    NOT_STARTED = "not_started"
    UPSTREAM_CANCELLED = "upstream_cancelled"


class ViolationKind(str, enum.Enum):
    """Runtime invariant violations (EXEC-019/020)."""

    RUNTIME_CYCLE = "runtime_cycle"
    OUTPUT_OVERLAP = "output_overlap"


class StopReason(str, enum.Enum):
    """Why a run stops its running tasks before a signal asks it to:
    --fail-fast (EXEC-010/012) or a runtime cycle (EXEC-019)."""

    FAIL_FAST = "fail_fast"
    RUNTIME_CYCLE = "runtime_cycle"


@value
class TaskResult:
    """How one task of the run ended."""

    label: str
    state: TaskState
    cause: Optional[Cause] = None
    exit_code: Optional[int] = None      # only when the process ran and exited
    signal: Optional[str] = None         # e.g. "SIGKILL" when killed by one
    duration_s: float = 0.0
    key: Optional[str] = None            # null when never computed
    upstream: Optional[str] = None       # for the upstream_* causes
    detail: str = ""                     # e.g. the spawn error's text
    saved_s: float = 0.0                 # cached: the original run's duration


@value
class Violation:
    """EXEC-019/020: a runtime invariant broken by what tasks wrote."""

    kind: ViolationKind
    tasks: Tuple[str, ...]
    path: str

    def describe(self) -> str:
        """In words: the two tasks of an overlap, or a cycle's whole loop
        back to its first task, and the file."""
        if self.kind is ViolationKind.OUTPUT_OVERLAP:
            return f"{self.path} is an output of both {self.tasks[0]} and {self.tasks[1]}"
        return f"{' -> '.join(self.tasks + self.tasks[:1])} (closed by {self.path})"


@record
class RunOutcome:
    """What :func:`hazrun.run_graph` returns: results in canonical order."""

    order: List[str]
    results: Dict[str, TaskResult]
    violations: List[Violation] = field(default_factory=list)
    duration_s: float = 0.0
    cancelled: bool = False              # the run's own cancellation fired
    remote: Optional[Dict[str, Any]] = None   # REMOTE-006: counts; None: no remote

    def in_order(self) -> List[TaskResult]:
        return [self.results[label] for label in self.order]

    def count(self, state: TaskState) -> int:
        return sum(1 for r in self.results.values() if r.state is state)

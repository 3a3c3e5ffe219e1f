"""EXEC-021: the exit status of a run, as one pure function."""
from __future__ import annotations

import signal as _signal
from typing import Optional

from .outcome import RunOutcome, TaskState

SUCCESS = 0
TASK_FAILED = 1
USAGE_ERROR = 2
VIOLATION = 3


def exit_code_for(outcome: RunOutcome, signal: Optional[int] = None) -> int:
    """0 all succeeded or cached; 1 a task failed; 3 a runtime violation and
    no failure; 128 + N when cancelled by signal N, which wins over all.

    A run cancelled through its token without a signal (a library caller)
    reports 130, as an interrupt would.  Usage and configuration errors (2)
    are raised before a run exists.
    """
    if signal is not None:
        return 128 + int(signal)
    if outcome.cancelled:
        return 128 + int(_signal.SIGINT)
    if any(r.state is TaskState.FAILED for r in outcome.results.values()):
        return TASK_FAILED
    if outcome.violations:
        return VIOLATION
    return SUCCESS


def signal_name(signum: Optional[int]) -> Optional[str]:
    """``SIGINT`` for 2; None for None."""
    if signum is None:
        return None
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"

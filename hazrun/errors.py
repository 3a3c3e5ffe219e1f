"""User-facing errors.

Two tiers (STYLE 7): mistakes a user can fix are raised as :class:`HazError`
subclasses that carry what is at fault and render a one-line message with the
fix; bugs are assertions.  Task outcomes are never exceptions.
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

from .values import value


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or ``''``;
    the choice shown after ``prefix``."""
    import difflib  # only on an error: kept off the start-up path
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


class HazError(Exception):
    """An error the user can fix; ``str()`` is the message without prefix."""

    exit_code = 2


@value
class Problem:
    """One configuration mistake: the file, where in it, and what is wrong."""

    file: str
    where: str
    message: str

    def __str__(self) -> str:
        location = f"{self.file}: {self.where}: " if self.where else f"{self.file}: "
        return location + self.message


class ConfigError(HazError):
    """Every problem found in one load of the workspace (CFG-005)."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems: List[Problem] = list(problems)
        # What the load would have warned of: often the cause ("'lib/*'
        # matches no directory" behind "unknown project 'cfoo'").
        self.warnings: Sequence[str] = ()
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(HazError):
    """A command line that cannot be carried out (unknown target, bad value)."""


class NoWorkspaceError(HazError):
    """No ``haz.toml`` with a ``[workspace]`` table above the start directory."""

    def __init__(self, start: str, hint: Optional[str] = None):
        self.start = start
        message = (f"no haz.toml with a [workspace] table found in {start} "
                   f"or any parent directory")
        message += hint or " (create one, or point at it with -C DIR)"
        super().__init__(message)

"""EXEC-016/017: lines cut the same way however the bytes arrive."""
from __future__ import annotations

import pytest

from hazrun.output import MAX_LINE, LineSplitter


def split(data: bytes, chunk: int) -> bytes:
    s = LineSplitter()
    out = [s.feed(data[i:i + chunk]) for i in range(0, len(data), chunk)]
    return b"".join(out) + s.flush()


@pytest.mark.parametrize("length", [0, 1, MAX_LINE - 1, MAX_LINE, MAX_LINE + 1,
                                    2 * MAX_LINE, 2 * MAX_LINE + 1, 3 * MAX_LINE - 7])
@pytest.mark.parametrize("ending", [b"\n", b"", b"\nnext\n"])
def test_exec_017_a_run_and_its_replay_cut_lines_alike(length, ending):
    """A live run reads 64 KiB or less at a time, a replay 1 MiB: the same
    bytes must give the same lines (a line of exactly 64 KiB whose newline
    came in the next read printed an extra empty line)."""
    data = b"x" * length + ending
    whole = split(data, len(data) or 1)
    for chunk in (1000, 4096, MAX_LINE, MAX_LINE + 1, 1 << 20):
        assert split(data, chunk) == whole, chunk
    lines = whole.split(b"\n")
    assert lines[-1] == b"" and all(len(line) <= MAX_LINE for line in lines)
    assert whole.replace(b"\n", b"") == data.replace(b"\n", b"")
    if length == MAX_LINE:
        assert lines[0] == b"x" * MAX_LINE  # not cut: it fits

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


@pytest.mark.parametrize("length", [0, 1, MAX_LINE, MAX_LINE + 1, 2 * MAX_LINE, 3 * MAX_LINE - 7])
@pytest.mark.parametrize("ending", [b"\n", b"", b"\nnext\n"])
def test_exec_016_uncut_lines_keep_every_byte(length, ending):
    """--no-prefix (cut=False): a long line's pieces get no newline, so the
    bytes come out as they went in, in every read size; an unterminated
    last line still gets one at the end, and no piece outgrows 64 KiB."""
    data = b"x" * length + ending
    for chunk in (1000, MAX_LINE, MAX_LINE + 1, 1 << 20):
        s = LineSplitter(cut=False)
        fed = []
        for i in range(0, len(data), chunk):
            fed.append(s.feed(data[i:i + chunk]))
            assert len(s.partial) <= MAX_LINE  # memory stays bounded
        out = b"".join(fed) + s.flush()
        assert out == (data if not data or data.endswith(b"\n") else data + b"\n"), chunk


# --------------------------------------------------------------------------
# EXEC-017 with nowhere to spool: a task's output past 1 MiB goes to a
# temporary file; a TMPDIR that cannot take it raised out of the event
# loop and ended hazrun with a traceback (exit 1, no summary).

BIG = ("import sys\n"
       "for i in range(30000):\n"
       "    sys.stdout.write('%06d ' % i + 'y' * 90 + '\\n')\n")


def _big_ws(make_ws):
    import json
    import sys
    return make_ws({"haz.toml": "[workspace]\n[tasks.big]\ncmd = "
                    + json.dumps([sys.executable, "big.py"]) + "\n",
                    "big.py": BIG})


def _expected_lines():
    return [f"[root:big] {i:06d} " + "y" * 90 for i in range(30000)]


def _hazrun_with_file_limit(ws, limit, *args):
    """hazrun with RLIMIT_FSIZE: its temporary files fail past ``limit``
    bytes (EFBIG), as on a full disk (ENOSPC); the tasks write to pipes,
    which no file size limit touches."""
    import os
    import subprocess
    import sys
    from conftest import REPO
    limited = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, "
               f"({limit}, resource.RLIM_INFINITY)); "
               "os.execv(sys.executable, [sys.executable, '-m', 'hazrun'] + sys.argv[1:])")
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    proc = subprocess.run([sys.executable, "-c", limited, "-C", str(ws), *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("mode", ["live", "buffered", "buffered, cached"])
@pytest.mark.parametrize("limit", [0, 1300 * 1024])
def test_exec_017_a_temporary_file_that_fails_keeps_output_in_memory(make_ws, mode, limit):
    """limit 0: the spill's first write fails; 1.3 MiB: one fails part way.
    One warning, also where the block and the log both spill."""
    ws = _big_ws(make_ws)
    # Live output spools only the log a cache entry keeps; buffered, the
    # blocks it prints (and the log, with the cache on).
    flags = ["--no-cache"] if mode == "buffered" else []
    mode = mode.split(",")[0]
    proc = _hazrun_with_file_limit(ws, limit, "run", "big", "--output", mode, *flags)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == _expected_lines()
    assert proc.stderr.count("is kept in memory") == 1, proc.stderr


def test_exec_017_a_hit_replays_a_big_log_with_no_room_for_it(make_ws):
    from conftest import run_hazrun
    ws = _big_ws(make_ws)
    first = run_hazrun(ws, "run", "big")
    assert first.returncode == 0 and first.stdout.splitlines() == _expected_lines()
    again = _hazrun_with_file_limit(ws, 64 * 1024, "run", "big")
    assert again.returncode == 0, again.stderr
    assert "1 cached" in again.stderr, again.stderr
    assert again.stdout.splitlines() == _expected_lines()

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


# --------------------------------------------------------------------------
# EXEC-017: a hit replays stdout and stderr interleaved as the run read them.
# The task writes to one stream, then waits until hazrun has read it (the
# pipe is empty) before it writes to the other, so the order is certain.

ALTERNATE = r'''
import fcntl, os, struct, sys, termios, time
def drained(fd):
    while struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]:
        time.sleep(0.002)
for i in range(int(sys.argv[1])):
    fd = 1 if i % 3 != 1 else 2
    os.write(fd, (("out" if fd == 1 else "err") + str(i) + "\n").encode())
    drained(fd)
os.write(1, b"no newline")
'''


def _alternating_ws(make_ws, count):
    import json
    import sys
    return make_ws({"haz.toml": "[workspace]\n[tasks.t]\ncmd = "
                    + json.dumps([sys.executable, "alt.py", str(count)])
                    + '\ninputs = ["alt.py"]\n',
                    "alt.py": ALTERNATE})


def _expected_order(count):
    return [("out" if i % 3 != 1 else "err") + str(i) for i in range(count)] + ["no newline"]


def test_exec_017_a_hit_replays_stdout_and_stderr_in_the_order_they_came(make_ws):
    """With 2>&1 (a CI log, a terminal), a hit printed all of stdout, then
    all of stderr: the replay of a test run that warned between its lines
    read differently from the run itself."""
    import os
    import subprocess
    import sys
    from conftest import REPO
    ws = _alternating_ws(make_ws, 9)
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    env.pop("MAKEFLAGS", None)
    for run in ("fresh", "hit"):
        proc = subprocess.run([sys.executable, "-m", "hazrun", "-C", str(ws), "run", "t"],
                              env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=60)
        text = proc.stdout.decode()
        assert proc.returncode == 0, text
        assert ("1 cached" in text) == (run == "hit"), text
        lines = [l[len("[root:t] "):] for l in text.splitlines() if l.startswith("[root:t] ")]
        assert lines == _expected_order(9), (run, text)
    import json
    entries = list((ws / ".haz" / "cache" / "entries").rglob("*.json"))
    assert [len(json.loads(e.read_text())["order"]) for e in entries] == [7]


def test_exec_017_past_the_recorded_switches_the_rest_replays_stdout_then_stderr(
        make_ws, monkeypatch):
    """Manifest.order is capped (MAX_RUNS): a task switching streams more
    often replays the switches recorded, then the rest of stdout, then the
    rest of stderr; not a byte is lost."""
    import hazrun
    import hazrun.cache.model
    monkeypatch.setattr(hazrun.cache.model, "MAX_RUNS", 4)
    ws = _alternating_ws(make_ws, 9)

    class Lines(hazrun.RunObserver):
        def __init__(self):
            self.lines = []

        def task_output(self, label, stream, data):
            self.lines += [(stream.value, l) for l in data.decode().splitlines()]

    runs = []
    for _ in range(2):
        seen = Lines()
        outcome = hazrun.run_graph(hazrun.load_workspace(ws), ["t"], seen, hazrun.RunOptions())
        runs.append((outcome.results["root:t"].state.value, seen.lines))
    (fresh_state, fresh), (hit_state, hit) = runs
    assert (fresh_state, hit_state) == ("succeeded", "cached")
    assert [l for _, l in fresh] == _expected_order(9)
    # Recorded: out0 | err1 | out2 out3 | err4; then stdout's rest, stderr's
    # rest, and last the unterminated line, ended as in the run (EXEC-016).
    assert [l for _, l in hit] == ["out0", "err1", "out2", "out3", "err4",
                                   "out5", "out6", "out8", "err7", "no newline"]
    assert sorted(hit) == sorted(fresh)


def test_cache_003_interleaving_record_stops_at_its_cap():
    from hazrun.process import Stream
    from hazrun.scheduler import _Interleaving
    rec = _Interleaving(cap=4)
    rec.note(Stream.STDERR, 5)        # stderr first: an empty stdout run before it
    rec.note(Stream.STDERR, 1)
    rec.note(Stream.STDOUT, 7)
    assert rec.runs == [0, 6, 7]
    rec.note(Stream.STDERR, 2)
    assert rec.runs == [0, 6, 7, 2]
    rec.note(Stream.STDOUT, 3)        # a fifth count: the record stops here
    rec.note(Stream.STDERR, 4)        # and stays stopped, for either stream
    assert rec.runs == [0, 6, 7, 2]


def test_exec_016_a_prefix_ends_a_piece_given_without_its_newline():
    """RunObserver.task_output may end mid-line (RunOptions.cut_lines off):
    a prefixing writer ends such a piece, as the next write gets a prefix
    of its own, instead of dropping it."""
    from hazrun.console import Console
    from hazrun.output import Prefixer
    from hazrun.process import Stream
    import io
    prefixer = Prefixer(Console(io.BytesIO(), io.BytesIO()))
    assert prefixer.format("a:b", Stream.STDOUT, b"x\ny") == b"[a:b] x\n[a:b] y\n"
    assert prefixer.format("a:b", Stream.STDOUT, b"x\n") == b"[a:b] x\n"


@pytest.mark.parametrize("mode", ["live", "buffered"])
def test_exec_017_a_replay_is_announced_as_one(make_ws, mode):
    """A hit's replayed lines read as its original run's; a line before them
    says they are a replay (a hit with no output says nothing)."""
    from conftest import run_hazrun
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.t]\ncmd = "echo hello; echo warn >&2"\n'
                              '[tasks.q]\ncmd = "true"\n'})
    fresh = run_hazrun(ws, "run", "t", "q", "--output", mode)
    assert fresh.returncode == 0 and "replaying" not in fresh.stderr, fresh.stderr
    hit = run_hazrun(ws, "run", "t", "q", "--output", mode)
    assert "2 cached" in hit.stderr, hit.stderr
    assert hit.stdout == "[root:t] hello\n"
    lines = hit.stderr.splitlines()
    assert lines[:2] == ["hazrun: root:t cached: replaying its output", "[root:t] warn"], lines
    assert "root:q" not in hit.stderr
    quiet = run_hazrun(ws, "run", "t", "--output", "errors-only")
    assert "replaying" not in quiet.stderr and quiet.stdout == ""

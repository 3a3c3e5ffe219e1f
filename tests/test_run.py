"""`hazrun run` with real processes: order, concurrency, cascade, output,
summary (EXEC-001..011, EXEC-016/017, EXEC-021, CLI-001/003)."""
from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import stat
import subprocess
import sys
import time

import psutil
import pytest

from conftest import REPO, hazrun_cmd, intervals, max_overlap, run_hazrun, timed, wait_for

q = json.dumps  # a TOML basic string with everything escaped

ROOT_TOML = '[workspace]\nmembers = ["p/*"]\n'


def project(tasks: str, deps=()) -> str:
    head = f"[project]\ndeps = {json.dumps(list(deps))}\n" if deps else ""
    return head + tasks


def test_exec_001_dependency_order(make_ws, tmp_path):
    log = tmp_path / "order.log"
    ws = make_ws({
        "haz.toml": ROOT_TOML,
        "p/a/haz.toml": f'[tasks.build]\ncmd = {q(timed("a", "sleep 0.2", log))}\n',
        "p/b/haz.toml": project(f'[tasks.build]\ncmd = {q(timed("b", "sleep 0.1", log))}\n'
                                'deps = ["^build"]\n', deps=["a"]),
        "p/c/haz.toml": project(f'[tasks.build]\ncmd = {q(timed("c", "true", log))}\n'
                                'deps = ["^build"]\n', deps=["b"]),
    })
    proc = run_hazrun(ws, "run", "build", "-j4", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    spans = intervals(log)
    assert spans["a"][1] <= spans["b"][0]
    assert spans["b"][1] <= spans["c"][0]


def _independent(make_ws, log, n=4, sleep="0.4", extra=""):
    files = {"haz.toml": ROOT_TOML + extra}
    for i in range(n):
        files[f"p/t{i}/haz.toml"] = f'[tasks.work]\ncmd = {q(timed(f"t{i}", "sleep " + sleep, log))}\n'
    return make_ws(files)


def test_exec_004_j1_runs_one_at_a_time(make_ws, tmp_path):
    log = tmp_path / "j1.log"
    ws = _independent(make_ws, log, n=3, sleep="0.2")
    proc = run_hazrun(ws, "run", "work", "-j1", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    spans = intervals(log)
    assert len(spans) == 3
    assert max_overlap(spans) == 1
    # EXEC-006: admitted in canonical order.
    assert sorted(spans, key=lambda l: spans[l][0]) == ["t0", "t1", "t2"]


def test_exec_004_j2_overlaps_at_most_two(make_ws, tmp_path):
    log = tmp_path / "j2.log"
    ws = _independent(make_ws, log, n=4, sleep="0.5")
    proc = run_hazrun(ws, "run", "work", "-j2", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    assert max_overlap(intervals(log)) == 2


def test_exec_004_lookups_share_a_lane_but_a_slow_one_gets_company(make_ws, tmp_path):
    """Lookups run one after the other in a lane; a lookup held up (here:
    until another task's key is computed) gets a second lane, and never
    more than -j lookups run at once (EXEC-002/003/004)."""
    import threading

    from hazrun import RunOptions, load_workspace, run_graph
    from hazrun.cache import Cache

    ws = make_ws({"haz.toml": ROOT_TOML, **{
        f"p/t{i}/haz.toml": '[tasks.build]\ncmd = "true"\n' for i in range(6)}})
    other_keyed = threading.Event()
    lock = threading.Lock()
    running, most = [0], [0]

    keyed = set()

    class SlowKeyCache(Cache):
        def compute_key(self, label, pred_streams, quick=False, refresh=False):
            if quick or refresh:
                # The loop's attempt (a cold input makes it WouldBlock), or
                # the key again of a task that runs: no lane's lookup.
                return super().compute_key(label, pred_streams, quick, refresh)
            with lock:
                again = label in keyed
                keyed.add(label)
            if again:
                # Taken again once its command ended (did its inputs change
                # while it ran?): not a lookup, and no lane's.
                return super().compute_key(label, pred_streams)
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            try:
                if label == "t0:build":
                    # Blocks its lane until a task queued behind it is keyed.
                    assert other_keyed.wait(30), "no second lane: t0 held every lookup"
                else:
                    other_keyed.set()
                return super().compute_key(label, pred_streams)
            finally:
                with lock:
                    running[0] -= 1

    workspace = load_workspace(ws)
    cache = SlowKeyCache(workspace, tmp_path / "cache", dict(os.environ))
    outcome = run_graph(workspace, ["build"], options=RunOptions(jobs=2), cache=cache)
    cache.close()
    assert {r.state.value for r in outcome.results.values()} == {"succeeded"}
    assert most[0] == 2


def test_exec_004_workspace_concurrency(make_ws, tmp_path):
    log = tmp_path / "conc.log"
    ws = _independent(make_ws, log, n=3, sleep="0.3", extra="concurrency = 1\n")
    proc = run_hazrun(ws, "run", "work", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    assert max_overlap(intervals(log)) == 1


def test_exec_005_tag_cap_without_head_of_line_blocking(make_ws, tmp_path):
    log = tmp_path / "tags.log"
    files = {"haz.toml": ROOT_TOML + "[workspace.tags]\ndb = 1\n"}
    # a0..a2 tagged db (cap 1) sort before z, which is untagged: z must not
    # wait behind the held-back db tasks.
    for i in range(3):
        files[f"p/a{i}/haz.toml"] = (f'[tasks.t]\ncmd = {q(timed(f"a{i}", "sleep 0.4", log))}\n'
                                     'tags = ["db"]\n')
    files["p/z/haz.toml"] = f'[tasks.t]\ncmd = {q(timed("z", "sleep 0.4", log))}\n'
    ws = make_ws(files)
    proc = run_hazrun(ws, "run", "t", "-j3", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    spans = intervals(log)
    db = {k: v for k, v in spans.items() if k.startswith("a")}
    assert max_overlap(db) == 1
    first_db_end = min(end for _, end in db.values())
    assert spans["z"][0] < first_db_end, "z waited behind tasks held by the tag cap"


def test_exec_005_tag_cap_command_line_override(make_ws, tmp_path):
    log = tmp_path / "tags2.log"
    files = {"haz.toml": ROOT_TOML + "[workspace.tags]\ndb = 3\n"}
    for i in range(3):
        files[f"p/a{i}/haz.toml"] = (f'[tasks.t]\ncmd = {q(timed(f"a{i}", "sleep 0.3", log))}\n'
                                     'tags = ["db"]\n')
    ws = make_ws(files)
    proc = run_hazrun(ws, "run", "t", "-j3", "--tag-cap", "db=1", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    assert max_overlap(intervals(log)) == 1


def _cascade_ws(make_ws, tmp_path):
    return make_ws({
        "haz.toml": ROOT_TOML,
        "p/a/haz.toml": '[tasks.build]\ncmd = "echo failing; exit 3"\n',
        "p/b/haz.toml": project('[tasks.build]\ncmd = "echo b"\ndeps = ["^build"]\n', ["a"]),
        "p/c/haz.toml": project('[tasks.build]\ncmd = "echo c"\ndeps = ["^build"]\n', ["b"]),
        "p/d/haz.toml": '[tasks.build]\ncmd = "sleep 0.3; echo d ran"\n',
        "p/e/haz.toml": '[tasks.build]\ncmd = "echo e ran"\nafter = ["a:build"]\n',
    })


def test_exec_010_failure_cascade(make_ws, tmp_path):
    ws = _cascade_ws(make_ws, tmp_path)
    summary = tmp_path / "s.json"
    proc = run_hazrun(ws, "run", "build", "--no-cache", "--summary-json", str(summary))
    assert proc.returncode == 1
    doc = json.loads(summary.read_text())
    tasks = {t["label"]: t for t in doc["tasks"]}
    assert tasks["a:build"]["state"] == "failed"
    assert tasks["a:build"]["cause"] == "exit_code"
    assert tasks["a:build"]["exit_code"] == 3
    for label in ("b:build", "c:build"):
        assert tasks[label]["state"] == "skipped"
        assert tasks[label]["cause"] == "upstream_failed"
        # EXEC-011: the task whose failure skipped it, also transitively.
        assert tasks[label]["upstream"] == "a:build"
        assert tasks[label]["exit_code"] is None
    # An unrelated task and a soft successor still run.
    assert tasks["d:build"]["state"] == "succeeded"
    assert tasks["e:build"]["state"] == "succeeded"
    assert "[d:build] d ran" in proc.stdout
    assert "[e:build] e ran" in proc.stdout
    assert "b:build skipped: a:build failed" in proc.stderr
    assert "failed: a:build (exit code 3)" in proc.stderr  # CLI-001 summary


@pytest.mark.parametrize("how", ["failure", "fail-fast cancel"])
def test_exec_010_cascade_down_a_chain_of_thousands(make_ws, tmp_path, how):
    """The cascade is not recursion: a chain deeper than Python's recursion
    limit is skipped (or cancelled) whole, with its summary written."""
    n = max(1200, sys.getrecursionlimit() + 200)
    lines = ["[workspace]", "[tasks.t0]", 'cmd = "exit 1"' if how == "failure"
             else 'cmd = "sleep 30"']
    for i in range(1, n):
        lines += [f"[tasks.t{i}]", 'cmd = "true"', f'deps = ["t{i - 1}"]']
    lines += ["[tasks.quick]", 'cmd = "exit 1"']
    ws = make_ws({"haz.toml": "\n".join(lines) + "\n"})
    summary = tmp_path / "s.json"
    targets = [f"t{n - 1}"] + (["quick", "--fail-fast", "-j2"] if how != "failure" else [])
    proc = run_hazrun(ws, "run", *targets, "--no-cache", "--summary-json", str(summary),
                      timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    tasks = {t["label"]: t for t in json.loads(summary.read_text())["tasks"]}
    state, cause = (("skipped", "upstream_failed") if how == "failure"
                    else ("cancelled", "upstream_cancelled"))
    assert all((tasks[f"root:t{i}"]["state"], tasks[f"root:t{i}"]["cause"]) == (state, cause)
               for i in range(1, n))
    assert tasks[f"root:t{n - 1}"]["upstream"] == "root:t0"


def test_exec_011_skip_reported_at_cascade_time(make_ws, tmp_path):
    """The skip is reported when a fails, while an unrelated task still runs."""
    from hazrun import load_workspace
    from hazrun.output import RunObserver
    from hazrun.scheduler import RunOptions, run_graph

    marker = tmp_path / "release"
    ws = make_ws({
        "haz.toml": ROOT_TOML,
        "p/a/haz.toml": '[tasks.build]\ncmd = "exit 1"\n',
        "p/b/haz.toml": project('[tasks.build]\ncmd = "true"\ndeps = ["^build"]\n', ["a"]),
        "p/slow/haz.toml": f'[tasks.build]\ncmd = "while [ ! -e {marker} ]; do sleep 0.05; done"\n',
    })

    events = []

    class Recorder(RunObserver):
        def task_finished(self, result):
            events.append(("finished", result.label))

        def task_skipped(self, result):
            events.append(("skipped", result.label, result.upstream))
            marker.write_text("go")  # only now may the slow task end

    outcome = run_graph(load_workspace(ws), ["build"], Recorder(),
                        RunOptions(no_cache=True, jobs=3))
    assert ("skipped", "b:build", "a:build") in events
    assert events.index(("skipped", "b:build", "a:build")) < events.index(("finished", "slow:build"))
    assert outcome.results["b:build"].state.value == "skipped"


def test_exec_010_fail_fast(make_ws, tmp_path):
    ws = make_ws({
        "haz.toml": ROOT_TOML,
        "p/a/haz.toml": '[tasks.build]\ncmd = "sleep 0.3; exit 1"\n',
        "p/b/haz.toml": project('[tasks.build]\ncmd = "true"\ndeps = ["^build"]\n', ["a"]),
        "p/c/haz.toml": '[tasks.build]\ncmd = "sleep 30"\n',
        "p/d/haz.toml": '[tasks.build]\ncmd = "true"\nafter = ["c:build"]\n',
    })
    summary = tmp_path / "s.json"
    proc = run_hazrun(ws, "run", "build", "-j2", "--no-cache", "--fail-fast", "--grace", "5",
                      "--summary-json", str(summary))
    assert proc.returncode == 1
    tasks = {t["label"]: t for t in json.loads(summary.read_text())["tasks"]}
    assert tasks["a:build"]["state"] == "failed"
    assert (tasks["b:build"]["state"], tasks["b:build"]["cause"]) == ("skipped", "upstream_failed")
    assert (tasks["c:build"]["state"], tasks["c:build"]["cause"]) == ("cancelled", "signalled")
    assert (tasks["d:build"]["state"], tasks["d:build"]["cause"]) == ("cancelled", "not_started")


def test_exec_009_spawn_error(make_ws, tmp_path):
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\ncmd = ["no-such-program-hazrun"]\n'})
    summary = tmp_path / "s.json"
    proc = run_hazrun(ws, "run", "x", "--no-cache", "--summary-json", str(summary))
    assert proc.returncode == 1
    task = json.loads(summary.read_text())["tasks"][0]
    assert (task["state"], task["cause"], task["exit_code"]) == ("failed", "spawn_error", None)
    assert "no-such-program-hazrun" in proc.stderr


def test_exec_009_killed_by_signal_is_failure(make_ws, tmp_path):
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\ncmd = "kill -9 $$"\n'})
    summary = tmp_path / "s.json"
    proc = run_hazrun(ws, "run", "x", "--no-cache", "--summary-json", str(summary))
    assert proc.returncode == 1
    task = json.loads(summary.read_text())["tasks"][0]
    assert (task["state"], task["cause"], task["signal"]) == ("failed", "signal", "SIGKILL")


def test_exec_003_list_cmd_is_exec_directly(make_ws):
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\ncmd = ["printf", "%s|\\n", "a b", "$HOME"]\n'})
    proc = run_hazrun(ws, "run", "x", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    assert "[root:x] a b|\n[root:x] $HOME|\n" in proc.stdout


def test_exec_008_environment_and_stdin(make_ws):
    ws = make_ws({
        "haz.toml": ROOT_TOML,
        # cat on stdin must end at once: stdin is /dev/null.
        "p/app/haz.toml": '[tasks.env]\ncmd = "cat; echo P=$HAZ_PROJECT T=$HAZ_TASK R=$HAZ_ROOT; '
                          'echo X=$FROM_PARENT; pwd; echo err >&2"\n',
    })
    env = dict(os.environ, FROM_PARENT="yes", HAZ_REMOTE_CACHE_TOKEN="s3cret")
    proc = run_hazrun(ws, "run", "env", "--no-cache", env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert f"[app:env] P=app T=env R={ws}" in proc.stdout
    assert "[app:env] X=yes" in proc.stdout
    assert f"[app:env] {ws / 'p' / 'app'}" in proc.stdout
    # stderr goes to stderr, prefixed.
    assert "[app:env] err" in proc.stderr and "err" not in proc.stdout
    assert "s3cret" not in proc.stdout + proc.stderr


def test_exec_008_secrets_are_removed_from_the_task_environment(make_ws):
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\n'
                              'cmd = "echo T=${HAZ_REMOTE_CACHE_TOKEN-unset} '
                              'K=${HAZ_REMOTE_CACHE_SIGNATURE_KEY-unset} U=$HAZ_REMOTE_CACHE_URL"\n'})
    env = dict(os.environ, HAZ_REMOTE_CACHE_TOKEN="t0k", HAZ_REMOTE_CACHE_SIGNATURE_KEY="k3y",
               HAZ_REMOTE_CACHE_URL="http://ci:pw0rd@127.0.0.1:1/cache")
    proc = run_hazrun(ws, "run", "x", "--no-cache", env=env)
    # The URL's user:password@ is a credential too (REMOTE-001).
    assert "[root:x] T=unset K=unset U=http://127.0.0.1:1/cache" in proc.stdout


def _two_talkers(make_ws):
    talk = "for i in 1 2 3 4 5; do echo {n}-$i; sleep 0.05; done"
    return make_ws({
        "haz.toml": ROOT_TOML,
        "p/a/haz.toml": f'[tasks.t]\ncmd = "{talk.format(n="a")}; echo a-err >&2"\n',
        "p/b/haz.toml": f'[tasks.t]\ncmd = "{talk.format(n="b")}; exit 4"\n',
    })


def test_exec_016_live_output_prefixed_and_interleaved_whole(make_ws):
    ws = _two_talkers(make_ws)
    proc = run_hazrun(ws, "run", "t", "-j2", "--no-cache")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert [l for l in lines if l.startswith("[a:t]")] == [f"[a:t] a-{i}" for i in range(1, 6)]
    assert [l for l in lines if l.startswith("[b:t]")] == [f"[b:t] b-{i}" for i in range(1, 6)]
    assert len(lines) == 10
    assert "[a:t] a-err" in proc.stderr


def test_exec_017_buffered_blocks_are_contiguous(make_ws):
    ws = _two_talkers(make_ws)
    proc = run_hazrun(ws, "run", "t", "-j2", "--no-cache", "--output", "buffered")
    lines = proc.stdout.splitlines()
    a = lines.index("[a:t] a-1")
    assert lines[a:a + 5] == [f"[a:t] a-{i}" for i in range(1, 6)]
    b = lines.index("[b:t] b-1")
    assert lines[b:b + 5] == [f"[b:t] b-{i}" for i in range(1, 6)]


def test_exec_017_errors_only_and_none(make_ws):
    ws = _two_talkers(make_ws)
    proc = run_hazrun(ws, "run", "t", "-j2", "--no-cache", "--output", "errors-only")
    assert "[b:t] b-3" in proc.stdout
    assert "a-" not in proc.stdout and "a-err" not in proc.stderr
    proc = run_hazrun(ws, "run", "t", "-j2", "--no-cache", "--output", "none")
    assert proc.stdout == ""
    assert proc.returncode == 1
    assert "failed: b:t (exit code 4)" in proc.stderr


def test_exec_016_no_prefix_and_colour(make_ws):
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\ncmd = "echo hi"\n'})
    proc = run_hazrun(ws, "run", "x", "--no-cache", "--no-prefix")
    assert proc.stdout == "hi\n"
    env = dict(os.environ)
    env.pop("NO_COLOR", None)
    proc = run_hazrun(ws, "run", "x", "--no-cache", "--color", "always", env=env)
    assert re.search(r"\x1b\[\d+m\[root:x\]\x1b\[0m hi", proc.stdout), repr(proc.stdout)
    proc = run_hazrun(ws, "--color", "never", "run", "x", "--no-cache", env=env)
    assert "\x1b[" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", ["live", "buffered"])
def test_exec_016_two_hazruns_on_one_pipe_never_tear_a_line(make_ws, tmp_path, mode):
    """Two hazruns of one make -j2, stdout a pipe (a CI log, | tee): a write
    to a pipe longer than PIPE_BUF may be cut by another's, so hazrun writes
    whole lines in pieces no longer than that."""
    line = "-%06g-" + "x" * 40
    roots = []
    for w in ("w1", "w2"):
        roots.append(make_ws({"haz.toml": '[workspace]\n[tasks.out]\n'
                                          f'cmd = "seq -f {w}{line} 1 20000"\n'},
                             name=w))
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    runs = " & ".join(" ".join(shlex.quote(a) for a in hazrun_cmd(
        "-C", str(r), "run", "out", "--no-cache", "--output", mode)) for r in roots)
    # A reader that starts late: the pipe fills, and big writes block part
    # way, where the other hazrun's writes get in.
    proc = subprocess.run(["bash", "-c", f"({runs}; wait) | (sleep 0.3; cat)"], env=env,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split(b"\n")
    assert lines.pop() == b""
    whole = re.compile(rb"\[root:out\] w[12]-[0-9]{6}-x{40}")
    torn = [l for l in lines if not whole.fullmatch(l)]
    assert not torn and len(lines) == 40000, (len(lines), torn[:3])


def test_exec_016_auto_colour_on_a_terminal_but_not_a_dumb_one():
    from hazrun.console import color_enabled
    master, slave = os.openpty()
    try:
        with open(slave, "wb", closefd=False) as tty:
            assert color_enabled("auto", tty, {"TERM": "xterm-256color"})
            assert not color_enabled("auto", tty, {"TERM": "dumb"})
            assert color_enabled("auto", tty, {"TERM": "dumb", "FORCE_COLOR": "1"})
            assert not color_enabled("auto", tty, {"TERM": "xterm", "NO_COLOR": "1"})
    finally:
        os.close(master)
        os.close(slave)


def test_exec_016_last_line_without_newline_and_non_utf8(make_ws, tmp_path):
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\ncmd = "printf \'ok\\\\n\\\\377\\\\376raw\\\\nno-newline\'"\n'})
    import subprocess
    env = dict(os.environ, PYTHONPATH=str(__import__("conftest").REPO), NO_COLOR="1")
    raw = subprocess.run([sys.executable, "-m", "hazrun", "-C", str(ws), "run", "x", "--no-cache"],
                         env=env, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == b"[root:x] ok\n[root:x] \xff\xferaw\n[root:x] no-newline\n"


def test_exec_016_long_lines_in_64k_pieces(make_ws):
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\n'
                              'cmd = "head -c 150000 /dev/zero | tr \'\\\\0\' y; echo; echo after"\n'})
    proc = run_hazrun(ws, "run", "x", "--no-cache")
    lines = proc.stdout.splitlines()
    assert lines[-1] == "[root:x] after"
    pieces = lines[:-1]
    assert all(l.startswith("[root:x] ") for l in pieces)
    sizes = [len(l) - len("[root:x] ") for l in pieces]
    assert sizes == [65536, 65536, 150000 - 2 * 65536]


# A task printing a long line: a 200,001-byte line of JSON with its newline
# (written in several reads' worth), then one with none at the very end.
_LONG_LINE_TASK = ("import json, sys\n"
                   "sys.stdout.write(json.dumps({'k': 'v' * 200000}) + '\\n')\n"
                   "sys.stdout.write('tail' * 40000)\n")


@pytest.mark.parametrize("mode", ["live", "buffered"])
def test_exec_016_no_prefix_passes_long_lines_through_whole(make_ws, mode):
    """EXEC-016 with --no-prefix: pieces of a line longer than 64 KiB had a
    newline each, for a prefix that was not there, so `hazrun run gen
    --no-prefix > out.json` saved invalid JSON.  Now the bytes come out as
    written (the unterminated last line gets its newline), live, buffered
    and replayed from the cache alike."""
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.gen]\n'
                              f'cmd = {json.dumps([sys.executable, "gen.py"])}\n'
                              'inputs = ["gen.py"]\n',
                  "gen.py": _LONG_LINE_TASK})
    expected = json.dumps({"k": "v" * 200000}) + "\n" + "tail" * 40000 + "\n"
    for run in ("fresh", "replayed"):
        proc = run_hazrun(ws, "run", "gen", "--no-prefix", "--output", mode)
        assert proc.returncode == 0, proc.stderr
        assert ("restored" in proc.stderr or "1 cached" in proc.stderr) == (run == "replayed"), proc.stderr
        assert proc.stdout == expected, (run, len(proc.stdout), proc.stdout.count("\n"))
        json.loads(proc.stdout.splitlines()[0])
    # stdout alone: the entry needs no Manifest.order to replay it so.
    entries = list((ws / ".haz" / "cache" / "entries").rglob("*.json"))
    assert entries and all("order" not in json.loads(e.read_text()) for e in entries)
    # With the prefix, the same line still comes in prefixed 64 KiB pieces.
    proc = run_hazrun(ws, "run", "gen", "--output", mode)
    sizes = [len(l) - len("[root:gen] ") for l in proc.stdout.splitlines()]
    assert sizes[:4] == [65536, 65536, 65536, len(expected.splitlines()[0]) - 3 * 65536]


_INTERRUPTED_LINE_TASK = r"""
import fcntl, os, struct, termios, time
def write(fd, data):
    os.write(fd, data)
    while struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]:
        time.sleep(0.002)  # until hazrun has read it: the order is certain
write(1, b"a" * 80000)
write(2, b"err0\n")
write(1, b"tail\n")
"""


def test_exec_016_no_prefix_keeps_other_lines_out_of_a_long_line(make_ws, tmp_path):
    """--no-prefix passes a long line's 64 KiB pieces through unchanged; a
    stderr line (or another task's) written while that line is open used to
    land inside it on a terminal or with 2>&1.  It now goes on a line of its
    own there, and stdout saved alone keeps every byte."""
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.t]\n'
                              f'cmd = {json.dumps([sys.executable, "t.py"])}\n',
                  "t.py": _INTERRUPTED_LINE_TASK})
    argv = [sys.executable, "-m", "hazrun", "-C", str(ws), "run", "t", "--no-prefix",
            "--no-cache"]
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    env.pop("MAKEFLAGS", None)
    both = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=60)
    assert both.returncode == 0, both.stdout[-2000:]
    lines = both.stdout.split(b"\n")
    assert lines[:3] == [b"a" * 65536, b"err0", b"a" * (80000 - 65536) + b"tail"], \
        [l[:20] + b"..%d" % len(l) for l in lines[:4]]
    apart = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=60)
    assert apart.stdout == b"a" * 80000 + b"tail\n"
    assert apart.stderr.startswith(b"err0\n")


_STEP_TASK = r"""
import fcntl, os, struct, sys, termios, time
me, fd, data, after, then = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def wait(name):
    while name != "-" and not os.path.exists(os.path.join(os.environ["HAZ_ROOT"], name)):
        time.sleep(0.005)
wait(after)
os.write(fd, (data[0] * int(data[1:]) if data[1:].isdigit() else data).encode())
while struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]:
    time.sleep(0.002)  # hazrun has read it
open(os.path.join(os.environ["HAZ_ROOT"], me), "w").close()
wait(then)
os.write(fd, b"\n")
"""


def test_exec_016_no_prefix_open_lines_in_two_files_are_both_kept(make_ws):
    """A long line open on stdout and another on stderr, stdout and stderr
    to separate files: the console kept only the last line opened, so a
    third task's stdout line landed inside the first."""
    def task(name, fd, data, after, then):
        argv = [sys.executable, "step.py", name, str(fd), data, after, then]
        return f"[tasks.{name}]\ncmd = {json.dumps(argv)}\n"
    ws = make_ws({"haz.toml": "[workspace]\n" + task("a", 1, "a80000", "-", "c")
                  + task("b", 2, "b80000", "a", "c") + task("c", 1, "C-LINE\n", "b", "-"),
                  "step.py": _STEP_TASK})
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    env.pop("MAKEFLAGS", None)
    proc = subprocess.run([sys.executable, "-m", "hazrun", "-C", str(ws), "run", "a", "b", "c",
                           "-j3", "--no-prefix", "--no-cache"], env=env, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout.split(b"\n")
    assert b"C-LINE" in out, [l[:10] + b"..%d" % len(l) for l in out]
    assert b"".join(l for l in out if l != b"C-LINE") == b"a" * 80000
    assert proc.stderr.startswith(b"b" * 80000 + b"\n")  # its own file: whole


@pytest.mark.timeout(180)
def test_exec_003_50mb_beside_small_writers(make_ws, tmp_path):
    """A child writing 50 MB never blocks; every byte arrives; every output
    line is one whole line of exactly one task."""
    big = ("import sys\n"
           "w = sys.stdout.write\n"
           "for i in range(500000):\n"
           "    w('%08d' % i + 'x' * 91 + '\\n')\n")
    (tmp_path / "big.py").write_text(big)
    files = {"haz.toml": ROOT_TOML,
             "p/big/haz.toml": f'[tasks.t]\ncmd = ["{sys.executable}", "{tmp_path / "big.py"}"]\n'}
    for n in range(3):
        files[f"p/s{n}/haz.toml"] = ('[tasks.t]\ncmd = "for i in $(seq 1 40); do echo small-'
                                     f'{n}-$i; sleep 0.01; done"\n')
    ws = make_ws(files)
    proc = run_hazrun(ws, "run", "t", "-j4", "--no-cache", timeout=150)
    assert proc.returncode == 0, proc.stderr[-2000:]
    big_lines = 0
    small = {n: [] for n in range(3)}
    for line in proc.stdout.split("\n")[:-1]:
        if line.startswith("[big:t] "):
            body = line[len("[big:t] "):]
            assert body == "%08d" % big_lines + "x" * 91, line[:120]
            big_lines += 1
        else:
            m = re.fullmatch(r"\[s(\d):t\] small-(\d)-(\d+)", line)
            assert m and m.group(1) == m.group(2), line[:120]
            small[int(m.group(1))].append(int(m.group(3)))
    assert big_lines == 500000
    assert all(small[n] == list(range(1, 41)) for n in range(3))


@pytest.mark.parametrize("target", ["fifo", "symlink", "long name", "process substitution",
                                    "stdout into a log", "fd 3 appending"])
def test_cli_003_summary_json_reaches_fifos_links_and_long_names(make_ws, tmp_path, target):
    """A rename into place replaced a FIFO, /dev/fd/N or a symlink with a
    new file nobody reads; a long name's temp file was too long a name."""
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.a]\ncmd = "echo a"\n'})
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    cmd = " ".join(shlex.quote(a) for a in hazrun_cmd("-C", str(ws), "run", "a", "--no-cache"))
    got = tmp_path / "got.json"
    if target == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
        script = f"timeout 30 cat {path} > {got} & {cmd} --summary-json {path}; wait"
    elif target == "symlink":
        path = tmp_path / "link.json"
        path.symlink_to(got)
        script = f"{cmd} --summary-json {path}"
    elif target == "long name":
        got = path = tmp_path / ("s" * 240 + ".json")
        script = f"{cmd} --summary-json {path}"
    elif target == "stdout into a log":
        # Written through fd 1, after the task's line: not a new file
        # renamed over the log (which lost that line).
        script = f"{cmd} --summary-json /dev/stdout > {got}"
    elif target == "fd 3 appending":
        got.write_text("earlier\n")
        script = f"{cmd} --summary-json /dev/fd/3 3>> {got}"
    else:
        script = f"{cmd} --summary-json >(cat > {got}); wait $!"
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "cannot write" not in proc.stderr, proc.stderr
    text = got.read_text()
    if target == "stdout into a log":
        head, _, text = text.partition("\n")
        assert head == "[root:a] a"
    elif target == "fd 3 appending":
        head, _, text = text.partition("\n")
        assert head == "earlier"
    assert json.loads(text)["tasks"][0]["label"] == "root:a"
    if target == "symlink":
        assert path.is_symlink()
    if target == "fifo":
        assert stat.S_ISFIFO(os.stat(path).st_mode)


def test_cli_003_a_refused_run_replaces_the_last_summary(make_ws, tmp_path):
    """A run refused with exit 2 (an unknown target, a haz.toml error)
    writes a summary saying so: the previous run's, left in place, said
    exit_code 0 to whatever CI reads it."""
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.a]\ncmd = "echo a"\n'})
    report = tmp_path / "s.json"
    assert run_hazrun(ws, "run", "a", "--no-cache", "--summary-json", str(report)).returncode == 0
    assert json.loads(report.read_text())["exit_code"] == 0
    for breaking in (None, '[workspace]\n[tasks.a]\ncmd = "echo a"\ndep = []\n'):
        if breaking:
            (ws / "haz.toml").write_text(breaking)
        proc = run_hazrun(ws, "run", "a" if breaking else "nope", "--summary-json", str(report))
        assert proc.returncode == 2, proc.stderr
        doc = json.loads(report.read_text())
        assert (doc["exit_code"], doc["signal"], doc["tasks"], doc["violations"]) == (2, None, [], [])
    # A refused run makes no directory (a mistyped -C's, with a relative FILE).
    typo = tmp_path / "ws-typo"
    proc = run_hazrun(typo, "run", "a", "--summary-json", "s.json")
    assert proc.returncode == 2 and not typo.exists(), proc.stderr


@pytest.mark.parametrize("where", ["a directory", "under a file"])
def test_cli_003_an_unwritable_summary_path_is_refused_before_anything_runs(
        make_ws, tmp_path, where):
    """Found after the run, it was an error with exit status 0."""
    ws = make_ws({"haz.toml": f'[workspace]\n[tasks.a]\ncmd = "touch {tmp_path}/ran"\n'})
    path = tmp_path if where == "a directory" else ws / "haz.toml" / "s.json"
    proc = run_hazrun(ws, "run", "a", "--no-cache", "--summary-json", str(path))
    assert proc.returncode == 2, proc.stderr
    assert f"--summary-json {path}:" in proc.stderr
    assert not (tmp_path / "ran").exists()


def test_cli_003_summary_json_schema_and_order(make_ws, tmp_path):
    ws = make_ws({
        "haz.toml": ROOT_TOML,
        "p/b/haz.toml": '[tasks.build]\ncmd = "true"\n',
        "p/a/haz.toml": project('[tasks.build]\ncmd = "true"\ndeps = ["^build"]\n', ["b"]),
        "p/c/haz.toml": '[tasks.build]\ncmd = "exit 2"\n',
    })
    summary = tmp_path / "s.json"
    proc = run_hazrun(ws, "run", "build", "--no-cache", "--summary-json", str(summary))
    doc = json.loads(summary.read_text())
    assert set(doc) == {"version", "exit_code", "signal", "duration_s", "tasks", "violations"}
    assert doc["version"] == 1 and doc["exit_code"] == 1 == proc.returncode
    assert doc["signal"] is None and doc["violations"] == []
    assert [t["label"] for t in doc["tasks"]] == ["b:build", "a:build", "c:build"]
    for t in doc["tasks"]:
        assert set(t) == {"label", "state", "cause", "exit_code", "signal", "duration_s",
                          "key", "upstream"}
    ok = doc["tasks"][0]
    assert (ok["state"], ok["cause"], ok["exit_code"], ok["upstream"]) == ("succeeded", None, 0, None)
    assert ok["key"] is None  # --no-cache: never computed


def test_cli_001_summary_counts(make_ws):
    ws = _two_talkers(make_ws)
    proc = run_hazrun(ws, "run", "t", "--no-cache", "--output", "none")
    last = [l for l in proc.stderr.splitlines() if l.startswith("hazrun: 2 tasks")]
    assert last and "1 succeeded" in last[0] and "1 failed" in last[0]


def test_exec_009_outputs_matching_nothing_warns(make_ws):
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\ncmd = "true"\noutputs = ["dist/**"]\n'})
    proc = run_hazrun(ws, "run", "x", "--no-cache")
    assert proc.returncode == 0
    assert "hazrun: warning: root:x: exited 0 but its outputs match no file: dist/**" in proc.stderr


def test_exec_021_usage_errors_exit_2(make_ws):
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.build]\ncmd = "true"\n'})
    proc = run_hazrun(ws, "run", "biuld")
    assert proc.returncode == 2
    assert "did you mean 'build'" in proc.stderr
    proc = run_hazrun(ws, "run", "build", "-j", "0")
    assert proc.returncode == 2
    # No target: what a target is, not argparse's "arguments are required".
    proc = run_hazrun(ws, "run", "--no-cache")
    assert proc.returncode == 2
    assert proc.stderr.startswith("hazrun: error: name at least one target: 'build'")
    # -C a directory that does not exist: said so.
    proc = run_hazrun(ws / "nowhere", "list")
    assert proc.returncode == 2 and "(there is no such directory)" in proc.stderr


def test_cli_relative_paths_are_taken_from_dash_c(make_ws, tmp_path):
    """-C DIR acts as if started in DIR: --summary-json and --cache-dir too."""
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\ncmd = "echo hi"\n'})
    proc = run_hazrun(ws, "run", "x", "--summary-json", "s.json", "--cache-dir", "cc")
    assert proc.returncode == 0, proc.stderr
    assert (ws / "s.json").is_file() and (ws / "cc").is_dir()
    info = run_hazrun(ws, "cache", "info", "--cache-dir", "cc")
    assert "entries: 1" in info.stdout


def test_exec_003_shell_cmd_keeps_positional_parameters_and_cwd(make_ws):
    """A string cmd runs in the project directory under /bin/sh -c, with
    the script's own line numbers, whatever way it is spawned."""
    ws = make_ws({"haz.toml": ROOT_TOML,
                  "p/d i r/haz.toml": '[project]\nname = "d"\n'
                                      '[tasks.t]\ncmd = "echo $0 $#; pwd; nosuchcmd-hz"\n'})
    summary = ws / "s.json"
    proc = run_hazrun(ws, "run", "t", "--no-cache", "--summary-json", str(summary))
    assert proc.returncode == 1
    assert json.loads(summary.read_text())["tasks"][0]["exit_code"] == 127
    assert "[d:t] /bin/sh 0" in proc.stdout
    assert f"[d:t] {ws / 'p' / 'd i r'}" in proc.stdout
    assert re.search(r"\[d:t\] .*1: .*nosuchcmd-hz", proc.stderr), proc.stderr


def test_exec_002_pipeline_hit_restores_instead_of_spawning(make_ws, tmp_path):
    """Key -> lookup -> a miss spawns and stores; the next run hits,
    restores the output and replays the log without spawning."""
    runs = tmp_path / "runs.log"
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\n'
                              f'cmd = "echo ran >> {runs}; mkdir -p out; echo data > out/f; echo hello"\n'
                              'outputs = ["out/**"]\ninputs = ["haz.toml"]\n'})
    first = run_hazrun(ws, "run", "x")
    assert first.returncode == 0, first.stderr
    (ws / "out" / "f").unlink()
    second = run_hazrun(ws, "run", "x")
    assert second.returncode == 0, second.stderr
    assert runs.read_text() == "ran\n"  # spawned once only
    assert (ws / "out" / "f").read_text() == "data\n"
    assert "[root:x] hello" in second.stdout and "1 cached" in second.stderr


def test_cli_000_messages_are_prefixed(make_ws):
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\ncmd = "true"\noutputs = ["d/**"]\n'})
    proc = run_hazrun(ws, "run", "x", "--no-cache")
    assert "hazrun: warning: root:x: exited 0 but its outputs match no file" in proc.stderr
    bad = make_ws({"haz.toml": '[workspace]\n[tasks.x]\ncmd = 1\n'}, name="bad")
    proc = run_hazrun(bad, "list")
    assert proc.returncode == 2
    assert proc.stderr.startswith("hazrun: error: haz.toml: [tasks.x] key 'cmd'")


@pytest.mark.parametrize("args, message", [
    (["run", "x", "-j", "0"], "hazrun: error: run: argument -j/--jobs: '0' is not a whole "
                              "number of at least 1"),
    (["cache", "prune", "--max-age"], "hazrun: error: cache prune: argument --max-age: "
                                      "expected one argument"),
    (["--bogus"], "hazrun: error: unrecognized arguments: --bogus"),
    (["run", "x", "--bogus"], "hazrun: error: run: unrecognized arguments: --bogus"),
    (["cache", "prune", "--max-age", "1d", "--bogus"],
     "hazrun: error: cache prune: unrecognized arguments: --bogus"),
    (["run", "x", "-j", "\u00b2"], "hazrun: error: run: argument -j/--jobs: '\u00b2' is not a "
                                   "whole number of at least 1"),
    (["run", "x", "--tag-cap", "a=\u00b2"], "hazrun: error: run: argument --tag-cap: "
                                            "'a=\u00b2' is not TAG=N"),
])
def test_cli_000_usage_errors_are_prefixed_too(make_ws, args, message):
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\ncmd = "true"\n'})
    proc = run_hazrun(ws, *args)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: hazrun")  # the command's usage first
    assert proc.stderr.splitlines()[-1].startswith(message), proc.stderr


@pytest.mark.parametrize("args", [["run", "a", "--no-cache", "b"], ["run", "a", "-j", "1", "b"],
                                  ["graph", "a", "--dot", "b"]])
def test_cli_000_targets_may_follow_options(make_ws, args):
    """`run a --force b`: b is a target as a is (make and turbo take them
    so), not an unrecognized argument."""
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.a]\ncmd = "echo ran-a"\n'
                              '[tasks.b]\ncmd = "echo ran-b"\n'})
    proc = run_hazrun(ws, *args)
    assert proc.returncode == 0, proc.stderr
    for label in ("a", "b"):
        assert (f"ran-{label}" if args[0] == "run" else f'"root:{label}"') in proc.stdout


@pytest.mark.parametrize("cmd", ["string", "list"])
def test_exec_008_a_task_starts_with_default_signals_and_no_stray_fds(make_ws, tmp_path, cmd):
    """Python ignores SIGPIPE and SIGXFSZ, and an ignored signal survives
    exec: a task must not inherit that (``seq | head`` would print "Broken
    pipe"), nor an fd hazrun inherited from its own parent."""
    stray = os.open(tmp_path / "stray", os.O_WRONLY | os.O_CREAT)
    os.set_inheritable(stray, True)
    script = (f"grep SigIgn /proc/self/status; test -e /proc/$$/fd/{stray} "
              "&& echo fd leaked || echo fd closed; seq 1 10000000 | head -1")
    value = f'"{script}"' if cmd == "string" else f'["sh", "-c", "{script}"]'
    ws = make_ws({"haz.toml": f'[workspace]\n[tasks.x]\ncmd = {value}\n'})
    try:
        env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
        env.pop("MAKEFLAGS", None)
        proc = subprocess.run(hazrun_cmd("-C", str(ws), "run", "x", "--no-cache"), env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              pass_fds=(stray,), timeout=60)
    finally:
        os.close(stray)
    assert proc.returncode == 0, proc.stderr
    ignored = int(re.search(r"SigIgn:\s*([0-9a-f]+)", proc.stdout).group(1), 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (sig - 1)), f"{sig.name} ignored in the task"
    assert "[root:x] fd closed\n" in proc.stdout
    assert "Broken pipe" not in proc.stdout + proc.stderr
    assert "[root:x] 1\n" in proc.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="posix_spawn path: Linux")
@pytest.mark.parametrize("cmd", ["string", "list"])
def test_exec_008_a_task_leads_its_own_process_group(make_ws, hazrun_env, cmd):
    """EXEC-014 stops a task through its process group, which the task
    leads.  hazrun without a terminal (as here): a string command's group
    is in hazrun's session (a session per task is a scheduling group per
    task under Linux's autogroup); a list command, started by Popen, has a
    session of its own."""
    script = "echo sh $$ $PPID; echo ids $(python3 -c 'import os; print(os.getpgid(0), os.getsid(0))')"
    value = f'"{script}"' if cmd == "string" else f'["sh", "-c", "{script}"]'
    ws = make_ws({"haz.toml": f'[workspace]\n[tasks.x]\ncmd = {value}\n'})
    # hazrun leads a session of its own, so its pid is also its group's
    # and its session's id.
    proc = subprocess.run(hazrun_cmd("-C", str(ws), "run", "x", "--no-cache"), env=hazrun_env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          start_new_session=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    sh, hazrun = map(int, re.search(r"sh (\d+) (\d+)", proc.stdout).groups())
    pgid, sid = map(int, re.search(r"ids (\d+) (\d+)", proc.stdout).groups())
    assert pgid == sh != hazrun
    assert sid == (hazrun if cmd == "string" else sh)


@pytest.mark.parametrize("cmd,script,expect", [
    ("string", "stty sane < /dev/tty; cat /dev/tty; echo read-status $?", "read-status 1"),
    ("list", "stty sane < /dev/tty; cat /dev/tty; echo read-status $?", "read-status 1"),
    # Job control, which `bash -i` (loading nvm, aliases) and `set -m` turn on.
    ("string", "bash -ic 'echo interactive'", "interactive"),
    ("string", "set -m; sleep 0.2 & wait; echo waited", "waited")])
def test_exec_008_a_task_at_a_terminal_does_not_hang_on_it(make_ws, hazrun_env, cmd, script,
                                                          expect):
    """hazrun at a terminal: a task is no job of that terminal.  A read of
    /dev/tty (a password prompt) fails at once rather than stopping the task
    with SIGTTIN; `stty` does not take the terminal's modes; `bash -i` does
    not stop itself and dash's `set -m` does not spin waiting to be in the
    foreground.  (In hazrun's session they all hung the run.)"""
    import pty
    value = f'"""{script}"""' if cmd == "string" else f'["sh", "-c", """{script}"""]'
    ws = make_ws({"haz.toml": f'[workspace]\n[tasks.x]\ncmd = {value}\n'})
    argv = hazrun_cmd("-C", str(ws), "run", "x", "--no-cache")
    pid, master = pty.fork()  # the child leads a session with the pty as its terminal
    if pid == 0:
        try:
            os.execve(argv[0], argv, hazrun_env)
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every holder of the pty's other end closed it
                    break
                if not data:
                    break
                out += data
        finished, status = 0, 0
        while not finished and time.monotonic() < deadline:
            finished, status = os.waitpid(pid, os.WNOHANG)
            time.sleep(0.02)
    finally:
        os.close(master)
        if not finished:  # a stopped task holds the run: end hazrun and all it started
            try:
                hazrun = psutil.Process(pid)
                for p in [hazrun, *hazrun.children(recursive=True)]:
                    p.kill()
            except psutil.Error:
                pass
            os.waitpid(pid, 0)
    text = out.decode("utf-8", "replace").replace("\r\n", "\n")
    assert finished == pid, f"hazrun did not finish (a task stopped?):\n{text}"
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert f"[root:x] {expect}\n" in text
    if "stty" in script:  # no terminal at all, rather than a stopped task
        assert "/dev/tty: No such device or address" in text, text


def _slices(text):
    """The EEVDF slices a /proc/PID/sched text (or several) shows."""
    return [int(x) for x in re.findall(r"se\.slice\s*:\s*(\d+)", text)]


def _custom_slices() -> bool:
    """Whether this kernel takes a custom slice (Linux 6.12): asked of a
    child, as the /proc line alone came to older kernels too."""
    probe = subprocess.run(
        [sys.executable, "-c", "from hazrun.process import prefer_short_slice as p; p(); "
         "print(open('/proc/self/sched').read())"],
        env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=60)
    return _slices(probe.stdout) == [100_000]


@pytest.mark.skipif(not _custom_slices(), reason="this kernel takes no custom EEVDF slice")
@pytest.mark.parametrize("prefix", [["nice", "-n", "0"], ["nice", "-n", "3"],
                                    ["nice", "-n", "-2"], ["chrt", "-b", "0"]])
def test_exec_003_the_event_loop_asks_for_a_short_slice_and_its_tasks_do_not(make_ws, hazrun_env,
                                                                             prefix):
    """The loop thread asks for EEVDF's 0.1 ms slice, the tasks keep the
    default (SCHED_FLAG_RESET_ON_FORK), their nice value and policy
    (SCHED_BATCH under chrt -b) untouched; under a negative nice, which
    that flag would reset in the tasks, nothing is asked."""
    nice = int(prefix[2]) if prefix[0] == "nice" else 0
    if nice < 0 and os.geteuid() != 0:
        pytest.skip("a negative nice needs root")
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\n'
                              'cmd = "cat /proc/$PPID/sched; echo task; cat /proc/$$/sched; '
                              'echo nice $(ps -o ni= -p $$) policy $(chrt -p $$)"\n'})
    proc = subprocess.run([*prefix, *hazrun_cmd("-C", str(ws), "run", "x", "--no-cache")],
                          env=hazrun_env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loop_part, task_part = proc.stdout.split("[root:x] task\n")
    with open("/proc/self/sched") as f:
        default, = _slices(f.read())
    assert _slices(loop_part) == [100_000 if nice >= 0 else default]
    assert _slices(task_part) == [default]
    assert f"[root:x] nice {nice} policy " in proc.stdout
    policy = "SCHED_BATCH" if prefix[0] == "chrt" else "SCHED_OTHER"
    assert re.search(rf"\[root:x\] nice .*current scheduling policy: {policy} ", proc.stdout), \
        proc.stdout


@pytest.mark.parametrize("how", ["env", "option"])
def test_cache_003_a_cache_directory_inside_the_workspace_is_not_an_input(make_ws, how):
    """Default inputs (the whole project) at the root: the cache's own files
    are not inputs, or every store changes the key."""
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.build]\ncmd = "echo built > out.txt"\n'
                              'outputs = ["*.txt"]\n'})
    env = dict(os.environ, HAZ_CACHE_DIR="hazcache") if how == "env" else None
    args = ["run", "build"] + (["--cache-dir", str(ws / "hazcache")] if how == "option" else [])
    first = run_hazrun(ws, *args, env=env)
    assert first.returncode == 0 and "1 succeeded" in first.stderr, first.stderr
    assert any((ws / "hazcache" / "entries").iterdir())
    second = run_hazrun(ws, *args, env=env)
    assert "1 cached" in second.stderr, second.stderr
    (ws / "out.txt").unlink()
    third = run_hazrun(ws, *args, env=env)
    assert "1 cached" in third.stderr and (ws / "out.txt").read_text() == "built\n"


def test_exec_005_a_task_parked_twice_does_not_hold_back_one_that_fits(make_ws, tmp_path):
    """b (heavy, gpu) waits for heavy, then for gpu, which c holds; d (heavy
    only) fits as soon as a ends and must not wait for c: c waits for d."""
    marker = tmp_path / "d-ran"
    wait_for_d = (f"i=0; while [ ! -e {marker} ] && [ $i -lt 400 ]; do sleep 0.05; "
                  f"i=$((i+1)); done; test -e {marker}")
    ws = make_ws({"haz.toml": "\n".join([
        "[workspace]", "[workspace.tags]", "heavy = 1", "gpu = 1",
        "[tasks.a]", 'cmd = "sleep 0.2"', 'tags = ["heavy"]',
        "[tasks.b]", 'cmd = "true"', 'tags = ["heavy", "gpu"]',
        "[tasks.c]", f'cmd = "{wait_for_d}"', 'tags = ["gpu"]',
        "[tasks.d]", f'cmd = "touch {marker}"', 'tags = ["heavy"]', ""])})
    proc = run_hazrun(ws, "run", "a", "b", "c", "d", "-j4", "--no-cache")
    assert proc.returncode == 0 and "4 succeeded" in proc.stderr, proc.stderr


def test_exec_011_a_cascade_is_reported_in_canonical_order(make_ws, tmp_path):
    """a fails; b and z depend on it, c on b: the skips come as b, c, z
    (GRAPH-003), neither breadth- nor depth-first."""
    from hazrun import load_workspace
    from hazrun.output import RunObserver
    from hazrun.scheduler import RunOptions, run_graph

    ws = make_ws({"haz.toml": "\n".join([
        "[workspace]", "[tasks.a]", 'cmd = "exit 1"',
        "[tasks.b]", 'cmd = "true"', 'deps = ["a"]',
        "[tasks.z]", 'cmd = "true"', 'deps = ["a"]',
        "[tasks.c]", 'cmd = "true"', 'deps = ["b"]',
        "[tasks.d]", 'cmd = "true"', 'deps = ["c", "z"]', ""])})
    skipped = []

    class Recorder(RunObserver):
        def task_skipped(self, result):
            skipped.append(result.label)

    workspace = load_workspace(ws)
    run_graph(workspace, ["d"], Recorder(), RunOptions(no_cache=True))
    order = workspace.graph.canonical_order(set(skipped))
    assert skipped == order == ["root:b", "root:c", "root:z", "root:d"]


def test_cfg_006_a_project_that_is_a_git_clone_of_its_own_has_its_files_as_inputs(make_ws):
    """git lists an untracked nested repository as one entry ('p/a/'): its
    files are inputs all the same, or a change in them still hit."""
    ws = make_ws({"haz.toml": '[workspace]\nmembers = ["p/*"]\n',
                  "p/a/haz.toml": '[tasks.build]\ncmd = "cat src/x"\n',
                  "p/a/src/x": "v1\n"})
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    for where in (ws, ws / "p/a"):
        subprocess.run(git + ["init", "-q"], cwd=where, check=True)
    subprocess.run(git + ["add", "haz.toml"], cwd=ws, check=True)
    subprocess.run(git + ["commit", "-qm", "root"], cwd=ws, check=True)
    assert "[a:build] v1" in run_hazrun(ws, "run", "build").stdout
    (ws / "p/a/src/x").write_text("v2\n")
    second = run_hazrun(ws, "run", "build")
    assert "[a:build] v2" in second.stdout and "1 succeeded" in second.stderr


def _git(where, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t",
                    "-c", "protocol.file.allow=always", *args], cwd=where, check=True,
                   capture_output=True, stdin=subprocess.DEVNULL, timeout=60)


def test_cfg_006_a_project_in_a_git_submodule_has_its_files_as_inputs(make_ws, tmp_path):
    """A submodule is one entry (a gitlink) to the workspace's git: its own
    git lists its files, or an edit in it still hit and replayed v1."""
    lib = tmp_path / "lib"
    (lib / "src").mkdir(parents=True)
    (lib / "haz.toml").write_text('[tasks.build]\ncmd = "cat src/a.txt"\n')
    (lib / "src/a.txt").write_text("v1\n")
    _committed(lib)
    ws = make_ws({"haz.toml": '[workspace]\nmembers = ["libs/*"]\n'})
    _git(ws, "init", "-q")
    _git(ws, "submodule", "add", "-q", str(lib), "libs/sub")
    _git(ws, "commit", "-qam", "root")
    _assert_an_edit_misses(ws, "sub:build", ws / "libs/sub/src/a.txt")


def test_cfg_006_a_submodule_keeps_its_own_gitignore(make_ws, tmp_path):
    """A file a task writes in a submodule that the submodule's .gitignore
    ignores is no input, also when it appears during the run: asked of the
    workspace's git, which refuses paths in a submodule, it counted as an
    input that appeared while the task ran, and the task was never stored."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "haz.toml").write_text(
        '[tasks.build]\ncmd = "echo x > tmp.log && mv tmp.log build.log"\n')
    (lib / ".gitignore").write_text("build.log\n")
    _committed(lib)
    ws = make_ws({"haz.toml": '[workspace]\nmembers = ["libs/*"]\n'})
    _git(ws, "init", "-q")
    _git(ws, "submodule", "add", "-q", str(lib), "libs/sub")
    _git(ws, "commit", "-qam", "root")
    first = run_hazrun(ws, "run", "build")
    assert "1 succeeded" in first.stderr and "not stored" not in first.stderr, first.stderr
    assert "1 cached" in run_hazrun(ws, "run", "build").stderr


def test_cfg_006_a_nested_clone_keeps_its_own_gitignore(make_ws):
    """Files the nested repository's .gitignore ignores are no inputs: a
    task rewriting its ignored log hits on the next run."""
    ws = make_ws({"haz.toml": '[workspace]\nmembers = ["p/*"]\n',
                  "p/a/haz.toml": '[tasks.build]\ncmd = "date +%s%N > run.log; cat src/x"\n',
                  "p/a/.gitignore": "run.log\n",
                  "p/a/src/x": "v1\n"})
    for where in (ws, ws / "p/a"):
        _git(where, "init", "-q")
    _git(ws, "add", "haz.toml")
    _git(ws, "commit", "-qm", "root")
    assert "1 succeeded" in run_hazrun(ws, "run", "build").stderr
    assert "1 cached" in run_hazrun(ws, "run", "build").stderr


def test_cfg_006_a_skip_worktree_file_is_an_input(make_ws):
    """git tags it S; it is in the work tree and not ignored, so an edit to
    it must miss (a local config file marked so, a common practice)."""
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.build]\ncmd = "cat local.cfg"\n',
                  "local.cfg": "v1\n"})
    _committed(ws)
    _git(ws, "update-index", "--skip-worktree", "local.cfg")
    _assert_an_edit_misses(ws, "root:build", ws / "local.cfg")


def _committed(repo):
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "init")


def _assert_an_edit_misses(ws, label, path):
    """``label`` prints ``path``, which holds v1: v2 written, it must run."""
    assert f"[{label}] v1" in run_hazrun(ws, "run", "build").stdout
    path.write_text("v2\n")
    second = run_hazrun(ws, "run", "build")
    assert f"[{label}] v2" in second.stdout and "1 succeeded" in second.stderr


def test_cfg_006_a_repository_that_ignores_the_workspace_is_warned_of(tmp_path):
    """A dotfiles repository in $HOME with '*' in its .gitignore: every file
    of the workspace is ignored, so none is an input and edits still hit.
    That is CFG-006 to the letter; hazrun says so once, with the fix."""
    home = tmp_path / "home"
    ws = home / "src" / "ws"
    ws.mkdir(parents=True)
    (home / ".gitignore").write_text("*\n")
    (ws / "haz.toml").write_text('[workspace]\n[tasks.t]\ncmd = "cat in.txt"\n')
    (ws / "in.txt").write_text("v1\n")
    _git(home, "init", "-q")
    proc = run_hazrun(ws, "run", "t")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("git ignores this workspace's haz.toml") == 1, proc.stderr


@pytest.mark.parametrize("middle", ['deps = ["^build"]', 'cmd = "true"\ndeps = ["^build"]'])
def test_cache_001_a_change_reaches_a_key_through_a_task_without_outputs(make_ws, tmp_path, middle):
    """a:build -> b:all (a group of deps, or a command with no outputs) ->
    b:use, which reads a's output: b:all hands on what it got, or b:use's
    key never changed and it replayed v1 after a's source became v2."""
    ws = make_ws({"haz.toml": '[workspace]\nmembers = ["p/*"]\n',
                  "p/a/haz.toml": '[tasks.build]\ncmd = "mkdir -p dist && cp src.txt dist/o.txt"\n'
                                  'outputs = ["dist/**"]\n',
                  "p/a/src.txt": "v1\n",
                  "p/b/haz.toml": f'[project]\ndeps = ["a"]\n[tasks.all]\n{middle}\n',
                  "p/c/haz.toml": '[tasks.use]\ncmd = "cat ../a/dist/o.txt > out.txt"\n'
                                  'deps = ["b:all"]\noutputs = ["out.txt"]\n'})
    assert run_hazrun(ws, "run", "c:use").returncode == 0
    (ws / "p/a/src.txt").write_text("v2\n")
    dry = run_hazrun(ws, "run", "c:use", "--dry-run")
    assert re.search(r"c:use +\? +miss \(upstream\)", dry.stdout), dry.stdout
    proc = run_hazrun(ws, "run", "c:use")
    assert proc.returncode == 0, proc.stderr
    assert (ws / "p/c/out.txt").read_text() == "v2\n"
    # Unchanged since: c:use hits, the dry run says so too.
    report = tmp_path / "s.json"
    assert run_hazrun(ws, "run", "c:use", "--summary-json", str(report)).returncode == 0
    states = {t["label"]: t["state"] for t in json.loads(report.read_text())["tasks"]}
    assert states["a:build"] == states["c:use"] == "cached", states
    dry = run_hazrun(ws, "run", "c:use", "--dry-run")
    assert re.search(r"c:use +[0-9a-f]{64} +hit", dry.stdout), dry.stdout


def until_exists(path) -> str:
    """Shell: wait until ``path`` exists (the test's go-ahead)."""
    return f"while [ ! -e {path} ]; do sleep 0.02; done"


def run_meanwhile(ws, args, meanwhile):
    """Run hazrun on ``ws`` while ``meanwhile()`` changes the workspace under
    it; return its exit status and stderr."""
    proc = subprocess.Popen(hazrun_cmd("-C", str(ws), *args),
                            env=dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        meanwhile()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def test_cache_005_an_input_edited_while_its_task_runs_is_not_stored(make_ws, tmp_path):
    """The key is taken before the command starts: an input saved in the
    middle of the build (an editor) and then undone must not leave an entry
    whose outputs came from the edit under the key of the original."""
    started = tmp_path / "started"
    go = tmp_path / "go"
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.t]\n'
                              f'cmd = "touch {started}; {until_exists(go)}; '
                              'cat in.txt > out.txt"\noutputs = ["out.txt"]\n',
                  "in.txt": "v1\n"})

    def edit():
        wait_for(started.exists, what="the task to start")
        (ws / "in.txt").write_text("v2\n")
        go.touch()
    code, err = run_meanwhile(ws, ["run", "t"], edit)
    assert code == 0, err
    assert b"not stored in the cache (its input in.txt changed while it ran" in err
    (ws / "in.txt").write_text("v1\n")
    go.touch()
    second = run_hazrun(ws, "run", "t")
    assert "1 succeeded" in second.stderr, second.stderr
    assert (ws / "out.txt").read_text() == "v1\n"


def test_cache_005_an_input_edited_and_undone_while_its_task_runs_is_not_stored(
        make_ws, tmp_path):
    """The command read the edit, and the input hashes as the key says again
    by the end: its stat signature tells that it was written meanwhile.
    Stored, the entry replayed the edit under the key of the original."""
    started, read, go_read, go_end = (tmp_path / n for n in ("started", "read", "go1", "go2"))
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.t]\n'
                              f'cmd = "touch {started}; {until_exists(go_read)}; '
                              f'cat in.txt > out.txt; touch {read}; {until_exists(go_end)}"\n'
                              'outputs = ["out.txt"]\n',
                  "in.txt": "v1\n"})

    def edit_and_undo():
        wait_for(started.exists, what="the task to start")
        (ws / "in.txt").write_text("v2\n")
        go_read.touch()
        wait_for(read.exists, what="the task to read its input")
        (ws / "in.txt").write_text("v1\n")
        go_end.touch()
    code, err = run_meanwhile(ws, ["run", "t"], edit_and_undo)
    assert code == 0, err
    assert (ws / "out.txt").read_text() == "v2\n"
    assert b"not stored in the cache (its input in.txt changed while it ran" in err
    (ws / "out.txt").unlink()
    second = run_hazrun(ws, "run", "t")
    assert "1 succeeded" in second.stderr, second.stderr
    assert (ws / "out.txt").read_text() == "v1\n"


@pytest.mark.parametrize("where", ["src/new", "src/sub/new"])
def test_cache_001_a_file_created_during_the_run_reaches_later_keys(make_ws, tmp_path, where):
    """The workspace is listed once, when the run starts; a file saved while
    an upstream task runs (in a directory the listing knew, or in one made
    since) is in the key of a task that reads it.  Missed, b:build stored
    'A NEW' under the key of 'A', and replayed it once new was deleted."""
    started, go = tmp_path / "started", tmp_path / "go"
    ws = make_ws({"haz.toml": '[workspace]\nmembers = ["a", "b"]\n',
                  "a/haz.toml": f'[tasks.slow]\ncmd = "touch {started}; {until_exists(go)}"\n'
                                'inputs = []\n',
                  "b/haz.toml": '[tasks.build]\ndeps = ["a:slow"]\n'
                                'cmd = "mkdir -p out && cat $(find src -type f | sort) > out/all"\n'
                                'inputs = ["src/**"]\noutputs = ["out/**"]\n',
                  "b/src/a": "A\n"})

    def create():
        wait_for(started.exists, what="a:slow to start")
        (ws / "b" / where).parent.mkdir(exist_ok=True)
        (ws / "b" / where).write_text("NEW\n")
        go.touch()
    code, err = run_meanwhile(ws, ["run", "build"], create)
    assert code == 0, err
    assert b"not stored" not in err  # new was in its key before it ran
    assert (ws / "b/out/all").read_text() == "A\nNEW\n"
    again = run_hazrun(ws, "run", "build")
    assert "2 cached" in again.stderr, again.stderr
    (ws / "b" / where).unlink()
    (ws / "b/out/all").unlink()
    third = run_hazrun(ws, "run", "build")
    assert "1 succeeded, 1 cached" in third.stderr, third.stderr
    assert (ws / "b/out/all").read_text() == "A\n"


def test_cache_005_a_task_that_writes_its_own_input_names_it(make_ws):
    """A command writing a file its inputs select (a log, a stamp) is not
    stored, and the warning names the file, so the user can declare it an
    output or move it."""
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.t]\ncmd = "date >> stamp.txt"\n'})
    proc = run_hazrun(ws, "run", "t")
    assert proc.returncode == 0, proc.stderr
    assert ("root:t: not stored in the cache (its input stamp.txt appeared while it ran; "
            "the next run runs it again)") in proc.stderr, proc.stderr
    again = run_hazrun(ws, "run", "t")
    assert "its input stamp.txt changed while it ran" in again.stderr, again.stderr


def test_cache_005_a_chmod_or_a_hard_link_of_an_input_is_no_edit(make_ws):
    """Only a write counts as an input changed while its task ran: a chmod
    (to the mode it has) or a hard link changes the ctime and not the
    file, and such a task is stored as before."""
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.t]\n'
                              'cmd = "chmod +x gen.sh && ./gen.sh && ln -f gen.sh linked.sh"\n'
                              'inputs = ["gen.sh"]\n',
                  "gen.sh": "#!/bin/sh\necho gen\n"})
    (ws / "gen.sh").chmod(0o755)
    first = run_hazrun(ws, "run", "t")
    assert first.returncode == 0 and "not stored" not in first.stderr, first.stderr
    assert "1 cached" in run_hazrun(ws, "run", "t").stderr


def test_cache_001_a_tree_git_ignores_is_not_walked_for_new_files(make_ws, tmp_path):
    """Looking for files created since the listing reads a directory whose
    mtime changed; a directory in it that the listing lacks because git
    ignores it (node_modules) is asked about once and never walked: it
    made every key of the project read 20,000 directories."""
    from hazrun import RunObserver, RunOptions, load_workspace, run_graph
    from hazrun.cache import Cache
    files = {"haz.toml": '[workspace]\n[tasks.a]\ncmd = "echo x > tmp && mv tmp made.txt"\n'
                         'outputs = ["made.txt"]\n'
                         '[tasks.b]\ncmd = "true"\ndeps = ["a"]\n',
             ".gitignore": "node_modules/\n.haz/\n",
             "src/x.c": "int x;\n"}
    for i in range(30):
        files[f"node_modules/m{i}/index.js"] = "x\n"
    ws = make_ws(files)
    _git(ws, "init", "-q")
    read = []

    class Watching(Cache):
        def _read_dir(self, d, *args, **kw):
            read.append(d)
            return super()._read_dir(d, *args, **kw)

    workspace = load_workspace(ws)
    cache = Watching(workspace, ws / ".haz" / "cache", os.environ)
    outcome = run_graph(workspace, ["b"], RunObserver(), RunOptions(jobs=1), cache=cache)
    assert {r.state.value for r in outcome.results.values()} == {"succeeded"}, outcome
    assert "" in read, read  # the root, where made.txt appeared
    assert not [d for d in read if d.startswith("node_modules")], read


@pytest.mark.parametrize("inputs, made", [('"data"', "data/extra.txt"),
                                           ('"src/*/x.c"', "src/new/x.c")])
def test_cache_001_a_file_an_upstream_task_makes_is_in_the_key(make_ws, inputs, made):
    """prep (not cached) writes a file the task's inputs select, in a
    directory the listing knew or in a new one below it: the task's key has
    it, so the entry is not found once prep stops writing it (a literal
    'data' selects all below it; 'src/*/x.c' files in new directories)."""
    prep = f"mkdir -p $(dirname {made}) && echo X > {made}"
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.prep]\n'
                              f'cmd = {json.dumps(prep)}\ncache = false\ninputs = []\n'
                              '[tasks.use]\ncmd = "cat $(find data src -type f | sort) > out"\n'
                              f'deps = ["prep"]\ninputs = [{inputs}]\noutputs = ["out"]\n',
                  "data/a.txt": "a\n", "src/old/x.c": "c\n"})
    assert run_hazrun(ws, "run", "use").returncode == 0
    assert "X" in (ws / "out").read_text()
    (ws / made).unlink()
    (ws / "haz.toml").write_text((ws / "haz.toml").read_text().replace(prep, "true"))
    again = run_hazrun(ws, "run", "use")
    assert "X" not in (ws / "out").read_text(), again.stderr


def test_cache_001_files_made_since_are_looked_for_only_where_globs_reach(make_ws):
    """'*.json' ([workspace] inputs) selects files of the root directory
    only, and 'src/*.c' those of src: a task that runs looks for new files
    there, not in every directory below (20,000 directories stat'ed per
    task made a cold run take 41 s instead of 3)."""
    from hazrun import load_workspace
    from hazrun.cache import Cache
    files = {"haz.toml": '[workspace]\nmembers = ["p"]\ninputs = ["*.json"]\n',
             "p/haz.toml": '[tasks.t]\ncmd = "true"\ninputs = ["src/*.c", "docs/**"]\n',
             "p/src/a.c": "", "p/docs/x/y.md": "", "top.json": "{}"}
    for i in range(20):
        files[f"p/src/deep{i}/more/z.c"] = ""
    ws = make_ws(files)
    workspace = load_workspace(ws)
    cache = Cache(workspace, ws / ".haz" / "cache", os.environ)
    try:
        cache._files()
        static, inputs, outputs = cache._task_parts("p:t")
        from hazrun.globs import GlobSet
        dirs = cache._task_dirs("p:t", [inputs, GlobSet.compile(["*.json"])], "p")
    finally:
        cache.close()
    assert sorted(dirs) == ["", "p/docs", "p/docs/x", "p/src"], dirs


def test_cache_004_a_hit_deletes_no_file(make_ws, tmp_path):
    """A hand-written src/shim.js that the outputs globs match (an in-place
    build), and a cache directory under an outputs glob: a hit restores its
    entry and deletes neither (an attempt this session at removing the files
    an entry lacks deleted both)."""
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.t]\n'
                              'cmd = "for f in src/*.ts; do cp $f ${f%.ts}.js; done; '
                              'mkdir -p build && cp src/a.ts build/a"\n'
                              'inputs = ["src/**/*.ts"]\noutputs = ["src/**/*.js", "build/**"]\n',
                  "src/a.ts": "v1\n"})
    env = dict(os.environ, HAZ_CACHE_DIR="build/cache")
    assert run_hazrun(ws, "run", "t", env=env).returncode == 0
    (ws / "src/a.ts").write_text("v2\n")
    assert run_hazrun(ws, "run", "t", env=env).returncode == 0
    (ws / "src/a.ts").write_text("v1\n")
    (ws / "src/shim.js").write_text("by hand\n")
    third = run_hazrun(ws, "run", "t", env=env)
    assert "1 cached" in third.stderr, third.stderr
    assert (ws / "src/shim.js").read_text() == "by hand\n"
    assert (ws / "src/a.js").read_text() == "v1\n"
    info = run_hazrun(ws, "cache", "info", env=env)
    assert re.search(r"entries:\s+2\b", info.stdout), info.stdout
def test_cache_004_a_run_whose_outputs_match_nothing_replaces_no_entry(make_ws):
    """Declared outputs that match no file after a run (here the command
    skips them, under --force) store no entry over the one under the same
    key: it would replace the good one, and later hits would restore
    nothing without a word.  Where none is stored (a lint task writing
    reports only when it fails), it is stored, and hits."""
    cmd = 'if [ -z \\"$SKIP\\" ]; then mkdir -p out && echo x > out/f; fi'
    ws = make_ws({"haz.toml": f'[workspace]\n[tasks.b]\ncmd = "{cmd}"\noutputs = ["out/**"]\n'
                              '[tasks.lint]\ncmd = "true"\noutputs = ["reports/*.xml"]\n'})
    assert run_hazrun(ws, "run", "b").returncode == 0
    (ws / "out/f").unlink()
    skipped = run_hazrun(ws, "run", "b", "--force", env=dict(os.environ, SKIP="1"))
    assert skipped.returncode == 0, skipped.stderr
    assert "outputs match no file (not stored in the cache): out/**" in skipped.stderr
    again = run_hazrun(ws, "run", "b")
    assert "1 cached" in again.stderr, again.stderr
    assert (ws / "out/f").read_text() == "x\n"
    lint = run_hazrun(ws, "run", "lint")
    assert "outputs match no file: reports/*.xml" in lint.stderr, lint.stderr
    assert "1 cached" in run_hazrun(ws, "run", "lint").stderr
def test_exec_016_a_full_disk_on_stdout_drops_output_but_not_the_run(make_ws, tmp_path):
    marker = tmp_path / "b-ran"
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.a]\ncmd = "seq 1 1000"\n'
                              f'[tasks.b]\ncmd = "touch {marker}"\ndeps = ["a"]\n'})
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(hazrun_cmd("-C", str(ws), "run", "b", "--no-cache"), env=env,
                              stdin=subprocess.DEVNULL, stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    assert proc.returncode == 0 and marker.exists(), proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("hazrun: warning: cannot write to stdout (No space left") == 1


@pytest.mark.parametrize("closed", [">&-", "2>&-"])
def test_exec_016_a_closed_stdout_or_stderr_does_not_stop_the_run(make_ws, tmp_path, closed):
    marker = tmp_path / "b-ran"
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.a]\ncmd = "echo a"\n'
                              f'[tasks.b]\ncmd = "touch {marker}"\ndeps = ["a"]\n'})
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    cmd = " ".join(shlex.quote(a) for a in hazrun_cmd("-C", str(ws), "run", "b", "--no-cache"))
    proc = subprocess.run(["bash", "-c", f"{cmd} {closed}"], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and marker.exists(), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_exec_016_a_non_blocking_stdout_pipe_gets_every_line(make_ws):
    """node, ssh and some CI collectors leave stdout a non-blocking pipe: a
    reader that pauses must not lose lines (only 4,010 of 200,000 came)."""
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.a]\ncmd = "seq 1 200000"\n'})
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    r, w = os.pipe()
    os.set_blocking(w, False)
    proc = subprocess.Popen(hazrun_cmd("-C", str(ws), "run", "a", "--no-cache"), env=env,
                            stdin=subprocess.DEVNULL, stdout=w, stderr=subprocess.PIPE)
    os.close(w)
    try:
        time.sleep(0.5)  # the pipe fills up meanwhile
        with os.fdopen(r, "rb") as reader:
            out = reader.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == 0
    assert out.count(b"\n") == 200000 and out.endswith(b"[root:a] 200000\n")


def test_exec_005_a_cap_on_a_tag_no_task_carries_is_warned_about(make_ws):
    """'hevy' for 'heavy': the cap limited nothing and the heavy tasks ran
    side by side, in silence."""
    ws = make_ws({"haz.toml": '[workspace]\n[workspace.tags]\nhevy = 1\nheavy = 1\n'
                              '[tasks.a]\ncmd = "true"\ntags = ["heavy"]\n'})
    proc = run_hazrun(ws, "run", "a", "--no-cache", "--tag-cap", "havy=1")
    assert proc.returncode == 0, proc.stderr
    assert ("hazrun: warning: haz.toml: [workspace.tags]: no task carries the tag 'hevy', so its cap "
            "limits nothing (did you mean 'heavy'?)") in proc.stderr
    assert "--tag-cap: no task carries the tag 'havy'" in proc.stderr
    assert proc.stderr.count("no task carries") == 2  # not the tag that is carried

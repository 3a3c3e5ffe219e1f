"""Mutexes with real processes (MUTEX-001..007, EXEC-006): who overlaps whom,
in which order waiters go, across hazrun processes, and on cancellation.

Overlap is measured from `start LABEL ns` / `end LABEL ns` lines the tasks
append to one log.  Where a test needs a task to be waiting for a mutex, it
does not sleep and hope: with --no-cache a task's mutex request is made in
the same admission pass that spawns the tasks after it in canonical order,
so once a later "probe" task has logged its start, the waiter is waiting.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess

import psutil
import pytest

from conftest import REPO, hazrun_cmd, intervals, max_overlap, run_hazrun, timed, wait_for

q = json.dumps  # a TOML basic string with everything escaped

ROOT = '[workspace]\nmembers = ["p/*"]\n'
SHARED_DB = '{name = "db", mode = "shared"}'


def until(test: str, tries: int = 400) -> str:
    """Shell: wait (at most tries * 50 ms) until ``test`` succeeds.  Bounded
    so that a broken scheduler fails the test instead of hanging it."""
    return (f"n=0; until {test}; do n=$((n+1)); [ $n -ge {tries} ] && break; "
            "sleep 0.05; done")


def logged(log, label: str, kind: str = "start") -> str:
    """Shell test: ``log`` has a `kind LABEL` line."""
    return f"grep -q {shlex.quote(f'^{kind} {label} ')} {shlex.quote(str(log))} 2>/dev/null"


def task(name: str, body: str, log, label: str, mutex: str = "", extra: str = "") -> str:
    text = f"[tasks.{name}]\ncmd = {q(timed(label, body, log))}\n"
    if mutex:
        text += f"mutex = [{mutex}]\n"
    return text + extra


def start_hazrun(root, *args):
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    return subprocess.Popen(hazrun_cmd("-C", str(root), *args), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def finish(proc, timeout=60):
    """Wait for a hazrun started with start_hazrun; return (code, stderr)."""
    out, err = proc.communicate(timeout=timeout)
    err = err.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    return proc.returncode, err


def stop(*procs):
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def has_line(log, label, kind="start"):
    return lambda: log.exists() and any(
        line.startswith(f"{kind} {label} ") for line in log.read_text().splitlines())


def overlaps(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def summary_tasks(path):
    return {t["label"]: t for t in json.loads(path.read_text())["tasks"]}


# -- MUTEX-002: modes ------------------------------------------------------------

def test_mutex_002_exclusive_holders_never_overlap(make_ws, tmp_path):
    log = tmp_path / "x.log"
    files = {"haz.toml": ROOT}
    for i in range(4):
        files[f"p/t{i}/haz.toml"] = task("work", "sleep 0.2", log, f"t{i}", q("db"))
    # Runs until t1 holds db: only possible beside the mutex holders.
    files["p/free/haz.toml"] = task("work", until(logged(log, "t1")), log, "free")
    ws = make_ws(files)
    proc = run_hazrun(ws, "run", "work", "-j4", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    spans = intervals(log)
    assert len(spans) == 5
    assert max_overlap({k: v for k, v in spans.items() if k != "free"}) == 1
    # The untagged task was not held back by the mutex.
    assert overlaps(spans["free"], spans["t1"])


def test_mutex_002_shared_holders_overlap(make_ws, tmp_path):
    """Each reader waits until all four have started: only possible if the
    four hold "db" at the same time."""
    log = tmp_path / "s.log"
    all_started = f'[ "$(grep -c "^start " {shlex.quote(str(log))})" -ge 4 ]'
    files = {"haz.toml": ROOT}
    for i in range(4):
        files[f"p/r{i}/haz.toml"] = task("read", until(all_started), log, f"r{i}", SHARED_DB)
    ws = make_ws(files)
    proc = run_hazrun(ws, "run", "read", "-j4", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    assert max_overlap(intervals(log)) == 4


def test_mutex_002_exclusive_and_shared_never_overlap(make_ws, tmp_path):
    log = tmp_path / "xs.log"
    files = {"haz.toml": ROOT}
    for i in range(3):
        files[f"p/r{i}/haz.toml"] = task("t", "sleep 0.2", log, f"r{i}", SHARED_DB)
    for i in range(2):
        files[f"p/w{i}/haz.toml"] = task("t", "sleep 0.2", log, f"w{i}", q("db"))
    # One reader after the writers in canonical order, so they interleave.
    files["p/z/haz.toml"] = task("t", "sleep 0.2", log, "z", SHARED_DB)
    ws = make_ws(files)
    proc = run_hazrun(ws, "run", "t", "-j6", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    spans = intervals(log)
    assert len(spans) == 6
    writers = [spans["w0"], spans["w1"]]
    assert not overlaps(*writers)
    for label, span in spans.items():
        if not label.startswith("w"):
            for w in writers:
                assert not overlaps(span, w), f"{label} overlapped an exclusive holder"


def test_mutex_003_all_or_nothing(make_ws, tmp_path):
    """b wants x and y; a holds x, ay holds y: b runs only when both are
    free, never beside either holder."""
    log = tmp_path / "aon.log"
    ws = make_ws({
        "haz.toml": ROOT,
        "p/a/haz.toml": task("t", until(logged(log, "ay")), log, "a", q("x")),
        "p/b/haz.toml": task("t", "sleep 0.1", log, "b", f'{q("x")}, {q("y")}'),
        "p/ay/haz.toml": task("t", until(logged(log, "a", "end")) + "; sleep 0.2", log, "ay",
                              q("y")),
    })
    proc = run_hazrun(ws, "run", "t", "-j3", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    spans = intervals(log)
    assert overlaps(spans["a"], spans["ay"])
    assert not overlaps(spans["b"], spans["a"])
    assert not overlaps(spans["b"], spans["ay"])


def test_mutex_003_nothing_held_while_waiting(make_ws, tmp_path):
    """While b:t waits for x (held by a:t), the y it also wants is not held:
    another hazrun process takes y and finishes meanwhile."""
    log = tmp_path / "held.log"
    release = tmp_path / "release"
    ws = make_ws({
        "haz.toml": ROOT,
        "p/a/haz.toml": task("t", until(f"[ -e {release} ]"), log, "a", q("x")),
        "p/b/haz.toml": task("t", "true", log, "b", f'{q("x")}, {q("y")}'),
        # After b:t in canonical order: started once b:t is waiting.
        "p/bz/haz.toml": task("probe", "true", log, "probe"),
        "p/c/haz.toml": task("t", "true", log, "c", q("y")),
    })
    first = start_hazrun(ws, "run", "a:t", "b:t", "bz:probe", "-j3", "--no-cache")
    try:
        wait_for(has_line(log, "probe", "end"), what="b:t to wait for x")
        other = run_hazrun(ws, "run", "c:t", "--no-cache", timeout=60)
        assert other.returncode == 0, other.stderr
        assert not has_line(log, "a", "end")(), "a:t ended before c:t could run"
        release.write_text("go")
        code, err = finish(first)
        assert code == 0, err
    finally:
        stop(first)
    spans = intervals(log)
    assert spans["c"][1] < spans["a"][1] <= spans["b"][0]


# -- MUTEX-003: cache hits never take a mutex -----------------------------------

def test_mutex_003_cache_hit_never_waits_for_a_mutex(make_ws, tmp_path):
    log = tmp_path / "hit.log"
    release = tmp_path / "release"
    ws = make_ws({
        "haz.toml": ROOT,
        "p/a/haz.toml": task("build", "echo built > out.txt", log, "a", q("db"),
                             'outputs = ["out.txt"]\n'),
        "p/h/haz.toml": task("hold", until(f"[ -e {release} ]", tries=1200), log, "hold", q("db"),
                             "cache = false\n"),
    })
    summary = tmp_path / "s.json"
    first = run_hazrun(ws, "run", "a:build")
    assert first.returncode == 0, first.stderr
    holder = start_hazrun(ws, "run", "h:hold")
    try:
        wait_for(has_line(log, "hold"), what="the holder to start")
        # Another process holds "db"; the cache hit does not care.
        second = run_hazrun(ws, "run", "a:build", "--summary-json", str(summary), timeout=60)
        assert second.returncode == 0, second.stderr
        assert summary_tasks(summary)["a:build"]["state"] == "cached"
        assert holder.poll() is None and not has_line(log, "hold", "end")()
        release.write_text("go")
        code, err = finish(holder)
        assert code == 0, err
    finally:
        release.write_text("go")
        stop(holder)
    # a:build ran once only: the second run restored it.
    assert sum(l.startswith("start a ") for l in log.read_text().splitlines()) == 1


def opened(proc, path) -> bool:
    """hazrun ``proc`` has ``path`` open: it has asked for that lock."""
    try:
        return any(f.path == str(path) for f in psutil.Process(proc.pid).open_files())
    except psutil.Error:
        return False


def test_mutex_003_mutex_taken_only_after_a_miss(make_ws, tmp_path):
    """The same task, changed so that its key misses, now waits for the
    holder in the other process."""
    log = tmp_path / "miss.log"
    release = tmp_path / "release"
    ws = make_ws({
        "haz.toml": ROOT,
        "p/a/haz.toml": task("build", "echo built > out.txt", log, "a", q("db"),
                             'outputs = ["out.txt"]\n'),
        "p/a/src.txt": "v1\n",
        "p/h/haz.toml": task("hold", until(f"[ -e {release} ]", tries=1200), log, "hold",
                             q("db"), "cache = false\n"),
    })
    assert run_hazrun(ws, "run", "a:build").returncode == 0
    (ws / "p/a/src.txt").write_text("v2\n")  # an input changed: a miss
    holder = start_hazrun(ws, "run", "h:hold")
    second = None
    try:
        wait_for(has_line(log, "hold"), what="the holder to start")
        second = start_hazrun(ws, "run", "a:build")
        # The lock file is opened only when the task asks for db.
        wait_for(lambda: opened(second, ws / ".haz" / "locks" / "db.lock"),
                 what="a:build to ask for db")
        assert not has_line(log, "hold", "end")()
        release.write_text("go")
        code, err = finish(second)
        assert code == 0, err
        assert finish(holder)[0] == 0
    finally:
        release.write_text("go")
        stop(holder, *([second] if second else []))
    starts = [int(l.split()[2]) for l in log.read_text().splitlines() if l.startswith("start a ")]
    assert len(starts) == 2
    assert starts[1] >= intervals(log)["hold"][1]


# -- EXEC-006: a waiter gives its slot back -----------------------------------------

def test_exec_006_mutex_waiter_gives_its_slot_back(make_ws, tmp_path):
    """-j2: a:t holds db, b:t waits for it; c:t (no mutex) runs meanwhile on
    the slot b:t gave back.  a:t ends only once c:t has started."""
    log = tmp_path / "slot.log"
    ws = make_ws({
        "haz.toml": ROOT,
        "p/a/haz.toml": task("t", until(logged(log, "c")), log, "a", q("db")),
        "p/b/haz.toml": task("t", "true", log, "b", q("db")),
        "p/c/haz.toml": task("t", "true", log, "c"),
    })
    proc = run_hazrun(ws, "run", "t", "-j2", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    spans = intervals(log)
    assert spans["c"][0] < spans["a"][1], "c:t waited behind a task waiting for a mutex"
    assert spans["b"][0] >= spans["a"][1]


def test_exec_006_waiter_takes_its_slot_back_first(make_ws, tmp_path):
    """-j2: when a:t releases db, b:t (waiting) gets the freed slot before
    d:t, which was ready but not admitted.  c:t keeps the other slot until
    b:t has started."""
    log = tmp_path / "slot2.log"
    ws = make_ws({
        "haz.toml": ROOT,
        "p/a/haz.toml": task("t", until(logged(log, "c")), log, "a", q("db")),
        "p/b/haz.toml": task("t", "sleep 0.3", log, "b", q("db")),
        "p/c/haz.toml": task("t", until(logged(log, "b")), log, "c"),
        "p/d/haz.toml": task("t", "true", log, "d"),
    })
    proc = run_hazrun(ws, "run", "t", "-j2", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    spans = intervals(log)
    assert spans["b"][0] < spans["d"][0]
    assert max_overlap(spans) <= 2


# -- MUTEX-005: fairness ---------------------------------------------------------

def test_mutex_005_waiters_granted_in_canonical_order(make_ws, tmp_path):
    """z:t starts waiting before b:t, but b:t comes first in canonical order
    and so gets db first."""
    log = tmp_path / "fair.log"
    ws = make_ws({
        "haz.toml": ROOT,
        # Holds db until b:t is waiting (its sibling probe has started).
        "p/a/haz.toml": task("hold", until(logged(log, "probe")), log, "hold", q("db")),
        "p/b/haz.toml": (task("pre", "sleep 0.2", log, "pre")
                         + task("t", "true", log, "b", q("db"), 'deps = ["pre"]\n')
                         + task("u", "true", log, "probe", extra='deps = ["pre"]\n')),
        "p/z/haz.toml": task("t", "true", log, "z", q("db")),
    })
    proc = run_hazrun(ws, "run", "a:hold", "b:t", "b:u", "z:t", "-j4", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    spans = intervals(log)
    assert spans["z"][0] >= spans["hold"][1]
    assert spans["b"][0] < spans["z"][0]


def test_mutex_005_exclusive_waiter_not_overtaken_by_later_shared(make_ws, tmp_path):
    """b:e (exclusive) waits for a:s1 (shared).  a:s2 (shared) asks later; it
    comes before b:e in canonical order and is compatible with a:s1, but it
    must not overtake the waiting exclusive request."""
    log = tmp_path / "fair2.log"
    ws = make_ws({
        "haz.toml": ROOT,
        "p/a/haz.toml": (task("pre", "sleep 0.2", log, "pre")
                         + task("s1", until(logged(log, "probe")), log, "s1", SHARED_DB)
                         + task("s2", "true", log, "s2", SHARED_DB, 'deps = ["pre"]\n')
                         + task("t_probe", "true", log, "probe", extra='deps = ["pre"]\n')),
        "p/b/haz.toml": task("e", "sleep 0.2", log, "e", q("db")),
    })
    proc = run_hazrun(ws, "run", "a:s1", "a:s2", "a:t_probe", "b:e", "-j5", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    spans = intervals(log)
    assert spans["e"][0] >= spans["s1"][1]
    assert spans["s2"][0] >= spans["e"][1], "a later shared request overtook b:e"


# -- MUTEX-006: across hazrun processes ------------------------------------------------

def test_mutex_006_two_processes_never_overlap(make_ws, tmp_path):
    """Two hazrun processes on one workspace, different targets sharing db.
    a:t1 holds db until b:t1 (in the other process) is waiting for it."""
    log = tmp_path / "procs.log"
    ws = make_ws({
        "haz.toml": ROOT,
        "p/a/haz.toml": (task("t1", until(logged(log, "bprobe")), log, "a1", q("db"))
                         + task("t2", "sleep 0.2", log, "a2", q("db"))),
        "p/b/haz.toml": (task("t1", "sleep 0.2", log, "b1", q("db"))
                         + task("t2", "sleep 0.2", log, "b2", q("db"))
                         + task("zprobe", "true", log, "bprobe")),
    })
    first = start_hazrun(ws, "run", "a:t1", "a:t2", "-j2", "--no-cache")
    second = None
    try:
        wait_for(has_line(log, "a1"), what="a:t1 to hold db")
        second = start_hazrun(ws, "run", "b:t1", "b:t2", "b:zprobe", "-j3", "--no-cache")
        assert finish(first)[0] == 0
        assert finish(second)[0] == 0
    finally:
        stop(first, *([second] if second else []))
    spans = intervals(log)
    spans.pop("bprobe")
    assert len(spans) == 4
    assert max_overlap(spans) == 1
    assert spans["b1"][0] >= spans["a1"][1]


def test_mutex_006_a_name_too_long_for_a_file_name_still_locks_across_processes(
        make_ws, tmp_path):
    """Its lock file's name is cut and told apart by a digest: it used to
    fail with ENAMETOOLONG and turn the lock files off for the whole run,
    so db no longer excluded the other process either."""
    log = tmp_path / "long.log"
    long_name = "\u6570" * 30 + "-" + "x" * 200  # 290 bytes quoted as %E6%95%B0...
    ws = make_ws({
        "haz.toml": ROOT,
        "p/a/haz.toml": (task("long", "true", log, "along", q(long_name))
                         + task("t1", until(logged(log, "bprobe")), log, "a1", q("db"),
                                'deps = ["long"]\n')),
        "p/b/haz.toml": (task("t1", "sleep 0.2", log, "b1", q("db"))
                         + task("long", "true", log, "blong", q(long_name))
                         + task("zprobe", "true", log, "bprobe")),
    })
    first = start_hazrun(ws, "run", "a:t1", "-j2", "--no-cache")
    second = None
    try:
        wait_for(has_line(log, "a1"), what="a:t1 to hold db")
        second = start_hazrun(ws, "run", "b:t1", "b:long", "b:zprobe", "-j3", "--no-cache")
        code1, err1 = finish(first)
        code2, err2 = finish(second)
    finally:
        stop(first, *([second] if second else []))
    assert code1 == 0 and code2 == 0, err1 + err2
    assert "cannot be used" not in err1 + err2
    spans = intervals(log)
    assert spans["b1"][0] >= spans["a1"][1]
    names = [p.name for p in (ws / ".haz/locks").iterdir()]
    assert "db.lock" in names
    long_files = [n for n in names if "%%" in n]
    assert len(long_files) == 1 and len(long_files[0].encode()) <= 255


def test_mutex_006_shared_across_processes(make_ws, tmp_path):
    """Shared holders in two processes hold db at the same time."""
    log = tmp_path / "sh.log"
    ws = make_ws({
        "haz.toml": ROOT,
        "p/a/haz.toml": task("r", until(logged(log, "b")), log, "a", SHARED_DB),
        "p/b/haz.toml": task("r", "true", log, "b", SHARED_DB),
    })
    first = start_hazrun(ws, "run", "a:r", "--no-cache")
    try:
        wait_for(has_line(log, "a"), what="a:r to hold db")
        other = run_hazrun(ws, "run", "b:r", "--no-cache", timeout=60)
        assert other.returncode == 0, other.stderr
        assert finish(first)[0] == 0
    finally:
        stop(first)
    spans = intervals(log)
    assert overlaps(spans["a"], spans["b"])


def _descendants(pid):
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def test_mutex_006_killed_holder_releases_its_lock(make_ws, tmp_path):
    """hazrun A holds db for a task that sleeps; A and that task's process
    group are killed with SIGKILL; hazrun B, waiting for db, then runs."""
    log = tmp_path / "kill.log"
    pidfile = tmp_path / "hold.pid"
    ws = make_ws({
        "haz.toml": ROOT,
        "p/a/haz.toml": task("hold", f"echo $$ > {pidfile}; sleep 1000", log, "hold", q("db")),
        "p/b/haz.toml": (task("t", "true", log, "b", q("db"))
                         + task("zprobe", "true", log, "probe")),
    })
    holder = start_hazrun(ws, "run", "a:hold", "--no-cache")
    waiter = None
    left = []
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the holder")
        task_pid = int(pidfile.read_text())
        left = _descendants(holder.pid)  # the task and hazrun's watchdog
        waiter = start_hazrun(ws, "run", "b:t", "b:zprobe", "-j2", "--no-cache")
        wait_for(has_line(log, "probe", "end"), what="b:t to wait for db")
        assert not has_line(log, "b")()
        holder.kill()
        holder.wait()
        os.killpg(task_pid, signal.SIGKILL)
        code, err = finish(waiter)
        assert code == 0, err
        assert has_line(log, "b", "end")()
    finally:
        stop(holder, *([waiter] if waiter else []))
        # Orphaned by A's death, so not ours to reap: wait for them to go
        # (the watchdog exits once it has ended A's groups), else kill them.
        gone, alive = psutil.wait_procs(left, timeout=15)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass


# -- MUTEX-007: cancellation --------------------------------------------------------

def test_mutex_007_waiter_cancelled_never_starts(make_ws, tmp_path):
    log = tmp_path / "cancel.log"
    ran = tmp_path / "b-ran"
    ws = make_ws({
        "haz.toml": ROOT,
        "p/a/haz.toml": task("t", "sleep 1000", log, "a", q("db")),
        "p/b/haz.toml": task("t", f"touch {ran}", log, "b", q("db")),
        "p/c/haz.toml": task("t", "sleep 1000", log, "c"),
    })
    summary = tmp_path / "s.json"
    proc = start_hazrun(ws, "run", "t", "-j2", "--no-cache", "--grace", "2",
                        "--summary-json", str(summary))
    try:
        # c:t comes after b:t: once it runs, b:t is waiting for db.
        wait_for(has_line(log, "c"), what="c:t to start")
        proc.send_signal(signal.SIGINT)
        code, err = finish(proc)
    finally:
        stop(proc)
    assert code == 130
    tasks = summary_tasks(summary)
    assert (tasks["b:t"]["state"], tasks["b:t"]["cause"]) == ("cancelled", "not_started")
    assert tasks["b:t"]["exit_code"] is None
    for label in ("a:t", "c:t"):
        assert (tasks[label]["state"], tasks[label]["cause"]) == ("cancelled", "signalled")
    assert not ran.exists() and not has_line(log, "b")()


# -- MUTEX-004: release ------------------------------------------------------------

def test_mutex_004_held_until_the_whole_tree_has_exited(make_ws, tmp_path):
    """a:t's shell exits at once, leaving a background child that, when
    stopped at task end, takes a while to exit.  b:t gets db only after
    that child has gone."""
    log = tmp_path / "tree.log"
    child = (f"trap 'sleep 0.3; echo \"end bg $(date +%s%N)\" >> {log}; exit 0' TERM; "
             "while true; do sleep 0.05; done")
    ws = make_ws({
        "haz.toml": ROOT,
        "p/a/haz.toml": task("t", f"sh -c {shlex.quote(child)} >/dev/null 2>&1 & true", log, "a",
                             q("db")),
        "p/b/haz.toml": task("t", "true", log, "b", q("db")),
    })
    proc = run_hazrun(ws, "run", "t", "-j2", "--no-cache", "--grace", "10")
    assert proc.returncode == 0, proc.stderr
    assert "left processes running" in proc.stderr
    bg_end = [int(l.split()[2]) for l in log.read_text().splitlines() if l.startswith("end bg ")]
    assert bg_end, "the background child never saw its SIGTERM"
    spans = intervals(log)
    assert spans["b"][0] >= bg_end[0]


@pytest.mark.parametrize("how", ["fails", "times out"])
def test_mutex_004_released_whatever_the_outcome(make_ws, tmp_path, how):
    log = tmp_path / "outcome.log"
    a = (task("t", "exit 3", log, "a", q("db")) if how == "fails" else
         task("t", "sleep 1000", log, "a", q("db"), "timeout = 0.5\n"))
    ws = make_ws({
        "haz.toml": ROOT,
        "p/a/haz.toml": a,
        "p/b/haz.toml": task("t", "true", log, "b", q("db")),
    })
    summary = tmp_path / "s.json"
    proc = run_hazrun(ws, "run", "t", "-j2", "--no-cache", "--grace", "1",
                      "--summary-json", str(summary), timeout=60)
    assert proc.returncode == 1
    tasks = summary_tasks(summary)
    assert tasks["a:t"]["state"] == "failed"
    assert tasks["b:t"]["state"] == "succeeded"


def test_mutex_004_group_task_holds_no_mutex(make_ws, tmp_path):
    """A task without cmd (a group of deps) runs no process, so a mutex it
    declares is never left held: y:t, which wants it too, still runs."""
    ws = make_ws({
        "haz.toml": '[workspace]\n'
                    '[tasks.x]\ncmd = "true"\n'
                    '[tasks.g]\ndeps = ["x"]\nmutex = ["db"]\n'
                    '[tasks.y]\ncmd = "echo y ran"\nmutex = ["db"]\ndeps = ["g"]\n',
    })
    proc = run_hazrun(ws, "run", "y", "--no-cache", timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "[root:y] y ran" in proc.stdout


# -- MUTEX-001 / CLI: mutexes and tags are shown ---------------------------------------

def test_mutex_001_list_and_graph_show_mutexes_and_tags(make_ws):
    ws = make_ws({
        "haz.toml": ROOT,
        "p/api/haz.toml": '[tasks.itest]\ncmd = "true"\ntags = ["slow"]\nmutex = ["db"]\n'
                          '[tasks.fixtures]\ncmd = "true"\n'
                          'mutex = [{name = "fixtures", mode = "shared"}, "db"]\n',
    })
    listing = run_hazrun(ws, "list")
    assert listing.returncode == 0, listing.stderr
    assert "api:itest" in listing.stdout
    lines = {l.split()[0]: l for l in listing.stdout.splitlines() if l.startswith("  api:")}
    assert "[tags: slow; mutex: db]" in lines["api:itest"]
    assert "mutex: fixtures (shared), db" in lines["api:fixtures"]
    graph = run_hazrun(ws, "graph")
    assert graph.returncode == 0, graph.stderr
    lines = {l.split()[0]: l for l in graph.stdout.splitlines()}
    assert "[tags: slow; mutex: db]" in lines["api:itest"]
    assert "mutex: fixtures (shared), db" in lines["api:fixtures"]


def test_exec_006_waiter_gets_a_token_from_make_first(make_ws, tmp_path):
    """Under a make jobserver: b:t waits for db (held by another process)
    and has no token; d:t is ready but not admitted.  Once db is free, the
    next token make hands out goes to b:t, not to d:t."""
    import sys
    import threading

    from hazrun import load_workspace
    from hazrun.jobserver import JobserverAuth, JobserverClient
    from hazrun.output import RunObserver
    from hazrun.scheduler import RunOptions, run_graph

    c_go = tmp_path / "c-go"
    ws = make_ws({
        "haz.toml": ROOT,
        "p/b/haz.toml": '[tasks.t]\ncmd = "true"\nmutex = ["db"]\n',
        # c:t runs on the implicit token until the test lets it end.
        "p/c/haz.toml": f'[tasks.t]\ncmd = {q(until(f"[ -e {c_go} ]"))}\n',
        "p/d/haz.toml": '[tasks.t]\ncmd = "true"\n',
    })
    lock = ws / ".haz" / "locks" / "db.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys\n"
         f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.lockf(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    r, w = os.pipe()  # make's pool, empty: hazrun has only its implicit token
    client = JobserverClient(JobserverAuth(read_fd=r, write_fd=w))
    started = []
    first = threading.Event()

    class Observer(RunObserver):
        def task_started(self, label):
            started.append(label)
            if label in ("b:t", "d:t"):
                first.set()

    outcome = []
    runner = threading.Thread(target=lambda: outcome.append(run_graph(
        load_workspace(ws), ["t"], Observer(),
        RunOptions(jobs=4, no_cache=True, jobserver=client))))
    try:
        assert holder.stdout.readline() == b"locked\n"
        runner.start()
        wait_for(lambda: "c:t" in started, what="c:t to start")
        holder.stdin.close()
        holder.wait(timeout=30)  # db is free
        os.write(w, b"+")        # make hands out one token
        assert first.wait(30), "neither b:t nor d:t started"
        assert [l for l in started if l != "c:t"][0] == "b:t", started
    finally:
        c_go.write_text("go")
        runner.join(60)
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        client.close()
        os.close(r)
        os.close(w)
    assert not runner.is_alive()
    assert all(res.state.value == "succeeded" for res in outcome[0].results.values())


def test_mutex_004_a_daemon_that_left_the_task_holds_its_mutex_until_stopped(make_ws, tmp_path):
    """a starts a daemon (setsid, its parent exits) and ends; the daemon is
    part of a's tree (EXEC-014): it is stopped when a ends, and b, which
    needs the same mutex, starts only after that."""
    log = tmp_path / "log"
    daemon = (f"(setsid sh -c 'trap \\\"echo daemon stopped >> {log}; exit 0\\\" TERM; "
              f"echo daemon up >> {log}; while :; do sleep 0.05; done' "
              f"< /dev/null > /dev/null 2>&1 &); "
              f"until grep -q up {log} 2>/dev/null; do sleep 0.05; done")
    ws = make_ws({"haz.toml": '[workspace]\nmembers = ["p/*"]\n',
                  "p/a/haz.toml": f'[tasks.work]\ncmd = "{daemon}"\nmutex = ["res"]\n',
                  "p/b/haz.toml": f'[tasks.work]\ncmd = "echo b runs >> {log}"\n'
                                  'mutex = ["res"]\n'})
    proc = run_hazrun(ws, "run", "work", "-j2", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().splitlines() == ["daemon up", "daemon stopped", "b runs"]
    assert "a:work: its command exited but left processes running" in proc.stderr


def test_cli_001_time_saved_is_the_commands_not_its_wait_for_a_mutex(make_ws, tmp_path):
    """zquick waits for aslow's mutex, then runs at once: a hit of it saves
    its own run time, not the wait (it said "saved 2.01s")."""
    ws = make_ws({"haz.toml": '[workspace]\n'
                              '[tasks.aslow]\ncmd = "sleep 1"\nmutex = ["db"]\n'
                              'inputs = ["haz.toml"]\n'
                              '[tasks.zquick]\ncmd = "true"\nmutex = ["db"]\n'
                              'inputs = ["haz.toml"]\n'})
    first = tmp_path / "first.json"
    assert run_hazrun(ws, "run", "aslow", "zquick", "-j2", "--summary-json",
                      str(first)).returncode == 0
    ran = {t["label"]: t for t in json.loads(first.read_text())["tasks"]}
    second = run_hazrun(ws, "run", "zquick")
    assert "1 cached" in second.stderr, second.stderr
    saved = re.search(r"saved ([0-9.]+)s by the cache", second.stderr)
    assert saved is None or float(saved.group(1)) < ran["root:aslow"]["duration_s"] / 2


def test_mutex_006_two_runs_in_one_process_exclude_each_other(make_ws, tmp_path):
    """The library: two run_graph calls in two threads on one workspace.
    The lock is the open file's (flock), not the process's (lockf), so the
    second run waits for the first one's holder."""
    import threading

    from hazrun import load_workspace
    from hazrun.output import RunObserver
    from hazrun.scheduler import RunOptions, run_graph

    log = tmp_path / "log"
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.use]\n'
                              f'cmd = "echo start >> {log}; sleep 0.3; echo end >> {log}"\n'
                              'mutex = ["db"]\n'})
    workspace = load_workspace(ws)
    runs = [threading.Thread(target=run_graph, args=(workspace, ["use"], RunObserver(),
                                                    RunOptions(no_cache=True)))
            for _ in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join(60)
    assert log.read_text().split() == ["start", "end", "start", "end"]


def test_mutex_007_fail_fast_spawn_error_among_granted_waiters(make_ws, tmp_path):
    """EXEC-009/010, MUTEX-007: a waiter that cannot be spawned, granted in
    the same pass as another waiter under --fail-fast, stops the run; the
    other waiter, final already, is not granted after it (it used to be,
    and the run ended in a traceback with no summary)."""
    root = make_ws({"haz.toml": """
        [workspace]
        [tasks.h]
        cmd = "sleep 0.3"
        mutex = ["a", "b"]
        [tasks.w1]
        cmd = ["/nonexistent/prog"]
        mutex = ["a"]
        [tasks.w2]
        cmd = "echo w2"
        mutex = ["b"]
        """})
    summary = tmp_path / "s.json"
    r = run_hazrun(root, "run", "h", "w1", "w2", "-j", "3", "--fail-fast", "--no-cache",
                   "--summary-json", str(summary))
    assert r.returncode == 1, r.stderr
    states = {t["label"]: (t["state"], t["cause"]) for t in json.loads(summary.read_text())["tasks"]}
    assert states == {"root:h": ("succeeded", None), "root:w1": ("failed", "spawn_error"),
                      "root:w2": ("cancelled", "not_started")}
    assert "w2" not in r.stdout

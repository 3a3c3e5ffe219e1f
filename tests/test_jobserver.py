"""Make integration (JOBS-001, JOBS-002): hazrun as a client of a make
jobserver -- a fake one whose tokens the test counts, and real GNU make --
and hazrun's own ``--jobserver`` serving nested make.

Concurrency is measured from timestamps the tasks log (``timed``) and
asserted as overlap counts, never as durations.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import REPO, hazrun_cmd, intervals, max_overlap, timed, wait_for

from hazrun.jobserver import JobserverAuth, JobserverError, parse_makeflags

q = json.dumps  # a TOML basic string with everything escaped

ROOT = '[workspace]\nmembers = ["p/*"]\n'

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")


# -- helpers ------------------------------------------------------------------

def base_env(**extra):
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKE_TERMOUT", "MAKE_TERMERR"):
        env.pop(name, None)
    env.update(extra)
    return env


def start_hazrun(root, *args, makeflags=None, pass_fds=()):
    env = base_env() if makeflags is None else base_env(MAKEFLAGS=makeflags)
    return subprocess.Popen(hazrun_cmd("-C", str(root), *args), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, pass_fds=pass_fds)


def finish(proc, timeout=90):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    return proc.returncode, out.decode("utf-8", "replace"), err


def drain(fd) -> bytes:
    """Every token in the pool now, read without blocking."""
    os.set_blocking(fd, False)
    got = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return got
        if not chunk:
            return got
        got += chunk


@contextmanager
def fifo_pool(tmp_path, tokens: bytes):
    """A fake make 4.4 jobserver: a named fifo holding ``tokens``.  The test
    keeps it open, as make does, so the tokens outlive hazrun's own open."""
    path = tmp_path / "jobserver.fifo"
    os.mkfifo(path, 0o600)
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    os.write(fd, tokens)
    try:
        yield f"-j{len(tokens) + 1} --jobserver-auth=fifo:{path}", fd
    finally:
        os.close(fd)


@contextmanager
def pipe_pool(tokens: bytes):
    """A fake make 4.3 jobserver: a pipe holding ``tokens`` whose two fds
    hazrun inherits, named as ``--jobserver-auth=R,W``."""
    r, w = os.pipe()
    os.write(w, tokens)
    try:
        yield f"-j{len(tokens) + 1} --jobserver-auth={r},{w}", r, (r, w)
    finally:
        os.close(r)
        os.close(w)


def independent(make_ws, log, n, body="sleep 0.6", task="work"):
    """``n`` projects t0..t{n-1}, each with one timed task, no edges."""
    files = {"haz.toml": ROOT}
    for i in range(n):
        files[f"p/t{i}/haz.toml"] = f'[tasks.{task}]\ncmd = {q(timed(f"t{i}", body, log))}\n'
    return make_ws(files)


def barrier(log, n):
    """A task body that waits (at most 15 s) until ``n`` tasks have logged
    their start: they all overlap if hazrun lets them, and the run just
    ends without overlap, instead of hanging, if it does not."""
    return (f'i=0; while [ "$(grep -c ^start {log})" -lt {n} ] && [ $i -lt 300 ]; '
            'do sleep 0.05; i=$((i+1)); done')


def starts(log) -> int:
    try:
        return sum(1 for line in Path(log).read_text().splitlines() if line.startswith("start"))
    except FileNotFoundError:
        return 0


def warnings(err):
    return [line for line in err.splitlines() if line.startswith("hazrun: warning:")]


@pytest.fixture
def wrapper(tmp_path):
    """A ``hazrun`` executable for Makefiles: this checkout, this Python."""
    path = tmp_path / "bin" / "hazrun"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\n"
                    f"PYTHONPATH={shlex.quote(str(REPO))} "
                    f'exec {shlex.quote(sys.executable)} -m hazrun "$@"\n')
    path.chmod(0o755)
    return path


def run_make(directory, *args, timeout=120):
    proc = subprocess.run(["make", "--no-print-directory", *args], cwd=str(directory),
                          env=base_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout)
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    return proc.returncode, out, err


def nested_makefile(log, jobs):
    """A Makefile of ``jobs`` independent targets n0.. that log their spans."""
    names = [f"n{i}" for i in range(jobs)]
    rules = [f".PHONY: all {' '.join(names)}", f"all: {' '.join(names)}"]
    for name in names:
        rules.append(f"{name}:\n\t@{timed(name, 'sleep 0.5', log).replace('$', '$$')}")
    return "\n".join(rules) + "\n"


# -- MAKEFLAGS ----------------------------------------------------------------

@pytest.mark.parametrize("flags,expected", [
    (" -j2 --jobserver-auth=3,4", JobserverAuth(read_fd=3, write_fd=4)),
    ("k -j2 --jobserver-auth=3,4 -- FOO=n", JobserverAuth(read_fd=3, write_fd=4)),
    ("-j3 --jobserver-auth=fifo:/tmp/GMfifo1", JobserverAuth(fifo="/tmp/GMfifo1")),
    (" -j2 --jobserver-fds=5,6", JobserverAuth(read_fd=5, write_fd=6)),
    (" -j1", None),
    (" -j", None),
    ("", None),
    ("n -j2 --jobserver-auth=3,4", None),      # make -n
    ("ns -j2 --jobserver-auth=3,4", None),     # make -sn
    (" -j2 --jobserver-auth=-2,-2", None),     # make's "no jobserver for you"
])
def test_jobs_001_parse_makeflags(flags, expected):
    assert parse_makeflags(flags) == expected


@pytest.mark.parametrize("auth", ["99999999999999999999,4", "\u00b3,4", "3,\u0664"])
def test_jobs_001_fds_no_system_call_takes_are_an_error_not_a_crash(auth):
    with pytest.raises(JobserverError, match="cannot read"):
        parse_makeflags(f"-j2 --jobserver-auth={auth}")


def test_jobs_001_parse_makeflags_garbage_is_an_error():
    with pytest.raises(JobserverError, match="cannot read"):
        parse_makeflags("-j2 --jobserver-auth=three,four")


# -- a fake jobserver: tokens counted ---------------------------------------------

def test_jobs_001_fifo_pool_bounds_overlap_and_tokens_return(make_ws, tmp_path):
    k = 2
    log = tmp_path / "spans.log"
    ws = independent(make_ws, log, n=6)
    with fifo_pool(tmp_path, b"ab") as (flags, fd):
        rc, _out, err = finish(start_hazrun(ws, "run", "work", "-j8", "--no-cache",
                                            makeflags=flags))
        back = drain(fd)
    assert rc == 0, err
    assert not warnings(err), err
    spans = intervals(log)
    assert len(spans) == 6
    # One task on the implicit token, one per token: K+1 at once, never more.
    assert max_overlap(spans) == k + 1
    assert sorted(back) == sorted(b"ab"), "tokens not given back as they were taken"


def test_jobs_001_pipe_pool_bounds_overlap_and_tokens_return(make_ws, tmp_path):
    k = 1
    log = tmp_path / "spans.log"
    ws = independent(make_ws, log, n=4)
    with pipe_pool(b"+") as (flags, r, fds):
        rc, _out, err = finish(start_hazrun(ws, "run", "work", "-j8", "--no-cache",
                                            makeflags=flags, pass_fds=fds))
        back = drain(r)
    assert rc == 0, err
    assert not warnings(err), err
    assert max_overlap(intervals(log)) == k + 1
    assert back == b"+"


def test_jobs_001_empty_pool_runs_one_at_a_time(make_ws, tmp_path):
    log = tmp_path / "spans.log"
    ws = independent(make_ws, log, n=3, body="sleep 0.3")
    with pipe_pool(b"") as (flags, r, fds):
        rc, _out, err = finish(start_hazrun(ws, "run", "work", "-j8", "--no-cache",
                                            makeflags=flags, pass_fds=fds))
        back = drain(r)
    assert rc == 0, err
    assert max_overlap(intervals(log)) == 1
    assert back == b""


def test_jobs_001_j_still_caps_under_a_jobserver(make_ws, tmp_path):
    log = tmp_path / "spans.log"
    ws = independent(make_ws, log, n=4, body="sleep 0.4")
    with fifo_pool(tmp_path, b"+++") as (flags, fd):
        rc, _out, err = finish(start_hazrun(ws, "run", "work", "-j2", "--no-cache",
                                            makeflags=flags))
        back = drain(fd)
    assert rc == 0, err
    assert max_overlap(intervals(log)) == 2
    assert back == b"+++"


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                      (signal.SIGKILL, -signal.SIGKILL)])
@pytest.mark.parametrize("form", ["fifo", "pipe"])
def test_jobs_001_tokens_return_after_signal(make_ws, tmp_path, form, sig, code):
    """Every token comes back, the same bytes; after SIGKILL (the OOM killer,
    kill -9) hazrun cannot give them back, so its watchdog does, once it
    has ended the tasks (make ran the rest of its build with fewer slots,
    and said so at its end)."""
    k = 2
    log = tmp_path / "spans.log"
    ws = independent(make_ws, log, n=6, body="sleep 60")
    pool = fifo_pool(tmp_path, b"+-") if form == "fifo" else pipe_pool(b"+-")
    with pool as opened:
        if form == "fifo":
            flags, fd = opened
            fds = ()
        else:
            flags, fd, fds = opened
        proc = start_hazrun(ws, "run", "work", "-j8", "--no-cache", "--grace", "1",
                            makeflags=flags, pass_fds=fds)
        try:
            wait_for(lambda: starts(log) == k + 1, what="K+1 tasks to start")
            proc.send_signal(sig)
        finally:
            rc, _out, err = finish(proc)
        back = drain(fd)
        deadline = time.monotonic() + 30
        while len(back) < k and time.monotonic() < deadline:  # the watchdog's
            time.sleep(0.05)
            back += drain(fd)
    assert rc == code, err
    assert starts(log) == k + 1, "a task started beyond the tokens"
    assert sorted(back) == sorted(b"+-"), \
        f"tokens lost on {signal.Signals(sig).name}: {back!r}"


@pytest.mark.parametrize("fail_fast", [False, True])
def test_jobs_001_tokens_return_after_a_failure(make_ws, tmp_path, fail_fast):
    log = tmp_path / "spans.log"
    files = {"haz.toml": ROOT,
             "p/a/haz.toml": f'[tasks.work]\ncmd = {q(timed("a", "sleep 0.2; exit 3", log))}\n',
             "p/b/haz.toml": '[project]\ndeps = ["a"]\n'
                             f'[tasks.work]\ncmd = {q(timed("b", "true", log))}\n'
                             'deps = ["^work"]\n'}
    for i in range(4):
        files[f"p/t{i}/haz.toml"] = f'[tasks.work]\ncmd = {q(timed(f"t{i}", "sleep 0.5", log))}\n'
    ws = make_ws(files)
    summary = tmp_path / "s.json"
    args = ["run", "work", "-j8", "--no-cache", "--summary-json", str(summary)]
    with fifo_pool(tmp_path, b"++") as (flags, fd):
        rc, _out, err = finish(start_hazrun(ws, *args, *(["--fail-fast"] if fail_fast else []),
                                            makeflags=flags))
        back = drain(fd)
    assert rc == 1, err
    assert back == b"++"
    spans = {k: v for k, v in intervals(log).items() if v[1] is not None}
    assert max_overlap(spans) <= 3
    tasks = {t["label"]: t for t in json.loads(summary.read_text())["tasks"]}
    assert (tasks["a:work"]["state"], tasks["a:work"]["cause"]) == ("failed", "exit_code")
    assert tasks["b:work"]["state"] == "skipped"


def test_jobs_001_dry_run_flag_in_makeflags_means_no_jobserver(make_ws, tmp_path):
    """``make -n`` runs '+' lines anyway; hazrun then leaves make's pool
    alone and runs on its own -j."""
    log = tmp_path / "spans.log"
    ws = independent(make_ws, log, n=3, body=barrier(log, 3))
    with fifo_pool(tmp_path, b"+") as (flags, fd):
        rc, _out, err = finish(start_hazrun(ws, "run", "work", "-j3", "--no-cache",
                                            makeflags="n " + flags))
        back = drain(fd)
    assert rc == 0, err
    assert not warnings(err), err
    assert max_overlap(intervals(log)) == 3  # beyond the 1 token + implicit
    assert back == b"+"


def test_jobs_001_no_jobserver_option_ignores_makeflags(make_ws, tmp_path):
    log = tmp_path / "spans.log"
    ws = independent(make_ws, log, n=3, body=barrier(log, 3))
    with fifo_pool(tmp_path, b"") as (flags, fd):
        rc, _out, err = finish(start_hazrun(ws, "run", "work", "-j3", "--no-cache",
                                            "--no-jobserver", makeflags=flags))
        back = drain(fd)
    assert rc == 0, err
    assert max_overlap(intervals(log)) == 3
    assert back == b""


@pytest.mark.parametrize("how", ["--no-jobserver", "unusable"])
def test_jobs_002_tasks_are_not_told_of_a_jobserver_they_cannot_use(make_ws, tmp_path, how):
    """Ignored or unusable, make's jobserver is not passed on: nor is its
    name in the tasks' MAKEFLAGS, where a nested make warned it was
    unavailable.  The rest of MAKEFLAGS stays."""
    seen = tmp_path / "makeflags"
    show = 'printf %s "$MAKEFLAGS" > ' + str(seen)
    ws = make_ws({"haz.toml": ROOT, "p/a/haz.toml": f'[tasks.show]\ncmd = {q(show)}\n'})
    args = ["--no-jobserver"] if how == "--no-jobserver" else []
    rc, _out, err = finish(start_hazrun(ws, "run", "show", "--no-cache", *args,
                                        makeflags="ks -j8 --jobserver-auth=97,98 -- FOO=bar"))
    assert rc == 0, err
    assert seen.read_text() == "ks -- FOO=bar"


# -- an unusable jobserver: one warning with the fix, and the run goes on -------

@pytest.mark.parametrize("flags", [
    "-j2 --jobserver-auth=97,98",                      # fds make did not pass
    "-j2 --jobserver-auth=fifo:{tmp}/no-such-fifo",    # a fifo that is gone
    "-j2 --jobserver-auth=fifo:{tmp}/regular-file",    # not a fifo at all
])
def test_jobs_001_unusable_jobserver_warns_once(make_ws, tmp_path, flags):
    (tmp_path / "regular-file").write_text("")
    log = tmp_path / "spans.log"
    ws = independent(make_ws, log, n=3, body=barrier(log, 3))
    rc, out, err = finish(start_hazrun(ws, "run", "work", "-j3", "--no-cache",
                                       makeflags=flags.format(tmp=tmp_path)))
    assert rc == 0, err
    found = warnings(err)
    assert len(found) == 1, err
    assert "'+'" in found[0] and "+hazrun run" in found[0], found[0]
    assert "running without it" in found[0]
    # As if there were none: -j3 alone decides.
    assert max_overlap(intervals(log)) == 3


@needs_make
def test_jobs_001_recipe_without_plus_warns_with_the_fix(make_ws, tmp_path, wrapper):
    log = tmp_path / "spans.log"
    ws = independent(make_ws, log, n=2, body="true")
    (tmp_path / "Makefile").write_text(f"all:\n\t{wrapper} -C {ws} run work --no-cache\n")
    rc, _out, err = run_make(tmp_path, "-j2")
    assert rc == 0, err
    found = warnings(err)
    assert len(found) == 1, err
    assert "'+'" in found[0]


# -- real GNU make ----------------------------------------------------------------

@needs_make
def test_jobs_001_make_j2_two_hazruns_share_two_slots(make_ws, tmp_path, wrapper):
    """Two '+hazrun run' recipes of one 'make -j2', two task sets of one
    workspace: together never more than make's two jobs."""
    log = tmp_path / "spans.log"
    files = {"haz.toml": ROOT}
    for i in range(3):
        files[f"p/t{i}/haz.toml"] = (
            f'[tasks.build]\ncmd = {q(timed(f"build-t{i}", "sleep 0.5", log))}\n'
            f'[tasks.check]\ncmd = {q(timed(f"check-t{i}", "sleep 0.5", log))}\n')
    ws = make_ws(files)
    (tmp_path / "Makefile").write_text(
        f"HAZRUN = {wrapper}\n"
        ".PHONY: all build check\n"
        "all: build check\n"
        f"build:\n\t+$(HAZRUN) -C {ws} run build -j8\n"
        f"check:\n\t+$(HAZRUN) -C {ws} run check -j8\n")
    rc, _out, err = run_make(tmp_path, "-j2")
    assert rc == 0, err
    assert not warnings(err), err
    spans = intervals(log)
    assert len(spans) == 6
    assert max_overlap(spans) == 2


@needs_make
def test_jobs_001_make_j1_runs_one_task_at_a_time(make_ws, tmp_path, wrapper):
    """make -j1 makes no jobserver, but its MAKEFLAGS says -j1: hazrun's
    tasks run one at a time, as make's own recipes would.  A -j given to
    hazrun itself still wins."""
    log = tmp_path / "spans.log"
    ws = independent(make_ws, log, n=3, body="sleep 0.3")
    (tmp_path / "Makefile").write_text(f"all:\n\t+{wrapper} -C {ws} run work --no-cache\n")
    rc, _out, err = run_make(tmp_path, "-j1")
    assert rc == 0, err
    assert not warnings(err), err
    spans = intervals(log)
    assert len(spans) == 3 and max_overlap(spans) == 1
    log.unlink()
    (tmp_path / "Makefile").write_text(
        f"all:\n\t+{wrapper} -C {ws} run work --no-cache -j3\n")
    rc, _out, err = run_make(tmp_path, "-j1")
    assert rc == 0, err
    assert max_overlap(intervals(log)) == 3


def test_jobs_002_jobserver_option_keeps_the_runs_other_makeflags(make_ws, tmp_path):
    """--jobserver puts its pool in MAKEFLAGS in place of any other and
    keeps the rest: one-letter flags, long options, variables."""
    seen = tmp_path / "makeflags"
    show = 'printf %s "$MAKEFLAGS" > ' + str(seen)
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": f'[tasks.show]\ncmd = {q(show)}\n'})
    rc, _out, err = finish(start_hazrun(
        ws, "run", "show", "-j3", "--jobserver", "--no-cache",
        makeflags="ks -j8 --jobserver-auth=97,98 --no-print-directory -- FOO=bar"))
    assert rc == 0, err
    words = seen.read_text().split()
    assert words[0] == "ks" and words[-2:] == ["--", "FOO=bar"], words
    assert "--no-print-directory" in words and "-j3" in words and "-j8" not in words
    auth = [w for w in words if w.startswith("--jobserver-auth=")]
    assert len(auth) == 1 and auth[0] != "--jobserver-auth=97,98", words


@pytest.mark.parametrize("flags, expected", [
    ("", "-j4 --jobserver-auth=5,6"),
    ("s", "s -j4 --jobserver-auth=5,6"),
    (" -j2 --jobserver-auth=3,4", "-j4 --jobserver-auth=5,6"),
    ("k --no-print-directory -- A=1 B=2", "k -j4 --jobserver-auth=5,6 --no-print-directory -- A=1 B=2"),
    ("-- A=1", "-j4 --jobserver-auth=5,6 -- A=1"),
])
def test_jobs_002_merged_makeflags(flags, expected):
    from hazrun.jobserver import merged_makeflags
    assert merged_makeflags(flags, 4, "5,6") == expected


@needs_make
def test_jobs_001_make_exit_status_follows_hazrun(make_ws, tmp_path, wrapper):
    ws = make_ws({"haz.toml": ROOT, "p/a/haz.toml": '[tasks.build]\ncmd = "exit 4"\n'})
    (tmp_path / "Makefile").write_text(f"build:\n\t+{wrapper} -C {ws} run build\n")
    rc, _out, err = run_make(tmp_path, "-j2")
    assert rc == 2, err  # make's own status for a failed recipe
    assert "Error 1" in err, err  # hazrun's EXEC-021 status, as make reports it


def _nested_ws(make_ws, tmp_path, log, jobs=4):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "Makefile").write_text(nested_makefile(log, jobs))
    return make_ws({
        "haz.toml": ROOT,
        "p/t0/haz.toml": f'[tasks.work]\ncmd = {q(timed("t0", "sleep 0.5", log))}\n',
        "p/t1/haz.toml": f'[tasks.work]\ncmd = {q(timed("t1", "sleep 0.5", log))}\n',
        # A task that runs make itself: it must share the slots (JOBS-002).
        "p/nest/haz.toml": f'[tasks.work]\ncmd = {q(f"make -s -C {sub}")}\n',
    })


def _assert_nested_make_used_the_jobserver(text):
    for complaint in ("jobserver unavailable", "disabling jobserver",
                      "invalid --jobserver-auth", "*** "):
        assert complaint not in text, text


@needs_make
def test_jobs_002_nested_make_under_make_shares_the_slots(make_ws, tmp_path, wrapper):
    log = tmp_path / "spans.log"
    ws = _nested_ws(make_ws, tmp_path, log)
    (tmp_path / "Makefile").write_text(f"all:\n\t+{wrapper} -C {ws} run work -j8 --no-cache\n")
    rc, out, err = run_make(tmp_path, "-j2")
    assert rc == 0, err
    _assert_nested_make_used_the_jobserver(out + err)
    spans = intervals(log)
    assert len(spans) == 6  # t0, t1, n0..n3
    assert max_overlap(spans) == 2


def test_jobs_002_hazrun_jobserver_bounds_nested_make(make_ws, tmp_path):
    if shutil.which("make") is None:
        pytest.skip("GNU make not installed")
    log = tmp_path / "spans.log"
    ws = _nested_ws(make_ws, tmp_path, log)
    rc, out, err = finish(start_hazrun(ws, "run", "work", "-j2", "--jobserver", "--no-cache"))
    assert rc == 0, err
    _assert_nested_make_used_the_jobserver(out + err)
    spans = intervals(log)
    assert len(spans) == 6
    assert max_overlap(spans) == 2


def test_jobs_002_hazrun_jobserver_lets_nested_make_use_every_slot(make_ws, tmp_path):
    """With nothing else running, the nested make gets all of -j3."""
    if shutil.which("make") is None:
        pytest.skip("GNU make not installed")
    log = tmp_path / "spans.log"
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "Makefile").write_text(nested_makefile(log, 6))
    ws = make_ws({"haz.toml": ROOT,
                  "p/nest/haz.toml": f'[tasks.work]\ncmd = {q(f"make -s -C {sub}")}\n'})
    rc, out, err = finish(start_hazrun(ws, "run", "work", "-j3", "--jobserver", "--no-cache"))
    assert rc == 0, err
    _assert_nested_make_used_the_jobserver(out + err)
    assert max_overlap(intervals(log)) == 3


def test_jobs_002_jobserver_option_serves_when_makes_is_unusable(make_ws, tmp_path):
    """Under a make whose pool hazrun cannot open, ``--jobserver`` still
    gives nested make hazrun's own slots (after the one warning)."""
    if shutil.which("make") is None:
        pytest.skip("GNU make not installed")
    log = tmp_path / "spans.log"
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "Makefile").write_text(nested_makefile(log, 4))
    ws = make_ws({"haz.toml": ROOT,
                  "p/nest/haz.toml": f'[tasks.work]\ncmd = {q(f"make -s -C {sub}")}\n'})
    rc, out, err = finish(start_hazrun(ws, "run", "work", "-j2", "--jobserver", "--no-cache",
                                       makeflags="-j8 --jobserver-auth=97,98"))
    assert rc == 0, err
    assert len(warnings(err)) == 1, err
    _assert_nested_make_used_the_jobserver(out + err)
    assert max_overlap(intervals(log)) == 2


@needs_make
def test_jobs_001_demo_makefile(tmp_path, wrapper):
    """The README's example, demo/Makefile, builds and tests the demo."""
    demo = tmp_path / "demo"
    shutil.copytree(REPO / "demo", demo,
                    ignore=shutil.ignore_patterns(".haz", "dist", "site"))
    proc = subprocess.run(["make", "-j3", f"HAZRUN={wrapper}", "CI=1"], cwd=str(demo),
                          env=base_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=120)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, out + err
    assert not warnings(err), err
    assert "app tests passed" in out
    assert (demo / "packages" / "app" / "dist" / "app.txt").is_file()
    assert "--output buffered" in out  # CI=1 picks the CI log format


@needs_make
@pytest.mark.parametrize("between", ["", "hazrun"])
def test_jobs_001_a_stopped_nested_make_gives_back_its_tokens(make_ws, tmp_path, between):
    """make -> hazrun [-> hazrun] -> a task running make on the same
    jobserver; the top hazrun gets SIGTERM.  The nested make must get it
    once (through its process group, or from the hazrun between, whose
    tasks are in groups of their own), not once more directly: a make that
    gets a second SIGTERM while it cleans up dies before giving its tokens
    back, and the top make says "INTERNAL: Exiting with N jobserver tokens
    available; should be M!"."""
    started = tmp_path / "started"
    inner = tmp_path / "inner.mk"
    jobs = " ".join(f"j{i}" for i in range(4))
    inner.write_text(f"all: {jobs}\n" + "".join(
        f"j{i}:\n\t@touch {started}.{i}; trap 'sleep 0.3; exit 1' TERM; "
        "sleep 30 & wait\n" for i in range(4)))
    nested = {"p/c/haz.toml": f'[tasks.nest]\ncmd = "make -s -f {inner}"\n'}
    if between:
        # The task is a hazrun of its own workspace, whose task runs make.
        inner_ws = make_ws({"haz.toml": ROOT, **nested}, name="inner")
        hazrun = f"PYTHONPATH={shlex.quote(str(REPO))} {shlex.quote(sys.executable)} -m hazrun"
        nested = {"p/c/haz.toml": "[tasks.nest]\ncmd = " + json.dumps(
            f"{hazrun} -C {inner_ws} run nest --no-cache -j 8") + "\n"}
    ws = make_ws({"haz.toml": ROOT, **nested})
    pidfile = tmp_path / "haz.pid"
    runner = tmp_path / "bin" / "hazrun-pid"
    runner.parent.mkdir()
    runner.write_text("#!/bin/sh\n"
                      f"echo $$ > {shlex.quote(str(pidfile))}\n"
                      f"PYTHONPATH={shlex.quote(str(REPO))} "
                      f'exec {shlex.quote(sys.executable)} -m hazrun "$@"\n')
    runner.chmod(0o755)
    wait = f"n=0; until [ $$(ls {started}.* 2>/dev/null | wc -l) -ge 3 ] || [ $$n -ge 600 ]; " \
           "do sleep 0.05; n=$$((n+1)); done"
    (tmp_path / "Makefile").write_text(
        "all: haz killer\n"
        f"haz:\n\t+{runner} -C {ws} run nest --no-cache -j 8\n"
        f"killer:\n\t@{wait}; kill -TERM $$(cat {pidfile})\n")
    rc, _out, err = run_make(tmp_path, "-j4", timeout=120)
    assert rc == 2, err  # hazrun ended by SIGTERM: its recipe failed
    assert "jobserver tokens available" not in err, err
    assert "stopping c:nest" in err, err

"""Cancellation, termination of process trees, timeouts (EXEC-012..015,
EXEC-018) with real signals sent to a real hazrun process."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import REPO, hazrun_cmd, intervals, run_hazrun, timed, wait_for

ROOT = '[workspace]\nmembers = ["p/*"]\n'


def start_hazrun(root, *args):
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    env.pop("MAKEFLAGS", None)
    return subprocess.Popen(hazrun_cmd("-C", str(root), *args), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def interrupt(proc, ready, what, signum=signal.SIGINT, timeout=60):
    """Once ``ready()``, send ``signum`` to hazrun; its (stdout, stderr) once
    it ends (killed if it does not)."""
    try:
        wait_for(ready, what=what)
        proc.send_signal(signum)
        return proc.communicate(timeout=timeout)
    finally:
        end(proc)


def end(proc, pids=()):
    """However a test ends: hazrun and the processes it recorded are gone."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    kill_leftovers(pids)


def read_pids(directory: Path):
    pids = []
    for f in directory.glob("*.pid"):
        pids += [int(x) for x in f.read_text().split()]
    return pids


def gone(pid):
    """The pid names no process at all: neither running nor a zombie."""
    return not psutil.pid_exists(pid)


def kill_leftovers(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture
def tree_ws(make_ws, tmp_path):
    """Tasks that leave grandchildren, ignore TERM, escape with setsid, or
    double-fork a daemon; each records every pid it starts."""
    pids = tmp_path / "pids"
    pids.mkdir()
    ws = make_ws({
        "haz.toml": ROOT,
        # A shell with two grandchildren.
        "p/a/haz.toml": f'[tasks.run]\ncmd = "sleep 1000 & echo $! >> {pids}/a.pid; '
                        f'sleep 1000 & echo $! >> {pids}/a.pid; echo $$ >> {pids}/a.pid; wait"\n',
        # Ignores SIGTERM, so only SIGKILL after the grace ends it.
        "p/b/haz.toml": f'[tasks.run]\ncmd = "trap \'\' TERM; echo $$ >> {pids}/b.pid; '
                        f'sleep 1000 & echo $! >> {pids}/b.pid; wait; wait"\n',
        # A child that leaves the process group with setsid.
        "p/c/haz.toml": f'[tasks.run]\ncmd = "setsid sh -c \'echo $$ >> {pids}/c.pid; exec sleep 1000\' & '
                        f'echo $$ >> {pids}/c.pid; wait"\n',
        # A double-forked daemon: its parent exits, it is re-parented.
        "p/d/haz.toml": f'[tasks.run]\ncmd = "(setsid sh -c \'echo $$ >> {pids}/d.pid; exec sleep 1000\' &); '
                        f'echo $$ >> {pids}/d.pid; sleep 1000"\n',
        "p/e/haz.toml": '[project]\ndeps = ["a"]\n[tasks.run]\ncmd = "true"\ndeps = ["^run"]\n',
        "p/f/haz.toml": '[tasks.run]\ncmd = "true"\nafter = ["a:run"]\n',
    })
    return ws, pids


def _expected_pid_count():
    return {"a": 3, "b": 2, "c": 2, "d": 2}


def _all_started(pids):
    counts = {name: len((pids / f"{name}.pid").read_text().split())
              if (pids / f"{name}.pid").exists() else 0 for name in "abcd"}
    return all(counts[k] >= v for k, v in _expected_pid_count().items())


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                      # A closed terminal: the tasks, in sessions of
                                      # their own, hear nothing of it but from hazrun.
                                      (signal.SIGHUP, 129)])
def test_exec_014_signal_ends_every_tree(tree_ws, tmp_path, sig, code):
    ws, pids = tree_ws
    summary = tmp_path / "s.json"
    proc = start_hazrun(ws, "run", "run", "-j4", "--grace", "1", "--no-cache",
                        "--summary-json", str(summary))
    recorded = []
    try:
        wait_for(lambda: _all_started(pids), what="every task to start")
        recorded = read_pids(pids)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == code, err
        # EXEC-015: hazrun returned only after every tree was gone.
        wait_for(lambda: all(gone(p) for p in recorded), timeout=5,
                 what="recorded processes to be gone")
        doc = json.loads(summary.read_text())
        assert doc["exit_code"] == code
        assert doc["signal"] == signal.Signals(sig).name
        tasks = {t["label"]: t for t in doc["tasks"]}
        for label in ("a:run", "b:run", "c:run", "d:run"):
            assert (tasks[label]["state"], tasks[label]["cause"]) == ("cancelled", "signalled")
        # EXEC-013: hard descendants of a cancelled task.
        assert (tasks["e:run"]["state"], tasks["e:run"]["cause"],
                tasks["e:run"]["upstream"]) == ("cancelled", "upstream_cancelled", "a:run")
        # A soft successor of a cancelled task is never started either.
        assert (tasks["f:run"]["state"], tasks["f:run"]["cause"]) == ("cancelled", "not_started")
        assert b"Traceback" not in err
    finally:
        end(proc, recorded)


def _daemon(log, name):
    """A double-forked daemon that says when it gets SIGTERM; the task's
    own shell has exited by then, so only the subreaper knows it."""
    body = (f"trap \\\"echo {name} got TERM >> {log}; exit 0\\\" TERM; "
            f"echo {name} up >> {log}; while :; do sleep 0.05; done")
    return f"(setsid sh -c '{body}' > /dev/null 2>&1 < /dev/null &)"


def test_exec_014_a_double_forked_daemon_gets_sigterm_and_the_grace(make_ws, tmp_path):
    """Ctrl-C: the daemon, re-parented to hazrun, is told by its HAZ_*
    environment to be the task's and gets SIGTERM like the rest of its tree,
    not only the final sweep's SIGKILL."""
    log = tmp_path / "log"
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": f'[tasks.run]\ncmd = "{_daemon(log, "a")}; sleep 1000"\n'})
    proc = start_hazrun(ws, "run", "run", "--grace", "5", "--no-cache")
    _, err = interrupt(proc, lambda: log.exists() and "a up" in log.read_text(), "the daemon")
    assert proc.returncode == 130, err
    assert "a got TERM" in log.read_text()


def test_exec_015_a_successful_tasks_daemon_is_ended_with_sigterm_first(make_ws, tmp_path):
    log = tmp_path / "log"
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": f'[tasks.run]\ncmd = "{_daemon(log, "a")}; '
                                  f'until grep -q up {log} 2>/dev/null; do sleep 0.05; done"\n'})
    proc = run_hazrun(ws, "run", "run", "--no-cache", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().splitlines() == ["a up", "a got TERM"]


def start_term_ignoring(make_ws, tmp_path, grace: str):
    """hazrun running b:run, a task that ignores SIGTERM, with ``grace``;
    returns the process and the task's pid file's directory once it runs."""
    pids = tmp_path / "pids"
    pids.mkdir()
    ws = make_ws({"haz.toml": ROOT,
                  "p/b/haz.toml": f'[tasks.run]\ncmd = "trap \'\' TERM; echo $$ > {pids}/b.pid; '
                                  'while true; do sleep 0.1; done"\n'})
    proc = start_hazrun(ws, "run", "run", "--grace", grace, "--no-cache")
    try:
        wait_for(lambda: (pids / "b.pid").exists() and (pids / "b.pid").read_text().strip())
    except BaseException:
        end(proc, read_pids(pids))
        raise
    return proc, pids


def test_exec_014_second_signal_skips_grace(make_ws, tmp_path):
    proc, pids = start_term_ignoring(make_ws, tmp_path, "60")
    recorded = []
    try:
        recorded = read_pids(pids)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None, "the TERM-ignoring task was not given its grace"
        proc.send_signal(signal.SIGINT)
        # Far less than the 60 s grace: the second signal kills at once.
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 130
        assert all(gone(p) for p in recorded)
        # The grace is not a silent wait: said once, at the first signal.
        assert err.decode().count("hazrun: stopping b:run (SIGTERM now, SIGKILL within "
                                  "60 s, or at once on a second Ctrl-C)\n") == 1, err
    finally:
        end(proc, recorded)


@pytest.mark.parametrize("first", ["--fail-fast", "SIGTERM"])
def test_exec_014_a_signal_while_stopping_skips_the_grace(make_ws, tmp_path, first):
    """The run is already stopping, after a failure under --fail-fast or a
    SIGTERM: the next signal is the second request and kills at once, as
    the message about the stop says."""
    pids, log = tmp_path / "pids", tmp_path / "log"
    pids.mkdir()
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": f'[tasks.run]\ncmd = "trap \'echo term >> {log}\' TERM; '
                                  f'echo $$ > {pids}/a.pid; while true; do sleep 0.1; done"\n',
                  "p/b/haz.toml": f'[tasks.run]\ncmd = "while [ ! -s {pids}/a.pid ]; do '
                                  'sleep 0.05; done; exit 4"\n'})
    args = ["--fail-fast"] if first == "--fail-fast" else []
    proc = start_hazrun(ws, "run", "run", "-j2", "--grace", "60", "--no-cache", *args)
    recorded = []
    try:
        wait_for(lambda: (pids / "a.pid").exists() and (pids / "a.pid").read_text().strip())
        recorded = read_pids(pids)
        if first == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        wait_for(lambda: log.exists() and "term" in log.read_text(), what="a:run's SIGTERM")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)  # far less than the 60 s grace
        err = err.decode()
        assert proc.returncode == (130 if first == "--fail-fast" else 143), err
        assert all(gone(p) for p in recorded)
        sooner = "on Ctrl-C or SIGTERM" if first == "--fail-fast" else "on a second signal"
        # A SIGTERM may find b:run between its last line and its exit.
        assert re.search(r"stopping a:run(, b:run)? \(SIGTERM now, SIGKILL within 60 s, or at "
                         f"once {sooner}\\)", err), err
    finally:
        end(proc, recorded)


def test_exec_014_one_sigterm_with_a_fail_fast_failure_keeps_the_grace(make_ws, tmp_path):
    """One SIGTERM to the whole tree (a CI job cancelled): a:run fails on
    it, and hazrun sees that failure and its own signal in one wake-up
    (held stopped meanwhile, as a busy moment would).  The signal is the
    first request to stop: c:run gets its grace, not a SIGKILL."""
    log = tmp_path / "log"
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": '[tasks.run]\ncmd = "trap \'exit 1\' TERM; echo $$ > pid; '
                                  'while true; do sleep 0.05; done"\n',
                  "p/c/haz.toml": f'[tasks.run]\ncmd = "trap \'sleep 0.5; echo clean >> {log}; '
                                  f'exit 0\' TERM; echo $$ > pid; while true; do sleep 0.05; '
                                  'done"\ngrace = 60\n'})
    proc = start_hazrun(ws, "run", "run", "-j2", "--fail-fast", "--no-cache")
    pids = []
    try:
        wait_for(lambda: all((ws / f"p/{p}/pid").exists()
                             and (ws / f"p/{p}/pid").read_text().strip() for p in "ac"))
        pids = [int((ws / f"p/{p}/pid").read_text()) for p in "ac"]
        os.kill(proc.pid, signal.SIGSTOP)
        os.kill(pids[0], signal.SIGTERM)
        wait_for(lambda: not psutil.pid_exists(pids[0])
                 or psutil.Process(pids[0]).status() == psutil.STATUS_ZOMBIE, what="a:run's end")
        os.kill(proc.pid, signal.SIGTERM)
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
        err = err.decode()
        assert proc.returncode == 143, err
        assert log.read_text() == "clean\n", "c:run was killed without its grace:\n" + err
        assert "stopping c:run (SIGTERM now, SIGKILL within 60 s, or at once on a second " \
               "signal)" in err, err
    finally:
        end(proc, pids)


def test_exec_018_ctrl_c_after_a_timeout_says_so_and_keeps_the_timeout(make_ws, tmp_path):
    """A task its timeout is stopping, in its grace: a Ctrl-C names it in
    the stopping line, and it ends failed/timeout, as it was to."""
    log, summary = tmp_path / "log", tmp_path / "s.json"
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": f'[tasks.run]\ncmd = "trap \'echo term >> {log}\' TERM; '
                                  'while true; do sleep 0.1; done"\ntimeout = 1\ngrace = 60\n'})
    proc = start_hazrun(ws, "run", "run", "--no-cache", "--summary-json", str(summary))
    try:
        wait_for(lambda: log.exists() and "term" in log.read_text(), what="the timeout's SIGTERM")
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # no need to wait out the grace
        _, err = proc.communicate(timeout=20)
        err = err.decode()
        assert proc.returncode == 130, err
        assert ("hazrun: stopping a:run (SIGTERM now, SIGKILL within 60 s, or at once on a "
                "second Ctrl-C)") in err, err
        task, = json.loads(summary.read_text())["tasks"]
        assert (task["state"], task["cause"]) == ("failed", "timeout")
    finally:
        end(proc)


def test_exec_019_a_signal_while_a_runtime_cycle_stops_the_run_kills_at_once(make_ws, tmp_path):
    """A runtime cycle stops the tasks in flight as --fail-fast does, and
    says so; a signal then is the second request to stop."""
    log = tmp_path / "log"
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": ('[tasks.r]\ncmd = "while [ ! -e ../z/started ]; do sleep 0.05; '
                                   'done"\ninputs = ["gen/**"]\n[tasks.w]\ncmd = "mkdir -p gen; '
                                   'echo x > gen/x"\noutputs = ["gen/**"]\ndeps = ["r"]\n'),
                  "p/z/haz.toml": f'[tasks.run]\ncmd = "trap \'echo term >> {log}\' TERM; '
                                  'touch started; while true; do sleep 0.1; done"\ngrace = 60\n'})
    proc = start_hazrun(ws, "run", "a:w", "z:run", "-j3", "--no-cache")
    try:
        wait_for(lambda: log.exists() and "term" in log.read_text(), what="the cycle's SIGTERM")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)  # not the 60 s grace
        err = err.decode()
        assert proc.returncode == 130, err
        assert ("hazrun: runtime cycle: stopping z:run (SIGTERM now, SIGKILL within 60 s, or "
                "at once on Ctrl-C or SIGTERM)") in err, err
    finally:
        end(proc)


def test_exec_014_the_stopping_line_promises_no_ctrl_c_hazrun_ignores(make_ws):
    """Started with SIGINT ignored (a background job of a script), hazrun
    keeps it so: its line must not offer Ctrl-C."""
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": '[tasks.run]\ncmd = "touch started; sleep 300"\n',
                  "p/b/haz.toml": ('[tasks.run]\ncmd = "while [ ! -e ../a/started ]; do '
                                   'sleep 0.05; done; exit 2"\n')})
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    env.pop("MAKEFLAGS", None)
    proc = subprocess.run(["bash", "-c", "trap '' INT; exec \"$@\"", "bash",
                           *hazrun_cmd("-C", str(ws), "run", "run", "-j2", "--fail-fast",
                                       "--no-cache")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert ("--fail-fast: stopping a:run (SIGTERM now, SIGKILL within 10 s, or at once on "
            "SIGTERM)") in proc.stderr, proc.stderr


def test_exec_012_under_nohup_a_hangup_stops_nothing(make_ws, tmp_path):
    """Started with SIGHUP ignored (nohup), hazrun keeps it so: the run goes
    on when the terminal closes."""
    marker = tmp_path / "started"
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": f'[tasks.run]\ncmd = "touch {marker}; sleep 1; echo done"\n'})
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    env.pop("MAKEFLAGS", None)
    proc = subprocess.Popen(["nohup", *hazrun_cmd("-C", str(ws), "run", "run", "--no-cache")],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        wait_for(marker.exists)
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert b"[a:run] done" in out
    finally:
        end(proc)


def test_exec_012_ready_tasks_are_not_started(make_ws, tmp_path):
    marker = tmp_path / "started"
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": f'[tasks.run]\ncmd = "touch {marker}; sleep 1000"\n',
                  "p/b/haz.toml": f'[tasks.run]\ncmd = "echo never > {tmp_path}/b-ran"\n',
                  "p/c/haz.toml": f'[tasks.run]\ncmd = "echo never > {tmp_path}/c-ran"\n'})
    summary = tmp_path / "s.json"
    proc = start_hazrun(ws, "run", "run", "-j1", "--no-cache", "--summary-json", str(summary))
    try:
        wait_for(marker.exists)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        end(proc)
    assert proc.returncode == 130
    tasks = {t["label"]: t for t in json.loads(summary.read_text())["tasks"]}
    assert (tasks["a:run"]["state"], tasks["a:run"]["cause"]) == ("cancelled", "signalled")
    for label in ("b:run", "c:run"):
        assert (tasks[label]["state"], tasks[label]["cause"]) == ("cancelled", "not_started")
    assert not (tmp_path / "b-ran").exists() and not (tmp_path / "c-ran").exists()


def test_exec_018_timeout(make_ws, tmp_path):
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": '[tasks.run]\ncmd = "sleep 60"\ntimeout = 1\n',
                  "p/b/haz.toml": '[project]\ndeps = ["a"]\n[tasks.run]\ncmd = "true"\ndeps = ["^run"]\n'})
    summary = tmp_path / "s.json"
    proc = run_hazrun(ws, "run", "run", "--no-cache", "--grace", "2",
                      "--summary-json", str(summary))
    assert proc.returncode == 1
    tasks = {t["label"]: t for t in json.loads(summary.read_text())["tasks"]}
    assert (tasks["a:run"]["state"], tasks["a:run"]["cause"]) == ("failed", "timeout")
    assert (tasks["b:run"]["state"], tasks["b:run"]["cause"]) == ("skipped", "upstream_failed")
    assert "a:run failed: timed out after 1s" in proc.stderr  # its limit, not its stop


def test_exec_018_a_timeout_and_grace_meaning_never(make_ws, tmp_path):
    """timeout = 1e10 (a user's "never") and a grace as long: the timers are
    days away, the run is normal; no overflow in the event loop's wait."""
    ws = make_ws({"haz.toml": ROOT + "grace = 1e10\n",
                  "p/a/haz.toml": '[tasks.run]\ncmd = "sleep ${A_SLEEP:-0.3}"\ntimeout = 1e10\n',
                  "p/b/haz.toml": '[tasks.run]\ncmd = "sleep 0.1; exit 3"\n'})
    proc = run_hazrun(ws, "run", "a:run", "--no-cache", timeout=60)
    assert (proc.returncode, proc.stderr.count("Traceback")) == (0, 0), proc.stderr
    # With --fail-fast, b fails and a is stopped: SIGTERM ends it long
    # before a grace of 1e10 s would have run out.
    # a:run sleeps far longer than the test may take: only the stop ends it.
    proc = run_hazrun(ws, "run", "run", "--no-cache", "--fail-fast", "-j2", timeout=60,
                      env=dict(os.environ, A_SLEEP="300"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "b:run failed: exit code 3" in proc.stderr
    assert ("hazrun: --fail-fast: stopping a:run (SIGTERM now, SIGKILL within 1e+10 s, "
            "or at once on Ctrl-C or SIGTERM)" in proc.stderr), proc.stderr


@pytest.mark.parametrize("grace, why", [
    ("inf", "'inf' is not a finite number of seconds"),
    ("nan", "'nan' is not a finite number of seconds"),
    ("-1", "must not be negative, got -1"),
    ("soon", "'soon' is not a number of seconds"),
])
def test_exec_014_grace_must_be_a_finite_number(make_ws, grace, why):
    ws = make_ws({"haz.toml": ROOT, "p/a/haz.toml": '[tasks.run]\ncmd = "true"\n'})
    proc = run_hazrun(ws, "run", "run", "--grace", grace, timeout=60)
    assert proc.returncode == 2
    assert f"argument --grace: {why}" in proc.stderr


def test_exec_018_a_command_that_exited_does_not_time_out_while_its_pipes_drain(
        make_ws, tmp_path):
    """The command exits at once, but a process that left its group (setsid)
    holds its stdout: hazrun waits a while for the pipes.  Neither a timeout
    nor a --fail-fast cancellation in that wait changes its outcome."""
    holder = "(setsid sleep 30 > /dev/null 2>&1 < /dev/null &); (setsid sleep 30 &); echo started"
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": f'[tasks.run]\ncmd = "{holder}"\ntimeout = 0.5\n',
                  "p/b/haz.toml": '[tasks.run]\ncmd = "sleep 1; exit 1"\n'})
    summary = tmp_path / "s.json"
    proc = run_hazrun(ws, "run", "a:run", "--no-cache", "--summary-json", str(summary))
    task = json.loads(summary.read_text())["tasks"][0]
    assert (proc.returncode, task["state"], task["exit_code"]) == (0, "succeeded", 0), proc.stderr
    assert "[a:run] started" in proc.stdout
    proc = run_hazrun(ws, "run", "run", "-j2", "--no-cache", "--fail-fast",
                      "--summary-json", str(summary))
    tasks = {t["label"]: t for t in json.loads(summary.read_text())["tasks"]}
    assert tasks["a:run"]["state"] == "succeeded", proc.stderr
    assert (tasks["b:run"]["state"], proc.returncode) == ("failed", 1)


def test_exec_009_killed_from_outside_is_failed_signal(make_ws, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": f'[tasks.run]\ncmd = ["sh", "-c", "echo $$ > {pids}/a.pid; exec sleep 1000"]\n'})
    summary = tmp_path / "s.json"
    proc = start_hazrun(ws, "run", "run", "--no-cache", "--summary-json", str(summary))
    try:
        wait_for(lambda: (pids / "a.pid").exists() and (pids / "a.pid").read_text().strip())
        os.kill(read_pids(pids)[0], signal.SIGKILL)  # as the OOM killer would
        proc.communicate(timeout=30)
    finally:
        end(proc)
    assert proc.returncode == 1
    task = json.loads(summary.read_text())["tasks"][0]
    assert (task["state"], task["cause"], task["signal"]) == ("failed", "signal", "SIGKILL")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")
def test_exec_015_sigkill_to_hazrun_leaves_no_task_running(make_ws, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": f'[tasks.run]\ncmd = "sleep 1000 & echo $! >> {pids}/a.pid; '
                                  f'echo $$ >> {pids}/a.pid; wait"\n'})
    proc = start_hazrun(ws, "run", "run", "--no-cache")
    recorded = []
    try:
        wait_for(lambda: (pids / "a.pid").exists() and
                 len((pids / "a.pid").read_text().split()) == 2)
        recorded = read_pids(pids)
        proc.kill()
        proc.wait()
        # The watchdog ends the task's process group after hazrun's death.
        wait_for(lambda: all(gone(p) for p in recorded), timeout=15,
                 what="the tasks of a SIGKILLed hazrun to end")
    finally:
        kill_leftovers(recorded)
        # The watchdog itself exits once it has done its job.
        for p in psutil.process_iter(["cmdline"]):
            if "groups = set()" in " ".join(p.info["cmdline"] or []):
                try:
                    p.wait(timeout=10)
                except psutil.Error:
                    pass


def test_exec_015_background_job_left_by_a_task_is_stopped(make_ws, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": f'[tasks.run]\ncmd = "sleep 1000 >/dev/null 2>&1 & echo $! > {pids}/a.pid"\n'})
    proc = run_hazrun(ws, "run", "run", "--no-cache", "--grace", "1", timeout=60)
    recorded = read_pids(pids)
    try:
        assert proc.returncode == 0, proc.stderr
        assert "left processes running" in proc.stderr
        assert all(gone(p) for p in recorded)
    finally:
        kill_leftovers(recorded)


def test_exec_021_sigterm_while_hazrun_starts_exits_143(make_ws):
    """A real SIGTERM sent to hazrun from inside its start-up, before any
    run installs its handlers (while make's Ctrl-C reaches it): exit 143,
    not death by the signal."""
    ws = make_ws({"haz.toml": ROOT, "p/a/haz.toml": '[tasks.run]\ncmd = "true"\n'})
    code = ("import os, signal, hazrun.cli as cli\n"
            "parse = cli.build_parser\n"
            "def build_parser():\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    return parse()\n"
            "cli.build_parser = build_parser\n"
            f"cli.main(['-C', {str(ws)!r}, 'run', 'run'])\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 143, (proc.returncode, proc.stderr)
    assert "hazrun: error: interrupted" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("where", ["hazrun.workspace:load_workspace",
                                   "hazrun.console:Console.for_streams"])
def test_exec_021_a_signal_while_the_workspace_loads_still_writes_the_summary(
        make_ws, tmp_path, signum, where):
    """Before the run takes the signals over (once the command line is
    read): exit 130/143, and the summary JSON promised 'also when
    interrupted', with no task in it."""
    ws = make_ws({"haz.toml": ROOT, "p/a/haz.toml": '[tasks.run]\ncmd = "true"\n'})
    report = tmp_path / "s.json"
    module, _, attr = where.partition(":")
    owner, _, name = attr.rpartition(".")
    target = f"m.{owner}" if owner else "m"
    code = (f"import os, {module} as m\n"
            f"real = {target}.{name}\n"
            "fired = []\n"
            "def hook(*a, **k):\n"
            "    if not fired:  # once, as a signal comes\n"
            "        fired.append(1)\n"
            f"        os.kill(os.getpid(), {int(signum)})\n"
            "    return real(*a, **k)\n"
            f"{target}.{name} = hook\n"
            "import hazrun.cli as cli\n"
            f"cli.main(['-C', {str(ws)!r}, 'run', 'run', '--summary-json', {str(report)!r}])\n")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 128 + signum, proc.stderr
    assert "Traceback" not in proc.stderr
    doc = json.loads(report.read_text())
    assert doc["exit_code"] == 128 + signum and doc["tasks"] == []
    assert doc["signal"] == signal.Signals(signum).name


def test_exec_012_a_task_the_stop_signal_reached_first_is_cancelled_not_failed(
        make_ws, tmp_path):
    """make's Ctrl-C, or an outer hazrun stopping an inner one, signals
    hazrun and its tasks at once: a task dead of SIGTERM before the run
    stopped it ends cancelled/signalled, not failed/signal.  Made certain
    here by holding hazrun (SIGSTOP) while the task dies and its own
    SIGTERM waits, so it sees the death before it has stopped anything."""
    pidfile = tmp_path / "task.pid"
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": f'[tasks.run]\ncmd = "echo $$ > {pidfile}; exec sleep 100"\n'})
    report = tmp_path / "s.json"
    proc = subprocess.Popen(hazrun_cmd("-C", str(ws), "run", "run", "--no-cache",
                                       "--summary-json", str(report)),
                            env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        task = psutil.Process(int(pidfile.read_text()))
        os.kill(proc.pid, signal.SIGSTOP)
        task.terminate()
        while task.status() != psutil.STATUS_ZOMBIE:  # dead, not yet reaped
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGTERM)
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    result = json.loads(report.read_text())["tasks"][0]
    assert (result["state"], result["cause"], result["signal"]) == \
        ("cancelled", "signalled", "SIGTERM"), result


def test_exec_012_sigint_ignored_at_start_stays_ignored(make_ws, tmp_path):
    """A background job of a script (no job control) starts with SIGINT
    ignored, so that Ctrl-C reaches only the foreground: hazrun obeys, as
    make does, and runs on."""
    pidfile = tmp_path / "task.pid"
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": f'[tasks.run]\ncmd = "echo $$ > {pidfile}; sleep 1"\n'})
    cmd = " ".join(shlex.quote(a) for a in hazrun_cmd("-C", str(ws), "run", "run", "--no-cache"))
    proc = subprocess.Popen(["bash", "-c", f"trap '' INT; exec {cmd}"],
                            env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _, err = interrupt(proc, lambda: pidfile.exists() and pidfile.read_text().strip(),
                       "the task")
    assert proc.returncode == 0, err
    assert b"1 succeeded" in err


@pytest.mark.parametrize("lock", ["cache", "explain"])
def test_exec_012_ctrl_c_ends_a_wait_for_a_lock_another_process_holds(make_ws, tmp_path, lock):
    """A prune or clean holding the cache's lock (or a run saving its
    explain records) for long: the run waits for it, but Ctrl-C ends the
    wait. A blocking flock in a pool thread could not be interrupted, and
    the run waited for its pool: it ignored three signals for 30 s."""
    marker = tmp_path / "ran"
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": f'[tasks.run]\ncmd = "touch {marker}"\n'})
    assert run_hazrun(ws, "run", "run").returncode == 0  # makes the cache and .haz
    marker.unlink()
    (ws / "p/a/new.txt").write_text("a miss: the next run stores")
    lock_file = ws / ".haz" / ("cache/lock" if lock == "cache" else "explain/lock")
    holder = subprocess.Popen(["flock", "-x", str(lock_file), "sleep", "60"],
                              start_new_session=True)
    proc = None
    try:
        wait_for(lambda: subprocess.run(["flock", "-xn", str(lock_file), "true"])
                 .returncode != 0, what="the lock to be held")
        proc = start_hazrun(ws, "run", "run")
        wait_for(marker.exists, what="the task to run")
        time.sleep(0.2)  # its store (or the run's end) now waits for the lock
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert holder.poll() is None, "hazrun waited for the lock's holder to end"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        os.killpg(holder.pid, signal.SIGKILL)  # flock and its sleep
        holder.wait()
    assert proc.returncode == 130, err
    assert b"Traceback" not in err


def test_exec_014_sigterm_ignored_at_start_still_stops_tasks(make_ws, tmp_path):
    """hazrun always catches SIGTERM, even when started with it ignored:
    an ignored signal survives exec, and its tasks would ignore the SIGTERM
    of a timeout or Ctrl-C and wait out the grace for SIGKILL."""
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": '[tasks.run]\ncmd = "exec sleep 100"\ntimeout = 0.5\n'
                                  'grace = 30\n'})
    report = tmp_path / "s.json"
    cmd = " ".join(shlex.quote(a) for a in hazrun_cmd(
        "-C", str(ws), "run", "run", "--no-cache", "--summary-json", str(report)))
    proc = subprocess.run(["bash", "-c", f"trap '' TERM; exec {cmd}"],
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    task = json.loads(report.read_text())["tasks"][0]
    assert (task["cause"], task["signal"]) == ("timeout", "SIGTERM"), task


@pytest.mark.timeout(90)
@pytest.mark.parametrize("signum, code, stderr_too", [(signal.SIGINT, 130, False),
                                                      (signal.SIGTERM, 143, False),
                                                      (signal.SIGINT, 130, True)])
def test_exec_012_a_signal_ends_a_run_whose_stdout_nobody_reads(make_ws, tmp_path,
                                                                signum, code, stderr_too):
    """hazrun's stdout a full pipe nobody reads (a paused pager, a terminal
    stopped with Ctrl-S): the loop waited in a write that Python retried
    after each signal, and Ctrl-C did nothing until the reader came back.
    One signal does it, also with stderr in the same pipe (2>&1), where the
    messages of the stop would block next."""
    import fcntl
    import termios
    root = make_ws({"haz.toml": '[workspace]\n[tasks.spam]\n'
                                'cmd = "while true; do echo spam spam spam spam; done"\n'})
    r, w = os.pipe()
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    err_file = tmp_path / "stderr.txt"
    with open(err_file, "wb") as err_out:
        proc = subprocess.Popen(hazrun_cmd("-C", str(root), "run", "spam", "--no-cache"),
                                env=env, stdin=subprocess.DEVNULL, stdout=w,
                                stderr=w if stderr_too else err_out)
    os.close(w)
    try:
        seen = {"bytes": -1, "since": time.monotonic()}

        def pipe_full():
            # Full: what the pipe holds stopped growing (the task writes
            # without pause), whatever its capacity and however whole-line
            # writes fill its pages.  Stuck in its write since then, past
            # console.STALLED_S of no progress.
            assert proc.poll() is None, err_file.read_text()
            buf = bytearray(4)
            fcntl.ioctl(r, termios.FIONREAD, buf)
            queued = int.from_bytes(buf, sys.byteorder)
            now = time.monotonic()
            if queued != seen["bytes"]:
                seen.update(bytes=queued, since=now)
                return False
            return queued > 0 and now - seen["since"] >= 1.5
        try:
            wait_for(pipe_full, timeout=60, what="hazrun's stdout pipe to fill")
        except AssertionError:
            raise AssertionError(f"{seen['bytes']} bytes in the pipe; hazrun said: "
                                 f"{err_file.read_text()!r}") from None
        # The pipe is never read: one signal must end the run.
        proc.send_signal(signum)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        assert proc.poll() == code, "hazrun went on waiting for its reader"
        if not stderr_too:
            err = err_file.read_text()
            assert "cancelled" in err and "Traceback" not in err, err
    finally:
        end(proc)
        os.close(r)


@pytest.mark.timeout(90)
def test_exec_012_a_signal_keeps_what_a_slow_reader_still_reads(make_ws, tmp_path):
    """A reader that is slow but reads is no stalled one: a signal while a
    big buffered block goes out to it loses none of it (the stall was
    timed from the start of the block, and output was cut)."""
    import threading
    big = tmp_path / "big.py"
    big.write_text("import sys\nfor i in range(100000): sys.stdout.write('%06d\\n' % i)\n")
    root = make_ws({"haz.toml": "[workspace]\n[tasks.big]\ncmd = " + json.dumps(
        [sys.executable, str(big)]) + "\n[tasks.slow]\ncmd = \"sleep 30\"\n"})
    r, w = os.pipe()
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    proc = subprocess.Popen(hazrun_cmd("-C", str(root), "run", "big", "slow", "-j2",
                                       "--no-cache", "--output", "buffered"),
                            env=env, stdin=subprocess.DEVNULL, stdout=w,
                            stderr=subprocess.DEVNULL)
    os.close(w)
    got = []
    started = threading.Event()

    def read_slowly():
        while True:
            chunk = os.read(r, 4096)
            if not chunk:
                return
            got.append(chunk)
            started.set()
            time.sleep(0.02)  # about 200 KB/s: the 700 KB block takes seconds
    reader = threading.Thread(target=read_slowly, daemon=True)
    reader.start()
    try:
        assert started.wait(60), "no output"
        time.sleep(1)  # well into the block, which is still being read
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
        reader.join(60)
    finally:
        end(proc)
        os.close(r)
    lines = b"".join(got).decode().splitlines()
    assert lines == [f"[root:big] {i:06d}" for i in range(100000)]


def test_exec_014_a_grace_of_0_kills_what_a_task_left_at_once(make_ws, tmp_path):
    """EXEC-014: `grace = 0` is a grace, not an unset one: a background job
    that ignores SIGTERM is killed at once, so the task's dependent starts
    while an unrelated 5 s task still runs (with the default 10 s grace
    taken for 0, it started after that task had ended)."""
    pids = tmp_path / "pids"
    pids.mkdir()
    log = tmp_path / "log"
    job = f"(trap '' TERM; exec sleep 1000) >/dev/null 2>&1 & echo $! > {pids}/bg.pid"
    ws = make_ws({"haz.toml": ROOT,
                  "p/a/haz.toml": f"""
                      [tasks.bg]
                      cmd = {json.dumps(job)}
                      grace = 0
                      [tasks.next]
                      cmd = {json.dumps(timed("next", "true", log))}
                      deps = ["bg"]
                      [tasks.other]
                      cmd = {json.dumps(timed("other", "sleep 5", log))}
                      """})
    proc = run_hazrun(ws, "run", "a:next", "a:other", "--no-cache", "-j", "3", timeout=60)
    recorded = read_pids(pids)
    try:
        assert proc.returncode == 0, proc.stderr
        assert "left processes running" in proc.stderr
        spans = intervals(log)
        assert spans["next"][0] < spans["other"][1], spans
        assert all(gone(p) for p in recorded)
    finally:
        kill_leftovers(recorded)


def test_exec_014_one_signal_delivered_twice_is_one_request(make_ws, tmp_path):
    """`kill -TERM -- -PGID` on make's group reaches hazrun from the sender
    and again from make, which forwards it to its children: one request to
    stop, with the grace (the task's TERM trap finishes its clean-up), not
    a second one that SIGKILLs it."""
    pids = tmp_path / "pids"
    pids.mkdir()
    done = tmp_path / "cleanup-done"
    script = (f"trap 'sleep 0.3; echo done > {done}; exit 1' TERM; echo $$ > {pids}/b.pid; "
              "while true; do sleep 0.05; done")
    ws = make_ws({"haz.toml": ROOT, "p/b/haz.toml": f"[tasks.run]\ncmd = {json.dumps(script)}\n"})
    proc = start_hazrun(ws, "run", "run", "--grace", "30", "--no-cache")
    recorded = []
    try:
        wait_for(lambda: (pids / "b.pid").exists() and (pids / "b.pid").read_text().strip())
        recorded = read_pids(pids)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.02)  # make's forwarded copy: after hazrun has taken the first
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err
        assert done.exists(), err
        assert b"stopping b:run (SIGTERM now" in err
    finally:
        end(proc, recorded)


def test_exec_014_ctrl_c_held_down_still_forces_the_kill(make_ws, tmp_path):
    """Echoes of one signal are one request, but a user pressing Ctrl-C again
    and again (every 0.2 s) is asking twice: the window is measured from the
    signal that counted, and does not slide with each echo."""
    proc, pids = start_term_ignoring(make_ws, tmp_path, "120")
    recorded = []
    try:
        recorded = read_pids(pids)
        for _ in range(6):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.2)
        _, err = proc.communicate(timeout=60)  # far less than the 120 s grace
        assert proc.returncode == 130, err
        assert all(gone(p) for p in recorded)
    finally:
        end(proc, recorded)


def test_exec_014_a_setsid_worker_of_a_task_gets_sigterm_at_once(make_ws, tmp_path):
    """A task's worker in a session of its own, whose parent (the task's
    shell, waiting for it in a TERM trap) is still there: SIGTERM reaches it
    at once, not SIGKILL at the end of the grace (only a nested hazrun's
    tasks are left to that hazrun)."""
    log = tmp_path / "log"
    pids = tmp_path / "pids"
    pids.mkdir()
    worker = (f"trap 'echo worker got TERM >> {log}; exit 0' TERM; echo $$ > {pids}/w.pid; "
              "while true; do sleep 0.05; done")
    script = (f"trap 'wait' TERM; setsid sh -c {shlex.quote(worker)} & "
              f"until [ -s {pids}/w.pid ]; do sleep 0.05; done; echo up >> {log}; wait")
    ws = make_ws({"haz.toml": ROOT, "p/a/haz.toml": f"[tasks.run]\ncmd = {json.dumps(script)}\n"})
    proc = start_hazrun(ws, "run", "run", "--grace", "60", "--no-cache")
    recorded = []
    try:
        wait_for(lambda: log.exists() and "up" in log.read_text())
        recorded = read_pids(pids)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)  # far less than the 60 s grace
        assert proc.returncode == 143, err
        assert "worker got TERM" in log.read_text(), err
    finally:
        end(proc, recorded)

"""CLI-004: everything the command does is reachable from Python, and the
library never prints, installs signal handlers or exits."""
from __future__ import annotations

import signal
import threading

import hazrun
from hazrun.outcome import TaskState


def test_cli_004_library_runs_and_cancels_without_signals(make_ws, tmp_path, capfd):
    marker = tmp_path / "started"
    ws = make_ws({
        "haz.toml": '[workspace]\nmembers = ["p/*"]\n',
        "p/a/haz.toml": '[tasks.build]\ncmd = "echo built"\n',
        "p/b/haz.toml": f'[tasks.slow]\ncmd = "touch {marker}; sleep 1000"\n',
    })
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    workspace = hazrun.load_workspace(ws)
    seen = []

    built = threading.Event()

    class Observer(hazrun.RunObserver):
        def task_output(self, label, stream, data):
            seen.append((label, data))

        def task_started(self, label):
            if label == "b:slow":
                token_thread.start()

        def task_finished(self, result):
            if result.label == "a:build":
                built.set()

    token = hazrun.CancelToken()

    def cancel_when_started():
        # Cancel from another thread once a:build is done and b:slow runs.
        built.wait(60)
        while not marker.exists():
            threading.Event().wait(0.02)
        token.cancel()
    token_thread = threading.Thread(target=cancel_when_started)

    outcome = hazrun.run_graph(workspace, ["build", "slow"], Observer(),
                               hazrun.RunOptions(no_cache=True, jobs=2, grace=2), token)
    token_thread.join()
    assert outcome.results["a:build"].state is TaskState.SUCCEEDED
    assert outcome.results["b:slow"].state is TaskState.CANCELLED
    assert ("a:build", b"built\n") in seen
    # No signal: the library's cancellation still maps to an interrupted run.
    assert hazrun.exit_code_for(outcome, token.signal) == 130
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # the library never prints
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def _fds():
    import os
    return sorted(os.listdir("/proc/self/fd"))


def test_cli_004_an_observer_raising_at_run_start_leaves_nothing_open(make_ws):
    """The exception reaches the caller; the loop's fds are closed and the
    token forgets its wake fd (a later cancel() wrote a NUL byte into
    whatever file had reused that number)."""
    import pytest
    ws = hazrun.load_workspace(make_ws({"haz.toml": '[workspace]\n[tasks.t]\ncmd = "true"\n'}))

    class Boom(hazrun.RunObserver):
        def run_started(self, order):
            raise RuntimeError("boom")

    token = hazrun.CancelToken()
    before = _fds()
    with pytest.raises(RuntimeError, match="boom"):
        hazrun.run_graph(ws, ["t"], Boom(), hazrun.RunOptions(no_cache=True), token)
    assert _fds() == before
    assert token._wake_fds == []


def test_cli_004_options_the_command_line_refuses_are_refused(make_ws):
    """Each of these made run_graph wait for ever."""
    import pytest
    ws = hazrun.load_workspace(make_ws({"haz.toml": '[workspace]\n[tasks.t]\ncmd = "true"\n'
                                                    'tags = ["x"]\n'}))
    for options, what in ((hazrun.RunOptions(jobs=-1), "jobs"),
                          (hazrun.RunOptions(jobs=0), "jobs"),
                          (hazrun.RunOptions(tag_caps={"x": 0}), "tag_caps"),
                          (hazrun.RunOptions(grace=float("nan")), "grace")):
        with pytest.raises(hazrun.UsageError, match=what):
            hazrun.run_graph(ws, ["t"], None, options)


def test_cli_004_load_workspace_of_a_path_with_a_nul_is_no_workspace():
    import pytest
    with pytest.raises(hazrun.NoWorkspaceError, match="cannot hold a NUL"):
        hazrun.load_workspace("/tmp/a\0b")


def test_cli_004_an_observer_of_warnings_alone_hears_of_a_runtime_violation(make_ws):
    """A violation is reported through error(), an event younger than the
    observers written against warning(): by default error() passes it there."""
    ws = make_ws({"haz.toml": '[workspace]\nmembers = ["p/*"]\n',
                  "p/a/haz.toml": ('[tasks.w1]\ncmd = "mkdir -p out; echo 1 > out/f"\n'
                                   'outputs = ["out/**"]\n[tasks.w2]\ncmd = "mkdir -p out; '
                                   'echo 2 > out/f"\noutputs = ["out/**"]\ndeps = ["w1"]\n')})
    heard = []

    class Log(hazrun.RunObserver):
        def warning(self, message):
            heard.append(message)

    outcome = hazrun.run_graph(hazrun.load_workspace(ws), ["a:w2"], Log(),
                               hazrun.RunOptions(no_cache=True))
    assert outcome.violations
    assert [m for m in heard if m.startswith("output overlap: p/a/out/f")], heard

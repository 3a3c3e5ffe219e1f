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

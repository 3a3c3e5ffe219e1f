"""Hits answered on the loop thread while it has nothing else to do
(EXEC-002/003): a key the stat cache alone gives, a local lookup, a restore
that finds every output in place.  Anything else (reading a file, asking
git or the remote, writing an output) goes to the pool as before."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from hazrun import CancelToken, RunObserver, RunOptions, TaskState, load_workspace, run_graph
from hazrun.cache import Cache, WouldBlock

from test_cache_support import backdate

N = 6


def _workspace(make_ws) -> Path:
    files = {"haz.toml": '[workspace]\nmembers = ["p/*"]\n'}
    for i in range(N):
        cmd = ("mkdir -p dist && cat src/in.txt > dist/out.txt && echo built $HAZ_PROJECT "
               "&& echo note $HAZ_PROJECT >&2")
        files[f"p/t{i}/haz.toml"] = (
            f'[tasks.build]\ncmd = {json.dumps(cmd)}\ninputs = ["src/**"]\n'
            'outputs = ["dist/**"]\nenv = ["QUICK_FLAVOUR"]\n')
        files[f"p/t{i}/src/in.txt"] = f"input {i}\n"
    return make_ws(files)


class Recording(Cache):
    """Notes each key computation for a lookup: (label, quick, on the main
    thread, how it ended); not the second one a task that runs gets (with
    ``refresh``)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.calls = []
        self._calls_lock = threading.Lock()

    def compute_key(self, label, pred_streams, quick=False, refresh=False):
        if refresh:
            return super().compute_key(label, pred_streams, quick, refresh)
        main = threading.current_thread() is threading.main_thread()
        try:
            key = super().compute_key(label, pred_streams, quick)
        except WouldBlock:
            with self._calls_lock:
                self.calls.append((label, quick, main, "would block"))
            raise
        with self._calls_lock:
            self.calls.append((label, quick, main, "keyed"))
        return key


class Captured(RunObserver):
    def __init__(self):
        self.output = []
        self.finished = []

    def task_output(self, label, stream, data):
        self.output.append((label, stream.value, data))

    def task_finished(self, result):
        self.finished.append(result.label)


def _run(ws: Path, tmp_path: Path, observer=None, token=None, environ=None, force=False):
    workspace = load_workspace(ws)
    env = dict(os.environ if environ is None else environ)
    cache = Recording(workspace, tmp_path / "cache", env, read=not force)
    observer = observer or Captured()
    outcome = run_graph(workspace, ["build"], observer,
                        RunOptions(jobs=2, cache_dir=tmp_path / "cache", environ=env,
                                   force=force),
                        token, cache=cache)
    return outcome, cache, observer


def _settle(ws: Path, tmp_path: Path):
    """A first run, then files old enough for the stat cache to trust
    (CACHE-006), then a run that records them: the state a build tree is in
    after a build and a no-change run."""
    first = _run(ws, tmp_path)
    backdate(ws)
    _run(ws, tmp_path)
    return first


def _states(outcome):
    return {label: r.state for label, r in outcome.results.items()}


def test_exec_003_no_change_hits_are_answered_on_the_loop_thread(make_ws, tmp_path):
    ws = _workspace(make_ws)
    cold, cold_cache, cold_seen = _settle(ws, tmp_path)
    assert set(_states(cold).values()) == {TaskState.SUCCEEDED}
    # Cold: the inputs must be read, so every key that was computed came
    # from a pool thread; the loop's attempts gave up without a key.
    assert [c for c in cold_cache.calls if c[3] == "keyed" and c[2]] == []
    assert all(c[1] for c in cold_cache.calls if c[3] == "would block")

    outcome, cache, seen = _run(ws, tmp_path)
    assert set(_states(outcome).values()) == {TaskState.CACHED}
    assert sorted(cache.calls) == sorted((f"t{i}:build", True, True, "keyed") for i in range(N))
    # EXEC-017: each hit printed what its run printed, task by task.
    assert sorted(seen.output) == sorted(cold_seen.output)
    assert len(seen.output) == 2 * N
    for i in range(N):
        assert (ws / f"p/t{i}/dist/out.txt").read_text() == f"input {i}\n"


def test_cache_004_quick_path_hands_over_what_needs_reading_or_writing(make_ws, tmp_path):
    ws = _workspace(make_ws)
    _settle(ws, tmp_path)
    (ws / "p/t0/src/in.txt").write_text("input 0\n")      # rewritten, same bytes
    (ws / "p/t1/dist/out.txt").unlink()                   # an output to write again
    (ws / "p/t2/dist/out.txt").write_text("input X\n")    # same size, other bytes

    outcome, cache, _ = _run(ws, tmp_path)
    assert set(_states(outcome).values()) == {TaskState.CACHED}
    for i in range(N):
        assert (ws / f"p/t{i}/dist/out.txt").read_text() == f"input {i}\n"
    # t0's input must be read again: the loop's attempt gave up on its key.
    # t1's and t2's outputs must be written: whoever keyed them, the pool
    # keyed them again and restored.
    assert ("t0:build", True, True, "would block") in cache.calls
    pool_keyed = {c[0] for c in cache.calls if c[3] == "keyed" and not c[1]}
    assert {"t0:build", "t1:build", "t2:build"} <= pool_keyed
    assert all(not c[2] for c in cache.calls if not c[1])


def test_cache_001_quick_key_sees_a_changed_variable(make_ws, tmp_path):
    ws = _workspace(make_ws)
    _settle(ws, tmp_path)
    env = dict(os.environ, QUICK_FLAVOUR="salty")
    outcome, cache, seen = _run(ws, tmp_path, environ=env)
    # Each key is new, so every task misses and runs; the first was keyed
    # from the stat cache on the loop, which then spawned it.
    assert set(_states(outcome).values()) == {TaskState.SUCCEEDED}
    assert cache.calls[0] == ("t0:build", True, True, "keyed")
    again, _, _ = _run(ws, tmp_path, environ=env)
    assert set(_states(again).values()) == {TaskState.CACHED}


def test_exec_012_cancel_between_quick_hits_stops_at_the_next_task(make_ws, tmp_path):
    ws = _workspace(make_ws)
    _settle(ws, tmp_path)
    token = CancelToken()

    class CancelAfterTwo(Captured):
        def task_finished(self, result):
            super().task_finished(result)
            if len(self.finished) == 2:
                token.cancel()  # what the signal handler does on Ctrl-C

    outcome, _, seen = _run(ws, tmp_path, observer=CancelAfterTwo(), token=token)
    states = [outcome.results[label].state for label in outcome.order]
    assert states[:2] == [TaskState.CACHED, TaskState.CACHED]
    assert states[2:] == [TaskState.CANCELLED] * (N - 2)
    assert outcome.cancelled


def test_cache_005_force_and_uncached_tasks_still_run_from_the_quick_path(make_ws, tmp_path):
    """Keyed on the loop from the stat cache, but never looked up: --force
    runs every task, and a task with cache = false runs every time."""
    ws = _workspace(make_ws)
    toml = ws / "p/t4/haz.toml"
    toml.write_text(toml.read_text() + "cache = false\n")
    _settle(ws, tmp_path)
    outcome, cache, _ = _run(ws, tmp_path)
    states = _states(outcome)
    assert states.pop("t4:build") is TaskState.SUCCEEDED
    assert set(states.values()) == {TaskState.CACHED}
    assert ("t0:build", True, True, "keyed") in cache.calls

    forced, cache, seen = _run(ws, tmp_path, force=True)
    assert set(_states(forced).values()) == {TaskState.SUCCEEDED}
    assert cache.calls[0] == ("t0:build", True, True, "keyed")
    assert len(seen.output) == 2 * N  # each ran and printed afresh

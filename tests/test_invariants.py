"""Runtime invariants over what tasks really wrote (EXEC-019, EXEC-020,
EXEC-021 exit 3, CLI-003 violations), with real processes.

Where a task must still be running when hazrun records a violation, the
test reads hazrun's stderr as it comes and, once the violation's warning has
been printed, creates the file that task waits for: no sleeping and hoping.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading

import pytest

from conftest import REPO, hazrun_cmd, intervals, run_hazrun, timed

q = json.dumps  # a TOML basic string with everything escaped

ROOT = '[workspace]\nmembers = ["p/*"]\n'


def until(test: str, tries: int = 400) -> str:
    """Shell: wait (at most tries * 50 ms) until ``test`` succeeds."""
    return (f"n=0; until {test}; do n=$((n+1)); [ $n -ge {tries} ] && break; "
            "sleep 0.05; done")


def exists(path) -> str:
    return f"[ -e {shlex.quote(str(path))} ]"


def summary(path):
    doc = json.loads(path.read_text())
    return doc, {t["label"]: t for t in doc["tasks"]}


def state(task):
    return task["state"], task["cause"]


def run_until_warning(ws, needle, marker, *args, more=()):
    """Run hazrun; when a stderr line contains ``needle``, create ``marker``
    (and so for each further (needle, marker) pair in ``more``).  Returns
    (exit code, stderr)."""
    watch = [(needle, marker), *more]
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    env.pop("MAKEFLAGS", None)
    proc = subprocess.Popen(hazrun_cmd("-C", str(ws), *args), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out = []
    # stdout is drained beside, so a chatty task can never block hazrun.
    drain = threading.Thread(target=lambda: out.append(proc.stdout.read()))
    drain.start()
    lines = []
    try:
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            for text, path in watch:
                if text in line and not path.exists():
                    path.write_text("go")
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        drain.join()
        proc.stdout.close()
        proc.stderr.close()
    err = "".join(lines)
    assert "Traceback" not in err, err
    return proc.returncode, err


# -- EXEC-020: output overlap ----------------------------------------------------------

def overlap_ws(make_ws, tmp_path, slow_ends="exit 0"):
    """x:w1 and x:w2 both write out/f; x:late waits on w2; s:slow is running
    when the overlap is found and ends only after it; s:after waits on it."""
    log = tmp_path / "run.log"
    seen = tmp_path / "seen"
    ws = make_ws({
        "haz.toml": ROOT,
        "p/x/haz.toml": (
            f'[tasks.w1]\ncmd = {q(timed("w1", "mkdir -p out; echo 1 > out/f", log))}\n'
            'outputs = ["out/**"]\n'
            f'[tasks.w2]\ncmd = {q(timed("w2", "mkdir -p out; echo 2 > out/f", log))}\n'
            'outputs = ["out/**"]\ndeps = ["w1"]\n'
            f'[tasks.late]\ncmd = {q(timed("late", "true", log))}\ndeps = ["w2"]\n'),
        "p/s/haz.toml": (
            f'[tasks.slow]\ncmd = {q(timed("slow", until(exists(seen)), log) + "; " + slow_ends)}\n'
            f'[tasks.after]\ncmd = {q(timed("after", "true", log))}\ndeps = ["slow"]\n'),
    })
    return ws, log, seen


def test_exec_020_output_overlap(make_ws, tmp_path):
    ws, log, seen = overlap_ws(make_ws, tmp_path)
    report = tmp_path / "s.json"
    code, err = run_until_warning(ws, "output overlap", seen, "run", "x:late", "s:after",
                                  "-j4", "--no-cache", "--summary-json", str(report))
    assert code == 3, err
    doc, tasks = summary(report)
    assert doc["exit_code"] == 3 and doc["signal"] is None
    assert doc["violations"] == [{"kind": "output_overlap", "tasks": ["x:w1", "x:w2"],
                                  "path": "p/x/out/f"}]
    # What had run or was running ends normally.
    for label in ("x:w1", "x:w2", "s:slow"):
        assert state(tasks[label]) == ("succeeded", None), label
    # What had not started is skipped, and never runs.
    for label in ("x:late", "s:after"):
        assert state(tasks[label]) == ("skipped", "output_overlap"), label
        assert tasks[label]["upstream"] is None
    spans = intervals(log)
    assert "late" not in spans and "after" not in spans
    assert ("hazrun: error: output overlap: p/x/out/f is an output of both x:w1 and "
            "x:w2 (the outputs of each match it once it ran)") in err
    assert "hazrun: x:late skipped: run stopped by an output overlap" in err
    # The summary names both tasks, not an edge between them.
    assert "hazrun:   output overlap: p/x/out/f is an output of both x:w1 and x:w2" in err


def test_exec_021_overlap_and_a_failure_exit_1(make_ws, tmp_path):
    ws, log, seen = overlap_ws(make_ws, tmp_path, slow_ends="exit 5")
    report = tmp_path / "s.json"
    code, err = run_until_warning(ws, "output overlap", seen, "run", "x:late", "s:after",
                                  "-j4", "--no-cache", "--summary-json", str(report))
    assert code == 1, err
    doc, tasks = summary(report)
    assert doc["exit_code"] == 1
    assert [v["kind"] for v in doc["violations"]] == ["output_overlap"]
    assert (tasks["s:slow"]["state"], tasks["s:slow"]["exit_code"]) == ("failed", 5)
    assert state(tasks["s:after"]) == ("skipped", "output_overlap")


@pytest.mark.parametrize("files", [1, 200])
def test_exec_020_overlap_found_without_cache_small_and_big_trees(make_ws, tmp_path, files):
    """--no-cache lists a small output tree on the loop and a big one in the
    pool; either way the overlap is found (EXEC-020)."""
    make = f"mkdir -p out && for i in $(seq {files}); do echo $i > out/f$i; done"
    ws = make_ws({
        "haz.toml": ROOT,
        "p/x/haz.toml": (f'[tasks.w1]\ncmd = {json.dumps(make)}\noutputs = ["out/**"]\n'
                         '[tasks.w2]\ncmd = "echo 2 > out/f1"\noutputs = ["out/f1"]\n'
                         'deps = ["w1"]\n'),
    })
    report = tmp_path / "s.json"
    proc = run_hazrun(ws, "run", "x:w2", "--no-cache", "--summary-json", str(report))
    assert proc.returncode == 3, proc.stderr
    doc, _ = summary(report)
    assert doc["violations"] == [{"kind": "output_overlap", "tasks": ["x:w1", "x:w2"],
                                  "path": "p/x/out/f1"}]


def test_exec_020_find_outputs_stops_at_its_budget(tmp_path):
    from hazrun.cache.outputs import TooMany, find_outputs
    from hazrun.globs import GlobSet

    for i in range(20):
        (tmp_path / "p" / "out").mkdir(parents=True, exist_ok=True)
        (tmp_path / "p" / "out" / f"f{i}").write_text("x")
    globs = GlobSet.compile(["p/out/**"])
    assert len(find_outputs(str(tmp_path), globs, "p")) == 20
    assert len(find_outputs(str(tmp_path), globs, "p", limit=20)) == 20
    with pytest.raises(TooMany):
        find_outputs(str(tmp_path), globs, "p", limit=19)


def test_exec_020_find_outputs_records_a_linked_directory_below_the_project_not_its_files(
        tmp_path):
    """The project's own directory is trusted as loaded; a link on the way
    below it is an output in its own right, never walked into."""
    from hazrun.cache.outputs import find_outputs
    from hazrun.globs import GlobSet

    outside = tmp_path / "outside"
    (outside / "lib").mkdir(parents=True)
    (outside / "lib" / "secret").write_text("x")
    (tmp_path / "p" / "out").mkdir(parents=True)
    (tmp_path / "p" / "out" / "lib").symlink_to(outside / "lib")
    (tmp_path / "p" / "out" / "f").write_text("x")
    assert find_outputs(str(tmp_path), GlobSet.compile(["p/out/**"]), "p") == \
        ["p/out/f", "p/out/lib"]
    assert find_outputs(str(tmp_path), GlobSet.compile(["p/out/lib/**"]), "p") == []
    assert find_outputs(str(tmp_path), GlobSet.compile(["p/out/lib/secret"]), "p") == []


def test_exec_020_overlap_found_on_cache_hits_too(make_ws, tmp_path):
    """Restored outputs are claimed like fresh ones."""
    ws = make_ws({
        "haz.toml": ROOT,
        "p/x/haz.toml": ('[tasks.w1]\ncmd = "echo 1 > f.txt"\noutputs = ["f.txt"]\n'
                         '[tasks.w2]\ncmd = "echo 2 > f.txt"\noutputs = ["f.txt"]\n'
                         'deps = ["w1"]\n'),
    })
    report = tmp_path / "s.json"
    assert run_hazrun(ws, "run", "x:w2").returncode == 3
    proc = run_hazrun(ws, "run", "x:w2", "--summary-json", str(report))
    assert proc.returncode == 3, proc.stderr
    doc, tasks = summary(report)
    assert state(tasks["x:w1"]) == ("cached", None)
    assert doc["violations"] == [{"kind": "output_overlap", "tasks": ["x:w1", "x:w2"],
                                  "path": "p/x/f.txt"}]


# -- EXEC-019: runtime cycle -------------------------------------------------------------

def cycle_ws(make_ws, tmp_path, tasks_on_cycle=2):
    """a:build reads $root/p/<last>/out/**; b:build deps a:build (and c:build
    deps b:build); the last one writes out/gen.txt: a cycle closed by it.
    s:slow, off the cycle, is running when the cycle is found."""
    log = tmp_path / "run.log"
    seen = tmp_path / "seen"
    last = "b" if tasks_on_cycle == 2 else "c"
    files = {
        "haz.toml": ROOT,
        "p/a/haz.toml": (f'[tasks.build]\ncmd = {q(timed("a", "true", log))}\n'
                         f'inputs = ["src/**", "$root/p/{last}/out/**"]\n'),
        "p/a/src/main.txt": "main\n",
        "p/s/haz.toml": (
            f'[tasks.slow]\ncmd = {q(timed("slow", until(exists(seen)) + "; sleep 1000", log))}\n'
            f'[tasks.after]\ncmd = {q(timed("after", "true", log))}\ndeps = ["slow"]\n'),
    }
    chain = ["a", "b"] if tasks_on_cycle == 2 else ["a", "b", "c"]
    for prev, name in zip(chain, chain[1:]):
        body = "mkdir -p out; echo gen > out/gen.txt" if name == last else "true"
        files[f"p/{name}/haz.toml"] = (
            f'[tasks.build]\ncmd = {q(timed(name, body, log))}\ndeps = ["{prev}:build"]\n'
            + ('outputs = ["out/**"]\n' if name == last else ""))
    files["p/z/haz.toml"] = (f'[tasks.build]\ncmd = {q(timed("z", "true", log))}\n'
                             f'deps = ["{last}:build"]\n')
    return make_ws(files), log, seen


def test_exec_019_runtime_cycle(make_ws, tmp_path):
    ws, log, seen = cycle_ws(make_ws, tmp_path)
    report = tmp_path / "s.json"
    # seen is created once the cycle is reported: s:slow is then running.
    code, err = run_until_warning(ws, "runtime cycle", seen, "run", "z:build", "s:after",
                                  "-j4", "--no-cache", "--grace", "5",
                                  "--summary-json", str(report))
    # A violation, not the user's cancellation.
    assert code == 3, err
    doc, tasks = summary(report)
    assert doc["exit_code"] == 3 and doc["signal"] is None
    assert doc["violations"] == [{"kind": "runtime_cycle", "tasks": ["b:build", "a:build"],
                                  "path": "p/b/out/gen.txt"}]
    assert state(tasks["a:build"]) == ("succeeded", None)
    assert state(tasks["b:build"]) == ("succeeded", None)
    # In flight, off the cycle: stopped as by EXEC-014.
    assert state(tasks["s:slow"]) == ("cancelled", "signalled")
    # Not started: skipped, never run.
    for label in ("z:build", "s:after"):
        assert state(tasks[label]) == ("skipped", "runtime_cycle"), label
    spans = intervals(log)
    assert "z" not in spans and "after" not in spans
    assert "end slow" not in log.read_text()
    assert ("hazrun: error: runtime cycle: b:build -> a:build -> b:build "
            "(closed by p/b/out/gen.txt)") in err
    # The summary shows the whole loop too.
    assert ("hazrun:   runtime cycle: b:build -> a:build -> b:build "
            "(closed by p/b/out/gen.txt)") in err


def test_exec_019_cycle_lists_labels_in_order(make_ws, tmp_path):
    """c:build writes what a:build reads; b deps a, c deps b: the cycle is
    listed from the writer along the edges (c feeds a, a feeds b, b feeds c)."""
    ws, log, seen = cycle_ws(make_ws, tmp_path, tasks_on_cycle=3)
    seen.write_text("go")  # s:slow is not part of this run
    report = tmp_path / "s.json"
    proc = run_hazrun(ws, "run", "z:build", "--no-cache", "--summary-json", str(report))
    assert proc.returncode == 3, proc.stderr
    doc, tasks = summary(report)
    assert doc["violations"] == [{"kind": "runtime_cycle",
                                  "tasks": ["c:build", "a:build", "b:build"],
                                  "path": "p/c/out/gen.txt"}]
    assert state(tasks["z:build"]) == ("skipped", "runtime_cycle")


def test_exec_019_git_ignored_output_closes_no_cycle(make_ws, tmp_path):
    """Files git ignores are never inputs (CFG-006), so writing one is no
    augmented edge."""
    ws, log, seen = cycle_ws(make_ws, tmp_path)
    (ws / ".gitignore").write_text("out/\n")
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    proc = run_hazrun(ws, "run", "z:build", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    assert "cycle" not in proc.stderr


# -- EXEC-019: races ----------------------------------------------------------------------

def race_ws(make_ws, ordered: bool):
    return make_ws({
        "haz.toml": ROOT,
        "p/w/haz.toml": ('[tasks.gen]\ncmd = "mkdir -p out; echo data > out/data.txt"\n'
                         'outputs = ["out/**"]\n'),
        "p/r/haz.toml": ('[tasks.use]\ncmd = "true"\n'
                         'inputs = ["src/**", "$root/p/w/out/**"]\n'
                         + ('deps = ["w:gen"]\n' if ordered else "")),
    })


def test_exec_019_race_warning(make_ws):
    ws = race_ws(make_ws, ordered=False)
    proc = run_hazrun(ws, "run", "gen", "use", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    warning = [l for l in proc.stderr.splitlines() if "neither depends on the other" in l]
    assert len(warning) == 1, proc.stderr
    line = warning[0]
    assert line.startswith("hazrun: warning: ")
    assert "w:gen" in line and "r:use" in line and "p/w/out/data.txt" in line
    assert line.endswith('add "w:gen" to the deps of r:use')  # r:use has inputs


def test_exec_019_race_with_a_reader_without_inputs_suggests_giving_it_some(make_ws):
    """A task with no inputs reads every file of its project: a sibling's
    outputs too, which the user more often means to leave out than to
    order after."""
    ws = make_ws({"haz.toml": ROOT,
                  "p/r/haz.toml": ('[tasks.gen]\ncmd = "mkdir -p out; echo d > out/d.txt"\n'
                                   'outputs = ["out/**"]\n[tasks.use]\ncmd = "true"\n')})
    proc = run_hazrun(ws, "run", "gen", "use", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    assert ('add "r:gen" to the deps of r:use, or give r:use inputs (it has none, so '
            "every file of its project is one)") in proc.stderr
    # Read through [workspace] inputs, the file stays an input whatever
    # inputs the reader is given: no such advice.
    ws = make_ws({"haz.toml": ROOT + 'inputs = ["p/w/out/**"]\n',
                  "p/w/haz.toml": ('[tasks.gen]\ncmd = "mkdir -p out; echo d > out/d.txt"\n'
                                   'outputs = ["out/**"]\n'),
                  "p/r/haz.toml": '[tasks.use]\ncmd = "true"\n'}, name="ws-inputs")
    proc = run_hazrun(ws, "run", "gen", "use", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count('add "w:gen" to the deps of r:use') == 1, proc.stderr
    assert "or give r:use inputs" not in proc.stderr


def test_exec_019_no_race_warning_when_ordered(make_ws):
    ws = race_ws(make_ws, ordered=True)
    proc = run_hazrun(ws, "run", "use", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr


def test_exec_019_cycle_after_an_overlap_still_stops_tasks_in_flight(make_ws, tmp_path):
    """An overlap halts the run first; b:build, in flight, then completes and
    closes a cycle: s:slow, still running, must be stopped all the same."""
    ws, log, seen = cycle_ws(make_ws, tmp_path)
    overlap_seen = tmp_path / "overlap-seen"
    never = tmp_path / "never"
    # b:build finishes only after the overlap; s:slow waits for nothing
    # that comes (10 s at most): only termination ends it early.
    (ws / "p/b/haz.toml").write_text(
        f'[tasks.build]\ncmd = {q(timed("b", until(exists(overlap_seen)) + "; mkdir -p out; echo gen > out/gen.txt", log))}\n'
        'deps = ["a:build"]\noutputs = ["out/**"]\n')
    (ws / "p/s/haz.toml").write_text(
        f'[tasks.slow]\ncmd = {q(timed("slow", until(exists(never), tries=200), log))}\n')
    (ws / "p/x").mkdir()
    # The overlap comes only once b:build is running.
    b_started = f"grep -q '^start b ' {shlex.quote(str(log))}"
    (ws / "p/x/haz.toml").write_text(
        f'[tasks.w1]\ncmd = {q(until(b_started) + "; echo 1 > f")}\noutputs = ["f"]\n'
        '[tasks.w2]\ncmd = "echo 2 > f"\noutputs = ["f"]\ndeps = ["w1"]\n')
    report = tmp_path / "s.json"
    code, err = run_until_warning(ws, "output overlap", overlap_seen,
                                  "run", "b:build", "s:slow", "x:w2", "-j4", "--no-cache",
                                  "--grace", "5", "--summary-json", str(report))
    assert code == 3, err
    doc, tasks = summary(report)
    assert [v["kind"] for v in doc["violations"]] == ["output_overlap", "runtime_cycle"]
    assert state(tasks["b:build"]) == ("succeeded", None)
    assert state(tasks["s:slow"]) == ("cancelled", "signalled")


def test_exec_020_task_needing_a_held_mutex_after_the_overlap_is_skipped(make_ws, tmp_path):
    """m:t is admitted before an overlap halts the run, and asks for db,
    held by h:hold, only after it: no waiter is granted once admission has
    stopped, so it is skipped (it has not started) instead of waiting for
    ever."""
    from hazrun import load_workspace
    from hazrun.cache import Cache
    from hazrun.output import RunObserver
    from hazrun.scheduler import CancelToken, RunOptions, run_graph

    h_started = tmp_path / "h-started"
    m_final = tmp_path / "m-final"
    ws = make_ws({
        "haz.toml": ROOT,
        "p/h/haz.toml": ('[tasks.hold]\nmutex = ["db"]\ncache = false\n'
                         f'cmd = {q(f"touch {h_started}; " + until(exists(m_final)))}\n'),
        "p/m/haz.toml": '[tasks.t]\nmutex = ["db"]\ncmd = "echo m ran"\n',
        "p/x/haz.toml": (f'[tasks.w1]\ncmd = {q(until(exists(h_started)) + "; echo 1 > f")}\n'
                         'outputs = ["f"]\n'
                         '[tasks.w2]\ncmd = "echo 2 > f"\noutputs = ["f"]\ndeps = ["w1"]\n'),
    })
    overlap = threading.Event()

    class Observer(RunObserver):
        def warning(self, message):
            if "output overlap" in message:
                overlap.set()

        def task_finished(self, result):
            if result.label == "m:t":
                m_final.write_text(result.state.value)

        task_skipped = task_finished

    class SlowKeyCache(Cache):
        def compute_key(self, label, pred_streams, quick=False, refresh=False):
            if label == "m:t" and not refresh:
                overlap.wait(20)  # m:t misses only once the run is halted
            return super().compute_key(label, pred_streams, quick, refresh)

    workspace = load_workspace(ws)
    cache = SlowKeyCache(workspace, tmp_path / "cache", dict(os.environ))
    token = CancelToken()
    outcome = []
    runner = threading.Thread(target=lambda: outcome.append(run_graph(
        workspace, ["h:hold", "m:t", "x:w2"], Observer(), RunOptions(jobs=4),
        token, cache)))
    runner.start()
    runner.join(60)
    if runner.is_alive():
        token.cancel()
        runner.join(60)
        raise AssertionError("the run never ended: m:t waits for a mutex for ever")
    results = outcome[0].results
    assert [v.kind.value for v in outcome[0].violations] == ["output_overlap"]
    assert (results["m:t"].state.value, results["m:t"].cause.value) == ("skipped",
                                                                          "output_overlap")
    assert results["h:hold"].state.value == "succeeded"


def _summary(path):
    doc = json.loads(path.read_text())
    return doc["violations"], {t["label"]: (t["state"], t["cause"]) for t in doc["tasks"]}


def test_exec_019_an_overlap_does_not_hide_a_cycle_the_same_outputs_close(make_ws, tmp_path):
    """y's outputs overlap x's and write r's input: both violations are
    recorded, and the cycle stops the task in flight (slow waits for a file
    that never comes: only termination ends it early)."""
    never = tmp_path / "never"
    ws = make_ws({"haz.toml": "\n".join([
        "[workspace]",
        "[tasks.x]", 'cmd = "mkdir -p out && echo x > out/f"', 'outputs = ["out/f"]',
        'inputs = ["haz.toml"]',
        "[tasks.r]", 'cmd = "echo r"', 'inputs = ["gen/**"]',
        "[tasks.y]", 'cmd = "mkdir -p out gen && echo y > out/f && echo y > gen/g"',
        'outputs = ["out/**", "gen/**"]', 'inputs = ["haz.toml"]', 'deps = ["x", "r"]',
        "[tasks.slow]", f'cmd = "i=0; until [ -e {never} ] || [ $i -ge 600 ]; do sleep 0.05; '
        'i=$((i+1)); done"', 'inputs = ["haz.toml"]', ""])})
    summary = tmp_path / "s.json"
    proc = run_hazrun(ws, "run", "y", "slow", "-j2", "--no-cache", "--summary-json", str(summary))
    violations, states = _summary(summary)
    assert proc.returncode == 3
    assert [v["kind"] for v in violations] == ["output_overlap", "runtime_cycle"]
    assert violations[1]["tasks"] == ["root:y", "root:r"] and violations[1]["path"] == "gen/g"
    assert states["root:slow"] == ("cancelled", "signalled")


def test_exec_019_writing_a_workspace_input_closes_a_cycle(make_ws, tmp_path):
    """[workspace] inputs are in every key: gen, which depends on a:build,
    rewriting one is a runtime cycle (a:build would miss on every run)."""
    ws = make_ws({"haz.toml": '[workspace]\nmembers = ["p/*"]\ninputs = ["tool.lock"]\n'
                              '[tasks.gen]\ncmd = "date +%N > tool.lock"\n'
                              'outputs = ["tool.lock"]\ndeps = ["a:build"]\n',
                  "p/a/haz.toml": '[tasks.build]\ncmd = "echo built"\n',
                  "tool.lock": "0\n"})
    summary = tmp_path / "s.json"
    proc = run_hazrun(ws, "run", "gen", "--no-cache", "--summary-json", str(summary))
    violations, _ = _summary(summary)
    assert proc.returncode == 3
    assert violations == [{"kind": "runtime_cycle", "tasks": ["root:gen", "a:build"],
                           "path": "tool.lock"}]


def test_exec_020_a_task_keyed_while_an_overlap_stops_admission_never_starts(make_ws, tmp_path):
    """hashy's key is still being taken (a big input, here a key held back
    until the overlap is reported) when x and y overlap: it then starts
    nothing, as a mutex waiter would not."""
    import threading

    from hazrun import load_workspace
    from hazrun.cache import Cache
    from hazrun.output import RunObserver
    from hazrun.scheduler import RunOptions, run_graph

    ran = tmp_path / "hashy-ran"
    ws = make_ws({"haz.toml": "\n".join([
        "[workspace]",
        "[tasks.x]", 'cmd = "mkdir -p out && echo x > out/f"', 'outputs = ["out/f"]',
        "[tasks.y]", 'cmd = "mkdir -p out && echo y > out/f"', 'outputs = ["out/**"]',
        'deps = ["x"]',
        "[tasks.hashy]", f'cmd = "touch {ran}"', 'inputs = ["haz.toml"]', ""])})
    overlap = threading.Event()

    class Observer(RunObserver):
        def warning(self, text):
            if "output overlap" in text:
                overlap.set()

    class SlowKey(Cache):
        def compute_key(self, label, pred_streams, quick=False, refresh=False):
            if label == "root:hashy" and not refresh:
                if quick:
                    from hazrun.cache import WouldBlock
                    raise WouldBlock(label)  # to the pool, where it may wait
                assert overlap.wait(30)
            return super().compute_key(label, pred_streams, quick, refresh)

    workspace = load_workspace(ws)
    env = dict(os.environ)
    outcome = run_graph(workspace, ["y", "hashy"], Observer(),
                        RunOptions(jobs=2, cache_dir=tmp_path / "cache", environ=env),
                        cache=SlowKey(workspace, tmp_path / "cache", env))
    state = outcome.results["root:hashy"]
    assert (state.state.value, state.cause.value) == ("skipped", "output_overlap")
    assert not ran.exists()


# --------------------------------------------------------------------------
# EXEC-020 before running: outputs two tasks both declare, found at load.
# Across runs the runtime claim map never sees them together, while a hit
# of one restores its old copy of the other's file.

OVERLAPS = {
    "haz.toml": '[workspace]\nmembers = ["a", "b", "a/sub"]\n',
    "a/haz.toml": (
        '[tasks.build]\ncmd = "mkdir -p dist && echo built > dist/a.txt && echo ran build"\n'
        'outputs = ["dist/**"]\n'
        '[tasks.extra]\ncmd = "mkdir -p dist && echo b > dist/b.txt"\noutputs = ["dist/b.txt"]\n'
        '[tasks.js]\ncmd = "true"\noutputs = ["out/*.js"]\n'
        '[tasks.css]\ncmd = "true"\noutputs = ["out/*.css"]\n'
        '[tasks.all]\ncmd = "true"\noutputs = ["sub/gen/**"]\n'),
    "a/sub/haz.toml": '[tasks.gen]\ncmd = "true"\noutputs = ["gen/**"]\n',
    "b/haz.toml": (
        '[tasks.most]\ncmd = "true"\noutputs = ["dist/**", "!dist/keep.txt"]\n'
        '[tasks.keep]\ncmd = "true"\noutputs = ["dist/keep.txt"]\n'
        '[tasks.nc1]\ncmd = "true"\noutputs = ["nc/**"]\ncache = false\n'
        '[tasks.nc2]\ncmd = "true"\noutputs = ["nc/x"]\ncache = false\n'
        '[tasks.same1]\ncmd = "true"\noutputs = ["gen/*.c"]\n'
        '[tasks.same2]\ncmd = "true"\noutputs = ["gen/*.c", "x"]\n'),
}


def test_exec_020_outputs_two_tasks_declare_are_warned_before_they_run(make_ws):
    ws = make_ws(OVERLAPS)
    for _ in range(2):  # the second run loads the workspace snapshot
        proc = run_hazrun(ws, "run", "a:build", "--no-cache")
        out, err = proc.stdout, proc.stderr
        assert proc.returncode == 0, err
        warning = ("hazrun: warning: a:build and a:extra both declare outputs selecting "
                   "'a/dist/b.txt'")
        assert warning in err
        # Told before the task runs, not after.
        assert err.index(warning) < err.index("hazrun: 1 task")
        assert out.splitlines() == ["[a:build] ran build"]
    # A task inside another project's output directory, the same pattern
    # twice: each pair is named once.
    err = run_hazrun(ws, "run", "a:all", "b:same1", "--no-cache").stderr
    assert "a:all and sub:gen both declare outputs selecting 'a/sub/gen/**'" in err
    assert "b:same1 and b:same2 both declare outputs selecting 'b/gen/*.c'" in err
    assert err.count("both declare") == 2


def test_exec_020_outputs_that_only_may_meet_are_not_warned(make_ws):
    ws = make_ws(OVERLAPS)
    # Two wildcards that select different files; an exclude that takes the
    # other task's file out; neither task of a pair in the run.
    # Tasks never cached are never restored: no stale copies to warn of.
    proc = run_hazrun(ws, "run", "a:js", "a:css", "b:most", "b:keep", "b:nc1", "b:nc2",
                      "--no-cache")
    err = proc.stderr
    assert proc.returncode == 0, err
    assert "both declare" not in err


def test_exec_020_overlap_search_is_bounded_and_per_directory():
    from hazrun.globs import GlobSet
    from hazrun.graph import MAX_OVERLAPS, output_overlaps
    # 2,000 projects with the same relative outputs: nothing shared.
    many = [(f"p{i}:build", GlobSet.compile(["dist/**", "out.txt"], f"p/p{i}"))
            for i in range(2000)]
    assert output_overlaps(many) == []
    # Every task of one project writing dist/: the first pairs say it.
    crowd = [(f"a:t{i:03d}", GlobSet.compile(["dist/**"], "a")) for i in range(300)]
    found = output_overlaps(crowd)
    assert len(found) == MAX_OVERLAPS
    assert all(w == "a/dist/**" for _, _, w in found)
    # A literal path under another task's directory, and one it excludes.
    assert output_overlaps([("a:x", GlobSet.compile(["dist"], "a")),
                            ("a:y", GlobSet.compile(["dist/sub/f.txt"], "a"))]) == \
        [("a:x", "a:y", "a/dist/sub/f.txt")]
    assert output_overlaps([("a:x", GlobSet.compile(["dist/**", "!dist/f.txt"], "a")),
                            ("a:y", GlobSet.compile(["dist/f.txt"], "a"))]) == []
    # 'dist' names the directory and everything in it.
    for other in ("dist/**", "dist/*.js"):
        assert output_overlaps([("a:x", GlobSet.compile(["dist"], "a")),
                                ("a:y", GlobSet.compile([other], "a"))]) == \
            [("a:x", "a:y", "a/" + other)]

"""Shared fixtures: workspace builders and the leak check every test gets."""
from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent

# A suite started in the background by a shell without job control (``pytest
# &`` in a script) inherits SIGINT ignored, and so would every hazrun it
# starts: hazrun keeps an ignored SIGINT ignored, as make does, and the
# tests of Ctrl-C would wait for a run that never stops.  They test hazrun
# as a terminal starts it; the one test of the ignored case ignores it itself.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def no_leaked_processes():
    """Fail any test that leaves a child process (or a zombie) behind."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    deadline = time.monotonic() + 5.0
    while True:
        leaked = [p for p in me.children(recursive=True) if p.pid not in before]
        alive = []
        for p in leaked:
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    alive.append(f"{p.pid} (zombie)")
                else:
                    alive.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for p in leaked:
        try:
            p.kill()
        except psutil.Error:
            pass
    assert not alive, f"test left processes behind: {alive}"


def write_files(root: Path, files: Dict[str, str]) -> Path:
    """Create ``files`` (relative path -> text, dedented) under ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


@pytest.fixture
def make_ws(tmp_path):
    """Build a workspace from a dict of files; returns its root."""
    def build(files: Dict[str, str], name: str = "ws") -> Path:
        return write_files(tmp_path / name, files)
    return build


def hazrun_cmd(*args: str):
    """argv that runs this checkout's hazrun in a child Python."""
    return [sys.executable, "-m", "hazrun", *args]


@pytest.fixture
def hazrun_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    env["NO_COLOR"] = "1"
    return env


def run_hazrun(root, *args, env=None, timeout=90, check_no_traceback=True):
    """Run hazrun in a child process on workspace ``root``; return the result
    with ``stdout``/``stderr`` as text (undecodable bytes escaped)."""
    import subprocess
    environ = dict(env if env is not None else os.environ)
    environ["PYTHONPATH"] = str(REPO) + os.pathsep + environ.get("PYTHONPATH", "")
    environ.pop("MAKEFLAGS", None)
    environ.pop("MFLAGS", None)
    environ.setdefault("NO_COLOR", "1")
    proc = subprocess.run(hazrun_cmd("-C", str(root), *args), env=environ,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    proc.stdout = proc.stdout.decode("utf-8", "surrogateescape")
    proc.stderr = proc.stderr.decode("utf-8", "surrogateescape")
    if check_no_traceback:
        assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def intervals(log_path):
    """Parse lines 'start|end LABEL NANOS' into {label: [start, end]}."""
    spans = {}
    for line in Path(log_path).read_text().splitlines():
        kind, label, ns = line.split()
        spans.setdefault(label, [None, None])[0 if kind == "start" else 1] = int(ns)
    return spans


def max_overlap(spans):
    """The largest number of spans open at one instant."""
    events = []
    for start, end in spans.values():
        events.append((start, 1))
        events.append((end, -1))
    events.sort(key=lambda e: (e[0], e[1]))
    best = cur = 0
    for _, delta in events:
        cur += delta
        best = max(best, cur)
    return best


def timed(label, body, log):
    """A shell command that logs its start and end around ``body``."""
    return (f'echo "start {label} $(date +%s%N)" >> {log}; {body}; '
            f'echo "end {label} $(date +%s%N)" >> {log}')


def wait_for(predicate, timeout=30.0, what="condition"):
    """Poll ``predicate`` until it holds; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")

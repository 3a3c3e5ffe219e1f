"""Shared fixtures: workspace builders and the leak check every test gets."""
from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Dict

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent


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

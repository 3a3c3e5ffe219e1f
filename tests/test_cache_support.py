"""Helpers shared by the cache tests (no tests of its own).

A small workspace: project ``a`` with ``build`` (outputs in dist/, a tool
in bin/, a symlink) and ``test`` (deps build, reads dist/), project ``b``
whose task has default inputs.  Files are backdated an hour so the stat
cache trusts them (CACHE-006 distrusts anything modified in the last
seconds).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, Optional

from hazrun import load_workspace
from hazrun.cache import Cache

from conftest import write_files

HOUR_AGO = time.time() - 3600

WORKSPACE = {
    "haz.toml": """
        [workspace]
        members = ["pkg/*"]
        env = ["WS_ENV"]
        inputs = ["lock.txt"]
    """,
    "lock.txt": "lock v1\n",
    "outside.txt": "not an input of anything\n",
    "pkg/a/haz.toml": """
        [tasks.build]
        cmd = "make"
        inputs = ["src/**"]
        outputs = ["dist/**", "bin/tool", "link"]
        env = ["A_ENV"]

        [tasks.test]
        cmd = "make test"
        deps = ["build"]
        inputs = ["src/**", "dist/**"]
    """,
    "pkg/a/src/main.c": "int main() { return 0; }\n",
    "pkg/a/src/util.c": "int util;\n",
    "pkg/a/README": "not an input of a:build\n",
    "pkg/b/haz.toml": """
        [tasks.check]
        cmd = "check"
        outputs = ["out/**"]
    """,
    "pkg/b/src/b.txt": "b\n",
}


def backdate(root: Path, when: float = HOUR_AGO) -> None:
    """Set every file's mtime to ``when`` (the stat cache then trusts them)."""
    for dirpath, dirnames, names in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".haz"]
        for n in names:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                os.utime(p, (when, when))


def make_workspace(root: Path, extra: Optional[Dict[str, str]] = None) -> Path:
    files = dict(WORKSPACE)
    files.update(extra or {})
    write_files(root, files)
    backdate(root)
    return root


def build_outputs(root: Path) -> None:
    """What a:build "produces": files with various modes and a symlink."""
    a = root / "pkg" / "a"
    (a / "dist" / "sub").mkdir(parents=True, exist_ok=True)
    (a / "dist" / "lib.txt").write_bytes(b"library\n")
    (a / "dist" / "sub" / "data.bin").write_bytes(bytes(range(256)) * 10)
    os.chmod(a / "dist" / "sub" / "data.bin", 0o640)
    (a / "bin").mkdir(exist_ok=True)
    (a / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(a / "bin" / "tool", 0o755)
    if not os.path.lexists(a / "link"):
        os.symlink("dist/lib.txt", a / "link")


def open_cache(root: Path, **kw) -> Cache:
    kw.setdefault("environ", {})
    return Cache(load_workspace(root), **kw)


def tree(root: Path) -> Dict[str, object]:
    """Every file and symlink under ``root`` (except .haz): content or target."""
    out: Dict[str, object] = {}
    for dirpath, dirnames, names in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".haz"]
        for n in names + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            else:
                out[rel] = (Path(p).read_bytes(), os.stat(p).st_mode & 0o7777)
    return out


def store_build(cache: Cache, stdout: bytes = b"built\n", stderr: bytes = b""):
    """Build a:build's outputs, then key, collect and store them."""
    root = cache.root
    build_outputs(root)
    key = cache.compute_key("a:build", {})
    m = cache.collect_outputs("a:build")
    cache.store("a:build", key, m, stdout, stderr, 2.5)
    return key, m

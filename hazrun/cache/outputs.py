"""Finding a task's outputs on disk after it ran (CACHE-002).

The output globs are matched against the files and symlinks under the
project directory.  Each include pattern is walked from its literal prefix
only; symlinked directories are outputs in their own right (their target
is recorded) and never walked into, so nothing outside the project is
collected.  Anything under ``.git/`` or ``.haz/`` is never an output.
"""
from __future__ import annotations

import os
import stat
from typing import Iterator, List, Optional, Set

from ..globs import NEVER, GlobSet, is_leftover


class TooMany(Exception):
    """The walk saw more directory entries than its budget allowed."""


def _walk(root: str, rel_top: str, budget: Optional[List[int]] = None,
          real_dir: str = "") -> Iterator[str]:
    """Root-relative paths of files and symlinks at or under ``rel_top``,
    not following symlinks (``rel_top`` itself included).  ``budget``: a
    one-item list of entries still allowed; TooMany once it is spent.
    ``real_dir``: a directory above ``rel_top`` known to be real (the
    project's, resolved when the workspace was loaded)."""
    top = os.path.join(root, rel_top) if rel_top else root
    # Every directory on the way to the top must be a real directory.
    if real_dir and rel_top.startswith(real_dir + "/"):
        cur = os.path.join(root, real_dir)
        parts = rel_top[len(real_dir) + 1:].split("/")
    else:
        cur = root
        parts = rel_top.split("/") if rel_top else []
    for i, part in enumerate(parts):
        cur = os.path.join(cur, part)
        try:
            st = os.lstat(cur)
        except OSError:
            return
        if not stat.S_ISDIR(st.st_mode):
            if i == len(parts) - 1 and (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                yield rel_top
            return
    stack = [(top, rel_top)]
    while stack:
        abs_dir, rel_dir = stack.pop()
        try:
            it = os.scandir(abs_dir)
        except OSError:
            continue
        with it:
            for e in it:
                if budget is not None:
                    budget[0] -= 1
                    if budget[0] < 0:
                        raise TooMany()
                if e.name in NEVER or is_leftover(e.name):
                    continue
                rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append((e.path, rel))
                    elif e.is_symlink() or e.is_file(follow_symlinks=False):
                        yield rel
                except OSError:
                    continue


def find_outputs(root: str, globs: GlobSet, project_rel_dir: str,
                 limit: Optional[int] = None) -> List[str]:
    """Root-relative paths of the existing files and symlinks the globs match.

    ``limit``: raise TooMany rather than look at more directory entries
    (a caller that may only afford a small walk)."""
    budget = None if limit is None else [limit]
    found: Set[str] = set()
    tops = sorted({g.prefix.rstrip("/") for g in globs.includes})
    # Walk each top once; a top under another top is covered by it.
    walked: List[str] = []
    for top in tops:
        if any(top == w or top.startswith(w + "/") or w == "" for w in walked):
            continue
        walked.append(top)
        for rel in _walk(root, top, budget, project_rel_dir):
            if any(p in NEVER for p in rel.split("/")):
                continue
            if globs.match(rel):
                found.add(rel)
    prefix = project_rel_dir + "/" if project_rel_dir else ""
    return sorted(p for p in found if p.startswith(prefix))

"""The files of a workspace and the input files of each task (CFG-006).

The workspace is listed once per run: from ``git ls-files -co
--exclude-standard`` when the root is inside a git work tree (so ignored
files are never inputs), by walking the file system otherwise.  Anything
under a ``.git/`` or ``.haz/`` directory is never listed.  A tracked file
deleted from the work tree may be listed: the stat each key takes of its
inputs drops it (CACHE-001).  Each task's inputs
are then selected from that sorted list by bisection on the globs' literal
prefixes, so selection costs what the matched directories hold.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .config import TaskDef
from .globs import LEFTOVER_MARK, NEVER, ROOT_PREFIX, GlobSet, files_under, is_leftover



# -t tags each entry (H cached, S skip-worktree, ? untracked) and -s gives a
# tracked entry's mode (160000: a submodule's root, whose files its own git
# lists).  Tracked files deleted from the work tree are listed too (-d would
# make git stat every tracked file, 35 ms for 20,000), and so are
# skip-worktree ones, present or not (a sparse checkout): the key's stat of
# each input drops those that are missing.
_GIT_LS = ("ls-files", "-co", "-s", "-t", "--exclude-standard", "-z")


class Listing:
    """CFG-006's ``git ls-files``, started ahead of need: it runs beside
    hazrun's own start (imports, loading the workspace), which is most of a
    no-change run.  Started in a directory that is, most often, the
    workspace root; :meth:`files` tells whether it was.  Close it when the
    run is over."""

    def __init__(self, directory: Union[str, "os.PathLike[str]"]):
        self.directory = os.path.realpath(directory)
        # Before git starts: what it lists is the workspace as of no earlier
        # than this (a directory changed since has a later mtime).
        self.started_ns = time.time_ns()
        self._proc: Optional[subprocess.Popen] = None
        self._out = b""
        self._err = b""
        self._reader: Optional[threading.Thread] = None
        git = shutil.which("git")
        if git is None:
            return
        try:
            # LC_ALL=C: its warnings are read (_unreadable), in English.
            self._proc = subprocess.Popen(
                [git, *_GIT_LS], cwd=self.directory, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=dict(os.environ, LC_ALL="C"))
        except OSError:
            return
        # Read as git writes: a listing longer than a pipe holds would
        # otherwise stop git until it is needed.
        self._reader = threading.Thread(target=self._read, name="hazrun-listing",
                                        daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc is not None
        self._out, self._err = self._proc.communicate()

    def covers(self, root: Path) -> bool:
        """Whether it was started at ``root`` (so it is the listing git
        gives there, or that git gives none)."""
        return os.path.realpath(root) == self.directory

    def files(self, root: Path, unreadable: Optional[List[Tuple[str, str]]] = None
              ) -> Optional[List[str]]:
        """The listing, if it was taken at ``root`` in a git work tree.
        ``unreadable`` gets the untracked directories git could not list."""
        if self._reader is None or not self.covers(root):
            return None
        self._reader.join()
        if self._proc is None or self._proc.returncode != 0:
            return None
        files, nested = _parse_git(self._out)
        if unreadable is not None:
            unreadable += _unreadable(self._err, self.directory)
        # CFG-006: a repository inside the workspace's, a submodule or a
        # project cloned there, is one entry to git ('p/a' or 'p/a/'): its
        # files are listed apart, or it would have none and its cache hits
        # would never go stale.
        for rel in nested:
            inner: List[Tuple[str, str]] = []
            files.extend(f"{rel}/{f}" for f in _nested_files(Path(root) / rel, inner))
            if unreadable is not None:
                unreadable += [(f"{rel}/{d}" if d else rel, why) for d, why in inner]
        return files

    def close(self) -> None:
        """End git if it still runs (the listing was not needed)."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            if self._reader is not None:
                self._reader.join()
            self._proc.wait()


def _unreadable(stderr: bytes, directory: str) -> List[Tuple[str, str]]:
    """The directories ``git ls-files -o`` in ``directory`` passed over,
    from its warnings ("warning: could not open directory 'p/x/':
    Permission denied"), relative to ``directory``: git names them from
    the top of the work tree, which may be above it."""
    found = []
    prefix: Optional[str] = None
    for line in os.fsdecode(stderr).splitlines():
        head, _, rest = line.partition("could not open directory '")
        path, quote, why = rest.rpartition("': ")
        if not (head.startswith("warning: ") and quote):
            continue
        if prefix is None:
            prefix = _work_tree_prefix(directory)
        path = path.rstrip("/") + "/"
        if path == "./":
            path = ""  # the top itself, in a bare listing
        if path.startswith(prefix):  # else outside this directory
            found.append((path[len(prefix):].rstrip("/"), why.strip().lower()))
    return found


def _work_tree_prefix(directory: str) -> str:
    """``directory`` relative to the top of its git work tree, with a
    trailing '/' ('' at the top): ``git rev-parse --show-prefix``, which
    knows GIT_DIR and GIT_WORK_TREE (asked only when git warned)."""
    git = shutil.which("git")
    try:
        proc = subprocess.run([git or "git", "rev-parse", "--show-prefix"], cwd=directory,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, check=False)
    except OSError:
        return ""
    return os.fsdecode(proc.stdout).strip("\n") if proc.returncode == 0 else ""


def _git_files(root: Path, unreadable: Optional[List[Tuple[str, str]]] = None
               ) -> Optional[List[str]]:
    """The listing from git, taken now; None outside a git work tree."""
    listing = Listing(root)
    try:
        return listing.files(root, unreadable)
    finally:
        listing.close()


def _parse_git(stdout: bytes) -> Tuple[List[str], List[str]]:
    """The files git listed, and the directories it listed as one entry
    because they are repositories of their own (without the '/')."""
    out: List[str] = []
    nested: List[str] = []
    # Decoded once (no NUL is part of a UTF-8 sequence, and surrogateescape
    # maps any other byte on its own): per entry, fsdecode was a fifth of
    # the parse.
    for entry in os.fsdecode(stdout).split("\0"):
        if not entry:
            continue
        if entry[0] != "?":  # "H 100644 <sha> 0\t<path>"
            rel = entry[entry.index("\t") + 1:]
            repository = entry[2:9] == "160000 "  # a gitlink: a submodule
        else:
            rel = entry[2:]
            repository = rel.endswith("/")  # an untracked clone
            rel = rel.rstrip("/")
        if (".git" in rel or ".haz" in rel) and (
                "/.git/" in f"/{rel}/" or "/.haz/" in f"/{rel}/"):
            continue
        (nested if repository else out).append(rel)
    return out, nested


def _nested_files(directory: Path, unreadable: List[Tuple[str, str]]) -> List[str]:
    """The files of a repository inside the workspace's, relative to it:
    listed by its own git, so that its .gitignore holds; walked if git
    cannot list it.  A submodule not checked out (no .git) has none."""
    if not os.path.lexists(directory / ".git"):
        return []
    files = _git_files(directory, unreadable)
    return files if files is not None else _walk_files(directory, unreadable)


def _walk_files(root: Path, unreadable: Optional[List[Tuple[str, str]]] = None) -> List[str]:
    """Every file under ``root``, root-relative.  ``unreadable`` gets the
    directories that could not be listed, with the reason: their files are
    no input of any task, which the run must say (CFG-006)."""
    def skipped(e: OSError) -> None:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return  # gone while walked: nothing there to be an input
        if unreadable is not None and e.filename is not None:
            rel = os.path.relpath(e.filename, root).replace(os.sep, "/")
            unreadable.append(("" if rel == "." else rel,
                               (e.strerror or str(e)).lower()))

    out = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=skipped):
        dirnames[:] = [d for d in dirnames if d not in NEVER
                       and not os.path.islink(os.path.join(dirpath, d))]
        rel_dir = os.path.relpath(dirpath, root)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        out.extend(prefix + f for f in filenames)
        # Symlinks to directories are listed as files (their target is the
        # content), as git does.
        out.extend(prefix + d for d in os.listdir(dirpath)
                   if d not in NEVER and os.path.islink(os.path.join(dirpath, d))
                   and os.path.isdir(os.path.join(dirpath, d)))
    return out


def list_workspace_files(root: Path, ahead: Optional[Listing] = None,
                         unreadable: Optional[List[Tuple[str, str]]] = None) -> List[str]:
    """Every candidate input file of the workspace, root-relative, sorted;
    from ``ahead`` when it was started at the root.  ``unreadable`` gets
    the directories that could not be listed, with why (CFG-006)."""
    if ahead is not None and ahead.covers(root):
        # None: git gave none there, nor would now
        files = ahead.files(root, unreadable)
    else:
        files = _git_files(root, unreadable)
    if files is None:
        files = _walk_files(root, unreadable)
    # A restore killed half way leaves a temp file beside an output: an
    # input of every task reading that directory, each would miss.
    return sorted({f for f in files
                   if LEFTOVER_MARK not in f or not is_leftover(f.rpartition("/")[2])})


def task_input_globs(task: TaskDef, project_rel_dir: str,
                     workspace_inputs: Sequence[str] = ()) -> GlobSet:
    """The task's input patterns, root-relative; the default is the project.
    With ``workspace_inputs`` (``[workspace] inputs``, root-relative), those
    too: every task's key holds them (EXEC-019's runtime checks)."""
    patterns = tuple(task.inputs) if task.inputs is not None else ("**",)
    patterns += tuple("!" + ROOT_PREFIX + p[1:] if p.startswith("!") else ROOT_PREFIX + p
                      for p in workspace_inputs)
    return GlobSet.compile(patterns, project_rel_dir)


def task_output_globs(task: TaskDef, project_rel_dir: str) -> GlobSet:
    return GlobSet.compile(task.outputs, project_rel_dir)


def select_inputs(files: Sequence[str], task: TaskDef, project_rel_dir: str) -> List[str]:
    """CFG-006: the task's input files; its own outputs are never inputs."""
    inputs = None if task.inputs is None else task_input_globs(task, project_rel_dir)
    return select_with(files, inputs, task_output_globs(task, project_rel_dir),
                       project_rel_dir)


def select_with(files: Sequence[str], inputs: Optional[GlobSet], outputs: GlobSet,
                project_rel_dir: str) -> List[str]:
    """:func:`select_inputs` with the task's globs compiled already (None:
    the default, every file of the project)."""
    if inputs is None:
        chosen = list(files_under(files, project_rel_dir))
    else:
        chosen = inputs.select(files)
    if outputs:
        # A file outside every output include's literal prefix matches none.
        prefixes = tuple(g.prefix for g in outputs.includes)
        chosen = [f for f in chosen if not (f.startswith(prefixes) and outputs.match(f))]
    return chosen


def git_ignored(root: Path, paths: List[str]) -> frozenset:
    """The subset of root-relative ``paths`` git ignores (none outside git).
    A path in a submodule or a repository nested in the workspace's is asked
    of that repository's git (the outer one refuses it: "is in submodule")."""
    git = shutil.which("git")
    if git is None or not paths:
        return frozenset()
    code, ignored, refused = _check_ignore(git, root, paths)
    if code in (0, 1):
        return frozenset(ignored)
    if b"submodule" not in refused:
        # Not a work tree: nothing is ignored, as the listing (a walk)
        # ignores nothing either, nested clones' .gitignore included.
        return frozenset()
    groups: Dict[str, List[str]] = {}
    repos: Dict[str, str] = {}
    for p in paths:
        groups.setdefault(_repository_of(root, p, repos), []).append(p)
    out = set()
    for repo, rels in groups.items():
        prefix = repo + "/" if repo else ""
        code, found, _ = _check_ignore(git, root / repo if repo else root,
                                       [p[len(prefix):] for p in rels])
        if code in (0, 1):
            out.update(prefix + p for p in found)
    return frozenset(out)


def _check_ignore(git: str, where: Path, paths: List[str]
                  ) -> Tuple[int, List[str], bytes]:
    """``git check-ignore`` of ``paths`` in ``where``: its exit status, the
    paths it says are ignored, and what it said on stderr."""
    try:
        proc = subprocess.run(
            [git, "check-ignore", "-z", "--stdin"], cwd=where,
            input=b"".join(os.fsencode(p) + b"\0" for p in paths),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
            env=dict(os.environ, LC_ALL="C"))  # its message is read, in English
    except OSError:
        return -1, [], b""
    return (proc.returncode, [os.fsdecode(p) for p in proc.stdout.split(b"\0") if p],
            proc.stderr)


def _repository_of(root: Path, rel: str, known: Dict[str, str]) -> str:
    """The root-relative directory of the innermost repository holding
    ``rel`` below the workspace's ('' for the workspace's own): the nearest
    directory above it with a .git of its own."""
    d = rel.rpartition("/")[0]
    chain = []
    while d and d not in known:
        chain.append(d)
        if os.path.lexists(root / d / ".git"):
            for c in chain:
                known[c] = d
            return d
        d = d.rpartition("/")[0]
    repo = known.get(d, "") if d else ""
    for c in chain:
        known[c] = repo
    return repo

"""GNU make jobserver client and server (JOBS-001, JOBS-002).

Under ``make -jN``, make hands its children a pool of N-1 tokens (bytes in a
pipe or a named fifo) named in ``MAKEFLAGS``; each child runs one job on its
implicit token and must take a token from the pool for each further job,
and give it back when that job ends.  hazrun does so per task, so hazrun
inside ``make -j8`` never adds load beyond make's eight.

Tokens are read only when the event loop says the pool is readable: no
blocking read, no busy loop.  The pipe form is reopened through
``/proc/self/fd`` where it exists so that setting our end non-blocking does
not change the file description that make and its other children share.
"""
from __future__ import annotations

import os
import re
import stat
from typing import List, Optional, Tuple

from .values import value

_AUTH = re.compile(r"--jobserver-(?:auth|fds)=(\S+)")


@value
class JobserverAuth:
    """Where make's token pool is: a pipe's fds, or a fifo's path."""

    read_fd: Optional[int] = None
    write_fd: Optional[int] = None
    fifo: Optional[str] = None

    @property
    def pass_fds(self) -> Tuple[int, ...]:
        """The fds tasks must inherit so that a nested make finds the pool."""
        if self.read_fd is None:
            return ()
        return (self.read_fd, self.write_fd)


def parse_makeflags(makeflags: str) -> Optional[JobserverAuth]:
    """The last ``--jobserver-auth=`` (or old ``--jobserver-fds=``) of
    MAKEFLAGS; None when there is none or make runs with ``-n``."""
    words = makeflags.split()
    # The first word holds make's one-letter flags without a dash ("ns").
    if words and not words[0].startswith("-") and "n" in words[0] and "=" not in words[0]:
        return None
    found = _AUTH.findall(makeflags)
    if not found:
        return None
    value = found[-1]
    if value.startswith("fifo:"):
        return JobserverAuth(fifo=value[len("fifo:"):])
    r, sep, w = value.partition(",")
    # JOBS-001: ASCII digits only (str.isdigit() also takes '³'), and fds that fit a
    # C int: anything else is a warning, never a traceback.
    if (not sep or not _FD.fullmatch(r) or not _FD.fullmatch(w)
            or max(abs(int(r)), abs(int(w))) > _FD_MAX):
        raise JobserverError(f"MAKEFLAGS names a jobserver hazrun cannot read: "
                             f"'--jobserver-auth={value}'")
    if int(r) < 0 or int(w) < 0:
        return None  # make's way of saying the jobserver is off for us
    return JobserverAuth(read_fd=int(r), write_fd=int(w))


def serial_make(makeflags: str) -> bool:
    """JOBS-001: whether MAKEFLAGS is that of ``make -j1`` (explicitly one
    job at a time, which make runs without a jobserver)."""
    return "-j1" in _split(makeflags)[0] and not _AUTH.search(makeflags)


def without_jobserver(makeflags: str) -> str:
    """MAKEFLAGS without its jobserver (and -j), for tasks that do not get
    its fds: a nested make then runs its recipes one at a time, quietly, as
    under a make recipe line without '+', instead of warning that the
    jobserver it was told of is unavailable."""
    return _rebuilt(makeflags, [])


def merged_makeflags(makeflags: str, jobs: int, auth: str) -> str:
    """MAKEFLAGS for the tasks of a run serving its own jobserver
    (JOBS-002): the flags and variables the run was given (-k, -s,
    --no-print-directory, FOO=bar ...) with ``-jN --jobserver-auth=`` in
    place of any jobserver they named."""
    return _rebuilt(makeflags, [f"-j{jobs}", f"--jobserver-auth={auth}"])


def _rebuilt(makeflags: str, ours: List[str]) -> str:
    """``makeflags`` with ``ours`` in place of its -j and jobserver words."""
    flags, variables = _split(makeflags)
    kept = [w for w in flags if not (w.startswith("-j") or w.startswith("--jobserver-"))]
    # The first word, if it has no dash, is make's one-letter flags: it
    # stays first, or make would not read it as such.
    words = kept[:1] + ours + kept[1:] if kept and not kept[0].startswith("-") \
        else ours + kept
    return " ".join(words) + (" -- " + variables if variables is not None else "")


def _split(makeflags: str) -> Tuple[List[str], Optional[str]]:
    """MAKEFLAGS's flag words, and what follows its ' -- ' (the variables
    given on make's command line; None without)."""
    if makeflags.startswith("-- "):
        return [], makeflags[3:]
    flags, sep, variables = makeflags.partition(" -- ")
    return flags.split(), (variables if sep else None)


_FD = re.compile(r"-?[0-9]{1,10}")
_FD_MAX = 2 ** 31 - 1


class JobserverError(Exception):
    """The jobserver named in MAKEFLAGS cannot be used; str() says the fix."""


# What an unusable jobserver almost always means: a recipe line without
# '+', which make runs with the pool closed (pipe) or after it has gone.
_FIX = ("make shares its jobserver only with the recipe lines it runs that are "
        "marked '+' (write '+hazrun run ...' in the Makefile)")


def _is_fifo(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


class JobserverClient:
    """Takes and returns tokens of one jobserver; tracks every held token."""

    def __init__(self, auth: JobserverAuth):
        self.auth = auth
        self.held: List[bytes] = []
        self._own_fds: List[int] = []
        if auth.fifo is not None:
            try:
                fd = os.open(auth.fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:
                raise JobserverError(
                    f"make's jobserver fifo {auth.fifo} cannot be opened ({e.strerror}): "
                    f"{_FIX}; running without it") from None
            if not _is_fifo(fd):
                os.close(fd)
                raise JobserverError(f"make's jobserver {auth.fifo} is not a fifo: "
                                     f"{_FIX}; running without it")
            self._own_fds.append(fd)
            self.read_fd = self.write_fd = fd
            return
        for fd in (auth.read_fd, auth.write_fd):
            if not _is_fifo(fd):
                raise JobserverError(
                    f"make's jobserver pipe (fds {auth.read_fd},{auth.write_fd}) is not "
                    f"open in hazrun: {_FIX}; running without it")
        try:
            # A description of our own, so O_NONBLOCK stays ours.
            self.read_fd = os.open(f"/proc/self/fd/{auth.read_fd}",
                                   os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._own_fds.append(self.read_fd)
        except OSError:
            self.read_fd = auth.read_fd
            os.set_blocking(self.read_fd, False)
        self.write_fd = auth.write_fd

    def try_acquire(self) -> Optional[bytes]:
        """A token byte if one is free now, else None (never blocks)."""
        try:
            token = os.read(self.read_fd, 1)
        except (BlockingIOError, InterruptedError):
            return None
        if not token:
            return None
        self.held.append(token)
        return token

    def release(self, token: bytes) -> None:
        """Give back one token (the same byte that was taken)."""
        self.held.remove(token)
        self._write(token)

    def _write(self, token: bytes) -> None:
        while True:
            try:
                os.write(self.write_fd, token)
                return
            except InterruptedError:
                continue
            except BlockingIOError:
                # Cannot happen for a pool we took from; never spin for ever.
                import select
                select.select([], [self.write_fd], [], 1.0)

    def release_all(self) -> None:
        """Every exit path: give back whatever is still held."""
        while self.held:
            self._write(self.held.pop())

    def close(self) -> None:
        self.release_all()
        for fd in self._own_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._own_fds = []


class JobserverServer:
    """A pool of ``jobs - 1`` tokens that hazrun serves to its own tasks
    (``--jobserver``), so nested ``make`` calls share hazrun's -j.

    The pool is a pipe named as ``--jobserver-auth=R,W`` and inherited by
    the tasks: every GNU make since 4.2 reads that form, while make 4.3 and
    older stop with an internal error on the newer ``fifo:PATH`` form.
    Both ends stay blocking, as make expects; hazrun's own client reads
    through a description of its own (see JobserverClient).
    """

    # A pipe holds 64 KiB; no machine has more slots than that.
    MAX_TOKENS = 4096

    def __init__(self, jobs: int):
        self.read_fd, self.write_fd = os.pipe()  # close-on-exec but for pass_fds
        self.tokens = min(max(0, jobs - 1), self.MAX_TOKENS)
        os.write(self.write_fd, b"+" * self.tokens)
        self.jobs = jobs

    def makeflags(self, inherited: str = "") -> str:
        """MAKEFLAGS for the tasks: ``inherited`` (the run's own MAKEFLAGS)
        with this jobserver in place of any other."""
        return merged_makeflags(inherited, self.jobs, f"{self.read_fd},{self.write_fd}")

    def auth(self) -> JobserverAuth:
        return JobserverAuth(read_fd=self.read_fd, write_fd=self.write_fd)

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass

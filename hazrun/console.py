"""hazrun's own messages to the terminal, and the colour decision (CLI-000/001)."""
from __future__ import annotations

import itertools
import os
import select
import stat
import threading
import time
from typing import IO, Any, Callable, Dict, Optional

from .fsutil import write_all
from .values import record

# Writes this long or shorter to a pipe are never interleaved with others'
# (POSIX); 4096 on Linux.
PIPE_BUF = getattr(select, "PIPE_BUF", 512)
# A write waiting this long has no reader for now: a signal ends it.  Far
# above any write to a reader that reads.
STALLED_S = 0.5


def color_enabled(mode: str, stream: Any, environ=os.environ) -> bool:
    """``--color``: always / never / auto (NO_COLOR, FORCE_COLOR, a terminal
    that is not TERM=dumb)."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    if environ.get("NO_COLOR"):
        return False
    if environ.get("FORCE_COLOR"):
        return True
    if environ.get("TERM") == "dumb":  # Emacs' shell, some CI logs: no escapes
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@record
class Console:
    """Writes to the binary stdout/stderr under one lock.

    Every write is one ``write`` call of whole lines, so messages and task
    output lines never tear each other.
    """

    out: IO[bytes]
    err: IO[bytes]
    color_out: bool = False
    color_err: bool = False

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.closed: set = set()
        self._fds: Dict[int, Optional[int]] = {}
        self._pipes: set = set()  # fds that are pipes or sockets
        # When the write in progress began or last got somewhere (None: none
        # is): a signal handler asks stalled() whether to end it.
        self.write_began: Optional[float] = None
        self._writer = 0  # the thread writing
        # Lines left open by writes that did not end them (a long line's
        # piece under --no-prefix): file -> the owner of its open line.
        self._open_lines: Dict[Any, str] = {}
        self._files: Dict[int, Any] = {}

    def _progressed(self) -> None:
        self.write_began = time.monotonic()  # a reader took some: not stalled

    def stalled(self, after: float = STALLED_S) -> bool:
        """Whether this thread's write has waited ``after`` seconds or more
        since a reader last took anything (a pager left paused, a terminal
        stopped with Ctrl-S; not a slow reader).  Asked by a signal handler,
        which runs on the main thread: only that thread's write can be
        ended from there."""
        began = self.write_began
        return (began is not None and self._writer == threading.get_ident()
                and time.monotonic() - began >= after)

    @classmethod
    def for_streams(cls, stdout: Any, stderr: Any, mode: str) -> "Console":
        return cls(getattr(stdout, "buffer", stdout), getattr(stderr, "buffer", stderr),
                   color_enabled(mode, stdout), color_enabled(mode, stderr))

    def write(self, stream: IO[bytes], data: bytes, owner: Optional[str] = None) -> None:
        """``owner``: who writes ``data`` if it may end mid-line (a task's
        stream under --no-prefix, EXEC-016).  A line left open stays open
        for its owner; anyone else writing to that file first ends it, so a
        stderr line or another task's never lands inside it."""
        self.write_block(stream, (data,), owner, not data or data.endswith(b"\n"))

    def write_block(self, stream: IO[bytes], chunks, owner: Optional[str] = None,
                    ends_line: bool = True) -> None:
        """Write every chunk with no other write in between (EXEC-016/017).

        A reader that went away (``hazrun run | head``), a full disk or a
        stream closed at start must not stop the run half way (CLI-000):
        output to it is dropped from then on.
        """
        failed: Optional[OSError] = None
        with self.lock:
            if stream is None or id(stream) in self.closed:
                return  # None: started with that stream closed (>&-)
            self._writer = threading.get_ident()
            self.write_began = time.monotonic()
            try:
                fd = self._fd(stream)
                if self._open_lines or not ends_line:
                    chunks = self._mind_open_line(stream, chunks, owner, ends_line)
                if fd is None:
                    for chunk in chunks:
                        stream.write(chunk)
                    stream.flush()
                elif fd in self._pipes:
                    for chunk in chunks:
                        write_lines(fd, chunk, self._progressed)
                else:
                    for chunk in chunks:
                        write_all(fd, chunk, self._progressed)
            except (OSError, ValueError) as e:
                self.closed.add(id(stream))
                if not isinstance(e, (BrokenPipeError, ValueError)):
                    failed = e  # a full disk, an I/O error: said once
            except WriteInterrupted:
                # Ctrl-C while nobody reads: the loop must get on with
                # stopping the run, and what this stream would still get
                # has no reader (and saying so could block on it too), nor
                # has the other stream where it is the same pipe (2>&1).
                for s in (self.out, self.err):
                    if s is not None and self._file(s) == self._file(stream):
                        self.closed.add(id(s))
            finally:
                self.write_began = None
        if failed is not None and stream is self.out:
            self.warning(f"cannot write to stdout ({failed.strerror or failed}); "
                         "what follows for it is dropped")

    def _mind_open_line(self, stream: IO[bytes], chunks, owner: Optional[str],
                        ends_line: bool):
        """The chunks to write, after a newline if they would go inside a
        line someone else left open in the same file; and who leaves one
        open now."""
        file = self._file(stream)
        opener = self._open_lines.pop(file, None)
        if opener is not None and opener != owner:
            chunks = itertools.chain((b"\n",), chunks)  # a block's may be a generator
        if not ends_line and owner is not None:
            self._open_lines[file] = owner
        return chunks

    def _file(self, stream: IO[bytes]) -> Any:
        """What the stream writes to: stdout and stderr are one file with
        2>&1 and on a terminal."""
        found = self._files.get(id(stream))
        if found is None:
            try:
                st = os.fstat(stream.fileno())
                found = (st.st_dev, st.st_ino)
            except (AttributeError, OSError, ValueError):
                found = id(stream)
            self._files[id(stream)] = found
        return found

    def _fd(self, stream: IO[bytes]) -> Optional[int]:
        """The stream's descriptor, written with os.write: a pipe left
        non-blocking by whoever started hazrun (node, ssh) refuses what it
        cannot take at once, and a buffered writer loses it silently."""
        fd = self._fds.get(id(stream), -1)
        if fd == -1:
            try:
                stream.flush()  # whatever was written through it before
                fd = stream.fileno()
                mode = os.fstat(fd).st_mode
            except (AttributeError, OSError, ValueError):
                fd = None
            else:
                if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                    self._pipes.add(fd)
            self._fds[id(stream)] = fd
        return fd

    def print(self, text: str = "") -> None:
        self.write(self.out, (text + "\n").encode("utf-8", "surrogateescape"))

    def message(self, text: str) -> None:
        """A line of hazrun's own on stderr (progress, summary)."""
        self.write(self.err, (text + "\n").encode("utf-8", "surrogateescape"))

    def _tagged(self, kind: str, color: str, text: str) -> None:
        tag = f"hazrun: {kind}: "
        if self.color_err:
            tag = f"{color}hazrun: {kind}:\x1b[0m "
        lines = text.splitlines() or [""]
        self.message("\n".join(tag + line for line in lines))

    def error(self, text: str) -> None:
        """CLI-000: ``hazrun: error: ...``, one prefix per line."""
        self._tagged("error", "\x1b[31m", text)

    def warning(self, text: str) -> None:
        """CLI-000: ``hazrun: warning: ...``."""
        self._tagged("warning", "\x1b[33m", text)


class WriteInterrupted(Exception):
    """Raised by a signal handler into a write that stalled (EXEC-012):
    Python retries a write a signal interrupted, so without it Ctrl-C
    waited for the reader (for ever, for a paused pager)."""


def write_lines(fd: int, data: bytes,
                progress: Optional[Callable[[], None]] = None) -> None:
    """EXEC-016/017: whole lines to a pipe (or socket) shared with other writers (two
    hazruns of one make, in a CI log): a write of PIPE_BUF bytes or fewer
    is never interleaved with another's, a longer one may be cut anywhere.
    So ``data`` goes out in pieces of at most PIPE_BUF bytes that end at a
    line's end; only a line longer than that can still be torn."""
    start, end_of_data = 0, len(data)
    view = memoryview(data)
    while start < end_of_data:
        end = start + PIPE_BUF
        if end < end_of_data:
            cut = data.rfind(b"\n", start, end)
            if cut >= 0:
                end = cut + 1
            else:  # one line longer than PIPE_BUF: whole, at least
                cut = data.find(b"\n", end)
                end = end_of_data if cut < 0 else cut + 1
        write_all(fd, view[start:end], progress)
        start = end

"""A task's output held until it is printed or stored (EXEC-017, CACHE-005).

Bytes stay in memory up to a limit, then go to an unnamed temporary file,
so memory stays bounded.  Unlike ``tempfile.SpooledTemporaryFile``, a
temporary file that cannot be made or written (a full or read-only TMPDIR)
loses nothing and raises nothing: the bytes stay in memory, and ``problem``
says why, for one warning.  A full TMPDIR must not stop a run (its error
surfaced in the event loop and ended hazrun with a traceback).
"""
from __future__ import annotations

import io
import os
from typing import Optional

from .fsutil import write_all

SPOOL_MEMORY = 1 << 20


class Spool:
    """Written to, then read from the start: ``write`` ... ``seek(0)``,
    ``read``.  A context manager; ``close`` frees the file."""

    def __init__(self, max_size: int = SPOOL_MEMORY):
        self.max_size = max_size
        self.problem: Optional[OSError] = None  # why bytes stayed in memory
        self._mem = io.BytesIO()
        self._file: Optional[io.FileIO] = None

    # -- writing ------------------------------------------------------------
    def write(self, data: bytes) -> int:
        if self._file is not None:
            start = self._file.tell()
            try:
                write_all(self._file.fileno(), data)
                return len(data)
            except OSError as e:
                # What reached the file is read back; the rest follows it.
                data = data[self._to_memory(e) - start:]
        self._mem.write(data)
        if self.problem is None and self._mem.tell() > self.max_size:
            self._to_file()
        return len(data)

    def _to_file(self) -> None:
        import tempfile  # past the limit only: most output never gets here
        try:
            f = tempfile.TemporaryFile(buffering=0)
        except OSError as e:
            self.problem = e
            return
        try:
            write_all(f.fileno(), self._mem.getvalue())
        except OSError as e:
            f.close()
            self.problem = e
            return
        self._file = f
        self._mem = io.BytesIO()

    def _to_memory(self, error: OSError) -> int:
        """Back to memory with what the file holds (reading a full disk
        works), for good: the next spill would fail as this write did.
        Returns how many bytes that is."""
        f, self._file = self._file, None
        self.problem = error
        assert f is not None
        with f:
            f.seek(0)
            self._mem = io.BytesIO(f.read())
        self._mem.seek(0, os.SEEK_END)
        return self._mem.tell()

    # -- reading ------------------------------------------------------------
    def _reader(self) -> io.RawIOBase:
        return self._file if self._file is not None else self._mem  # type: ignore[return-value]

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        return self._reader().seek(pos, whence)

    def tell(self) -> int:
        return self._reader().tell()

    def read(self, n: int = -1) -> bytes:
        return self._reader().read(n)

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._mem = io.BytesIO()

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_told = False


def spool_warning(problem: OSError) -> Optional[str]:
    """The warning of output that could not go to TMPDIR: the first time
    only (the log kept for the cache and the buffered block meet the same
    full disk; one warning says it)."""
    global _told
    if _told:
        return None
    _told = True
    import tempfile
    try:
        where = problem.filename or tempfile.gettempdir()
    except OSError:  # no directory at all will do: problem says so
        where = os.environ.get("TMPDIR", "/tmp")
    return (f"task output past {SPOOL_MEMORY >> 20} MiB is kept in memory: the temporary "
            f"directory {where} cannot take it ({problem.strerror or problem}); "
            "set TMPDIR to a directory with room")

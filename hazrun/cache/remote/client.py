"""REMOTE-003..007: how a run uses its remote cache.

:class:`RemoteCache` sits between the :class:`~hazrun.cache.Cache` and a
:class:`~.transport.RemoteBackend`.  It downloads on a local miss (into the
local store, verified, so the next run hits locally) and uploads fresh
successes, and it owns the policy that keeps the remote from ever hurting a
run (REMOTE-005):

- every failure is a miss (or a skipped upload), with one warning per kind;
- three failures in a row and the remote is not asked again this run;
- until a request has succeeded, and while failures are counting up, at
  most ``3 - failures`` requests are in flight, so a dead server costs at
  most three failed requests however many pool threads ask;
- :meth:`cancel` (Ctrl-C) fails what is in flight and makes every later
  call return at once.

Pool threads call it concurrently; all state is under one condition.
"""
from __future__ import annotations

import tempfile
import threading
from typing import Any, Callable, Dict, IO, Optional, Set

from ..model import Manifest
from ..store import CorruptBlob, Store
from . import artifact
from .settings import RemoteSettings, remote_stats
from .transport import Abandoned, LocalError, RemoteBackend, RemoteError, make_backend

MAX_FAILURES = 3   # REMOTE-005: consecutive failures before the remote is dropped

Warn = Callable[[str], None]
Check = Callable[[Manifest], Optional[str]]


# Artifacts up to this size are packed and downloaded in memory.
SPOOL = 1 << 20


class RemoteCache:
    """See the module docstring.  ``warn`` takes one-line warnings."""

    def __init__(self, settings: RemoteSettings, store: Store, warn: Warn,
                 backend: Optional[RemoteBackend] = None):
        self.settings = settings
        self.backend = backend or make_backend(settings)
        self._store = store
        self._warn = warn
        self._cond = threading.Condition()
        self._failures = 0          # consecutive, REMOTE-005
        self._proven = False        # the last request that ended succeeded
        self._in_flight = 0
        self._warned: Set[str] = set()
        self.disabled = False
        self.cancelled = False
        self.hits = 0
        self.misses = 0
        self.uploads = 0
        self.errors = 0

    @property
    def name(self) -> str:
        return self.settings.display()

    @property
    def uploading(self) -> bool:
        """REMOTE-007: read-only never uploads; nor does a dropped remote."""
        return not (self.settings.read_only or self.disabled or self.cancelled)

    def stats(self) -> Dict[str, Any]:
        """REMOTE-006: the summary JSON's ``remote`` object."""
        with self._cond:
            return remote_stats(self.hits, self.misses, self.uploads, self.errors,
                                self.disabled)

    # -- the failure policy (REMOTE-005) ----------------------------------------
    def _begin(self) -> bool:
        """Wait for leave to send a request; False: do not send it."""
        with self._cond:
            while True:
                if self.disabled or self.cancelled:
                    return False
                if (self._proven and self._failures == 0) or \
                        self._in_flight < MAX_FAILURES - self._failures:
                    self._in_flight += 1
                    return True
                self._cond.wait()

    def _end(self, error: Optional[RemoteError] = None, answered: bool = True) -> None:
        """After a request: it was answered (success or 404), failed with
        ``error``, or neither (abandoned, or a local problem)."""
        warn = []
        with self._cond:
            self._in_flight -= 1
            if error is not None:
                self.errors += 1
                self._failures += 1
                self._proven = False
                if error.kind not in self._warned:
                    self._warned.add(error.kind)
                    warn.append(f"remote cache {self.name}: {error}")
                if self._failures >= MAX_FAILURES and not self.disabled:
                    self.disabled = True
                    warn.append(f"remote cache {self.name}: {MAX_FAILURES} failures in "
                                "a row; not asked again in this run (tasks run and "
                                "cache locally)")
            elif answered:
                self._failures = 0
                self._proven = True
            self._cond.notify_all()
        for message in warn:
            self._warn(message)

    def cancel(self) -> None:
        """Ctrl-C: abandon every request in flight and every later one."""
        with self._cond:
            self.cancelled = True
            self._cond.notify_all()
        self.backend.abort()

    def close(self) -> None:
        self.backend.close()

    def _temp(self) -> IO[bytes]:
        """Where an artifact is packed or downloaded: memory up to SPOOL
        bytes (most artifacts, and a miss, which writes nothing), then an
        unnamed file in the store's tmp/, so memory stays bounded."""
        self._store.ensure()
        return tempfile.SpooledTemporaryFile(max_size=SPOOL, dir=self._store.tmp)  # type: ignore[return-value]

    # -- REMOTE-003: a lookup after a local miss ----------------------------------
    def fetch(self, key: str, label: Optional[str], check: Optional[Check] = None) -> bool:
        """Download the artifact of ``key`` into the local store.  True: it
        is there now, verified; False: a miss (with a warning if the remote
        failed or the artifact was rejected)."""
        if not self._begin():
            return False
        who = f"{label}: " if label else ""
        try:
            f = self._temp()
        except OSError as e:
            self._end(answered=False)
            self._warn(f"{who}cannot download from the remote cache: {e.strerror or e} "
                       f"({self._store.tmp})")
            return False
        with f:
            try:
                got = self.backend.fetch(key, f, want_tag=self.settings.signature_key is not None)
            except RemoteError as e:
                if self.cancelled:  # our own abort cut the answer short
                    self._end(answered=False)
                    return False
                self._end(e)
                self._count(miss=True)
                return False
            except (Abandoned, LocalError) as e:
                self._end(answered=False)
                if isinstance(e, LocalError):
                    self._warn(f"{who}remote cache entry {key[:12]} not used: {e}")
                return False
            except Exception as e:  # a bug's: still a failure, and the slot freed
                self._end(RemoteError("GET", "error", type(e).__name__))
                self._count(miss=True)
                return False
            self._end()
            if got is None:
                self._count(miss=True)
                return False
            try:
                self._accept(key, f, got[0], got[1], check)
            except artifact.Cancelled:
                return False
            except artifact.Rejected as e:
                self._count(miss=True, error=True)
                self._warn(f"{who}remote cache entry {key[:12]} rejected ({e}); "
                           "treated as a miss")
                return False
            except OSError as e:
                self._count(miss=True)
                self._warn(f"{who}remote cache entry {key[:12]} not stored locally: "
                           f"{e.strerror or e} ({e.filename or self._store.path})")
                return False
        self._count(hit=True)
        return True

    def _accept(self, key: str, f: IO[bytes], size: int, tag: Optional[str],
                check: Optional[Check]) -> None:
        secret = self.settings.signature_key
        if secret is not None:
            artifact.verify(secret, key, self.settings.team, f, size, tag)
        with self._store.lock(exclusive=False):
            artifact.unpack(self._store, f, key, check, lambda: self.cancelled)

    def unhit(self) -> None:
        """A download counted a hit could not be restored (an output in the
        way, a name too long here): the task ran, so it was a miss."""
        with self._cond:
            self.hits -= 1
            self.misses += 1

    def _count(self, hit: bool = False, miss: bool = False, error: bool = False) -> None:
        with self._cond:
            self.hits += hit
            self.misses += miss
            self.errors += error

    # -- REMOTE-006: an upload after a fresh success --------------------------------
    def upload(self, manifest: Manifest) -> bool:
        """Upload the entry the local store holds for ``manifest``.  False:
        not uploaded (read-only, dropped, cancelled, or failed: warned)."""
        if not self.uploading:
            return False
        try:
            f = self._temp()
        except OSError as e:
            self._warn(f"{manifest.label}: not uploaded to the remote cache: "
                       f"{e.strerror or e} ({self._store.tmp})")
            return False
        with f:
            try:
                with self._store.lock(exclusive=False):
                    size = artifact.pack(self._store, manifest, f, lambda: self.cancelled)
                tag = None
                if self.settings.signature_key is not None:
                    tag = artifact.sign(self.settings.signature_key, manifest.key,
                                        self.settings.team, f, size)
            except artifact.Cancelled:
                return False
            except (CorruptBlob, OSError, ValueError) as e:
                what = getattr(e, "strerror", None) or str(e)
                self._warn(f"{manifest.label}: not uploaded to the remote cache ({what})")
                return False
            if not self._begin():  # dropped or cancelled meanwhile
                return False
            try:
                self.backend.store(manifest.key, f, size, manifest.duration_s, tag)
            except RemoteError as e:
                if self.cancelled:  # our own abort cut the request short
                    self._end(answered=False)
                else:
                    self._end(e)
                return False
            except (Abandoned, LocalError):
                self._end(answered=False)
                return False
            except Exception as e:  # a bug's: still a failure, and the slot freed
                self._end(RemoteError("PUT", "error", type(e).__name__))
                return False
        self._end()
        with self._cond:
            self.uploads += 1
        return True

"""CLI-002 -v: what changed since the last recorded run of a task.

After a run, the components of each task's key are recorded under
``.haz/explain/`` in a compact form: definition fields, environment values
and predecessor stream hashes as short digests, and per input file its flag
and a 16-hex-digit digest.  :func:`diff` compares such a record with the
components of a new key and says, in plain lines, which input files,
environment variables, predecessors or definition fields changed.  Neither
raw environment values nor the definition's text are recorded: only digests.

:class:`RecordStore` keeps the records in packs: each run that changed some
keys writes one zlib-compressed pack holding those records, and an index
(label -> key and pack) says where each label's last record is.  A run where
nothing changed writes nothing; a run that rebuilt 80 tasks writes two files,
not 80 (a file per record cost a quarter of a millisecond each on ext4,
serially at the end of the run).  A pack most of whose records have been
superseded is folded into the next one, so the packs stay within twice the
live records.  The index is a hint: when it or a pack is lost, stale or
corrupt, the labels concerned have no previous record and are written again.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import blake3

from ..fsutil import atomic_write, wait_flock
from .key import canonical
from .model import FORMAT_VERSION

SHORT = 16          # hex digits kept per digest: plenty to see a change
MAX_PATHS = 10      # paths listed per kind of change before "and N more"


def _digest(value: Any) -> str:
    """A short digest of any JSON value: a change shows, the text does not."""
    return blake3.blake3(canonical(value)).hexdigest()[:SHORT]


def _cut(digest: Optional[str]) -> Optional[str]:
    """A digest (environment value, stream hash) shortened; None stays."""
    return None if digest is None else digest[:SHORT]


def compact(label: str, key: str, parts: Mapping[str, Any]) -> Dict[str, Any]:
    """The record kept for ``label``: what :func:`diff` needs, small."""
    return {
        "format": FORMAT_VERSION,
        "label": label,
        "key": key,
        # Every definition field as a digest: a command that changes after
        # its first characters still reads "definition changed: cmd".
        "definition": {k: _digest(v) for k, v in parts["definition"].items()},
        "platform": dict(parts["platform"]),
        "env": {k: _cut(v) for k, v in parts["env"].items()},
        "workspace_inputs": {p: f + ":" + d[:SHORT] for p, f, d in parts["workspace_inputs"]},
        "inputs": {p: f + ":" + d[:SHORT] for p, f, d in parts["inputs"]},
        "preds": {k: _cut(v) for k, v in parts["preds"].items()},
    }


def encode(record: Dict[str, Any]) -> bytes:
    """A record as a pack holds it: a run keeps the records it will write
    in this form, a third of their size as objects."""
    return canonical(record)


INDEX = "index.json"
LOCK = "lock"
PACK_SUFFIX = ".pack"
FOLD_BELOW = 64  # live records under which a pack is folded into the next


class RecordStore:
    """The last record of each label, in packs under one directory (see the
    module docstring).  Reads are memoised and thread-safe; :meth:`save`
    runs once, at the end of a run."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._lock = threading.Lock()
        self._index: Optional[Dict[str, Any]] = None
        self._packs: Dict[str, Dict[str, Any]] = {}
        self._intact: Dict[str, bool] = {}   # pack -> of the size the index says

    def index(self) -> Dict[str, Any]:
        """``{"records": {label: [key, pack]}, "packs": {pack: [count, size]}}``;
        empty if absent, unreadable or of another format."""
        with self._lock:
            if self._index is None:
                self._index = _read_index(self.directory / INDEX)
            return self._index

    def recorded_key(self, label: str) -> Optional[str]:
        """The key of ``label``'s last record, if its pack is intact: a run
        keeps a new record only for a key that is not this one, so a record
        that cannot be read must not count as recorded."""
        index = self.index()
        entry = index["records"].get(label)
        if entry is None:
            return None
        with self._lock:
            intact = self._intact.get(entry[1])
        if intact is None:
            intact = _intact(self.directory / entry[1], index["packs"][entry[1]][1])
            with self._lock:
                self._intact[entry[1]] = intact
        return entry[0] if intact else None

    def _pack(self, name: str) -> Dict[str, Any]:
        with self._lock:
            records = self._packs.get(name)
        if records is None:
            records = _read_pack(self.directory / name)
            with self._lock:
                self._packs[name] = records
        return records

    def load(self, label: str) -> Optional[Dict[str, Any]]:
        """The last record of ``label``; None if absent, unreadable or foreign."""
        entry = self.index()["records"].get(label)
        if entry is None:
            return None
        rec = self._pack(entry[1]).get(label)
        if not isinstance(rec, dict) or rec.get("label") != label or rec.get("key") != entry[0]:
            return None
        return rec

    def save(self, records: Mapping[str, Tuple[str, Optional[bytes]]],
             stopping: Optional[Callable[[], bool]] = None) -> None:
        """Record ``label -> (key, record)`` for this run's labels:
        one new pack with the records the run kept (see below),
        plus the live records of packs that are mostly superseded; then the
        index; then packs nothing refers to are removed.  Raises OSError.

        ``record`` is as :func:`encode` makes it, or None where the run
        kept none: its key was the recorded one, in an
        intact pack, when the run first asked (:meth:`recorded_key`).  Such
        a label keeps whatever record the index names now: another run's,
        if one saved meanwhile (a valid record of that run), or none, if
        the pack was removed meanwhile (its next run writes it again).

        Under a lock, from the index as it is on disk then: two runs of one
        workspace saving at once each keep the other's records.
        ``stopping()`` true (Ctrl-C) ends a wait for that lock:
        LockWaitStopped."""
        fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            wait_flock(fd, fcntl.LOCK_EX, stopping)
            self._save(_read_index(self.directory / INDEX), records)
        finally:
            os.close(fd)  # and with it the lock

    def _save(self, index: Dict[str, Any],
              records: Mapping[str, Tuple[str, Optional[bytes]]]) -> None:
        try:
            present = set(os.listdir(self.directory))
        except OSError:
            present = set()
        # A pack lost, or not of the size it was written with, loses its
        # records: they are written again.
        intact = {pack for pack, (_, size) in index["packs"].items()
                  if pack in present and _size(self.directory / pack) == size}
        old = {label: entry for label, entry in index["records"].items() if entry[1] in intact}
        # label -> (key, encoded record): every record the run kept, also
        # one whose key the index names, where the run found its pack
        # damaged (a byte changed in place leaves the size as it was).
        new: Dict[str, Tuple[str, bytes]] = {}
        for label, (key, data) in records.items():
            if data is not None:
                new[label] = (key, data)
        live: Dict[str, int] = {}
        for label, entry in old.items():
            if label not in new:
                live[entry[1]] = live.get(entry[1], 0) + 1
        if new:
            # Fold the packs that are small or mostly superseded into this
            # run's: their number stays bounded, and so does their garbage.
            fold = {pack for pack, count in live.items()
                    if count < FOLD_BELOW or 2 * count < index["packs"][pack][0]}
            for label, entry in old.items():
                if entry[1] in fold and label not in new:
                    rec = self._pack(entry[1]).get(label)
                    if isinstance(rec, dict) and rec.get("key") == entry[0]:
                        new[label] = (entry[0], encode(rec))
        elif len(old) == len(index["records"]):
            return  # nothing changed since the last run: nothing to write
        entries = {label: entry for label, entry in old.items() if label not in new}
        # Each pack still referred to, with the number of records it was
        # written with (what "mostly superseded" is measured against) and
        # its size.
        counts = {entry[1]: index["packs"][entry[1]] for entry in entries.values()}
        if new:
            # canonical({"format": ..., "records": {...}}), put together from
            # records encoded one by one: never all of them as objects at once.
            body = b",".join(canonical(label) + b":" + new[label][1] for label in sorted(new))
            data = zlib.compress(b'{"format":%d,"records":{%s}}' % (FORMAT_VERSION, body), 6)
            name = blake3.blake3(data).hexdigest()[:32] + PACK_SUFFIX
            atomic_write(self.directory / name, data, fsync=False)
            for label, (key, _) in new.items():
                entries[label] = [key, name]
            counts[name] = [len(new), len(data)]
        index = {"records": entries, "packs": counts}
        atomic_write(self.directory / INDEX,
                     canonical({"format": FORMAT_VERSION, **index}), fsync=False)
        with self._lock:
            self._index = index
        # Packs nothing names any more, and what hazrun before packs kept:
        # a file per record and an index beside the directory.
        stale = [self.directory / name for name in present if name not in counts
                 and (name.endswith(PACK_SUFFIX) or name.endswith(".json.z"))]
        if any(name.endswith(".json.z") for name in present):
            stale.append(self.directory.parent / "explain-index.json")
        for path in stale:
            try:
                os.unlink(path)
            except OSError:
                pass  # gone already


def _read_index(path: Path) -> Dict[str, Any]:
    empty: Dict[str, Any] = {"records": {}, "packs": {}}
    try:
        obj = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return empty
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_VERSION:
        return empty
    records, packs = obj.get("records"), obj.get("packs")
    if not isinstance(records, dict) or not isinstance(packs, dict):
        return empty
    packs = {name: n for name, n in packs.items()
             if _pack_name(name) and isinstance(n, list) and len(n) == 2
             and all(isinstance(x, int) for x in n)}
    return {
        "records": {label: entry for label, entry in records.items()
                    if isinstance(entry, list) and len(entry) == 2
                    and all(isinstance(x, str) for x in entry) and entry[1] in packs},
        "packs": packs,
    }


def _intact(path: Path, size: int) -> bool:
    """Whether a pack is the one its name and the index's size say: a pack
    is named by its content's digest, so a byte changed in place shows."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return len(data) == size and path.name == blake3.blake3(data).hexdigest()[:32] + PACK_SUFFIX


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _pack_name(name: str) -> bool:
    # Only names this module makes: an index can never point outside.
    return name.endswith(PACK_SUFFIX) and "/" not in name and not name.startswith(".")


def _read_pack(path: Path) -> Dict[str, Any]:
    try:
        obj = json.loads(zlib.decompress(path.read_bytes()))
    except (OSError, ValueError, RecursionError, zlib.error):
        return {}
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_VERSION:
        return {}
    records = obj.get("records")
    return records if isinstance(records, dict) else {}


def _files(kind: str, old: Mapping[str, str], new: Mapping[str, str]) -> List[str]:
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    modified = []
    for p in sorted(set(old) & set(new)):
        if old[p] != new[p]:
            (of, od), (nf, nd) = old[p].split(":", 1), new[p].split(":", 1)
            what = ""
            if of != nf and od == nd:
                what = {"x": " (now executable)", "-": " (no longer executable)",
                        "l": " (now a symlink)"}.get(nf, "")
            elif of == "l" and nf != "l":
                what = " (no longer a symlink)"
            modified.append(p + what)
    lines: List[str] = []
    for verb, paths in (("added", added), ("removed", removed), ("modified", modified)):
        for p in paths[:MAX_PATHS]:
            lines.append(f"{kind} {verb}: {p}")
        if len(paths) > MAX_PATHS:
            lines.append(f"... and {len(paths) - MAX_PATHS} more {kind}s {verb}")
    return lines


def diff(old: Optional[Mapping[str, Any]], new: Mapping[str, Any]) -> List[str]:
    """Human lines of what differs between a record and a new one."""
    if old is None:
        return ["no previous run recorded"]
    if old.get("format") != new["format"]:
        return [f"the cache format changed ({old.get('format')} -> {new['format']}): "
                "every key is new"]
    lines: List[str] = []
    changed = sorted(k for k in set(old.get("definition", {})) | set(new["definition"])
                     if old.get("definition", {}).get(k) != new["definition"].get(k))
    if changed:
        lines.append("definition changed: " + ", ".join(changed))
    op, np = old.get("platform", {}), new["platform"]
    if op != np:
        lines.append(f"platform changed: {op.get('os')}/{op.get('arch')} -> "
                     f"{np['os']}/{np['arch']}")
    oe, ne = old.get("env", {}), new["env"]
    for name in sorted(set(oe) | set(ne)):
        if name not in oe:
            lines.append(f"environment variable {name} is now part of the key")
        elif name not in ne:
            lines.append(f"environment variable {name} is no longer part of the key")
        elif oe[name] != ne[name]:
            state = ("now unset" if ne[name] is None else
                     "now set" if oe[name] is None else "changed")
            lines.append(f"environment variable {name} {state}")
    lines += _files("workspace input", old.get("workspace_inputs", {}), new["workspace_inputs"])
    lines += _files("input file", old.get("inputs", {}), new["inputs"])
    opr, npr = old.get("preds", {}), new["preds"]
    for label in sorted(set(opr) | set(npr)):
        if label not in opr:
            lines.append(f"predecessor added: {label}")
        elif label not in npr:
            lines.append(f"predecessor removed: {label}")
        elif opr[label] != npr[label]:
            lines.append(f"predecessor {label} produced different outputs")
    if not lines:
        if old.get("key") == new["key"]:
            return ["nothing changed since the last run; its cache entry is gone "
                    "(pruned, cleaned, or never stored)"]
        return ["nothing recorded differs (the change is in a part of the key "
                "too small to record)"]
    return lines

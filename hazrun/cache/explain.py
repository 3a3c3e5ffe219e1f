"""CLI-002 -v: what changed since the last recorded run of a task.

After a run, the components of each task's key are recorded under
``.haz/explain/`` in a compact form: definition fields, environment values
and predecessor stream hashes as short digests, and per input file its flag
and a 16-hex-digit digest, zlib-compressed.  :func:`diff` compares such a
record with the components of a new key and says, in plain lines, which
input files, environment variables, predecessors or definition fields
changed.  Raw environment values are never recorded (only digests).

An index beside the records (label -> key of its record) lets the end of a
run rewrite only the records whose key changed, so a run where nothing
changed writes no record at all.  The index is a hint: if it is lost or
stale, records are simply written again.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import blake3

from .key import canonical
from .model import FORMAT_VERSION

SHORT = 16          # hex digits kept per digest: plenty to see a change
MAX_PATHS = 10      # paths listed per kind of change before "and N more"


def _short(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, str) and len(value) >= SHORT:
        return value[:SHORT]
    return blake3.blake3(canonical(value)).hexdigest()[:SHORT]


def compact(label: str, key: str, parts: Mapping[str, Any]) -> Dict[str, Any]:
    """The record kept for ``label``: what :func:`diff` needs, small."""
    return {
        "format": FORMAT_VERSION,
        "label": label,
        "key": key,
        "definition": {k: _short(v) for k, v in parts["definition"].items()},
        "platform": dict(parts["platform"]),
        "env": {k: _short(v) for k, v in parts["env"].items()},
        "workspace_inputs": {p: f + ":" + d[:SHORT] for p, f, d in parts["workspace_inputs"]},
        "inputs": {p: f + ":" + d[:SHORT] for p, f, d in parts["inputs"]},
        "preds": {k: _short(v) for k, v in parts["preds"].items()},
    }


def record_name(label: str) -> str:
    name = blake3.blake3(label.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return name + ".json.z"


def record_path(directory: Path, label: str) -> Path:
    return directory / record_name(label)


def encode(record: Mapping[str, Any]) -> bytes:
    return zlib.compress(canonical(record), 6)


def load_index(path: Path) -> Dict[str, str]:
    """label -> key of its current record; empty if absent or unreadable."""
    try:
        obj = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_VERSION:
        return {}
    keys = obj.get("keys")
    if not isinstance(keys, dict):
        return {}
    return {k: v for k, v in keys.items() if isinstance(k, str) and isinstance(v, str)}


def encode_index(keys: Mapping[str, str]) -> bytes:
    return canonical({"format": FORMAT_VERSION, "keys": dict(keys)})


def load(directory: Path, label: str) -> Optional[Dict[str, Any]]:
    """The last record of ``label``; None if absent, unreadable or foreign."""
    try:
        data = record_path(directory, label).read_bytes()
        rec = json.loads(zlib.decompress(data))
    except (OSError, ValueError, RecursionError, zlib.error):
        return None
    if not isinstance(rec, dict) or rec.get("label") != label:
        return None
    return rec


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

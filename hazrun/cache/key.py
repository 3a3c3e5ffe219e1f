"""CACHE-001: the canonical, versioned encoding of a task's key.

The key is blake3 over the canonical JSON (sorted keys, no spaces, ASCII
escapes) of these components::

    format            FORMAT_VERSION
    definition        label, cmd, inputs (null = the whole project),
                      outputs, env names
    platform          os, arch
    env               name -> null (unset) | digest of the value
    workspace_inputs  [[path, flag, digest], ...]   [workspace] inputs
    inputs            [[path, flag, digest], ...]   the task's input files
    preds             hard predecessor label -> stream hash (CACHE-002)

Paths are root-relative and sorted; ``flag`` is ``x`` for an executable
file, ``-`` for another file and ``l`` for a symlink, whose digest is that
of its target string.  Environment values enter only as digests, so the
components can be kept on disk for :mod:`explain` without leaking them.

A task's file-independent components are encoded once per run
(:class:`Static`); each key then encodes only its rows and predecessors and
splices them in, producing exactly the bytes of :func:`canonical` over all
the components.
"""
from __future__ import annotations

import functools
import json
import marshal
import os
import sys
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import blake3

from ..config import TaskDef
from .hashing import FileState
from .model import FORMAT_VERSION

Row = List[str]  # [path, flag, digest]


# One encoder for the process: json.dumps with options builds a new one per
# call, which costs more than encoding a small value.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical(value: Any) -> bytes:
    """The one JSON encoding every digest of this package is taken over."""
    return _ENCODER.encode(value).encode("ascii")


def definition(task: TaskDef) -> Dict[str, Any]:
    cmd = task.cmd if isinstance(task.cmd, str) or task.cmd is None else list(task.cmd)
    return {
        "label": task.label,
        "cmd": cmd,
        "inputs": None if task.inputs is None else list(task.inputs),
        "outputs": list(task.outputs),
        "env": sorted(task.env),
    }


def env_value_digest(value: str) -> str:
    return blake3.blake3(b"hazrun-env\0" + value.encode("utf-8", "surrogateescape")
                         ).hexdigest()


def env_snapshot(names: Iterable[str], environ: Mapping[str, str]
                 ) -> Dict[str, Optional[str]]:
    """Unset (null) is distinct from empty (the digest of '')."""
    out: Dict[str, Optional[str]] = {}
    for name in sorted(set(names)):
        value = environ.get(name)
        out[name] = None if value is None else env_value_digest(value)
    return out


@functools.lru_cache(maxsize=None)
def _platform() -> Tuple[str, str]:
    # os.uname().machine is what platform.machine() returns, without
    # importing the platform module on every run.
    machine = os.uname().machine if hasattr(os, "uname") else ""
    return sys.platform, machine.lower() or "unknown"


def platform_info() -> Dict[str, str]:
    os_name, arch = _platform()  # a system call: once per process
    return {"os": os_name, "arch": arch}


def file_row(rel: str, state: FileState) -> Row:
    flag = "l" if state.symlink is not None else ("x" if state.executable else "-")
    return [rel, flag, state.digest]


def components(task: TaskDef, environ: Mapping[str, str], workspace_env: Sequence[str],
               workspace_rows: List[Row], input_rows: List[Row],
               pred_streams: Mapping[str, str]) -> Dict[str, Any]:
    return assemble(static_parts(task, environ, workspace_env), workspace_rows,
                    input_rows, pred_streams)


def static_parts(task: TaskDef, environ: Mapping[str, str],
                 workspace_env: Sequence[str]) -> Dict[str, Any]:
    """The components that do not depend on files: the same for every key
    of the task in one run (the environment is snapshotted per run)."""
    return {
        "format": FORMAT_VERSION,
        "definition": definition(task),
        "platform": platform_info(),
        "env": env_snapshot(tuple(task.env) + tuple(workspace_env), environ),
    }


def assemble(static: Mapping[str, Any], workspace_rows: List[Row], input_rows: List[Row],
             pred_streams: Mapping[str, str]) -> Dict[str, Any]:
    parts = dict(static)
    parts["workspace_inputs"] = workspace_rows
    parts["inputs"] = input_rows
    parts["preds"] = {label: pred_streams[label] for label in sorted(pred_streams)}
    return parts


KEY_DOMAIN = b"hazrun-key\0"


def key_of(parts: Mapping[str, Any]) -> str:
    """The key of the components (see the module docstring)."""
    return blake3.blake3(KEY_DOMAIN + canonical(parts)).hexdigest()


# The components that change with every key, in the order canonical()
# writes them (sorted), and what stands for them in Static.pieces.
DYNAMIC = ("inputs", "preds", "workspace_inputs")
_HOLE = "\0hole"
_HOLE_JSON = _ENCODER.encode(_HOLE)
_LABEL_HOLE = "\0label"
_LABEL_HOLE_JSON = _ENCODER.encode(_LABEL_HOLE)


@functools.lru_cache(maxsize=256)
def _template(shape: bytes) -> Optional[str]:
    """canonical() of the static parts ``shape`` (marshalled, with the label
    and the DYNAMIC components as stand-ins), or None if the label's
    stand-in is not found exactly once.

    Tasks of different projects often differ in their label alone (the same
    build everywhere): they share one encoding, the label spliced in, which
    costs a fraction of encoding them each.  marshal is the memo's key
    because it is fast, and equal bytes are equal values.
    """
    text = _ENCODER.encode({**marshal.loads(shape), **dict.fromkeys(DYNAMIC, _HOLE)})
    return text if text.count(_LABEL_HOLE_JSON) == 1 else None


@dataclass(frozen=True)
class Static:
    """A task's file-independent components (:func:`static_parts`) and their
    canonical encoding cut where the DYNAMIC ones go."""

    parts: Dict[str, Any]
    # len(DYNAMIC) + 1 pieces of JSON text; None if a static string holds
    # the stand-in itself (then every key is encoded whole).
    pieces: Optional[Tuple[str, ...]]

    @classmethod
    def of(cls, parts: Dict[str, Any]) -> "Static":
        definition = parts["definition"]
        template = _template(marshal.dumps({**parts, "definition": {
            **definition, "label": _LABEL_HOLE}}))
        if template is not None:
            text = template.replace(_LABEL_HOLE_JSON, _json_str(definition["label"]))
        else:
            text = _ENCODER.encode({**parts, **dict.fromkeys(DYNAMIC, _HOLE)})
        pieces = tuple(text.split(_HOLE_JSON))
        return cls(parts, pieces if len(pieces) == len(DYNAMIC) + 1 else None)

    def key(self, workspace_rows: List[Row], input_rows: List[Row],
            pred_streams: Mapping[str, str]) -> Tuple[str, Dict[str, Any]]:
        """The key and the components it is taken over: :func:`key_of` of
        :func:`assemble`, encoding only the rows and the predecessors."""
        parts = assemble(self.parts, workspace_rows, input_rows, pred_streams)
        if self.pieces is None:
            return key_of(parts), parts
        a, b, c, d = self.pieces  # around inputs, preds, workspace_inputs
        text = (a + _rows_json(input_rows) + b + _preds_json(parts["preds"]) + c
                + _rows_json(workspace_rows) + d)
        return blake3.blake3(KEY_DOMAIN + text.encode("ascii")).hexdigest(), parts


def _rows_json(rows: List[Row]) -> str:
    """canonical(rows), by hand: the flag and the digest are ASCII letters
    and hex digits that need no escaping; a path may need any.  Several
    times faster than the json module for lists of short lists."""
    return "[" + ",".join([f'[{_json_str(path)},"{flag}","{digest}"]'
                           for path, flag, digest in rows]) + "]"


def _preds_json(preds: Mapping[str, str]) -> str:
    """canonical(preds) for a dict already in key order (see assemble)."""
    return "{" + ",".join([f"{_json_str(label)}:{_json_str(stream)}"
                           for label, stream in preds.items()]) + "}"


def rows_by_path(rows: Iterable[Row]) -> Dict[str, Tuple[str, str]]:
    return {r[0]: (r[1], r[2]) for r in rows}

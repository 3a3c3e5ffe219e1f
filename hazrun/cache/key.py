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
of its target string and, when it resolves to a regular file, of that
file's content too (:func:`link_digest`).  Environment values enter only as digests, so the
components can be kept on disk for :mod:`explain` without leaking them.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import blake3

from ..config import TaskDef
from ..values import value
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


def link_digest(target_digest: str, content_digest: str) -> str:
    """A symlinked input's digest: its target string's and the content of
    the regular file it resolves to."""
    return blake3.blake3(b"hazrun-link\0" + target_digest.encode() + b"\0"
                         + content_digest.encode()).hexdigest()


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


@value
class Static:
    """A task's file-independent components (:func:`static_parts`),
    computed once per run."""

    parts: Dict[str, Any]

    def key(self, workspace_rows: List[Row], input_rows: List[Row],
            pred_streams: Mapping[str, str]) -> Tuple[str, Dict[str, Any]]:
        """The key and the components it is taken over: :func:`key_of` of
        :func:`assemble`."""
        parts = assemble(self.parts, workspace_rows, input_rows, pred_streams)
        return key_of(parts), parts


def rows_by_path(rows: Iterable[Row]) -> Dict[str, Tuple[str, str]]:
    return {r[0]: (r[1], r[2]) for r in rows}

"""haz.toml -> frozen dataclasses, validated before anything runs.

CFG-001 finds the root, CFG-002 the projects, CFG-003 reads every key from
one schema table, CFG-005 collects every problem of a load into a single
:class:`~hazrun.errors.ConfigError`.  References between tasks are resolved
by :mod:`hazrun.graph`, which reports into the same problem list.
"""
from __future__ import annotations

import enum
import json
import math
import os
import re
import stat
import sys
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union


def _toml() -> Any:
    """The TOML parser, imported on first use: a run whose workspace
    snapshot is current (workspace.py) parses no haz.toml at all."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.9/3.10
        import tomli as tomllib
    return tomllib

from .errors import ConfigError, NoWorkspaceError, Problem, did_you_mean
from .globs import DOTDOT, NEVER, ROOT_PREFIX, GlobSet, check_pattern, compile_glob
from .values import value

CONFIG_NAME = "haz.toml"
# CFG-002's pattern, widened on purpose: '_' (my_lib) and a leading '@'
# (npm's @scope/pkg) are names users have; neither clashes with ':' or '^'.
NAME_RE = re.compile(r"[A-Za-z0-9@][A-Za-z0-9._@/_-]*\Z")
NAME_RULE = "[A-Za-z0-9@][A-Za-z0-9._@/_-]*"
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
DEFAULT_GRACE = 10.0


class MutexMode(str, enum.Enum):
    """MUTEX-002: shared holders are compatible with each other only."""

    SHARED = "shared"
    EXCLUSIVE = "exclusive"


@value
class MutexSpec:
    name: str
    mode: MutexMode = MutexMode.EXCLUSIVE


@value
class TaskDef:
    """One ``[tasks.NAME]`` table of one project (CFG-003)."""

    project: str
    name: str
    cmd: Union[str, Tuple[str, ...], None]
    deps: Tuple[str, ...] = ()
    after: Tuple[str, ...] = ()
    inputs: Optional[Tuple[str, ...]] = None  # None: every file (CFG-006)
    outputs: Tuple[str, ...] = ()
    env: Tuple[str, ...] = ()
    tags: Tuple[str, ...] = ()
    mutex: Tuple[MutexSpec, ...] = ()
    cache: bool = True
    timeout: Optional[float] = None
    grace: Optional[float] = None
    description: str = ""

    @property
    def label(self) -> str:
        """GRAPH-001: ``project:task``."""
        return f"{self.project}:{self.name}"


@value
class Project:
    name: str
    dir: Path            # absolute
    rel_dir: str         # root-relative POSIX path, '' for the root
    config_file: Path
    deps: Tuple[str, ...] = ()
    tasks: Mapping[str, TaskDef] = field(default_factory=dict)

    # The workspace snapshot is a pickle of every Project.  Unpickling two
    # Paths each was most of its load time (18 of 22 ms for 1,000 projects),
    # and a run needs few of them: they travel as strings and become Paths
    # on first use.
    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        paths = state.pop("_paths", {})
        for name in _PATH_FIELDS:
            state[name] = str(state[name]) if name in state else paths[name]
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        state = dict(state)
        state["_paths"] = {name: state.pop(name) for name in _PATH_FIELDS}
        self.__dict__.update(state)

    def __getattr__(self, name: str) -> Any:
        # Only reached for an attribute not yet in __dict__: a lazy Path.
        paths = self.__dict__.get("_paths")
        if paths is None or name not in paths:
            raise AttributeError(name)
        value = self.__dict__[name] = Path(paths[name])
        return value

    @property
    def dir_name(self) -> str:
        """``dir`` as a string, without making the Path."""
        paths = self.__dict__.get("_paths")
        return paths["dir"] if paths is not None else str(self.dir)


_PATH_FIELDS = ("dir", "config_file")


@value
class RemoteCacheConfig:
    """``[workspace.remote_cache]`` as written in haz.toml (REMOTE-001)."""

    url: Optional[str] = None
    protocol: str = "http"
    team: Optional[str] = None
    read_only: bool = False
    timeout: float = 10.0


@value
class WorkspaceSettings:
    """The ``[workspace]`` table."""

    members: Tuple[str, ...] = ()
    concurrency: Optional[int] = None
    env: Tuple[str, ...] = ()
    inputs: Tuple[str, ...] = ()
    grace: float = DEFAULT_GRACE
    tags: Mapping[str, int] = field(default_factory=dict)
    remote_cache: Optional[RemoteCacheConfig] = None


# --------------------------------------------------------------------------
# The schema: one table of key -> (type description, checker).  A checker
# returns the converted value or raises _Bad with the reason.

class _Bad(Exception):
    """Why a value is refused: one reason, or several (every bad entry of
    an array, CFG-005: all errors of a load together)."""

    def __init__(self, *reasons: str):
        super().__init__(reasons[0])
        self.reasons = reasons


def _type_name(value: Any) -> str:
    # TOML's dates and times by their class names: no datetime import.
    return {bool: "a boolean", int: "an integer", float: "a number",
            str: "a string", list: "an array", dict: "a table"}.get(
                type(value), {"date": "a date", "time": "a time", "datetime": "a date-time"}.get(
                    type(value).__name__, type(value).__name__))


def _got(v: Any) -> str:
    """What a refused value is, and the value itself where it is short
    (CFG-005: the message names the value at fault), in TOML's spelling."""
    name = _type_name(v)
    if isinstance(v, (list, dict)):
        return name
    if isinstance(v, bool):
        text = "true" if v else "false"
    elif isinstance(v, str):
        text = json.dumps(v, ensure_ascii=False)
    elif hasattr(v, "isoformat"):  # TOML's dates and times
        text = v.isoformat()
    else:
        text = repr(v)
    return f"{name} ({text if len(text) <= 40 else text[:37] + '...'})"


def _quoted_number(v: Any, integer: bool = False) -> str:
    """A hint for a number written as a string (timeout = "10"); for an
    integer key, only where the string is one."""
    try:
        if isinstance(v, str) and math.isfinite(int(v) if integer else float(v)):
            return "; write it without the quotes"
    except ValueError:
        pass
    return ""


def _string(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad(f"must be a string, got {_got(v)}")
    return v


def _string_list(v: Any) -> Tuple[str, ...]:
    if isinstance(v, str):
        # tags = "heavy, gpu" meant two tags.
        items = [part.strip() for part in v.split(",")] if "," in v else [v]
        array = "[" + ", ".join(json.dumps(i, ensure_ascii=False) for i in items) + "]"
        hint = f"; write {array}" if len(array) <= 60 else "; write it as an array: [\"...\"]"
        raise _Bad(f"must be an array of strings, got {_got(v)}{hint}")
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Bad(f"must be an array of strings, got {_describe(v)}")
    return tuple(v)


def _describe(v: Any) -> str:
    if isinstance(v, list):
        bad = [x for x in v if not isinstance(x, str)]
        if bad:
            return f"an array holding {_got(bad[0])}"
    return _got(v)


def _cmd(v: Any) -> Union[str, Tuple[str, ...]]:
    if isinstance(v, str):
        if not v.strip():
            raise _Bad("must not be empty")
        if "\0" in v:
            raise _Bad("must not hold a NUL character (no program can be given one)")
        return v
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        if any("\0" in x for x in v):
            raise _Bad("must not hold a NUL character (no program can be given one)")
        return tuple(v)
    raise _Bad("must be a string (run by /bin/sh -c) or a non-empty array "
               f"of strings (run directly), got {_describe(v)}")


def _env_names(v: Any) -> Tuple[str, ...]:
    names = _string_list(v)
    bad = [f"'{n}' is not an environment variable name" for n in names
           if not ENV_NAME_RE.match(n)]
    if bad:
        raise _Bad(*bad)
    return names


def _tag_names(v: Any) -> Tuple[str, ...]:
    names = _string_list(v)
    for n in names:
        if not n:
            raise _Bad("tag names must not be empty")
    return names


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        hint = "; write it without the quotes" if v in ("true", "false") else ""
        raise _Bad(f"must be true or false, got {_got(v)}{hint}")
    return v


def _seconds(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(f"must be a number of seconds, got {_got(v)}{_quoted_number(v)}")
    if not math.isfinite(v):  # TOML has inf and nan; a deadline cannot
        raise _Bad(f"must be a finite number of seconds, got {v}")
    if v < 0:
        raise _Bad(f"must not be negative, got {v}")
    return float(v)


def _positive_seconds(v: Any) -> float:
    s = _seconds(v)
    if s == 0:
        raise _Bad(f"must be greater than 0, got {v:g}")
    return s


# REMOTE-002: a bound on each socket operation of the remote cache; past
# ~1e9 s Python's socket timeout overflows, and every request failed.
MAX_REMOTE_TIMEOUT_S = 3600.0


def _remote_timeout(v: Any) -> float:
    s = _positive_seconds(v)
    if s > MAX_REMOTE_TIMEOUT_S:
        raise _Bad(f"must be at most {MAX_REMOTE_TIMEOUT_S:.0f} seconds, got {v}")
    return s


def _remote_url(v: Any) -> str:
    url = _string(v)
    why = remote_url_problem(url) if url else None  # "": no remote cache
    if why:
        raise _Bad(f"'{without_credentials(url)}' {why}")
    return url


def remote_url_problem(url: str) -> Optional[str]:
    """Why ``url`` cannot be a remote cache's (REMOTE-001), or None: an
    http:// or https:// URL with a host, no query or fragment, and a path
    http.client can put in a request line.  Never names the credentials."""
    import urllib.parse  # only for a workspace with a remote cache
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host = parts.hostname
        parts.port  # raises ValueError for a bad port
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        return "is not an http:// or https:// URL with a host (e.g. http://cache.example:8080/hazrun)"
    if parts.query or parts.fragment:
        return "must not have a query or fragment (not shown here: it may hold a key)"
    if any(not ("!" <= c <= "~") for c in parts.path):
        # http.client refuses them in a request line: every request failed.
        return "has spaces or non-ASCII characters in its path; percent-encode them (%20, %C3%A4 ...)"
    return None


def without_credentials(url: str) -> str:
    """``url`` fit to show or to pass on: no ``user:password@`` part, even
    one a URL parser would not find (an unescaped '/' in the password), and
    no query or fragment (where API keys and presigned signatures go; a
    remote URL with one is refused anyway)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else "<hidden>"
    userinfo, at, shown = rest.rpartition("@")
    if at and ("?" in userinfo or "#" in userinfo):
        # A password holding '?' or a query holding '@': which is which
        # cannot be told, and either may be a secret.
        return f"{scheme}://<hidden>"
    for mark in "?#":
        shown = shown.partition(mark)[0]
    return f"{scheme}://{shown}"


def _positive_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Bad(f"must be an integer, got {_got(v)}{_quoted_number(v, integer=True)}")
    if v < 1:
        raise _Bad(f"must be at least 1, got {v}")
    return v


def _mutexes(v: Any) -> Tuple[MutexSpec, ...]:
    if not isinstance(v, list):
        raise _Bad(f"must be an array, got {_type_name(v)}")
    out = []
    bad: List[str] = []
    for item in v:
        try:
            out.append(_mutex(item))
        except _Bad as e:
            bad.extend(e.reasons)
    names = [m.name for m in out]
    bad += [f"mutex '{n}' is listed twice" for n in sorted({n for n in names
                                                            if names.count(n) > 1})]
    if bad:
        raise _Bad(*bad)
    return tuple(out)


def _mutex(item: Any) -> MutexSpec:
    if isinstance(item, str):
        name, mode = item, MutexMode.EXCLUSIVE.value
    elif isinstance(item, dict):
        unknown = set(item) - {"name", "mode"}
        if unknown:
            k = sorted(unknown)[0]
            raise _Bad(f"unknown key '{k}' in a mutex table"
                       + did_you_mean(k, ["name", "mode"]))
        name = item.get("name")
        mode = item.get("mode", MutexMode.EXCLUSIVE.value)
        if not isinstance(name, str):
            raise _Bad("each mutex table needs name = \"...\"")
    else:
        raise _Bad("entries must be \"name\" or {name = \"...\", "
                   f"mode = \"shared\"|\"exclusive\"}}, got {_got(item)}")
    if not name:
        raise _Bad("mutex names must not be empty")
    if mode not in ("shared", "exclusive"):
        raise _Bad(f"mode of mutex '{name}' must be \"shared\" or "
                   f"\"exclusive\", got {mode!r}")
    return MutexSpec(name, MutexMode(mode))


def _tag_caps(v: Any) -> Dict[str, int]:
    if not isinstance(v, dict):
        raise _Bad(f"must be a table of TAG = cap, got {_type_name(v)}")
    caps = {}
    for tag, cap in v.items():
        try:
            caps[tag] = _positive_int(cap)
        except _Bad as e:
            raise _Bad(f"cap of tag '{tag}' {e}") from None
    return caps


# CLI-004: RunOptions checked as haz.toml's values are (None: the default).
_RUN_OPTIONS: Dict[str, Callable[[Any], Any]] = {
    "jobs": _positive_int, "tag_caps": _tag_caps, "grace": _seconds}


def run_option_problem(name: str, value: Any) -> Optional[str]:
    """Why ``value`` cannot be the RunOptions field ``name`` (jobs, tag_caps,
    grace), or None."""
    if value is None:
        return None
    try:
        _RUN_OPTIONS[name](dict(value) if name == "tag_caps" else value)
    except _Bad as e:
        return str(e)
    return None


TASK_SCHEMA: Dict[str, Callable[[Any], Any]] = {
    "cmd": _cmd,
    "deps": _string_list,
    "after": _string_list,
    "inputs": _string_list,
    "outputs": _string_list,
    "env": _env_names,
    "tags": _tag_names,
    "mutex": _mutexes,
    "cache": _bool,
    "timeout": _positive_seconds,
    "grace": _seconds,
    "description": _string,
}

WORKSPACE_SCHEMA: Dict[str, Callable[[Any], Any]] = {
    "members": _string_list,
    "concurrency": _positive_int,
    "env": _env_names,
    "inputs": _string_list,
    "grace": _seconds,
    "tags": _tag_caps,
    "remote_cache": lambda v: v,  # checked by _remote_cache
}

PROJECT_SCHEMA: Dict[str, Callable[[Any], Any]] = {
    "name": _string,
    "deps": _string_list,
}

REMOTE_SCHEMA: Dict[str, Callable[[Any], Any]] = {
    "url": _remote_url,
    "protocol": _string,
    "team": _string,
    "read_only": _bool,
    "timeout": _remote_timeout,
}

TOP_LEVEL_KEYS = ("workspace", "project", "tasks")


class _Reader:
    """Reads tables against a schema, appending problems instead of raising."""

    def __init__(self, root: Path, problems: List[Problem]):
        self.root = root
        self.problems = problems

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def problem(self, file: Path, where: str, message: str) -> None:
        self.problems.append(Problem(self.rel(file), where, message))

    def table(self, file: Path, where: str, data: Any,
              schema: Mapping[str, Callable[[Any], Any]]) -> Dict[str, Any]:
        """Check ``data`` against ``schema``; return the converted keys."""
        if not isinstance(data, dict):
            hint = ""
            if where.startswith("[tasks.") and isinstance(data, str):
                # [tasks] build = "make": a task is a table of its own.
                hint = f"; write {where} with cmd = {json.dumps(data, ensure_ascii=False)}"
            self.problem(file, where, f"must be a table, got {_got(data)}{hint}")
            return {}
        out: Dict[str, Any] = {}
        for key, raw in data.items():
            check = schema.get(key)
            if check is None:
                self.problem(file, where, f"unknown key '{key}'"
                             + did_you_mean(key, schema))
                continue
            try:
                out[key] = check(raw)
            except _Bad as e:
                for reason in e.reasons:
                    self.problem(file, f"{where} key '{key}'" if where else f"key '{key}'",
                                 reason)
        return out


def parse_toml(path: Path, root_for_messages: Optional[Path] = None) -> Dict[str, Any]:
    """Parse one haz.toml; raise ConfigError with line and column on error."""
    shown = str(path)
    if root_for_messages is not None:
        try:
            shown = path.relative_to(root_for_messages).as_posix()
        except ValueError:
            pass
    tomllib = _toml()
    try:
        with open(path, "rb") as f:
            data = f.read()
        # CFG-001: a byte order mark (Windows editors write one) is no
        # TOML, and invisible in the editor that put it there: passed over.
        text = data.decode("utf-8").removeprefix("\ufeff")
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib puts "(at line L, column C)" in the message, except at the
        # end of the document, where the line and column are added here.
        message = str(e)
        if message.endswith("(at end of document)"):
            line = text.count("\n") + 1
            column = len(text) - text.rfind("\n")
            message = (message[:-len("(at end of document)")]
                       + f"(at end of document, line {line}, column {column})")
        raise ConfigError([Problem(shown, "", f"invalid TOML: {message}")]) from None
    except OSError as e:
        raise ConfigError([Problem(shown, "", f"cannot read: {e.strerror}")]) from None
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError([Problem(shown, "", f"invalid TOML: not UTF-8 ({e.reason}, "
                                              f"line {line})")]) from None
    except RecursionError:
        raise ConfigError([Problem(shown, "", "invalid TOML: nested too deeply to read")]) \
            from None


def find_root(start: Path) -> Tuple[Path, Dict[str, Any]]:
    """CFG-001: the nearest directory upward holding haz.toml with [workspace]."""
    root, data, _ = _search_root(start)
    return root, data


# What a haz.toml parsed to, if known without parsing it (workspace.py's
# snapshot knows the root's); None: parse it.
Known = Callable[[Path], Optional[Dict[str, Any]]]


def _search_root(start: Path, known: Optional[Known] = None
                 ) -> Tuple[Path, Dict[str, Any], List[Path]]:
    """find_root, plus the directories passed over because their haz.toml
    does not parse.

    Such a file is most likely a project's: the search goes on upward so
    that its syntax error is reported together with the rest of the load
    (CFG-005).  With no root above it, its syntax error is the error.
    """
    start = start.resolve()
    if not start.is_dir():
        raise NoWorkspaceError(str(start), " (it is not a directory)" if start.exists()
                               else " (there is no such directory)")
    broken: List[Tuple[Path, ConfigError]] = []
    misshapen: Optional[str] = None  # a 'workspace' key that is no table
    for directory in (start, *start.parents):
        candidate = directory / CONFIG_NAME
        if candidate.is_dir():
            # Not passed over as if absent: "no haz.toml" would be wrong.
            broken.append((directory, ConfigError([Problem(
                str(candidate), "", "is a directory; a haz.toml must be a file")])))
            continue
        if candidate.is_file():
            try:
                data = known(candidate) if known is not None else None
                if data is None:
                    data = parse_toml(candidate)
            except ConfigError as e:
                broken.append((directory, e))
                continue
            workspace = data.get("workspace")
            if isinstance(workspace, dict):
                return directory, data, [d for d, _ in broken]
            if workspace is None and misshapen is None:
                # [workspaces], [Workspace]: most likely the root, misspelt.
                for key, table in data.items():
                    if isinstance(table, dict) and key not in ("project", "tasks") \
                            and did_you_mean(key, ["workspace"]):
                        misshapen = (f" ({candidate} has a [{key}] table: did you "
                                     "mean [workspace]?)")
                        break
            if workspace is not None and misshapen is None:
                what = ("an array of tables ([[workspace]])" if isinstance(workspace, list)
                        and all(isinstance(w, dict) for w in workspace)
                        else _type_name(workspace))
                misshapen = (f" ({candidate}: key 'workspace' must be a table, "
                             f"[workspace], got {what})")
    if broken:
        raise broken[0][1]
    raise NoWorkspaceError(str(start), misshapen)


def _remote_cache(reader: _Reader, file: Path, data: Any) -> Optional[RemoteCacheConfig]:
    where = "[workspace.remote_cache]"
    if isinstance(data, dict) and "token" in data:
        # REMOTE-001: secrets only from the environment; never echo the value.
        reader.problem(file, where, "a token must not be written in haz.toml; "
                       "set HAZ_REMOTE_CACHE_TOKEN in the environment instead")
        data = {k: v for k, v in data.items() if k != "token"}
    if isinstance(data, dict) and "signature_key" in data:
        reader.problem(file, where, "a signature key must not be written in "
                       "haz.toml; set HAZ_REMOTE_CACHE_SIGNATURE_KEY instead")
        data = {k: v for k, v in data.items() if k != "signature_key"}
    values = reader.table(file, where, data, REMOTE_SCHEMA)
    protocol = values.get("protocol", "http")
    if protocol not in ("http", "turbo"):
        reader.problem(file, f"{where} key 'protocol'",
                       f"must be \"http\" or \"turbo\", got {protocol!r}")
    return RemoteCacheConfig(**values)


def _workspace_settings(reader: _Reader, file: Path, data: Any) -> WorkspaceSettings:
    values = reader.table(file, "[workspace]", data, WORKSPACE_SCHEMA)
    remote = None
    if "remote_cache" in values:
        remote = _remote_cache(reader, file, values.pop("remote_cache"))
    only = _only_excludes(values.get("inputs", ()))
    if only:
        reader.problem(file, "[workspace] key 'inputs'", only)
    for pattern in values.get("inputs", ()):
        why = check_pattern(pattern)
        if why and pattern.lstrip("!").startswith("/"):
            # Relative to the root here, not to a project.
            why = "absolute paths are not allowed; use a path relative to the workspace root"
        if why:
            reader.problem(file, "[workspace] key 'inputs'", f"'{pattern}': {why}")
    for pattern in values.get("members", ()):
        why = _member_problem(pattern)
        if why:
            reader.problem(file, "[workspace] key 'members'", f"'{pattern}': {why}")
    return WorkspaceSettings(remote_cache=remote, **values)


def task_table(name: str) -> str:
    """How a task's table is written in haz.toml: [tasks.build], or
    [tasks."docs.html"] for a name that is not a bare TOML key."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        name = json.dumps(name, ensure_ascii=False)
    return f"[tasks.{name}]"


def _only_excludes(patterns: Sequence[str]) -> Optional[str]:
    """CFG-006: a list selects what its includes match, less what its
    excludes match; with excludes alone it selects nothing, silently (no
    edit would ever make the task run again)."""
    if (patterns and all(p.startswith("!") for p in patterns)
            and not any(check_pattern(p) for p in patterns)):  # said already
        shown = ", ".join(f"'{p}'" for p in patterns)
        return (f"{shown} only excludes, so it selects no file; name what to "
                f"include first (e.g. [\"**\", {json.dumps(patterns[0])}] for every file "
                "but those)")
    return None


def _member_problem(pattern: str) -> Optional[str]:
    """CFG-002: check_pattern's answer, with advice that fits a member
    (relative to the root, never '$root/', never the root itself)."""
    body = pattern[1:] if pattern.startswith("!") else pattern
    if body.startswith("/"):
        return ("absolute paths are not allowed; members are directories relative to "
                "the workspace root (e.g. \"packages/*\")")
    if body.strip("/") in (".", ""):
        return ("names the root itself: the root is a project of its own when its "
                "haz.toml has [tasks]; members are directories below it")
    return check_pattern(pattern)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _member_candidates(root: str, pattern: str,
                       links: Optional[Set[str]] = None) -> List[str]:
    """The directories ``pattern`` matches, as absolute paths, by hazrun's
    own glob rules (GLOBS in haz.toml(5)): the same as for an exclude, for
    inputs and for outputs ('*' matches a leading dot; '[^a]' negates;
    '**' matches any number of segments, none included).

    Walked from the pattern's literal prefix, only as deep as its segments
    go, or to any depth below a '**', through symlinked directories too
    but never twice into one directory (a link to a parent); .git/ and
    .haz/ never.  ``links``: gets those of the paths that are symlinks
    (the directory entry tells, without a system call).
    """
    glob = compile_glob(pattern)
    top = glob.prefix.rstrip("/")
    rest = glob.rooted[len(glob.prefix):].split("/") if glob.rooted != top else []
    unbounded = "**" in rest
    found: List[str] = []
    if not rest:  # a literal path
        if top and top.split("/")[0] not in NEVER:
            found.append(os.path.join(root, top))
            if links is not None and os.path.islink(found[-1]):
                links.add(found[-1])
        return found
    start = os.path.join(root, top) if top else root
    if top and unbounded and (glob.match(top) or rest == ["**"]):
        found.append(start)  # 'tools/**' is tools itself too
        if links is not None and os.path.islink(start):
            links.add(start)
    seen = {os.path.realpath(start)}
    root_real = os.path.realpath(root)
    stack = [(start, top, 0)]
    while stack:
        path, rel, depth = stack.pop()
        try:
            entries = list(os.scandir(path))
        except OSError:
            continue
        for e in entries:
            if e.name in NEVER:
                continue
            try:
                if not e.is_dir():
                    continue
            except OSError:
                continue
            sub = f"{rel}/{e.name}" if rel else e.name
            if (unbounded or depth + 1 == len(rest)) and glob.match(sub):
                found.append(e.path)
                if links is not None and e.is_symlink():
                    links.add(e.path)
            if unbounded or depth + 1 < len(rest):
                real = os.path.realpath(e.path)
                if e.is_symlink() and not _inside(real, root_real):
                    # A link out of the workspace ('sysroot -> /usr'): no
                    # member can be under it (one that is, is refused), and
                    # walking it would cost every command a walk of /usr.
                    continue
                if real not in seen:
                    seen.add(real)
                    stack.append((e.path, sub, depth + 1))
    return sorted(found)



def _find_members(reader: _Reader, root_file: Path, patterns: Tuple[str, ...],
                  warnings: List[str], stats: Dict[str, os.stat_result]) -> List[str]:
    """CFG-002: directories matched by the member globs that hold a haz.toml.
    A pattern that selects none is a warning (a typo, most often; or a
    directory waiting for its first project).

    String paths and one realpath per parent directory, not pathlib per
    member: this runs once per project of workspaces with thousands.
    ``stats``: gets the os.stat of each member's haz.toml, by path, for the
    snapshot's key to use rather than asking again.
    """
    root = str(reader.root)
    prefix = root.rstrip("/") + "/"
    real_parents: Dict[str, str] = {}
    found = set()
    includes = [p for p in patterns if not p.startswith("!")]
    excludes = _member_excludes(patterns)
    for pattern in includes:
        if _member_problem(pattern):
            continue  # reported by _workspace_settings
        selected = False
        links: Set[str] = set()
        for hit in _member_candidates(root, pattern, links):
            config = os.path.join(hit, CONFIG_NAME)
            try:
                st = os.stat(config)
            except (OSError, ValueError):
                continue
            if not stat.S_ISREG(st.st_mode):
                if stat.S_ISDIR(st.st_mode):
                    # A project that vanished without a word (CFG-005).
                    reader.problem(Path(config), "",
                                   "is a directory; a haz.toml must be a file")
                continue
            selected = True
            rel = hit[len(prefix):] if hit != root else ""  # as the pattern matched it
            if excludes and excludes.match(rel):
                continue
            parent, name = os.path.split(hit)
            if parent not in real_parents:
                real_parents[parent] = os.path.realpath(parent)
            resolved = (os.path.realpath(hit) if hit in links
                        else os.path.join(real_parents[parent], name))
            if resolved != root and not resolved.startswith(prefix):
                # A symlink out of the workspace: its files would have no
                # root-relative path for inputs, outputs and the cache.
                reader.problem(root_file, "[workspace] key 'members'",
                               f"'{pattern}' matches {rel}, a link to "
                               f"{resolved}, outside the workspace root; move "
                               "the project into the workspace or exclude it "
                               f"with '!{rel}'")
                continue
            rel = resolved[len(prefix):] if resolved != root else ""
            if rel == "" or rel.split("/")[0] in NEVER:
                continue
            if excludes and excludes.match(rel):
                continue
            found.add(resolved)
            if resolved == hit:
                stats[config] = st
        if not selected:
            warnings.append(f"{reader.rel(root_file)}: [workspace] key 'members': "
                            f"'{pattern}' matches no directory with a {CONFIG_NAME}")
    # Ordered as Paths would be (by components), without making a thousand
    # of them: a load from the snapshot needs none.
    return sorted(found, key=lambda p: p.split("/"))


def _task(reader: _Reader, file: Path, project: str, name: str, data: Any) -> Optional[TaskDef]:
    where = task_table(name)
    if not NAME_RE.match(name) or ":" in name:
        reader.problem(file, where, f"task name '{name}' must match "
                       f"{NAME_RULE} and contain no ':'")
        return None
    values = reader.table(file, where, data, TASK_SCHEMA)
    if not isinstance(data, dict):
        return None
    # An empty deps list groups nothing; a deps of the wrong type is
    # reported by the schema already.
    if "cmd" not in data and ("deps" not in data or values.get("deps") == ()):
        reader.problem(file, where, "has neither 'cmd' nor 'deps'; give it a "
                       "command to run, or deps to group")
    elif "cmd" not in data and values.get("outputs"):
        # A group runs nothing, so it makes no file: its outputs would claim
        # (and cache again) what its deps wrote, an overlap (EXEC-020).
        reader.problem(file, f"{where} key 'outputs'",
                       "a task without 'cmd' produces nothing; list the outputs "
                       "on the task whose command writes them")
    for key in ("inputs", "outputs"):
        only = _only_excludes(values.get(key, ()))
        if only:
            reader.problem(file, f"{where} key '{key}'", only)
        for pattern in values.get(key, ()):
            why = check_pattern(pattern)
            if why == DOTDOT and not pattern.lstrip("!").startswith(ROOT_PREFIX):
                why += "; name files elsewhere in the workspace with $root/..."
            if why:
                reader.problem(file, f"{where} key '{key}'", f"'{pattern}': {why}")
            elif key == "outputs" and pattern.lstrip("!").startswith("$root/"):
                reader.problem(file, f"{where} key 'outputs'",
                               f"'{pattern}': outputs must be inside the project "
                               "directory ($root/ is for inputs)")
    outputs = values.get("outputs", ())
    if outputs and not any(check_pattern(p) for p in outputs):
        if GlobSet.compile(outputs).match(CONFIG_NAME):
            # Outputs are never inputs: edits to this file would never
            # change the key, and a hit would put back the stored copy
            # over them (with the task's sources, as often as not).
            reader.problem(file, f"{where} key 'outputs'",
                           f"{', '.join(repr(p) for p in outputs)} matches this "
                           f"project's {CONFIG_NAME}; outputs are the files the task "
                           "writes: name them (e.g. \"dist/**\" or \"out.txt\")")
    if "inputs" in values:
        values["inputs"] = tuple(values["inputs"])
    return TaskDef(project=project, name=name, cmd=values.pop("cmd", None), **values)


def _project(reader: _Reader, root: Path, directory: Path, data: Dict[str, Any],
             is_root: bool) -> Optional[Project]:
    file = directory / CONFIG_NAME
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            reader.problem(file, "", f"unknown table '{key}'"
                           + did_you_mean(key, TOP_LEVEL_KEYS))
    if "workspace" in data and not is_root:
        reader.problem(file, "[workspace]", "only the workspace root may have a "
                       f"[workspace] table (the root is {reader.rel(root / CONFIG_NAME)})")
    settings = reader.table(file, "[project]", data.get("project", {}), PROJECT_SCHEMA)
    default_name = "root" if is_root else directory.name
    name = settings.get("name", default_name)
    if not NAME_RE.match(name) or ":" in name:
        reader.problem(file, "[project] key 'name'" if "name" in settings else "",
                       f"project name '{name}' must match {NAME_RULE} "
                       "and contain no ':'" + ("" if "name" in settings else
                                               "; set [project] name = \"...\""))
        return None
    tasks_data = data.get("tasks", {})
    tasks: Dict[str, TaskDef] = {}
    if not isinstance(tasks_data, dict):
        reader.problem(file, "[tasks]", f"must be a table, got {_type_name(tasks_data)}")
    else:
        for task_name, task_data in tasks_data.items():
            task = _task(reader, file, name, task_name, task_data)
            if task is not None:
                tasks[task_name] = task
    rel = directory.relative_to(root).as_posix()
    return Project(name=name, dir=directory, rel_dir="" if rel == "." else rel,
                   config_file=file, deps=settings.get("deps", ()), tasks=tasks)


@value
class LoadedConfig:
    """Everything read from disk, before the graph is built."""

    root: Path
    settings: WorkspaceSettings
    projects: Mapping[str, Project]
    problems: List[Problem] = field(default_factory=list)
    # Directory names of projects whose haz.toml could not be parsed: a
    # reference to them is not reported as unknown on top of the syntax error.
    unreadable: Tuple[str, ...] = ()


class Located:
    """What :func:`locate` found: the root, its settings and the member
    directories, before any member's haz.toml is read."""

    def __init__(self, root: Path, root_data: Dict[str, Any], broken: List[Path],
                 reader: _Reader, settings: WorkspaceSettings, members: List[str],
                 warnings: Sequence[str] = (),
                 stats: Optional[Dict[str, os.stat_result]] = None):
        self.root = root
        self.root_data = root_data
        self.broken = broken
        self.reader = reader
        self.settings = settings
        self.members = members     # absolute paths, as strings
        self.warnings = tuple(warnings)
        # os.stat of member haz.toml files taken while finding them, by path
        self.stats = stats or {}

    @property
    def problems(self) -> List[Problem]:
        return self.reader.problems

    def config_files(self) -> List[str]:
        """Every haz.toml a load reads (the root's first)."""
        root = str(self.root)
        return [os.path.join(root, CONFIG_NAME)] + [
            m + "/" + CONFIG_NAME for m in self.members if m != root]


def locate(start: Path, known: Optional[Known] = None) -> Located:
    """CFG-001/002: the root, its [workspace] settings and the members.
    ``known``: see Known."""
    root, root_data, broken = _search_root(start, known)
    reader = _Reader(root, [])
    root_file = root / CONFIG_NAME
    settings = _workspace_settings(reader, root_file, root_data["workspace"])
    if "tasks" not in root_data and "project" not in root_data:
        for key in root_data:
            if key not in TOP_LEVEL_KEYS:
                reader.problem(root_file, "", f"unknown table '{key}'"
                               + did_you_mean(key, TOP_LEVEL_KEYS))
    warnings: List[str] = []
    stats: Dict[str, os.stat_result] = {}
    members = _find_members(reader, root_file, settings.members, warnings, stats)
    outside = _not_a_member(start, root, members)
    if outside is not None and _member_excludes(settings.members).match(
            reader.rel(outside.parent)):
        outside = None  # left out on purpose, by a '!' of members
    if outside is not None:
        warnings.append(f"{reader.rel(outside)} is not a member of the workspace: no "
                        f"pattern of [workspace] members in {reader.rel(root_file)} "
                        f"matches {reader.rel(outside.parent)}, so its tasks are not "
                        "this workspace's")
    return Located(root, root_data, broken, reader, settings, members, warnings, stats)


def _member_excludes(patterns: Sequence[str]) -> GlobSet:
    """The '!' patterns of [workspace] members (CFG-002), compiled.  One with
    a problem is reported by _workspace_settings; compiled, it would end the
    load with a traceback before that report."""
    return GlobSet.compile([p[1:] for p in patterns
                            if p.startswith("!") and not _member_problem(p)])


def _not_a_member(start: Path, root: Path, members: List[str]) -> Optional[Path]:
    """CFG-002: the haz.toml nearest above ``start`` (the directory hazrun
    was run in), below the root, if its directory is no member: a project the user
    is working in that the workspace does not see."""
    here = start.resolve()
    if here == root or root not in here.parents:
        return None
    for directory in (here, *here.parents):
        if directory == root:
            return None
        config = directory / CONFIG_NAME
        if config.is_file():
            return None if str(directory) in members else config
    return None


def read_config(start: Path) -> LoadedConfig:
    """CFG-001..003: find the root, read every haz.toml, check every key.

    Problems are collected in the result, not raised, so that the graph can
    add its own and every mistake of a load is reported together (CFG-005).
    """
    return read_located(locate(start))


def read_located(located: Located) -> LoadedConfig:
    """:func:`read_config` after :func:`locate`."""
    root, root_data, broken = located.root, located.root_data, located.broken
    reader = located.reader
    problems = reader.problems
    settings = located.settings
    members = located.members

    sources: List[Tuple[Path, Dict[str, Any], bool]] = []
    unreadable: List[str] = []
    if "tasks" in root_data or "project" in root_data:
        sources.append((root, root_data, True))
    for directory in map(Path, members):
        try:
            data = parse_toml(directory / CONFIG_NAME, root)
        except ConfigError as e:
            problems.extend(e.problems)
            unreadable.append(directory.name)
            continue
        sources.append((directory, data, False))
    member_set = set(members)
    for directory in broken:
        if str(directory) not in member_set and not (directory / CONFIG_NAME).is_dir():
            # (A haz.toml that is a directory is said by _find_members.)
            # Not a member, so the loop above did not report its error.
            try:
                parse_toml(directory / CONFIG_NAME, root)
            except ConfigError as e:
                problems.extend(e.problems)

    projects: Dict[str, Project] = {}
    for directory, data, is_root in sources:
        project = _project(reader, root, directory, data, is_root)
        if project is None:
            continue
        if project.name in projects:
            other = projects[project.name]
            reader.problem(project.config_file, "[project] key 'name'",
                           f"project name '{project.name}' is also used by "
                           f"{reader.rel(other.config_file)}; set a unique "
                           "[project] name")
            continue
        projects[project.name] = project

    for project in projects.values():
        for dep in project.deps:
            if dep == project.name:
                reader.problem(project.config_file, "[project] key 'deps'",
                               f"project '{dep}' depends on itself")
            elif dep not in projects and dep not in unreadable:
                reader.problem(project.config_file, "[project] key 'deps'",
                               f"unknown project '{dep}'" + did_you_mean(dep, projects))
    return LoadedConfig(root, settings, projects, problems, tuple(unreadable))

"""REMOTE-001: the remote cache a run uses, from command line, environment
and haz.toml.

:func:`resolve_remote` merges the three sources (command line first, then
the environment, then ``[workspace.remote_cache]``) into one
:class:`RemoteSettings`, or None when no remote is configured.  Secrets come
only from the environment and never appear in ``repr``, messages or
:meth:`RemoteSettings.display`.
"""
from __future__ import annotations

import math
import urllib.parse
from dataclasses import field
from typing import Any, Dict, Mapping, Optional

from ...config import MAX_REMOTE_TIMEOUT_S as MAX_TIMEOUT_S
from ...config import RemoteCacheConfig, remote_url_problem, without_credentials
from ...errors import UsageError
from ...values import value

ENV_URL = "HAZ_REMOTE_CACHE_URL"
ENV_PROTOCOL = "HAZ_REMOTE_CACHE_PROTOCOL"
ENV_TEAM = "HAZ_REMOTE_CACHE_TEAM"
ENV_READ_ONLY = "HAZ_REMOTE_CACHE_READ_ONLY"
ENV_TIMEOUT = "HAZ_REMOTE_CACHE_TIMEOUT"
ENV_TOKEN = "HAZ_REMOTE_CACHE_TOKEN"
ENV_SIGNATURE_KEY = "HAZ_REMOTE_CACHE_SIGNATURE_KEY"

PROTOCOLS = ("http", "turbo")
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
DEFAULT_TIMEOUT = 10.0


@value
class RemoteSettings:
    """A resolved remote cache.  ``url`` has no credentials in it: those of
    a ``user:password@`` part are in ``basic_auth``."""

    url: str                                   # scheme://host[:port][/path], no '/' at the end
    protocol: str = "http"                     # "http" or "turbo" (REMOTE-002)
    team: Optional[str] = None
    read_only: bool = False                    # REMOTE-007
    timeout: float = DEFAULT_TIMEOUT           # per socket operation
    token: Optional[str] = field(default=None, repr=False)          # secret
    signature_key: Optional[bytes] = field(default=None, repr=False)  # secret
    basic_auth: Optional[str] = field(default=None, repr=False)     # secret

    def display(self) -> str:
        """How messages name the server: its URL, never a credential."""
        return self.url


def parse_bool(name: str, value: str) -> bool:
    """REMOTE-001: 1/true/yes/on, 0/false/no/off in any case; else exit 2."""
    v = value.strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise UsageError(f"{name}={value!r} is not a boolean; use one of "
                     f"{'/'.join(TRUE)} or {'/'.join(FALSE)}")


def parse_timeout(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (0 < seconds <= MAX_TIMEOUT_S):  # also refuses nan
        raise UsageError(f"{name}={value!r} is not a number of seconds greater than 0 "
                         f"and at most {MAX_TIMEOUT_S:.0f}")
    return seconds


def split_url(where: str, url: str) -> "tuple[str, Optional[str]]":
    """The URL without credentials and its ``user:password`` (or None).

    Raises UsageError naming ``where`` (never the credentials) for anything
    that is not an http:// or https:// URL with a host.
    """
    why = remote_url_problem(url)
    if why:
        raise UsageError(f"{where}: '{without_credentials(url)}' {why}")
    parts = urllib.parse.urlsplit(url.strip())
    auth = None
    if parts.username is not None or parts.password is not None:
        auth = f"{urllib.parse.unquote(parts.username or '')}:" \
               f"{urllib.parse.unquote(parts.password or '')}"
    netloc = parts.netloc.rpartition("@")[2]
    clean = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return clean, auth


def _header_safe(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not any(c in value for c in "\r\n\0")


def remote_stats(hits: int = 0, misses: int = 0, uploads: int = 0, errors: int = 0,
                 disabled: bool = False) -> Dict[str, Any]:
    """REMOTE-006: the summary JSON's ``remote`` object."""
    return {"hits": hits, "misses": misses, "uploads": uploads, "errors": errors,
            "disabled": disabled}


def resolve_remote(config: Optional[RemoteCacheConfig], environ: Mapping[str, str],
                   url: Optional[str] = None, read_only: bool = False,
                   disabled: bool = False) -> Optional[RemoteSettings]:
    """REMOTE-001: command line (``url``, ``read_only``, ``disabled``), then
    the environment, then haz.toml.  None: no remote cache for this run.

    An empty environment variable counts as unset.  Raises UsageError (exit
    2) for a value that does not parse, naming the variable and the value.
    """
    if disabled:
        return None
    toml = config or RemoteCacheConfig()

    def env(name: str) -> Optional[str]:
        value = environ.get(name)
        return value if value else None

    where, chosen = "haz.toml [workspace.remote_cache] key 'url'", toml.url
    if env(ENV_URL) is not None:
        where, chosen = ENV_URL, env(ENV_URL)
    if url is not None:
        where, chosen = "--remote-cache", url
    # REMOTE-001: the variables are checked with or without a URL: a typo in a CI
    # setting ('maybe') is refused where it is made, not in the one job
    # that also sets the URL.
    protocol = toml.protocol
    if env(ENV_PROTOCOL) is not None:
        protocol = env(ENV_PROTOCOL).strip().lower()
        if protocol not in PROTOCOLS:
            raise UsageError(f"{ENV_PROTOCOL}={env(ENV_PROTOCOL)!r} is not a protocol; "
                             "use \"http\" or \"turbo\"")
    ro = toml.read_only
    if env(ENV_READ_ONLY) is not None:
        ro = parse_bool(ENV_READ_ONLY, env(ENV_READ_ONLY))
    if read_only:
        ro = True
    env_timeout = None
    if env(ENV_TIMEOUT) is not None:
        env_timeout = parse_timeout(ENV_TIMEOUT, env(ENV_TIMEOUT))
    if not chosen:
        return None
    clean, basic = split_url(where, chosen)
    team = env(ENV_TEAM) or toml.team
    if env_timeout is not None:
        timeout = env_timeout
    else:
        # haz.toml's was checked as it loaded (CFG-001); this is for a
        # library caller's own RemoteCacheConfig.
        timeout = toml.timeout
        if not (0 < timeout <= MAX_TIMEOUT_S):
            raise UsageError(f"[workspace.remote_cache] key 'timeout': must be greater "
                             f"than 0 and at most {MAX_TIMEOUT_S:.0f} seconds, got {timeout:g}")
    token = env(ENV_TOKEN)
    if token is not None and not _header_safe(token):
        # Never echo the value: it is a secret.
        raise UsageError(f"{ENV_TOKEN} holds characters an HTTP header cannot carry "
                         "(a line break or non-Latin-1 text); set it to the token alone")
    key = env(ENV_SIGNATURE_KEY)
    return RemoteSettings(url=clean, protocol=protocol, team=team or None, read_only=ro,
                          timeout=timeout, token=token,
                          signature_key=key.encode("utf-8", "surrogateescape") if key else None,
                          basic_auth=basic)

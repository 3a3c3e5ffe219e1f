"""The remote cache (REMOTE-001..007), re-exported.

``settings``: which server, from command line, environment and haz.toml;
``transport``: the ``http`` and ``turbo`` protocols behind
:class:`RemoteBackend`; ``artifact``: packing, verifying and signing one
entry's archive; ``client``: :class:`RemoteCache`, the policy a run follows
(local first, failures never fatal, uploads off the critical path).
"""
from .artifact import Rejected, pack, sign, unpack, verify
from .client import MAX_FAILURES, RemoteCache
from .settings import RemoteSettings, parse_bool, resolve_remote
from .transport import (Abandoned, HttpBackend, LocalError, RemoteBackend, RemoteError,
                        TurboBackend, make_backend)

__all__ = [
    "Rejected", "pack", "sign", "unpack", "verify", "MAX_FAILURES", "RemoteCache",
    "RemoteSettings", "parse_bool", "resolve_remote", "Abandoned", "HttpBackend",
    "LocalError", "RemoteBackend", "RemoteError", "TurboBackend", "make_backend",
]

"""The remote cache (REMOTE-001..007), re-exported.

``settings``: which server, from command line, environment and haz.toml;
``transport``: the ``http`` and ``turbo`` protocols behind
:class:`RemoteBackend`; ``artifact``: packing, verifying and signing one
entry's archive; ``client``: :class:`RemoteCache`, the policy a run follows
(local first, failures never fatal, uploads off the critical path).
"""
from .settings import RemoteSettings, parse_bool, resolve_remote

__all__ = [
    "Rejected", "pack", "sign", "unpack", "verify", "MAX_FAILURES", "RemoteCache",
    "RemoteSettings", "parse_bool", "resolve_remote", "Abandoned", "HttpBackend",
    "LocalError", "RemoteBackend", "RemoteError", "TurboBackend", "make_backend",
]

# Every run resolves its settings; only a run with a remote cache needs the
# protocols (http.client, ssl, tarfile), so they are loaded on first use.
_LAZY = {"Rejected": "artifact", "pack": "artifact", "sign": "artifact",
         "unpack": "artifact", "verify": "artifact", "MAX_FAILURES": "client",
         "RemoteCache": "client", "Abandoned": "transport", "HttpBackend": "transport",
         "LocalError": "transport", "RemoteBackend": "transport",
         "RemoteError": "transport", "TurboBackend": "transport",
         "make_backend": "transport"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

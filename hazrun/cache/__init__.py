"""The content-addressed cache (CACHE-001..007), re-exported.

``hashing``: content digests and the stat cache; ``key``: the canonical key
encoding; ``store``: manifests and blobs on disk; ``restore``: all-or-nothing
restores; ``outputs``: finding a task's outputs; ``explain``: what changed
since the last run; ``housekeeping``: info, prune and clean; ``cache``: the
:class:`Cache` a run uses from its pool threads; ``remote``: the remote
cache (REMOTE-001..007).
"""
from typing import TYPE_CHECKING

__all__ = [
    "Cache", "resolve_cache_dir", "CacheInfo", "PruneResult", "clean", "format_size",
    "info", "parse_age", "parse_size", "prune", "FORMAT_VERSION", "CacheError",
    "CacheMissError", "InputError", "KeyInfo", "LogRef", "Manifest", "Materialised",
    "OutputEntry", "Restored", "StoreError", "WouldBlock", "stream_hash", "RemoteSettings",
    "resolve_remote",
]

# Every name is loaded on first use: a --no-cache run imports only the
# modules it needs (outputs, remote settings), not the store, the key and
# blake3; `hazrun cache` does not import what a run needs, nor a run
# housekeeping.
_WHERE = {"Cache": "cache", "resolve_cache_dir": "cache",
          "RemoteSettings": "remote", "resolve_remote": "remote",
          **{name: "model" for name in (
              "FORMAT_VERSION", "CacheError", "CacheMissError", "InputError", "KeyInfo",
              "LogRef", "Manifest", "Materialised", "OutputEntry", "Restored",
              "StoreError", "WouldBlock", "stream_hash")},
          **{name: "housekeeping" for name in (
              "CacheInfo", "PruneResult", "clean", "format_size", "info", "parse_age",
              "parse_size", "prune")}}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors
    from .cache import Cache, resolve_cache_dir
    from .housekeeping import (CacheInfo, PruneResult, clean, format_size, info, parse_age,
                               parse_size, prune)
    from .model import (FORMAT_VERSION, CacheError, CacheMissError, InputError, KeyInfo,
                        LogRef, Manifest, Materialised, OutputEntry, Restored, StoreError,
                        WouldBlock, stream_hash)
    from .remote import RemoteSettings, resolve_remote


def __getattr__(name: str):
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value

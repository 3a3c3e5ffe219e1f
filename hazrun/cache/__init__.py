"""The content-addressed cache (CACHE-001..007), re-exported.

``hashing``: content digests and the stat cache; ``key``: the canonical key
encoding; ``store``: manifests and blobs on disk; ``restore``: all-or-nothing
restores; ``outputs``: finding a task's outputs; ``explain``: what changed
since the last run; ``housekeeping``: info, prune and clean; ``cache``: the
:class:`Cache` a run uses from its pool threads; ``remote``: the remote
cache (REMOTE-001..007).
"""
from .cache import Cache, resolve_cache_dir
from .remote import RemoteSettings, resolve_remote
from .model import (FORMAT_VERSION, CacheError, CacheMissError, InputError, KeyInfo,
                    LogRef, Manifest, Materialised, OutputEntry, Restored, StoreError,
                    stream_hash)

__all__ = [
    "Cache", "resolve_cache_dir", "CacheInfo", "PruneResult", "clean", "format_size",
    "info", "parse_age", "parse_size", "prune", "FORMAT_VERSION", "CacheError",
    "CacheMissError", "InputError", "KeyInfo", "LogRef", "Manifest", "Materialised",
    "OutputEntry", "Restored", "StoreError", "stream_hash", "RemoteSettings",
    "resolve_remote",
]

# Housekeeping (hazrun cache info|prune|clean) is loaded on first use, so
# that a run does not import it.
_HOUSEKEEPING = ("CacheInfo", "PruneResult", "clean", "format_size", "info", "parse_age",
                 "parse_size", "prune")


def __getattr__(name: str):
    if name in _HOUSEKEEPING:
        from . import housekeeping
        return getattr(housekeeping, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

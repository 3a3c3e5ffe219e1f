"""The content-addressed cache (CACHE-001..007), re-exported.

``hashing``: content digests and the stat cache; ``key``: the canonical key
encoding; ``store``: manifests and blobs on disk; ``restore``: all-or-nothing
restores; ``outputs``: finding a task's outputs; ``explain``: what changed
since the last run; ``housekeeping``: info, prune and clean; ``cache``: the
:class:`Cache` a run uses from its pool threads.
"""
from .cache import Cache, resolve_cache_dir
from .housekeeping import (CacheInfo, PruneResult, clean, format_size, info, parse_age,
                           parse_size, prune)
from .model import (FORMAT_VERSION, CacheError, CacheMissError, InputError, KeyInfo,
                    LogRef, Manifest, Materialised, OutputEntry, Restored, StoreError,
                    stream_hash)

__all__ = [
    "Cache", "resolve_cache_dir", "CacheInfo", "PruneResult", "clean", "format_size",
    "info", "parse_age", "parse_size", "prune", "FORMAT_VERSION", "CacheError",
    "CacheMissError", "InputError", "KeyInfo", "LogRef", "Manifest", "Materialised",
    "OutputEntry", "Restored", "StoreError", "stream_hash",
]

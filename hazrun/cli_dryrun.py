"""``hazrun run --dry-run``: keys and hit/miss without running (CLI-002)."""
from __future__ import annotations

import argparse
from typing import Dict, Optional

from .console import Console
from .scheduler import RunOptions
from .workspace import Workspace


def dry_run(ws: Workspace, args: argparse.Namespace, options: RunOptions,
            console: Console) -> int:
    """Print, in canonical order, each task with its key and hit/miss.

    A task whose hard predecessor misses cannot know its key (the
    predecessor's outputs are not made yet): it prints ``?`` and
    ``miss (upstream)``.  With ``-v``, each miss says what changed since
    the last run of that task.
    """
    from .cache import Cache, Materialised
    from .cache.model import passed_on

    labels = ws.graph.select(args.targets, ws.projects)
    order = ws.graph.canonical_order(labels)
    # The remote cache too (REMOTE-003): on a build server most hits are
    # its.  A remote hit is downloaded into the local store, as the run
    # would: its outputs' digests are what its dependents' keys are made of.
    cache = Cache(ws, options.cache_dir, read=not (options.no_cache or options.force),
                  write=False, remote=options.remote)
    cache.tell_empty = False  # a dependency's outputs it would restore are not there
    streams: Dict[str, Optional[str]] = {}
    width = max((len(l) for l in order), default=0)
    lines = []
    try:
        for label in order:
            preds = ws.graph.hard_preds[label]
            upstream = [p for p in preds if streams.get(p) is None]
            if upstream:
                streams[label] = None
                lines.append(f"{label:<{width}}  {'?':<64}  miss (upstream)")
                if args.verbose:
                    lines.append(f"    {upstream[0]} misses, so what it hands on is not "
                                 "known yet" + (f" (and {len(upstream) - 1} more)"
                                                if len(upstream) > 1 else ""))
                continue
            task = ws.task(label)
            try:
                key = cache.compute_key(label, {p: streams[p] for p in preds})
            except Exception as e:
                streams[label] = None
                lines.append(f"{label:<{width}}  {'?':<64}  miss ({e})")
                continue
            if task.cmd is None:
                # A group: nothing to run or store; it hands on what its
                # deps made (cache.model.passed_on), as a run would.
                streams[label] = passed_on(Materialised.of(()).stream_hash,
                                           bool(task.outputs), {p: streams[p] for p in preds})
                lines.append(f"{label:<{width}}  {key.key}  group (nothing to run)")
                continue
            remote_hits = _remote_hits(cache)
            manifest = cache.lookup(key) if (cache.read and task.cache) else None
            for warning in cache.take_warnings():
                console.warning(warning)
            if manifest is not None:
                streams[label] = passed_on(Materialised.of(manifest.outputs).stream_hash,
                                           bool(task.outputs), {p: streams[p] for p in preds})
                cache.predict_restore(label, manifest)
                where = " (remote)" if _remote_hits(cache) > remote_hits else ""
                lines.append(f"{label:<{width}}  {key.key}  hit{where}")
                continue
            streams[label] = None
            why = ("cache = false" if not task.cache else
                   "--no-cache" if options.no_cache else
                   "--force" if options.force else "")
            lines.append(f"{label:<{width}}  {key.key}  miss" + (f" ({why})" if why else ""))
            if args.verbose and not why:
                lines.extend(f"    {reason}" for reason in cache.explain(label, key))
    finally:
        cache.close()
    if lines:
        console.print("\n".join(lines))
    return 0


def _remote_hits(cache) -> int:
    stats = cache.remote_stats()
    return stats["hits"] if stats else 0

#!/usr/bin/env python3
"""Benchmark: load + validate a large generated workspace, and order it.

Generates, in a temporary directory, workspaces of projects with three tasks
each (``build`` with ``deps = ["^build"]``, ``test`` after its own build,
``lint`` soft-ordered after the build), the projects in layers where each
project depends on a few projects of the layer below.  For each size it
prints the median of several runs of ``load_workspace`` (find the root,
parse every haz.toml, check every key, resolve references, look for cycles)
and of ``canonical_order`` over the whole graph.

    python3 scripts/bench_load.py            # 1k and 10k tasks
    python3 scripts/bench_load.py --tasks 30000 --runs 3
    python3 scripts/bench_load.py --profile  # cProfile of one 10k load

Issue 2's target: 10k tasks load well under 1 s.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hazrun.workspace import load_workspace  # noqa: E402

TASKS_PER_PROJECT = 3
LAYER_WIDTH = 50
DEPS_PER_PROJECT = 3


def project_name(i: int) -> str:
    return f"p{i:05d}"


def generate(root: Path, projects: int) -> None:
    """Write a workspace of ``projects`` projects x 3 tasks under ``root``."""
    root.mkdir(parents=True)
    (root / "haz.toml").write_text(
        '[workspace]\nmembers = ["packages/*"]\ninputs = ["VERSION"]\n')
    (root / "VERSION").write_text("1\n")
    for i in range(projects):
        layer, pos = divmod(i, LAYER_WIDTH)
        deps = []
        if layer > 0:
            below = (layer - 1) * LAYER_WIDTH
            deps = sorted({project_name(below + (pos + k * 7) % LAYER_WIDTH)
                           for k in range(DEPS_PER_PROJECT)})
        d = root / "packages" / project_name(i)
        (d / "src").mkdir(parents=True)
        (d / "src" / "main.txt").write_text(f"{i}\n")
        dep_list = ", ".join(f'"{n}"' for n in deps)
        (d / "haz.toml").write_text(f"""\
[project]
deps = [{dep_list}]

[tasks.build]
description = "build {project_name(i)}"
cmd = "mkdir -p dist && cp src/main.txt dist/"
deps = ["^build"]
inputs = ["src/**"]
outputs = ["dist/**"]

[tasks.test]
cmd = ["sh", "-c", "test -s dist/main.txt"]
deps = ["build"]
inputs = ["dist/**"]
tags = ["heavy"]

[tasks.lint]
cmd = "true"
after = ["build"]
inputs = ["src/**", "!src/gen/**"]
""")


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(tasks: int, runs: int, tmp: Path) -> None:
    projects = tasks // TASKS_PER_PROJECT
    root = tmp / f"ws{tasks}"
    t0 = time.perf_counter()
    generate(root, projects)
    gen = time.perf_counter() - t0
    ws = load_workspace(root)
    assert len(ws.graph) == projects * TASKS_PER_PROJECT, len(ws.graph)
    edges = sum(1 for _ in ws.graph.edges())
    load = median_time(lambda: load_workspace(root), runs)
    order = median_time(ws.graph.canonical_order, runs)
    print(f"{len(ws.graph):>6} tasks {projects:>5} projects {edges:>6} edges: "
          f"load+validate {load * 1000:7.1f} ms   canonical_order "
          f"{order * 1000:6.1f} ms   (median of {runs}; generated in {gen:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1000, 10000],
                        help="workspace sizes in tasks (default: 1000 10000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per size")
    parser.add_argument("--profile", action="store_true",
                        help="print a cProfile of one load of the largest size")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="hazrun-bench-") as tmp:
        for tasks in args.tasks:
            bench(tasks, args.runs, Path(tmp))
        if args.profile:
            root = Path(tmp) / f"ws{max(args.tasks)}"
            prof = cProfile.Profile()
            prof.runcall(load_workspace, root)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()

"""``hazrun list`` and ``hazrun graph``."""
from __future__ import annotations

import argparse
from typing import List

from .console import Console
from .workspace import Workspace, load_workspace


def _load(args: argparse.Namespace, console: Console) -> Workspace:
    ws = load_workspace(args.directory)
    for warning in ws.warnings:
        console.warning(warning)
    return ws


def _task_notes(ws: Workspace, label: str) -> str:
    task = ws.task(label)
    notes: List[str] = []
    if task.tags:
        notes.append("tags: " + ", ".join(task.tags))
    if task.mutex:
        notes.append("mutex: " + ", ".join(
            m.name + ("" if m.mode.value == "exclusive" else " (shared)")
            for m in task.mutex))
    if not task.cache:
        notes.append("not cached")
    return f"  [{'; '.join(notes)}]" if notes else ""


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    """Projects (by name) and tasks (canonical order) with descriptions."""
    ws = _load(args, console)
    console.print("projects:")
    width = max((len(n) for n in ws.projects), default=0)
    for name in sorted(ws.projects):
        project = ws.projects[name]
        deps = f"  deps: {', '.join(project.deps)}" if project.deps else ""
        console.print(f"  {name:<{width}}  {project.rel_dir or '.'}{deps}")
    console.print("tasks:")
    order = ws.graph.canonical_order()
    width = max((len(l) for l in order), default=0)
    for label in order:
        task = ws.task(label)
        line = f"  {label:<{width}}  {task.description}".rstrip()
        console.print(line + _task_notes(ws, label))
    return 0


def _dot_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cmd_graph(args: argparse.Namespace, console: Console) -> int:
    """The graph in canonical order, as text or Graphviz dot."""
    ws = _load(args, console)
    graph = ws.graph
    nodes = graph.select(args.targets, ws.projects) if args.targets else None
    order = graph.canonical_order(nodes)
    chosen = set(order)
    if args.dot:
        lines = ["digraph hazrun {", "  rankdir=LR;", "  node [shape=box];"]
        for label in order:
            lines.append(f"  {_dot_quote(label)};")
        for label in order:
            for p in graph.hard_preds[label]:
                if p in chosen:
                    lines.append(f"  {_dot_quote(p)} -> {_dot_quote(label)};")
            for p in graph.soft_preds[label]:
                if p in chosen:
                    lines.append(f"  {_dot_quote(p)} -> {_dot_quote(label)} "
                                 "[style=dashed, label=\"after\"];")
        lines.append("}")
        console.print("\n".join(lines))
        return 0
    out = []
    for label in order:
        hard = [p for p in graph.hard_preds[label] if p in chosen]
        soft = [p for p in graph.soft_preds[label] if p in chosen]
        parts = []
        if hard:
            parts.append("deps: " + ", ".join(hard))
        if soft:
            parts.append("after: " + ", ".join(soft))
        out.append(label + (f"  <- {'; '.join(parts)}" if parts else "")
                   + _task_notes(ws, label))
    if out:
        console.print("\n".join(out))
    return 0

"""The task graph: labels, hard and soft edges, canonical order, targets.

GRAPH-001..004 and the reference rules of CFG-004.  Every algorithm here is
linear in nodes + edges (canonical order adds a log factor for its heap):
reference resolution, Tarjan's strongly connected components for cycle
reports, Kahn's sort and the closure of targets.
"""
from __future__ import annotations

import enum
import heapq
from dataclasses import field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from .config import LoadedConfig, Project, TaskDef, task_table
from .errors import ConfigError, Problem, UsageError, did_you_mean
from .globs import GlobSet, shared_files
from .values import record


class EdgeKind(str, enum.Enum):
    """GRAPH-002."""

    HARD = "hard"   # deps: must succeed first
    SOFT = "soft"   # after: ordering only


@record
class TaskGraph:
    """Tasks by label with their predecessors and successors of each kind."""

    tasks: Dict[str, TaskDef] = field(default_factory=dict)
    hard_preds: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    soft_preds: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    hard_succs: Dict[str, List[str]] = field(default_factory=dict)
    soft_succs: Dict[str, List[str]] = field(default_factory=dict)
    # (task, task, what both select): outputs two tasks both declare, found
    # at load (see output_overlaps); kept in the workspace snapshot.
    output_overlaps: List[Tuple[str, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tasks)

    def __contains__(self, label: object) -> bool:
        return label in self.tasks

    def edges(self) -> Iterable[Tuple[str, str, EdgeKind]]:
        """Every edge as (predecessor, successor, kind)."""
        for label in self.tasks:
            for p in self.hard_preds[label]:
                yield p, label, EdgeKind.HARD
            for p in self.soft_preds[label]:
                yield p, label, EdgeKind.SOFT

    def canonical_order(self, subset: Optional[Iterable[str]] = None) -> List[str]:
        """GRAPH-003: Kahn's sort over all edges, smallest label first.

        With ``subset``, the order of just those tasks over the edges among
        them (a run's task set).  Python compares str by code point, which
        is the byte order of their UTF-8 encodings.
        """
        nodes = set(self.tasks) if subset is None else set(subset)
        indegree = {}
        for label in nodes:
            indegree[label] = (sum(1 for p in self.hard_preds[label] if p in nodes)
                               + sum(1 for p in self.soft_preds[label] if p in nodes))
        heap = [label for label, d in indegree.items() if d == 0]
        heapq.heapify(heap)
        order = []
        while heap:
            label = heapq.heappop(heap)
            order.append(label)
            for succ in self.hard_succs[label] + self.soft_succs[label]:
                if succ in nodes:
                    indegree[succ] -= 1
                    if indegree[succ] == 0:
                        heapq.heappush(heap, succ)
        assert len(order) == len(nodes), "internal error: cycle in a validated graph"
        return order

    def closure(self, targets: Iterable[str]) -> Set[str]:
        """GRAPH-004: the targets plus all their hard predecessors."""
        seen: Set[str] = set()
        stack = list(targets)
        while stack:
            label = stack.pop()
            if label in seen:
                continue
            seen.add(label)
            stack.extend(self.hard_preds[label])
        return seen

    def select(self, targets: Sequence[str], projects: Iterable[str] = ()) -> Set[str]:
        """GRAPH-004: resolve ``task`` / ``project:task`` targets to a run's set.
        ``projects``: every project's name, those without tasks too (for the
        message about a target naming one)."""
        by_name: Dict[str, List[str]] = {}
        for label, task in self.tasks.items():
            by_name.setdefault(task.name, []).append(label)
        chosen: List[str] = []
        unknown: List[str] = []
        for target in targets:
            if ":" in target:
                project, _, name = target.partition(":")
                if target in self.tasks:
                    chosen.append(target)
                    continue
                names = [label.partition(":")[2] for label in self.tasks
                         if label.partition(":")[0] == project]
                known = {label.partition(":")[0] for label in self.tasks} | set(projects)
                if not project or not name:
                    unknown.append(f"unknown target '{target}': a target is 'task' or "
                                   "'project:task'")
                elif project not in known:
                    # Said as such: a did-you-mean over labels proposed
                    # another project's task of the same name.
                    unknown.append(f"unknown target '{target}': no project '{project}'"
                                   + did_you_mean(project, known))
                elif not names:
                    unknown.append(f"unknown target '{target}': project '{project}' "
                                   "has no tasks")
                else:
                    # Over the project's task names: whole labels share the
                    # project's prefix, which made any name look close.
                    unknown.append(f"unknown target '{target}': project '{project}' has "
                                   f"no task '{name}'"
                                   + did_you_mean(name, names, prefix=f"{project}:"))
            elif target in by_name:
                chosen.extend(by_name[target])
            else:
                unknown.append(f"unknown target '{target}': no project has a task "
                               f"of that name" + did_you_mean(target, by_name))
        if unknown:
            raise UsageError("; ".join(unknown)
                             + " (hazrun list shows every task)")
        return self.closure(chosen)


def _resolve(ref: str, project: Project, projects: Mapping[str, Project],
             problem, unreadable: Sequence[str] = (),
             task_names: Optional[Set[str]] = None) -> List[str]:
    """CFG-004: one deps/after reference -> labels.  ``task_names``: every
    task name of the workspace, for a '^task' no project has (a typo, which
    passing over would turn into a missing edge)."""
    if ref.startswith("^"):
        name = ref[1:]
        if not name:
            problem(f"'{ref}' names no task")
        elif task_names is not None and name not in task_names and not unreadable:
            problem(f"'{ref}': no project has a task '{name}'"
                    + did_you_mean(name, sorted(task_names)))
        # A self-dependency of the project is reported by config already.
        return [f"{d}:{name}" for d in project.deps
                if d != project.name and d in projects and name in projects[d].tasks]
    if ":" in ref:
        proj_name, _, name = ref.partition(":")
        other = projects.get(proj_name)
        if other is None:
            if proj_name in unreadable:
                return []  # its syntax error is reported already
            problem(f"'{ref}': unknown project '{proj_name}'"
                    + did_you_mean(proj_name, projects))
            return []
        if name not in other.tasks:
            problem(f"'{ref}': project '{proj_name}' has no task '{name}'"
                    + did_you_mean(name, other.tasks))
            return []
        return [ref]
    if ref not in project.tasks:
        problem(f"'{ref}': project '{project.name}' has no task '{ref}'"
                + did_you_mean(ref, project.tasks)
                + " (use 'project:task' for another project's task, "
                "'^task' for the projects this one depends on)")
        return []
    return [f"{project.name}:{ref}"]


def build_graph(config: LoadedConfig) -> TaskGraph:
    """Resolve every reference and check for cycles (CFG-004/005, GRAPH-*).

    Raises ConfigError with every problem found.
    """
    problems: List[Problem] = list(config.problems)
    graph = TaskGraph()
    owner: Dict[str, Project] = {}
    for project in config.projects.values():
        for task in project.tasks.values():
            graph.tasks[task.label] = task
            owner[task.label] = project

    task_names = {task.name for task in graph.tasks.values()}

    def rel(project: Project) -> str:
        return project.config_file.relative_to(config.root).as_posix()

    for label, task in graph.tasks.items():
        project = owner[label]
        resolved = {}
        for kind, refs in (("deps", task.deps), ("after", task.after)):
            where = f"{task_table(task.name)} key '{kind}'"
            out: List[str] = []
            for ref in refs:
                def problem(msg: str, _w: str = where) -> None:
                    problems.append(Problem(rel(project), _w, msg))
                for target in _resolve(ref, project, config.projects, problem,
                                       config.unreadable, task_names):
                    if target == label:
                        problem(f"'{ref}': task '{label}' depends on itself")
                    elif target not in out:
                        out.append(target)
            resolved[kind] = out
        hard = resolved["deps"]
        # A task both in deps and after is a hard edge only.
        soft = [p for p in resolved["after"] if p not in hard]
        graph.hard_preds[label] = tuple(sorted(hard))
        graph.soft_preds[label] = tuple(sorted(soft))
    for label in graph.tasks:
        graph.hard_succs.setdefault(label, [])
        graph.soft_succs.setdefault(label, [])
    for label in sorted(graph.tasks):
        for p in graph.hard_preds.get(label, ()):
            graph.hard_succs[p].append(label)
        for p in graph.soft_preds.get(label, ()):
            graph.soft_succs[p].append(label)
    for label in graph.tasks:
        graph.hard_preds.setdefault(label, ())
        graph.soft_preds.setdefault(label, ())

    # Cycles are looked for even when other problems were found (CFG-005:
    # all errors of a load together).  A reference that did not resolve only
    # leaves an edge out, and leaving edges out never makes a cycle, so every
    # cycle found here is one the files really contain.
    for cycle in find_cycles(graph):
        first = owner[cycle[0]]
        problems.append(Problem(rel(first), task_table(graph.tasks[cycle[0]].name),
                                "dependency cycle: " + " -> ".join(cycle + [cycle[0]])))
    if problems:
        raise ConfigError(problems)
    graph.output_overlaps = output_overlaps(
        (label, GlobSet.compile(task.outputs, owner[label].rel_dir))
        for label, task in graph.tasks.items() if task.outputs)
    return graph


# Bounds on output_overlaps for a workspace where every task writes the same
# place ($root/dist/**): the first pairs say what is wrong.
MAX_OVERLAPS = 20
MAX_OVERLAP_CHECKS = 100_000


def output_overlaps(outputs: Iterable[Tuple[str, GlobSet]]) -> List[Tuple[str, str, str]]:
    """Pairs of tasks whose ``outputs`` certainly select the same files, as
    (label, label, what both select), sorted.

    EXEC-020 catches two tasks making one file only when both run in the
    same run and the file exists.  Across runs the same configuration
    corrupts quietly: a cache hit of one task restores its old copy of a
    file the other made since.  Each glob is filed under its literal
    directory; only globs filed under a directory at or above another's
    can select what it does, so the pairs looked at are few.
    """
    by_dir: Dict[str, List[Tuple[str, GlobSet]]] = {}
    checked: Set[Tuple[str, str]] = set()
    entries = []
    for label, globs in outputs:
        for g in globs.includes:
            directory = g.rooted[:g.rooted.rfind("/") + 1] if g.prefix == g.rooted else g.prefix
            by_dir.setdefault(directory, []).append((label, globs))
            entries.append((label, globs, directory))
    result = []
    for label, globs, directory in entries:
        # The directory itself and those above it: '', 'a/', 'a/b/'.
        above = [""] + [directory[:i + 1] for i, c in enumerate(directory) if c == "/"]
        for d in above:
            for other, other_globs in by_dir.get(d, ()):
                pair = (label, other) if label < other else (other, label)
                if other == label or pair in checked:
                    continue
                checked.add(pair)
                if len(checked) > MAX_OVERLAP_CHECKS:
                    return sorted(result)
                where = shared_files(globs, other_globs)
                if where is not None:
                    result.append(pair + (where,))
                    if len(result) >= MAX_OVERLAPS:
                        return sorted(result)
    return sorted(result)


def find_cycles(graph: TaskGraph) -> List[List[str]]:
    """One cycle per strongly connected component with a cycle (kind-erased).

    Tarjan's algorithm, iterative so deep graphs do not hit the recursion
    limit; each cycle starts at its smallest label so reports are stable.
    A cycle lists each task followed by one it depends on (deps or after),
    as ninja and make print them, so that ``a:x -> b:y`` can be followed
    from the ``deps`` of ``a:x`` in its haz.toml.
    """
    # Kahn's sort first: it places every task of an acyclic graph, cheaply.
    # Only what it cannot place (tasks on a cycle, or after one) needs the
    # strongly connected components.
    indegree = {l: len(graph.hard_preds[l]) + len(graph.soft_preds[l])
                for l in graph.tasks}
    ready = [l for l, d in indegree.items() if d == 0]
    while ready:
        label = ready.pop()
        for succ in graph.hard_succs[label]:
            indegree[succ] -= 1
            if indegree[succ] == 0:
                ready.append(succ)
        for succ in graph.soft_succs[label]:
            indegree[succ] -= 1
            if indegree[succ] == 0:
                ready.append(succ)
    stuck = sorted(l for l, d in indegree.items() if d > 0)
    if not stuck:
        return []
    depends_on = {l: sorted(set(graph.hard_preds[l]) | set(graph.soft_preds[l]))
                  for l in graph.tasks}
    return [c for c in (_cycle_in(scc, depends_on) for scc in _sccs(stuck, depends_on))
            if c]


def _sccs(nodes: List[str], succs: Mapping[str, List[str]]) -> List[List[str]]:
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    result: List[List[str]] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = succs[node]
            if i < len(children):
                work.append((node, i + 1))
                child = children[i]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == node:
                        break
                result.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return result


def _cycle_in(component: List[str], succs: Mapping[str, List[str]]) -> List[str]:
    """A simple cycle through the smallest node of an SCC, or [] if none."""
    members = set(component)
    start = min(component)
    if len(component) == 1 and start not in succs[start]:
        return []
    # BFS from start inside the component back to start: shortest cycle.
    parent: Dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        nxt = []
        for node in frontier:
            for child in succs[node]:
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return list(reversed(path))
                if child not in seen:
                    seen.add(child)
                    parent[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError("internal error: strongly connected component without a cycle")

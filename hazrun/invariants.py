"""Runtime invariants over what tasks actually wrote (EXEC-019, EXEC-020).

The declared graph says who runs before whom; the files say who really
feeds whom.  After each success the scheduler hands this module the task's
materialised outputs (root-relative paths):

* EXEC-020: a per-run claim map from output path to the task that made it;
  a second claimer is an ``output_overlap``.
* EXEC-019: an output that matches another task's inputs is an augmented
  edge writer -> reader.  If the declared edges (kind-erased) plus the
  augmented ones form a cycle, that is a ``runtime_cycle``; a writer and a
  reader with no path between them is a race worth a warning.

Inputs are indexed by their globs' literal directory prefixes, so checking
a path looks only at the globs that could match it.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from .globs import GlobSet
from .outcome import Violation, ViolationKind
from .values import value


@value
class Race:
    """A writer and a reader of one file with no path between them."""

    writer: str
    reader: str
    path: str


class RuntimeChecks:
    """Claims and augmented edges of one run."""

    def __init__(self, order: Sequence[str], succs: Mapping[str, Sequence[str]],
                 inputs: Mapping[str, GlobSet], outputs: Mapping[str, GlobSet]):
        self.index = {label: i for i, label in enumerate(order)}
        self.succs = succs                       # declared, kind-erased, in run
        self.augmented: Dict[str, Set[str]] = {}
        self.claims: Dict[str, str] = {}
        self.outputs = outputs
        self.inputs = inputs
        # literal prefix -> [(label, globset)] for every task with inputs.
        self.by_prefix: Dict[str, List[str]] = {}
        for label, globs in inputs.items():
            prefixes = {_dir_prefix(g.prefix) for g in globs.includes}
            for prefix in prefixes:
                self.by_prefix.setdefault(prefix, []).append(label)

    def claim(self, label: str, paths: Iterable[str]) -> Optional[Violation]:
        """EXEC-020: record ``label``'s outputs; the first overlap found."""
        for path in paths:
            owner = self.claims.setdefault(path, label)
            if owner != label:
                return Violation(ViolationKind.OUTPUT_OVERLAP, (owner, label), path)
        return None

    def readers(self, writer: str, path: str) -> List[str]:
        """Tasks of the run, other than the writer, whose inputs match path."""
        seen: Set[str] = set()
        found = []
        for prefix in _prefixes(path):
            for label in self.by_prefix.get(prefix, ()):
                if label == writer or label in seen:
                    continue
                seen.add(label)
                if self.inputs[label].match(path) and not self.outputs[label].match(path):
                    found.append(label)
        return sorted(found, key=self.index.__getitem__)

    def add_outputs(self, writer: str, paths: Iterable[str],
                    is_input: Callable[[str], bool] = lambda path: True,
                    ) -> Tuple[Optional[Violation], List[Race]]:
        """EXEC-019: add augmented edges for ``writer``'s outputs; return a
        cycle violation (the first) and the races found.

        ``is_input`` confirms that a file is an input at all (git may ignore
        it); it is asked only for pairs not already ordered, which are rare.
        """
        races = []
        for path in paths:
            for reader in self.readers(writer, path):
                if reader in self.augmented.get(writer, ()):
                    continue
                if self._path(writer, reader) is not None:
                    # Already ordered writer first: the edge closes no cycle
                    # (the graph before it was acyclic).
                    self.augmented.setdefault(writer, set()).add(reader)
                    continue
                if not is_input(path):
                    continue
                back = self._path(reader, writer)
                if back is not None:
                    cycle = (writer,) + tuple(back[:-1])
                    return Violation(ViolationKind.RUNTIME_CYCLE, cycle, path), races
                self.augmented.setdefault(writer, set()).add(reader)
                races.append(Race(writer, reader, path))
        return None, races

    def _path(self, source: str, target: str) -> Optional[List[str]]:
        """A path source -> ... -> target over declared and augmented edges."""
        parent: Dict[str, Optional[str]] = {source: None}
        queue = deque([source])
        while queue:
            node = queue.popleft()
            for nxt in list(self.succs.get(node, ())) + list(self.augmented.get(node, ())):
                if nxt in parent:
                    continue
                parent[nxt] = node
                if nxt == target:
                    path = [nxt]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return list(reversed(path))
                queue.append(nxt)
        return None


def _dir_prefix(prefix: str) -> str:
    """The directory part of a glob's literal prefix ('' or 'a/b/')."""
    cut = prefix.rfind("/")
    return prefix[:cut + 1] if cut >= 0 else ""


def _prefixes(path: str) -> List[str]:
    """'', 'a/', 'a/b/' for 'a/b/c'."""
    out = [""]
    start = 0
    while True:
        cut = path.find("/", start)
        if cut < 0:
            return out
        out.append(path[:cut + 1])
        start = cut + 1

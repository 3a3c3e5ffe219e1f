"""The one glob matcher, shared by task inputs, outputs and workspace inputs.

Syntax (CFG-006): ``**`` matches any number of path segments (zero
included), ``*`` and ``?`` match within one segment, ``[abc]`` a character
class, a leading ``!`` excludes, and ``$root/`` makes a pattern relative to
the workspace root instead of the project directory.  A pattern without
wildcards also matches everything beneath it, so ``outputs = ["dist"]``
means the whole directory, as it would in ``.gitignore``.

A pattern is compiled to a regular expression over the path below its base
directory, so the hundreds of projects that say ``src/**`` share one
compiled regex; matching is a prefix test on the root-relative POSIX path
and a regex match from the end of that prefix.
"""
from __future__ import annotations

import bisect
import functools
import re
from typing import Iterable, List, Optional, Pattern, Sequence, Tuple

from .values import value

# Directories whose contents are never inputs, outputs nor projects: git's
# and hazrun's own.
NEVER = (".git", ".haz")

# A restore writes each output to ``.NAME.hazrun-PID-RANDOM.tmp`` beside it
# and renames it into place (CACHE-004).  One killed on the way leaves that
# file: it is never an output nor an input (another task's key would change
# with it), and the next restore into its directory removes it once its
# writer is gone (restore.remove_leftovers).
LEFTOVER_MARK = ".hazrun-"
LEFTOVER = re.compile(r"\..*\.hazrun-(\d+-)?[0-9a-f]+\.tmp\Z", re.S)


def is_leftover(name: str) -> bool:
    """Whether a file name is a restore's temp file (see LEFTOVER)."""
    return name[:1] == "." and name.endswith(".tmp") and LEFTOVER.match(name) is not None

ROOT_PREFIX = "$root/"
DOTDOT = "'..' is not allowed in a pattern"  # check_pattern's answer for one
_WILDCARDS = set("*?[")


class GlobSyntaxError(ValueError):
    """A pattern that is malformed or escapes its base directory."""


def _has_wildcard(segment: str) -> bool:
    return any(c in _WILDCARDS for c in segment)


def _segment_regex(segment: str) -> str:
    out = []
    i = 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            # As in fnmatch: a ']' right after '[' (or '[!') is a member.
            j = i + 1
            negate = segment[j:j + 1] in ("!", "^")
            if negate:
                j += 1
            end = segment.find("]", j + 1)
            if end < 0:
                raise GlobSyntaxError(f"unclosed '[' in '{segment}'")
            body = "".join("\\" + ch if ch in "\\[]^" else ch
                           for ch in segment[j:end])
            out.append("[" + ("^" if negate else "") + body + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@value
class Glob:
    """One compiled pattern: root-relative, with its literal directory prefix."""

    text: str           # as the user wrote it (without the leading '!')
    negated: bool
    rooted: str         # root-relative form, e.g. 'packages/a/src/**'
    prefix: str         # literal leading directories, '' or ending in '/'
    regex: Pattern[str]  # of the part below base, e.g. 'src/**'
    base: str = ""      # root-relative base directory, '' or ending in '/'
    whole: bool = False  # matches every path under prefix ('src/**')

    def match(self, path: str) -> bool:
        base = self.base
        if base and not path.startswith(base):
            return False
        return self.regex.match(path, len(base)) is not None


def normalize_pattern(pattern: str, base: str) -> Tuple[bool, str]:
    """Return (negated, root-relative pattern) or raise GlobSyntaxError.

    ``base`` is the project directory relative to the root ('' for the root).
    """
    negated, base, rel = _normalize(pattern, base)
    return negated, (base + "/" + rel if base else rel)


def _normalize(pattern: str, base: str) -> Tuple[bool, str, str]:
    """(negated, the base it is relative to, the normalised pattern below it)."""
    negated = pattern.startswith("!")
    body = pattern[1:] if negated else pattern
    if not body:
        raise GlobSyntaxError("empty pattern")
    if body.startswith(ROOT_PREFIX):
        body, base = body[len(ROOT_PREFIX):], ""
    if body.startswith("/"):
        raise GlobSyntaxError("absolute paths are not allowed; use a path "
                              "relative to the project, or $root/...")
    segments = [s for s in body.split("/") if s not in ("", ".")]
    if any(s == ".." for s in segments):
        # Also where it would not leave the directory (src/../x): one
        # spelling per file keeps keys and claims comparable.
        raise GlobSyntaxError(DOTDOT)
    if not segments:
        raise GlobSyntaxError("pattern names no file")
    return negated, base.strip("/"), "/".join(segments)


@functools.lru_cache(maxsize=8192)
def compile_glob(pattern: str, base: str = "") -> Glob:
    """Compile one pattern relative to ``base`` (root-relative directory).

    Memoised: a workspace repeats the same few patterns in every project,
    and a Glob is immutable.  What does not depend on ``base`` is memoised
    per pattern, so a new project costs two string joins.
    """
    negated, at_root, rel, regex, literal, literal_dirs = _parse(pattern)
    base = "" if at_root else base.strip("/")
    base_slash = base + "/" if base else ""
    rooted = base_slash + rel
    prefix = rooted if literal else base_slash + literal_dirs
    return Glob(pattern[1:] if negated else pattern, negated, rooted, prefix, regex,
                base_slash, not literal and rel == literal_dirs + "**")


@functools.lru_cache(maxsize=1024)
def _parse(pattern: str) -> Tuple[bool, bool, str, Pattern[str], bool, str]:
    """(negated, relative to the root, the normalised pattern below its base,
    and :func:`_compile_relative` of that)."""
    negated, base, rel = _normalize(pattern, "")
    at_root = pattern[int(negated):].startswith(ROOT_PREFIX)
    return (negated, at_root, rel) + _compile_relative(rel)


def _compile_relative(rel: str) -> Tuple[Pattern[str], bool, str]:
    """The regex of a normalised pattern, whether it has no wildcard, and its
    literal leading directories ('' or ending in '/')."""
    segments = rel.split("/")
    parts: List[str] = []
    prefix_segments: List[str] = []
    literal = True
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**":
            literal = False
            # '**' matches zero or more whole segments.
            parts.append(".*" if last else "(?:[^/]+/)*")
            continue
        if _has_wildcard(seg):
            literal = False
        elif literal and not last:
            prefix_segments.append(seg)
        parts.append(_segment_regex(seg) + ("" if last else "/"))
    body = "".join(parts)
    # A literal pattern also names everything beneath it (a directory).
    try:
        regex = re.compile(body + ("(?:/.*)?" if literal else "") + r"\Z", re.S)
    except re.error as e:  # e.g. a reversed range such as [z-a]
        raise GlobSyntaxError(f"invalid character class: {e.msg}") from None
    # A literal pattern's candidates are the path itself and what is under it.
    return regex, literal, "".join(s + "/" for s in prefix_segments)


@value
class GlobSet:
    """Include and exclude patterns; a path matches an include and no exclude."""

    includes: Tuple[Glob, ...] = ()
    excludes: Tuple[Glob, ...] = ()

    @staticmethod
    def compile(patterns: Iterable[str], base: str = "") -> "GlobSet":
        """Memoised (see _compile_set): a task's patterns are compiled for
        its key, its restore and the runtime checks of every run."""
        return _compile_set(tuple(patterns), base)

    def __bool__(self) -> bool:
        return bool(self.includes)

    def match(self, path: str) -> bool:
        """True if the root-relative POSIX ``path`` is selected."""
        # Loops, not any() over generators: this runs per file and output.
        for g in self.includes:
            if g.match(path):
                break
        else:
            return False
        for g in self.excludes:
            if g.match(path):
                return False
        return True

    def select(self, files: Sequence[str]) -> List[str]:
        """The members of ``files`` (sorted, root-relative) that match.

        Each include narrows its candidates to its literal prefix by
        bisection, so selecting from a large workspace listing costs what
        the matched directories hold, not the whole listing.
        """
        if len(self.includes) == 1 and not self.excludes:
            # One include: its matches in a sorted slice are sorted and unique.
            g = self.includes[0]
            if g.whole:  # the most common input pattern: no match per file
                return list(_under(files, g.prefix))
            return [path for path in _under(files, g.prefix) if g.match(path)]
        found = set()
        for g in self.includes:
            for path in _under(files, g.prefix):
                if g.match(path):
                    found.add(path)
        if self.excludes:
            found = {p for p in found if not any(g.match(p) for g in self.excludes)}
        return sorted(found)


@functools.lru_cache(maxsize=8192)
def _compile_set(patterns: Tuple[str, ...], base: str) -> GlobSet:
    """GlobSet.compile; a GlobSet is immutable, so one serves every caller."""
    includes: List[Glob] = []
    excludes: List[Glob] = []
    for p in patterns:
        g = compile_glob(p, base)
        (excludes if g.negated else includes).append(g)
    return GlobSet(tuple(includes), tuple(excludes))


def _under(files: Sequence[str], prefix: str) -> Sequence[str]:
    """The slice of sorted ``files`` that starts with ``prefix``."""
    if not prefix:
        return files
    lo = bisect.bisect_left(files, prefix)
    # Every string starting with prefix sorts before prefix + U+10FFFF.
    hi = bisect.bisect_left(files, prefix + "\U0010ffff", lo)
    return files[lo:hi]


def any_match(files: Sequence[str], glob: Glob) -> bool:
    """Whether ``glob`` selects one of sorted ``files`` (a bisection to its
    literal prefix, then a match per file there until one does)."""
    for path in _under(files, glob.prefix):
        if glob.match(path):
            return True
    return False


def files_under(files: Sequence[str], directory: str) -> Sequence[str]:
    """The files of sorted ``files`` inside root-relative ``directory``."""
    return _under(files, directory + "/") if directory else files


def _literal(g: Glob) -> bool:
    """A pattern without wildcards: it names one path (and what is under it)."""
    return g.prefix == g.rooted


def shared_files(a: GlobSet, b: GlobSet) -> Optional[str]:
    """EXEC-020 before running: a root-relative path or pattern whose files
    both ``a`` and ``b`` certainly select, or None when no such overlap is
    certain.

    Certain means: the same pattern, a pattern inside another's
    ``dir/**``, or a wildcard-free path both select (excludes counted).
    Two patterns that only may share files (``*.js`` and ``app.*``) are
    not reported: this feeds a warning, which must not cry wolf.
    """
    for ga in a.includes:
        for gb in b.includes:
            for x, y, xs, ys in ((ga, gb, a, b), (gb, ga, b, a)):
                if _literal(y) and xs.match(y.rooted) and ys.match(y.rooted):
                    return y.rooted
                if _literal(y) or xs.excludes or ys.excludes:
                    continue
                if _literal(x):
                    # 'dist' names the directory and all under it.
                    if y.prefix.startswith(x.rooted + "/"):
                        return y.rooted
                    continue
                if x.rooted == y.rooted or (x.whole and y.prefix.startswith(x.prefix)):
                    return y.rooted
    return None


def check_pattern(pattern: str, base: str = "") -> Optional[str]:
    """Return why ``pattern`` is invalid, or None."""
    try:
        compile_glob(pattern, base)
    except GlobSyntaxError as e:
        return str(e)
    return None

"""run_graph: the run's state machine (EXEC-001..015, EXEC-018).

Each task of the run moves through phases on the loop thread:

    waiting -> ready -> preparing (pool: key + lookup, and on a hit the
                                   restore in the same job)
        -> restoring -> final: cached
        -> running (its process tree) -> completing (pool: outputs + store)
        -> final: succeeded / failed / cancelled

and ends in exactly one final state (EXEC-009).  Transitions are methods
named after the events that cause them (``_prepared``, ``_restored``,
``_child_done``, ``_completed``).  The cost of an event is proportional to
the edges it touches, never to the size of the graph.
"""
from __future__ import annotations

import collections
import enum
import heapq
import os
import threading
import time
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from .cache.outputs import TooMany, find_outputs
from .config import TaskDef
from .files import git_ignored, task_input_globs, task_output_globs
from .globs import GlobSet
from .invariants import RuntimeChecks
from .mutex import MutexTable, blocks, must_not_overtake
from .exit_code import signal_name
from .loop import EventLoop, Timer
from .outcome import (Cause, RunOutcome, StopReason, TaskResult, TaskState, Violation,
                      ViolationKind)
from .output import LineSplitter, RunObserver
from .process import Child, ProcessSet, SpawnError, SpawnSpec, Stream
from .spool import Spool, spool_warning
from .values import record
from .workspace import Workspace

if TYPE_CHECKING:
    from concurrent.futures import Future

# The most directory entries the loop itself looks at to find a task's
# outputs in a --no-cache run (for EXEC-019/020); a bigger tree is walked
# in the pool.
INLINE_OUTPUT_ENTRIES = 64
# How long a lookup may hold its lane before the tasks queued behind it
# get a lane of their own (_more_lanes).
LANE_PATIENCE_S = 0.005
SECRET_VARIABLES = ("HAZ_REMOTE_CACHE_TOKEN", "HAZ_REMOTE_CACHE_SIGNATURE_KEY")
REMOTE_URL_VARIABLE = "HAZ_REMOTE_CACHE_URL"  # passed on without its credentials
IMPLICIT = "implicit"   # the job slot make gives every child without a token


class Phase(enum.Enum):
    """Where a task is in the run (internal; the final states are TaskState)."""

    WAITING = "waiting"         # some predecessor in the run is not final
    READY = "ready"             # may be admitted when caps allow
    PREPARING = "preparing"     # admitted: computing its key, looking it up
    RESTORING = "restoring"     # cache hit: restoring outputs
    MUTEX_WAIT = "mutex_wait"   # cache miss, its mutexes are held by others
    RUNNING = "running"         # its process tree is alive
    COMPLETING = "completing"   # exited 0: collecting outputs, storing
    FINAL = "final"


# A signal repeated within this is one request to stop (CancelToken); a
# person's second Ctrl-C comes later than that.
SAME_SIGNAL_S = 0.3


class CancelToken:
    """Cancels a run from another thread or a signal handler (EXEC-012).

    The first ``cancel`` stops the run gracefully; a second one skips the
    remaining grace periods and kills at once (EXEC-014).  The same signal
    again within SAME_SIGNAL_S is the same request: one SIGTERM to make's
    process group reaches hazrun twice (from the sender, then forwarded by
    make), as one Ctrl-C under make does.
    """

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self.count = 0
        self._wake_fds: List[int] = []
        self._last: Tuple[Optional[int], float] = (None, 0.0)

    @property
    def cancelled(self) -> bool:
        return self.count > 0

    @property
    def forced(self) -> bool:
        return self.count > 1

    def cancel(self, signum: Optional[int] = None) -> None:
        """Safe to call from a signal handler: sets fields, writes a byte."""
        if self.signal is None and signum is not None:
            self.signal = signum
        now = time.monotonic()
        last, when = self._last
        if signum is not None and signum == last and now - when < SAME_SIGNAL_S:
            return  # its echo: said already, and the loop was woken for it
        # Measured from the last signal that counted, not from any echo, so
        # that a stream of them cannot hold off the second request for ever.
        self._last = (signum, now)
        self.count += 1
        for fd in list(self._wake_fds):
            try:
                os.write(fd, b"\0")
            except OSError:
                pass


@record
class RunOptions:
    """How to run; the command line's options map one to one onto these."""

    jobs: Optional[int] = None               # EXEC-004; None: workspace or CPUs
    tag_caps: Mapping[str, int] = field(default_factory=dict)   # EXEC-005 overrides
    fail_fast: bool = False                  # EXEC-010
    force: bool = False                      # CACHE-005: skip lookups, store
    no_cache: bool = False                   # CACHE-005: neither
    grace: Optional[float] = None            # EXEC-014: --grace
    environ: Optional[Mapping[str, str]] = None   # default os.environ
    cache_dir: Optional[Path] = None
    subreaper: bool = False                  # EXEC-014: the command line sets it
    parent_death_signal: bool = False        # set by the command line
    short_slice: bool = False                # set by the command line (process.py)
    jobserver: Any = None                    # JOBS-001: a JobserverClient
    pass_fds: Tuple[int, ...] = ()           # JOBS-002: the pipe form's fds
    remote: Any = None                       # REMOTE-001: RemoteSettings; None: none
    listing: Any = None                      # CFG-006: a files.Listing started early
    # EXEC-016: a line past 64 KiB reaches the observers in newline-ended
    # pieces (each gets its prefix); False (--no-prefix): unchanged bytes.
    cut_lines: bool = True
    explain: bool = False                    # CLI-002: say why each lookup missed (-v)


class _Interleaving:
    """How a task's stdout and stderr reads alternated, for a hit to replay
    them in that order (EXEC-017; Manifest.order): byte counts, stdout
    first.  Past ``cap`` counts the record stops; a replay then gives the
    rest of stdout, then the rest of stderr."""

    __slots__ = ("runs", "cap")

    def __init__(self, cap: int):
        self.runs: List[int] = []
        self.cap = cap

    def note(self, stream: Stream, n: int) -> None:
        runs = self.runs
        index = 0 if stream is Stream.STDOUT else 1
        if self.cap < 0:
            return  # stopped
        if runs and (len(runs) - 1) % 2 == index:
            runs[-1] += n
            return
        new = [n] if runs or index == 0 else [0, n]  # stdout first
        if len(runs) + len(new) > self.cap:
            self.cap = -1
        else:
            runs += new

    def stored(self) -> List[int]:
        """What Manifest.order keeps: nothing where two counts or fewer say
        "stdout, then stderr", which an entry without them replays."""
        return self.runs if len(self.runs) > 2 else []


def available_cpus() -> int:
    """EXEC-004: CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@record(eq=False)
class _Task:
    label: str
    index: int                  # position in canonical order
    task: TaskDef
    cwd: str
    rel_dir: str
    hard_preds: Tuple[str, ...]
    succs: List[Tuple[str, bool]]   # (label, is_hard) within the run
    waiting: int
    phase: Phase = Phase.WAITING
    key: Any = None             # KeyInfo once computed
    stream_hash: Optional[str] = None
    child: Optional[Child] = None
    started: float = 0.0
    splitters: Dict[Stream, LineSplitter] = field(default_factory=dict)
    logs: Dict[Stream, Any] = field(default_factory=dict)
    order: Optional["_Interleaving"] = None   # with logs: how they interleaved
    timer: Optional[Timer] = None
    timed_out: bool = False
    stopped: bool = False       # terminated by cancellation (EXEC-014)
    token: Any = None           # JOBS-001: IMPLICIT or the byte it holds
    behind: Tuple["_Task", ...] = ()   # MUTEX-005: exclusive waiters queued first
    result: Optional[TaskResult] = None
    why: Optional[List[str]] = None     # a miss's reasons (RunOptions.explain)

    def __lt__(self, other: "_Task") -> bool:
        return self.index < other.index


class Scheduler:
    """One run of a task set.  Use :func:`run_graph`."""

    def __init__(self, workspace: Workspace, labels: Set[str], observer: RunObserver,
                 options: RunOptions, cancel: CancelToken, cache: Any):
        self.ws = workspace
        self.observer = observer
        self.options = options
        self.token = cancel
        self.cache = cache
        self.environ = dict(os.environ if options.environ is None else options.environ)
        self._base_env: Optional[Dict[str, str]] = None
        self._lookups: "collections.deque[Tuple[_Task, Dict[str, str], bool]]" = \
            collections.deque()
        self._lane_lock = threading.Lock()
        # Each lane working on a lookup -> when it began it.
        self._lane_busy: Dict[object, float] = {}
        self._lane_timer: Optional[Timer] = None
        graph = workspace.graph
        self.order = graph.canonical_order(labels)
        self.tasks: Dict[str, _Task] = {}
        for i, label in enumerate(self.order):
            task = graph.tasks[label]
            project = workspace.projects[task.project]
            preds = [p for p in graph.hard_preds[label]] + \
                [p for p in graph.soft_preds[label] if p in labels]
            succs = [(s, True) for s in graph.hard_succs[label] if s in labels] + \
                [(s, False) for s in graph.soft_succs[label] if s in labels]
            self.tasks[label] = _Task(label, i, task, project.dir_name, project.rel_dir,
                                      graph.hard_preds[label], succs, len(preds))
        settings = workspace.settings
        self.jobs = options.jobs or settings.concurrency or available_cpus()
        self.tag_caps = dict(settings.tags)
        self.tag_caps.update(options.tag_caps)
        self.tag_load: Dict[str, int] = {t: 0 for t in self.tag_caps}
        self.admitted = 0
        self.ready: List[_Task] = []                   # heap, canonical order
        self.blocked: Dict[str, List[_Task]] = {}      # by the tag cap that held it
        self.unfinished = len(self.order)
        self._finals: Deque[Tuple[_Task, TaskResult, bool]] = collections.deque()
        self._finalising = False  # _final is draining _finals
        # Work on a finished task that the next task need not wait for: run
        # once admission has started what the freed slot lets in.
        self._after_admit: Deque[Callable[[], None]] = collections.deque()
        self.pending_pool = 0
        self.cancelling = False
        self._cancel_seen = False   # the token's cancellation acted on
        self.violations: List[Violation] = []
        self.keyed = not options.no_cache
        self._would_block: Any = ()  # isinstance(x, ()) is never true
        if self.keyed:
            from .cache.model import WouldBlock
            self._would_block = WouldBlock
        self.loop = EventLoop(workers=max(4, min(32, self.jobs * 2)))
        self.procs = ProcessSet(self.loop, subreaper=options.subreaper,
                                parent_death_signal=options.parent_death_signal,
                                short_slice=options.short_slice,
                                forced=lambda: cancel.forced,
                                token_fd=getattr(options.jobserver, "write_fd", None))
        self.jobserver = options.jobserver
        self.implicit_free = True
        self.awaiting_token = False
        self.mutexes = MutexTable(workspace.root / ".haz" / "locks")
        self.mutex_waiters: List[_Task] = []
        self.mutex_dirty = False
        self.mutex_retry: Optional[Timer] = None
        self.halted: Optional[ViolationKind] = None   # EXEC-019/020
        self._checks: Optional[RuntimeChecks] = None
        self._ignored: Dict[str, bool] = {}

    # -- the main loop ----------------------------------------------------
    def run(self) -> RunOutcome:
        """Admit what is ready, then wait for the next event, until every
        task is final and every process and pool job is done."""
        start = time.monotonic()
        self.token._wake_fds.append(self.loop.wake_fd)
        self.loop.on_wake(self._check_cancel)
        try:
            # Inside: an observer that raises here must not leave the loop's
            # fds open and its wake fd with the token (a cancel() would
            # write into whatever file reuses that number).
            self.observer.run_started(self.order)
            self._warn_overlaps()
            self._warn_idle_caps()
            for t in self.tasks.values():
                if t.waiting == 0:
                    self._make_ready(t)
            self._check_cancel()
            self._admit()
            while self.unfinished or self.procs.children or self.pending_pool:
                self.loop.run_once()
                self._admit()
                while self._after_admit:
                    self._after_admit.popleft()()
                    self._admit()
        except BaseException:
            # A bug or an interrupt in the loop: leave no process behind, and
            # no upload for the pool's shutdown to wait for.
            cancel = getattr(self.cache, "cancel", None)
            if cancel is not None:
                cancel()
            self.procs.kill_all()
            self._drain_children(deadline=time.monotonic() + 5)
            raise
        finally:
            self.mutexes.close()
            self.token._wake_fds.remove(self.loop.wake_fd)
            try:
                # The watchdog first: it would give back the tokens held
                # should hazrun die, so it is gone before hazrun does.
                self.procs.close()
            finally:
                if self.jobserver is not None:
                    self.jobserver.release_all()  # JOBS-001: on every exit path
                self.loop.close()
        remote_stats = getattr(self.cache, "remote_stats", None)
        outcome = RunOutcome(self.order, {l: self.tasks[l].result for l in self.order},
                             self.violations, time.monotonic() - start,
                             cancelled=self.token.cancelled,
                             remote=remote_stats() if remote_stats else None)
        self.observer.run_finished(outcome)
        return outcome

    def _drain_children(self, deadline: float) -> None:
        while self.procs.children and time.monotonic() < deadline:
            try:
                self.loop.run_once()
            except Exception:
                break

    # -- readiness and admission (EXEC-001, 004, 005, 006) ---------------
    def _make_ready(self, t: _Task) -> None:
        if self.cancelling:
            self._final(t, TaskResult(t.label, TaskState.CANCELLED, Cause.NOT_STARTED),
                        started=False)
            return
        if self.halted is not None:
            self._final(t, TaskResult(t.label, TaskState.SKIPPED, Cause(self.halted.value)),
                        started=False)
            return
        t.phase = Phase.READY
        heapq.heappush(self.ready, t)

    def _admit(self) -> None:
        """Admit ready tasks in canonical order while a slot is free.

        A task held back by a full tag cap is parked under that tag and
        looked at again only when the tag frees room, so it never blocks
        later tasks that fit (EXEC-005) and costs nothing per event.
        """
        if self.cancelling or self.halted is not None:
            return
        if self.mutex_dirty and not self._grant_mutex_waiters():
            return  # a waiter whose mutexes are free goes first (EXEC-006)
        while self.ready and self.admitted < self.jobs:
            t = heapq.heappop(self.ready)
            full = self._full_tag(t)
            if full is not None:
                heapq.heappush(self.blocked.setdefault(full, []), t)
                # t may have been let out by a place freed under another of
                # its tags; parked again, it passes that place on, or a task
                # that fits would wait behind it (EXEC-005).
                for tag in t.task.tags:
                    parked = self.blocked.get(tag)
                    if tag != full and parked and self.tag_load[tag] < self.tag_caps[tag]:
                        heapq.heappush(self.ready, heapq.heappop(parked))
                continue
            if not self._take_token(t):
                heapq.heappush(self.ready, t)
                self._await_token()
                break
            self._take_slot(t)
            self._prepare(t)

    def _full_tag(self, t: _Task) -> Optional[str]:
        for tag in t.task.tags:
            cap = self.tag_caps.get(tag)
            if cap is not None and self.tag_load[tag] >= cap:
                return tag
        return None

    def _take_token(self, t: _Task) -> bool:
        """JOBS-001: one task runs on the implicit token, each further one
        on a token from make's pool, held exactly as long as the task."""
        if self.jobserver is None:
            return True
        if self.implicit_free:
            self.implicit_free = False
            t.token = IMPLICIT
            return True
        t.token = self.jobserver.try_acquire()
        if t.token is None:
            return False
        self.procs.token_taken(t.token)
        return True

    def _give_token(self, t: _Task) -> None:
        if t.token is IMPLICIT:
            self.implicit_free = True
        elif t.token is not None:
            self.procs.token_returned(t.token)
            self.jobserver.release(t.token)
        t.token = None

    def _await_token(self) -> None:
        """Wake when the pool is readable; unregistered again at once, so a
        pool with tokens that others win never makes the loop spin."""
        if not self.awaiting_token:
            self.awaiting_token = True
            self.loop.add_reader(self.jobserver.read_fd, self._token_ready)

    def _token_ready(self) -> None:
        self.awaiting_token = False
        self.loop.remove_reader(self.jobserver.read_fd)
        if self.mutex_waiters:
            self.mutex_dirty = True  # EXEC-006: a waiter gets the token first

    def _take_slot(self, t: _Task) -> None:
        self.admitted += 1
        for tag in t.task.tags:
            if tag in self.tag_load:
                self.tag_load[tag] += 1

    def _give_slot(self, t: _Task) -> None:
        self.admitted -= 1
        if self.mutex_waiters:
            self.mutex_dirty = True
        self._give_token(t)
        for tag in t.task.tags:
            if tag in self.tag_load:
                self.tag_load[tag] -= 1
                parked = self.blocked.get(tag)
                if parked:
                    # One freed place: the first parked task goes back to the
                    # ready heap, where canonical order decides.
                    heapq.heappush(self.ready, heapq.heappop(parked))

    # -- the pipeline (EXEC-002) -------------------------------------------
    def _prepare(self, t: _Task) -> None:
        t.phase = Phase.PREPARING
        t.started = time.monotonic()
        if not self.keyed:
            self._prepared(t, None, None)
            return
        preds = self._pred_streams(t)
        lookup = self.cache.read and t.task.cache and not self.options.force
        if self._idle() and self._quick_lookup(t, preds, lookup):
            return
        self.pending_pool += 1  # until _looked_up
        with self._lane_lock:
            self._lookups.append((t, preds, lookup))
            lane = None
            if not self._lane_busy:
                lane = object()
                self._lane_busy[lane] = time.monotonic()
        if lane is not None:
            self._start_lane(lane)
        elif self._lane_timer is None:
            self._lane_timer = self.loop.call_later(LANE_PATIENCE_S, self._more_lanes)

    def _idle(self) -> bool:
        """Whether the loop has nothing to watch: no child whose pipes need
        reading, no pool job to hear from, no signal to act on."""
        return not (self.procs.children or self.pending_pool or self.token.cancelled)

    def _quick_lookup(self, t: _Task, preds: Dict[str, str], lookup: bool) -> bool:
        """EXEC-002 on the loop thread, when the loop is idle and the answer
        needs no real work (EXEC-003 keeps that in the pool): the key from the
        stat cache alone, the local lookup, and a restore that finds every
        output in place.  That is a run where nothing changed, where handing
        each task to a pool thread and back cost more than the lookup itself.
        False (nothing done, nothing printed): the lane does it."""
        attempt = _Attempt(self._key_and_lookup, t, preds, lookup, True)
        if isinstance(attempt.error, self._would_block):
            # Warnings gathered on the way come again from the lane's attempt.
            getattr(self.cache, "discard_warnings", self.cache.take_warnings)()
            return False
        for warning in self.cache.take_warnings():
            self._warn(warning)
        self._prepared_future(t, attempt)
        return True

    def _start_lane(self, lane: object) -> None:
        self._submit(self._lane, lane, done=lambda f: f.result())

    def _lane(self, me: object) -> None:
        """Pool: key and look up admitted tasks one after the other, for as
        long as the loop admits more (EXEC-002/003).

        A hit is cheap when the stat cache knows every input, so a pool job
        per task would spend more on waking threads and passing the GIL
        than on the lookup; one lane stays awake while the loop, woken by
        each result, admits the next task.  A lane held up by real work
        (hashing big inputs, a slow remote) gets company: _more_lanes.
        """
        while True:
            with self._lane_lock:
                if not self._lookups:
                    self._lane_busy.pop(me, None)
                    return
                t, preds, lookup = self._lookups.popleft()
                self._lane_busy[me] = time.monotonic()
            attempt = _Attempt(self._key_and_lookup, t, preds, lookup)
            self.loop.call_soon_threadsafe(
                lambda t=t, attempt=attempt: self._looked_up(t, attempt))

    def _more_lanes(self) -> None:
        """Timer: another lane if tasks wait behind a lane busy for long;
        never more lanes than admitted tasks (-j, EXEC-004)."""
        self._lane_timer = None
        now = time.monotonic()
        with self._lane_lock:
            if not self._lookups:
                return
            stuck = all(now - since >= LANE_PATIENCE_S for since in self._lane_busy.values())
            lane = None
            if stuck and len(self._lane_busy) < self.jobs:
                lane = object()
                self._lane_busy[lane] = now
        if lane is not None:
            self._start_lane(lane)
        self._lane_timer = self.loop.call_later(LANE_PATIENCE_S, self._more_lanes)

    def _looked_up(self, t: _Task, attempt: "_Attempt") -> None:
        self._pool_job_done()
        self._prepared_future(t, attempt)

    def _key_and_lookup(self, t: _Task, preds: Dict[str, str], lookup: bool,
                        quick: bool = False):
        """Pool: the key, the lookup and, on a hit, the restore at once (one
        trip through the pool per cached task), unless the run is stopping.
        ``quick``: see _quick_lookup; raises WouldBlock."""
        key = self.cache.compute_key(t.label, preds, quick=quick)
        manifest = self.cache.lookup(key, quick=quick) if lookup else None
        if manifest is None:
            # It runs: its key must see the files made since the listing (a
            # hit is what the workspace held when the run started).
            again = self.cache.compute_key(t.label, preds, quick=quick, refresh=True)
            if again.key != key.key and lookup:
                manifest = self.cache.lookup(again, quick=quick)
            key = again
        if manifest is None and lookup and self.options.explain:
            if quick:
                raise self._would_block(t.label)  # the last record is read from disk
            t.why = self.cache.explain(t.label, key)
        self.cache.record(t.label, key)  # for explain (CLI-002 -v)
        restored: Any = None
        # Read from the pool thread: at worst a restore starts just before
        # the loop sees a cancellation, as one already in flight would.
        if manifest is not None and not (self.token.cancelled or self.cancelling
                                         or self.halted is not None):
            restored = _Attempt(self.cache.restore, t.label, manifest, quick)
            if isinstance(restored.error, self._would_block):
                raise restored.error
        return key, manifest, restored

    def _prepared_future(self, t: _Task, future: Future) -> None:
        try:
            key, manifest, restored = future.result()
        except Exception as e:  # an unreadable input, a vanished file ...
            self._warn(f"{t.label}: cache key not computed ({_why(e)}); "
                       "running it without the cache")
            key, manifest, restored = None, None, None
        if restored is not None:
            t.key = key
            t.phase = Phase.RESTORING
            self._restored(t, restored)
            return
        self._prepared(t, key, manifest)

    def _prepared(self, t: _Task, key: Any, manifest: Any) -> None:
        t.key = key
        if self.cancelling or self.token.cancelled:
            # EXEC-012: a lookup that returns after the trigger never spawns,
            # nor starts a restore (the loop may not have seen the signal
            # yet: pool results are handled before wake-ups).
            self._give_slot(t)
            self._final(t, TaskResult(t.label, TaskState.CANCELLED, Cause.NOT_STARTED,
                                      key=self._key_hex(t)), started=False)
            return
        if self.halted is not None:
            # EXEC-019/020: a violation stopped admission while this task's
            # key was taken; it starts nothing (no process, no restore).
            self._give_slot(t)
            self._final(t, TaskResult(t.label, TaskState.SKIPPED, Cause(self.halted.value),
                                      key=self._key_hex(t)), started=False)
            return
        if manifest is not None:
            t.phase = Phase.RESTORING
            self._submit(self.cache.restore, t.label, manifest,
                         done=lambda f: self._restored(t, f))
            return
        if t.why:
            self.observer.task_missed(t.label, t.why)
            t.why = None
        self._acquire_then_spawn(t)

    def _restored(self, t: _Task, future: "Future | _Attempt") -> None:
        try:
            restored = future.result()
        except Exception as e:
            # CACHE-004: a failed check is a miss with a warning.
            self._warn(f"{t.label}: cache entry not restored ({_why(e)}); running it")
            if self.cancelling or self.token.cancelled:  # EXEC-012, as in _prepared
                self._give_slot(t)
                self._final(t, TaskResult(t.label, TaskState.CANCELLED, Cause.NOT_STARTED,
                                          key=self._key_hex(t)), started=False)
            else:
                self._acquire_then_spawn(t)
            return
        # EXEC-017: a hit prints what the original run printed, through the
        # same observers as a fresh run, streamed in bounded pieces, its
        # stdout and stderr interleaved as the run read them (what a
        # terminal or a 2>&1 log showed).
        self._replay(t, restored)
        restored.close()
        t.stream_hash = self._handed_on(t, restored.materialised.stream_hash)
        self._check_outputs(t, restored.materialised.root_paths(t.rel_dir))
        self._give_slot(t)
        self._final(t, TaskResult(t.label, TaskState.CACHED, key=self._key_hex(t),
                                  duration_s=time.monotonic() - t.started,
                                  saved_s=restored.duration_s))

    def _replay(self, t: _Task, restored: Any) -> None:
        logs = {Stream.STDOUT: restored.stdout, Stream.STDERR: restored.stderr}
        splitters = {stream: LineSplitter(self.options.cut_lines) for stream in Stream}

        def play(stream: Stream, size: Optional[int]) -> None:
            """``size`` bytes of a log (None: the rest)."""
            while size is None or size > 0:
                chunk = logs[stream].read(1 << 20 if size is None else min(size, 1 << 20))
                if not chunk:
                    break  # as many as Manifest.order's check let through
                if size is not None:
                    size -= len(chunk)
                lines = splitters[stream].feed(chunk)
                if lines:
                    self.observer.task_output(t.label, stream, lines)

        for i, size in enumerate(restored.order):
            play(Stream.STDERR if i % 2 else Stream.STDOUT, size)
        for stream in Stream:
            play(stream, None)
        for stream in Stream:
            rest = splitters[stream].flush()
            if rest:
                self.observer.task_output(t.label, stream, rest)

    def _spawn(self, t: _Task) -> None:
        spec = SpawnSpec(t.task.cmd, t.cwd, self._task_env(t), self.options.pass_fds)
        if t.task.cmd is None:
            # A group task (deps only): nothing to run, it succeeds.
            self._give_slot(t)
            t.phase = Phase.COMPLETING
            self._submit(self._complete, t, done=lambda f: self._completed(t, f, None))
            return
        t.phase = Phase.RUNNING
        storing = self.keyed and self.cache.write and t.task.cache and t.key is not None
        for stream in Stream:
            t.splitters[stream] = LineSplitter(self.options.cut_lines)
            if storing:
                t.logs[stream] = Spool()
        if storing:
            from .cache.model import MAX_RUNS
            t.order = _Interleaving(MAX_RUNS)
        try:
            t.child = self.procs.spawn(spec, lambda s, d: self._output(t, s, d),
                                       lambda c: self._child_done(t, c))
        except SpawnError as e:
            self._close_logs(t)
            self._release_mutexes(t)
            self._give_slot(t)
            self._final(t, TaskResult(t.label, TaskState.FAILED, Cause.SPAWN_ERROR,
                                      key=self._key_hex(t), detail=str(e),
                                      duration_s=time.monotonic() - t.started))
            return
        t.child.set_grace(self._grace(t))
        self.observer.task_started(t.label)
        if t.task.timeout is not None:
            t.timer = self.loop.call_later(t.task.timeout, lambda: self._timed_out(t))

    def _task_env(self, t: _Task) -> Dict[str, str]:
        """EXEC-008: hazrun's environment plus HAZ_*, minus secrets."""
        if self._base_env is None:
            self._base_env = {k: v for k, v in self.environ.items()
                              if k not in SECRET_VARIABLES}
            url = self._base_env.get(REMOTE_URL_VARIABLE)
            if url and "@" in url:
                # REMOTE-001: its user:password@ is a credential as the
                # token is (the upload password of the README's recipe).
                from .config import without_credentials
                self._base_env[REMOTE_URL_VARIABLE] = without_credentials(url)
            self._base_env["HAZ_ROOT"] = str(self.ws.root)
        env = dict(self._base_env)
        env["HAZ_PROJECT"] = t.task.project
        env["HAZ_TASK"] = t.task.name
        return env

    def _grace(self, t: _Task) -> float:
        """EXEC-014: --grace, the task's grace, [workspace] grace, 10 s."""
        if self.options.grace is not None:
            return self.options.grace
        if t.task.grace is not None:
            return t.task.grace
        return self.ws.settings.grace

    def _output(self, t: _Task, stream: Stream, data: bytes) -> None:
        log = t.logs.get(stream)
        if log is not None:
            log.write(data)
            t.order.note(stream, len(data))
            if log.problem is not None:
                message = spool_warning(log.problem)  # None once told
                if message:
                    self._warn(message)
        lines = t.splitters[stream].feed(data)
        if lines:
            self.observer.task_output(t.label, stream, lines)

    def _timed_out(self, t: _Task) -> None:
        """EXEC-018: stop it as in EXEC-014; it ends failed/timeout."""
        t.timer = None
        if t.child is not None and t.child.running and not t.stopped:
            t.timed_out = True
            t.child.terminate(self._grace(t))

    def _child_done(self, t: _Task, child: Child) -> None:
        self._release_mutexes(t)  # EXEC-007, MUTEX-004: the whole tree is gone
        if t.timer is not None:
            t.timer.cancel()
            t.timer = None
        for stream, splitter in t.splitters.items():
            rest = splitter.flush()
            if rest:
                self.observer.task_output(t.label, stream, rest)
        status = child.status
        duration = child.duration
        sig = signal_name(status.signal)
        key = self._key_hex(t)
        if child.left_behind:
            self._warn(f"{t.label}: its command exited but left processes running "
                       "(a background job?); they were stopped")
        if t.timed_out:
            # First: its timeout was stopping it before any cancellation
            # came, and a second signal's SIGKILL only ends that sooner.
            result = TaskResult(t.label, TaskState.FAILED, Cause.TIMEOUT,
                                exit_code=status.exit_code, signal=sig,
                                duration_s=duration, key=key,
                                detail=f"{t.task.timeout:g}s")
        elif t.stopped or (self.token.cancelled and status.stopped):
            # The run is being cancelled: a task the signal reached before
            # the run stopped it (hazrun under hazrun, or make's Ctrl-C to
            # every process of the tree) was stopped all the same (EXEC-012).
            result = TaskResult(t.label, TaskState.CANCELLED, Cause.SIGNALLED,
                                exit_code=status.exit_code, signal=sig,
                                duration_s=duration, key=key)
        elif status.signal is not None:
            result = TaskResult(t.label, TaskState.FAILED, Cause.SIGNAL, signal=sig,
                                duration_s=duration, key=key)
        elif status.exit_code != 0:
            result = TaskResult(t.label, TaskState.FAILED, Cause.EXIT_CODE,
                                exit_code=status.exit_code, duration_s=duration, key=key)
        else:
            # The slot is the process's (EXEC-004): give it back now, so the
            # next task starts while this one's outputs are hashed and stored.
            self._give_slot(t)
            t.phase = Phase.COMPLETING
            if not self.keyed:
                # --no-cache: nothing to hash, only the outputs' paths for
                # the runtime checks.  A small output tree is listed on the
                # loop (a trip through the pool costs more than such a
                # listing), once the next task has started (EXEC-004).
                self._after_admit.append(lambda: self._list_outputs(t, duration))
                return
            self._submit(self._complete, t, done=lambda f: self._completed(t, f, duration))
            return
        self._close_logs(t)
        self._give_slot(t)
        self._final(t, result)

    def _list_outputs(self, t: _Task, duration: float) -> None:
        """--no-cache: the outputs' paths for the runtime checks, listed
        here if the tree is small, else in the pool."""
        attempt = _Attempt(self._complete, t, INLINE_OUTPUT_ENTRIES)
        if isinstance(attempt.error, TooMany):
            self._submit(self._complete, t, done=lambda f: self._completed(t, f, duration))
        else:
            self._completed(t, attempt, duration)

    def _complete(self, t: _Task, limit: Optional[int] = None):
        """Pool: the outputs it made (CACHE-002) as root-relative paths and
        their stream hash, then the first half of the store (CACHE-005):
        their copies, staged in the cache's tmp/.

        Successors start once this returns; the second half (fsyncs and
        renames, CACHE-003) runs in the pool meanwhile, off the critical
        path, and no successor can change what is stored any more.
        """
        if not self.keyed:
            # --no-cache: no key will ever use a stream hash, so the outputs
            # are not hashed; their paths serve the runtime checks.  With a
            # ``limit``, TooMany past that many directory entries.
            paths = find_outputs(str(self.ws.root), task_output_globs(t.task, t.rel_dir),
                                 t.rel_dir, limit)
            return paths, None, None, None
        materialised = self.cache.collect_outputs(t.label)
        warning, staged = None, None
        changed = self._inputs_changed(t) if t.logs and t.key is not None else None
        if changed:
            # CACHE-001/005: stored, it would be found by a key that does
            # not describe what the command read (an editor saving during
            # the build, then undone: the next run replayed the edit).
            warning = (f"{t.label}: not stored in the cache ({changed} while it ran; "
                       "the next run runs it again)")
        elif (t.logs and t.key is not None and t.task.outputs and not materialised.outputs
              and self.cache.holds_entry(t.key)):
            # Its declared outputs match no file (_completed warns) and an
            # entry is stored under its key: one that restores nothing would
            # replace it, and every later hit would leave the outputs missing
            # without a word.  With none stored, it is stored (a lint task
            # that writes its reports only when it fails).
            pass
        elif t.logs and t.key is not None:
            # What a hit saves (CLI-001): the command's own run time, not
            # the wait for a mutex or a slot before it started.
            duration = (t.child.duration if t.child is not None
                        else time.monotonic() - t.started)
            try:
                for log in t.logs.values():
                    log.seek(0)
                staged = self.cache.stage(t.label, t.key, materialised,
                                          t.logs[Stream.STDOUT], t.logs[Stream.STDERR],
                                          duration, t.order.stored())
            except Exception as e:  # StoreError: read-only, disk full ...
                warning = f"{t.label}: not stored in the cache ({_why(e)})"
        return (materialised.root_paths(t.rel_dir), materialised.stream_hash, warning,
                staged)

    def _inputs_changed(self, t: _Task) -> Optional[str]:
        """Pool: what changed, if ``t``'s key taken again now that its
        command is done differs from the one it was looked up by, or an input
        was written meanwhile (an edit undone before the end hashes as
        before, but the command may have read the edit); None if nothing.
        The stat cache makes this a stat per input; only a file that changed
        is read again."""
        try:
            again = self.cache.compute_key(t.label, self._pred_streams(t), refresh=True)
        except Exception as e:  # an input gone unreadable meanwhile
            return f"an input could not be read again ({_why(e)})"
        # A key taken for a lookup that hit has no stamps (a hit needs none):
        # a task that runs after its restore failed is checked by its key.
        stamped = bool(t.key.stamp)
        if again.key == t.key.key and (again.stamp == t.key.stamp or not stamped):
            return None
        return _first_change(_input_states(t.key), _input_states(again, stamped))

    def _handed_on(self, t: _Task, own: Optional[str]) -> Optional[str]:
        """What ``t`` hands its successors' keys: cache.model.passed_on."""
        if own is None:
            return None  # --no-cache: no key uses it
        from .cache.model import passed_on
        return passed_on(own, bool(t.task.outputs), self._pred_streams(t))

    def _pred_streams(self, t: _Task) -> Dict[str, Optional[str]]:
        """What ``t``'s hard dependencies handed on (CACHE-001): final, so
        the same whenever it is asked."""
        return {p: self.tasks[p].stream_hash for p in t.hard_preds}

    def _completed(self, t: _Task, future: Future, duration: Optional[float]) -> None:
        storing = bool(t.logs) and t.key is not None
        self._close_logs(t)
        try:
            paths, stream_hash, warning, staged = future.result()
        except Exception as e:
            self._warn(f"{t.label}: outputs not collected ({_why(e)})")
            # Successors must not hit on a stream hash nobody computed.
            t.stream_hash = "unknown-" + os.urandom(16).hex()
        else:
            if warning:
                self._warn(warning)
            t.stream_hash = self._handed_on(t, stream_hash)
            self._check_outputs(t, paths)
            if t.task.outputs and not paths and t.task.cmd is not None:
                stored = " (not stored in the cache)" if storing and staged is None else ""
                self._warn(f"{t.label}: exited 0 but its outputs match no file{stored}: "
                           + ", ".join(t.task.outputs))
            if staged is not None:
                self._submit(self.cache.commit, staged,
                             done=lambda f: self._committed(t, f, staged.manifest))
        if duration is None:
            duration = time.monotonic() - t.started
        self._final(t, TaskResult(t.label, TaskState.SUCCEEDED, key=self._key_hex(t),
                                  exit_code=0 if t.task.cmd is not None else None,
                                  duration_s=duration))

    def _committed(self, t: _Task, future: Future, manifest: Any) -> None:
        """The second half of a store ended (CACHE-003); then the upload."""
        try:
            stored = future.result()
        except Exception as e:  # StoreError: disk full, a prune emptied tmp/ ...
            self._warn(f"{t.label}: not stored in the cache ({_why(e)})")
            return
        if stored and getattr(self.cache, "uploading", False):
            # REMOTE-006: its own pool job; successors do not wait for it,
            # the run does.
            self._submit(self.cache.upload, manifest, done=lambda f: self._uploaded(t, f),
                         pool="upload")

    def _uploaded(self, t: _Task, future: Future) -> None:
        """REMOTE-005: an upload's failures are warnings (drained by _submit);
        an unexpected error is one too, never a task's state."""
        try:
            future.result()
        except Exception as e:
            self._warn(f"{t.label}: not uploaded to the remote cache ({_why(e)})")

    # -- final states and cascades (EXEC-009..013) -----------------------
    def _final(self, t: _Task, result: TaskResult, started: bool = True) -> None:
        """Record ``t``'s result, cascade to its hard descendants if it did
        not succeed, and release its successors."""
        assert t.phase is not Phase.FINAL, f"internal error: {t.label} finalised twice"
        t.phase = Phase.FINAL
        t.result = result
        self.unfinished -= 1
        # Its process, line splitters and key's components are of no more
        # use (the result has the key): 10,000 tasks kept 13 MB of the first
        # two, and as much of the third, to the end of the run.
        t.child = None
        t.splitters = {}
        t.key = None
        # What follows from a final state (reports, the cascade, released
        # successors, which may be final at once) is queued, not recursed
        # into: a failure above a chain of thousands of tasks would
        # otherwise exceed Python's recursion limit.
        self._finals.append((t, result, started))
        if self._finalising:
            return  # the outer call drains the queue
        self._finalising = True
        try:
            while self._finals:
                t, result, started = self._finals.popleft()
                if started:
                    self.observer.task_finished(result)
                else:
                    self.observer.task_skipped(result)
                if not result.state.ok:
                    self._cascade(t, result)
                self._release(t)
                if result.state is TaskState.FAILED and self.options.fail_fast:
                    # A signal that came with this failure (SIGTERM to the
                    # whole tree) is the first request to stop, not a second.
                    self._check_cancel()
                    self._start_cancel(because=StopReason.FAIL_FAST)
        except BaseException:
            self._finals.clear()
            raise
        finally:
            self._finalising = False

    def _cascade(self, t: _Task, result: TaskResult) -> None:
        """EXEC-010, EXEC-011, EXEC-013: skip (or cancel) every hard
        descendant that is not final."""
        if result.state is TaskState.CANCELLED:
            state, cause = TaskState.CANCELLED, Cause.UPSTREAM_CANCELLED
            upstream = result.upstream if result.cause is Cause.UPSTREAM_CANCELLED else t.label
        elif result.state is TaskState.SKIPPED and result.cause is not Cause.UPSTREAM_FAILED:
            state, cause, upstream = TaskState.SKIPPED, result.cause, None
        else:
            state, cause = TaskState.SKIPPED, Cause.UPSTREAM_FAILED
            upstream = result.upstream if result.state is TaskState.SKIPPED else t.label
        # The whole closure at once, reported in canonical order (GRAPH-003):
        # every task in it gets the same state, cause and upstream.
        found: List[_Task] = []
        seen: Set[str] = set()
        stack = [t]
        while stack:
            for label, hard in stack.pop().succs:
                s = self.tasks[label]
                if hard and s.phase is not Phase.FINAL and label not in seen:
                    assert s.phase in (Phase.WAITING, Phase.READY), \
                        f"internal error: {label} started before its dependency {t.label}"
                    seen.add(label)
                    found.append(s)
                    stack.append(s)
        for s in sorted(found):
            if s.phase is Phase.READY:
                self._unready(s)
            self._final(s, TaskResult(s.label, state, cause, upstream=upstream),
                        started=False)

    def _unready(self, t: _Task) -> None:
        # Rare (only violations reach a ready task): rebuild the heaps.
        self.ready = [x for x in self.ready if x is not t]
        heapq.heapify(self.ready)
        for tag, parked in self.blocked.items():
            if t in parked:
                parked.remove(t)
                heapq.heapify(parked)

    def _release(self, t: _Task) -> None:
        for label, _hard in t.succs:
            s = self.tasks[label]
            if s.phase is Phase.FINAL:
                continue
            s.waiting -= 1
            if s.waiting == 0:
                self._make_ready(s)

    # -- cancellation (EXEC-012..015) ----------------------------------------
    def _check_cancel(self) -> None:
        if self.token.cancelled and not self._cancel_seen:
            self._cancel_seen = True
            # REMOTE-006: Ctrl-C abandons downloads and uploads at once.
            cancel = getattr(self.cache, "cancel", None)
            if cancel is not None:
                cancel()
            if self.cancelling or self.halted is ViolationKind.RUNTIME_CYCLE:
                # --fail-fast or a runtime cycle was stopping the run already:
                # this is the second request to stop, and it skips the grace
                # (EXEC-014).
                self.procs.kill_all()
            self._start_cancel()
        if self.token.forced:
            self.procs.kill_all()  # EXEC-014: a second signal skips the grace

    def _start_cancel(self, because: Optional[StopReason] = None) -> None:
        """Stop admitting; the ready set is cancelled; running trees end.
        ``because``: None for the token (a signal, cancel())."""
        if self.cancelling:
            return
        self.cancelling = True
        # MUTEX-007: a task waiting for a mutex never spawns.
        for t in self._take_pending():
            self._final(t, TaskResult(t.label, TaskState.CANCELLED, Cause.NOT_STARTED,
                                      key=self._key_hex(t)), started=False)
        self._stop_running(because)

    def _stop_running(self, because: Optional[StopReason]) -> None:
        """EXEC-014 to every running task, said once (run_stopping).  A task
        its timeout is stopping already keeps that end (EXEC-018): its
        SIGKILL is due within its grace all the same."""
        running = [t for t in self.tasks.values() if t.phase is Phase.RUNNING
                   and t.child is not None and t.child.running]
        for t in running:
            if not t.timed_out:
                t.stopped = True
            t.child.terminate(self._grace(t))
        if running and not self.token.forced:
            self.observer.run_stopping([t.label for t in sorted(running)],
                                       max(self._grace(t) for t in running),
                                       because, self.token.signal)

    def _take_pending(self) -> List[_Task]:
        """Empty the ready heap, the tag-parked and the mutex waiters; return
        those tasks (admitted-then-waiting ones hold no slot) in order."""
        parked = [t for heap in self.blocked.values() for t in heap]
        self.blocked.clear()
        pending = sorted(self.ready + parked + self.mutex_waiters)
        self.ready = []
        self.mutex_waiters = []
        return [t for t in pending if t.phase in (Phase.READY, Phase.MUTEX_WAIT)]

    # -- mutexes (MUTEX-001..007, EXEC-006 condition 3) ------------------------
    def _acquire_then_spawn(self, t: _Task) -> None:
        """After a miss: spawn if every mutex is free now, else wait for them
        with the slots given back (EXEC-006).  A group task (no cmd) runs
        no process, so nothing would ever release what it took: it takes
        nothing."""
        if not t.task.mutex or t.task.cmd is None or (
                not self._conflicts_with_waiters(t) and self._try_mutexes(t)):
            self._spawn(t)
            return
        self._give_slot(t)
        if self.halted is not None:
            # EXEC-020: admission has stopped, so no waiter is granted any
            # more; like the waiters the violation found, it never starts.
            self._final(t, TaskResult(t.label, TaskState.SKIPPED, Cause(self.halted.value),
                                      key=self._key_hex(t)), started=False)
            return
        t.phase = Phase.MUTEX_WAIT
        t.behind = tuple(w for w in self.mutex_waiters
                         if must_not_overtake(w.task.mutex, t.task.mutex))
        heapq.heappush(self.mutex_waiters, t)

    def _conflicts_with_waiters(self, t: _Task) -> bool:
        # MUTEX-005: a newcomer queues behind any waiter it conflicts with,
        # so a waiting exclusive request is never overtaken.
        return any(blocks(w.task.mutex, t.task.mutex) for w in self.mutex_waiters)

    def _try_mutexes(self, t: _Task) -> bool:
        try:
            if self.mutexes.try_acquire(t.task.mutex):
                return True
        except OSError as e:
            self._warn(f"mutex lock files under {self.mutexes.lock_dir} cannot be used "
                       f"({e.strerror}); mutexes hold within this hazrun process only")
            self.mutexes.lock_dir = None
            return self.mutexes.try_acquire(t.task.mutex)
        if self.mutexes.compatible(t.task.mutex):
            # Free here but locked by another hazrun process: try again soon.
            self._schedule_mutex_retry()
        return False

    def _schedule_mutex_retry(self) -> None:
        if self.mutex_retry is None:
            def retry() -> None:
                self.mutex_retry = None
                self.mutex_dirty = True
            self.mutex_retry = self.loop.call_later(0.1, retry)

    def _release_mutexes(self, t: _Task) -> None:
        if t.task.mutex and t.phase is Phase.RUNNING:
            self.mutexes.release(t.task.mutex)
            if self.mutex_waiters:
                self.mutex_dirty = True

    def _grant_mutex_waiters(self) -> bool:
        """Spawn the waiters whose mutexes are free, in canonical order
        (MUTEX-005), ahead of tasks not yet admitted.  Returns False when a
        grantable waiter lacks a slot, so that no ready task takes it."""
        self.mutex_dirty = False
        earlier: List[Any] = []
        for t in sorted(self.mutex_waiters):
            if self.cancelling or self.halted is not None:
                # A spawn error under --fail-fast (or a violation) just
                # stopped the run: the waiters left are final already.
                return False
            if t.phase is not Phase.MUTEX_WAIT:
                continue
            if any(w.phase is Phase.MUTEX_WAIT for w in t.behind):
                # MUTEX-005: an exclusive request that was waiting when this
                # shared one came goes first, even if later in canonical
                # order.  Not added to ``earlier``: that would block it.
                continue
            if blocks(earlier, t.task.mutex) or not self.mutexes.compatible(t.task.mutex):
                earlier.extend(t.task.mutex)
                continue
            if self.admitted >= self.jobs:
                return False
            if self._full_tag(t) is not None:
                earlier.extend(t.task.mutex)
                continue
            if not self._take_token(t):
                self._await_token()
                return False
            if not self._try_mutexes(t):
                self._give_token(t)
                earlier.extend(t.task.mutex)
                continue
            self.mutex_waiters.remove(t)
            heapq.heapify(self.mutex_waiters)
            self._take_slot(t)
            self._spawn(t)
        return True

    # -- runtime invariants (EXEC-019, EXEC-020) ------------------------------
    def _runtime_checks(self) -> RuntimeChecks:
        if self._checks is None:
            succs = {l: [s for s, _ in t.succs] for l, t in self.tasks.items()}
            # [workspace] inputs are in every task's key: its inputs too.
            inputs = {l: task_input_globs(t.task, t.rel_dir, self.ws.settings.inputs)
                      for l, t in self.tasks.items()}
            outputs = {l: task_output_globs(t.task, t.rel_dir) for l, t in self.tasks.items()}
            self._checks = RuntimeChecks(self.order, succs, inputs, outputs)
        return self._checks

    def _is_input_candidate(self, path: str) -> bool:
        """Git-ignored files are never inputs (CFG-006), produced or not."""
        found = self._ignored.get(path)
        if found is None:
            found = self._ignored[path] = path not in git_ignored(self.ws.root, [path])
        return found

    def _check_outputs(self, t: _Task, paths: List[str]) -> None:
        """After a success: claim the outputs, look for overlaps and cycles."""
        if not paths:
            return
        checks = self._runtime_checks()
        overlap = checks.claim(t.label, paths)
        if overlap is not None:
            self._violation(overlap, terminate=False)
        # Also after an overlap: a cycle the same outputs close must stop
        # the tasks in flight (EXEC-019), which an overlap alone does not.
        cycle, races = checks.add_outputs(t.label, paths, self._is_input_candidate)
        for race in races:
            narrow = ""
            if self._input_by_default(race.reader, race.path):
                narrow = (f", or give {race.reader} inputs (it has none, so every file "
                          "of its project is one)")
            self._warn(f"{race.writer} writes {race.path}, an input of {race.reader}, "
                       "but neither depends on the other: the result depends on timing; "
                       f"add \"{race.writer}\" to the deps of {race.reader}{narrow}")
        if cycle is not None:
            self._violation(cycle, terminate=True)

    def _input_by_default(self, label: str, path: str) -> bool:
        """Whether ``path`` is an input of ``label`` only because it has no
        ``inputs`` (CFG-006: every file of its project), not through the
        [workspace] inputs, which a task's own inputs do not change."""
        t = self.tasks[label]
        ws_inputs = self.ws.settings.inputs
        return (t.task.inputs is None
                and path.startswith(t.rel_dir + "/" if t.rel_dir else "")
                and not (ws_inputs and GlobSet.compile(ws_inputs).match(path)))

    def _violation(self, violation: Violation, terminate: bool) -> None:
        """EXEC-019/020: record it, stop admitting, skip what has not
        started; for a runtime cycle, also stop the tasks in flight."""
        self.violations.append(violation)
        if violation.kind is ViolationKind.OUTPUT_OVERLAP:
            # The claim map knows which outputs matched each task's globs
            # once it ran, not which one wrote the file.
            # CLI-000: an error, as it fails the run (exit status 3).
            self.observer.error(f"output overlap: {violation.describe()} (the outputs of "
                                "each match it once it ran); the run stops admitting tasks")
        else:
            self.observer.error(f"runtime cycle: {violation.describe()}; the run stops")
        if self.halted is None:
            self.halted = violation.kind
            cause = Cause(violation.kind.value)
            not_started = self._take_pending() + [
                t for t in self.tasks.values() if t.phase is Phase.WAITING]
            for t in sorted(not_started):
                if t.phase is not Phase.FINAL:
                    self._final(t, TaskResult(t.label, TaskState.SKIPPED, cause,
                                              key=self._key_hex(t)), started=False)
        if terminate:
            # Also after an overlap halted the run first: a cycle stops what
            # is in flight, and tasks still being prepared never spawn.
            self.halted = ViolationKind.RUNTIME_CYCLE
            self._stop_running(StopReason.RUNTIME_CYCLE)

    # -- helpers --------------------------------------------------------------
    def _submit(self, fn, *args, done, pool: str = "pool") -> None:
        self.pending_pool += 1

        def finished(future: Future) -> None:
            self._pool_job_done()
            done(future)
        self.loop.submit(fn, *args, done=finished, pool=pool)

    def _pool_job_done(self) -> None:
        """Loop: a pool job (or a lane's lookup) ended; print the warnings
        the cache gathered meanwhile."""
        self.pending_pool -= 1
        take = getattr(self.cache, "take_warnings", None)
        for warning in (take() if take else ()):
            self._warn(warning)

    def _warn_overlaps(self) -> None:
        """Outputs this run's tasks share with another task, found at load:
        EXEC-020 stops a run in which both make such a file, but across runs
        the sharing goes unseen while hits restore stale copies."""
        graph = self.ws.graph
        for a, b, where in getattr(graph, "output_overlaps", ()):
            if not (graph.tasks[a].cache or graph.tasks[b].cache):
                continue  # never restored, so never stale: EXEC-020 in a run is enough
            if a in self.tasks or b in self.tasks:
                self._warn(f"{a} and {b} both declare outputs selecting '{where}': a "
                           "cache hit of either restores its own copy of files the other "
                           "makes; give each task outputs of its own")

    def _warn_idle_caps(self) -> None:
        """EXEC-005: a cap on a tag no task carries limits nothing: a typo
        ('hevy'), and the tasks it meant run uncapped."""
        if not self.tag_caps:
            return
        from .errors import did_you_mean
        carried = {tag for task in self.ws.graph.tasks.values() for tag in task.tags}
        for tag in sorted(set(self.tag_caps) - carried):
            where = ("--tag-cap" if tag in self.options.tag_caps
                     else "haz.toml: [workspace.tags]")  # the root's, as in CFG-005's errors
            self._warn(f"{where}: no task carries the tag '{tag}', so its cap limits "
                       f"nothing{did_you_mean(tag, sorted(carried))}")

    def _warn(self, message: str) -> None:
        self.observer.warning(message)

    def _key_hex(self, t: _Task) -> Optional[str]:
        return getattr(t.key, "key", None)

    def _close_logs(self, t: _Task) -> None:
        for log in t.logs.values():
            log.close()
        t.logs = {}
        t.order = None


class _NoCache:
    """--no-cache (CACHE-005): nothing is looked up or stored, and the
    cache's modules (the store, the key, blake3) are not even imported."""

    read = False
    write = False


class _Attempt:
    """A call's result or exception, read back like a finished Future's."""

    __slots__ = ("value", "error")

    def __init__(self, fn, *args: Any):
        self.value: Any = None
        self.error: Optional[Exception] = None
        try:
            self.value = fn(*args)
        except Exception as e:
            self.error = e

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def _input_states(key: Any, stamps: bool = True) -> Dict[str, Any]:
    """Each input's path -> its key row and (with ``stamps``) its stat
    stamp (KeyInfo)."""
    states: Dict[str, Any] = {}
    for part in ("workspace_inputs", "inputs"):
        for row in key.components.get(part, ()):
            states[row[0]] = [tuple(row)]
    for rel, stamp in key.stamp if stamps else ():
        states.setdefault(rel, []).append(stamp)
    return states


def _first_change(before: Dict[str, Any], after: Dict[str, Any]) -> str:
    """CACHE-005: which input changed between two _input_states, in words,
    and how many more did."""
    changed = sorted(p for p in before.keys() | after.keys()
                     if before.get(p) != after.get(p))
    if not changed:
        return "its inputs changed"
    first = changed[0]
    what = ("appeared" if first not in before else
            "was deleted" if first not in after else "changed")
    more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
    return f"its input {first} {what}{more}"


def _why(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text


def _check_options(options: RunOptions) -> None:
    """CLI-004: what haz.toml refuses for concurrency, tag caps and grace,
    refused here too, by the same checks: each of these made a run wait for
    ever (nothing admitted, a task parked under a cap of 0, a kill timer
    never due)."""
    from .config import run_option_problem
    from .errors import UsageError
    for name in ("jobs", "tag_caps", "grace"):
        why = run_option_problem(name, getattr(options, name))
        if why:
            raise UsageError(f"RunOptions.{name} {why}")


def run_graph(workspace: Workspace, targets: Iterable[str], observer: Optional[RunObserver] = None,
              options: Optional[RunOptions] = None, cancel: Optional[CancelToken] = None,
              cache: Any = None) -> RunOutcome:
    """Run ``targets`` (``task`` or ``project:task``) and their hard
    dependencies; return the outcome.  Never prints: events go to
    ``observer``.  ``cancel`` stops the run from another thread.

    Raises :class:`hazrun.errors.UsageError` for unknown targets, for
    ``options`` the command line would refuse, and for a cache directory
    that holds files but is not hazrun's.
    """
    options = options or RunOptions()
    _check_options(options)
    labels = workspace.graph.select(list(targets), workspace.projects)
    if cache is None and options.no_cache:
        cache = _NoCache()
    elif cache is None:
        from .cache import Cache
        environ = os.environ if options.environ is None else options.environ
        cache = Cache(workspace, options.cache_dir, environ, read=not options.force,
                      remote=options.remote, listing=options.listing)
    token = cancel or CancelToken()
    stop_when = getattr(cache, "stop_when", None)
    if stop_when is not None:
        stop_when(lambda: token.cancelled)
    scheduler = Scheduler(workspace, labels, observer or RunObserver(), options, token, cache)
    try:
        return scheduler.run()
    finally:
        close = getattr(cache, "close", None)
        if close is not None:
            close()

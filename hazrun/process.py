"""Spawning, watching and ending the process trees of tasks.

The only module that touches pids, signals and psutil (STYLE 4).  Each task
runs in its own process group (so Ctrl-C at the terminal does not reach it:
hazrun decides how tasks end), with stdin from /dev/null and stdout/stderr
as two pipes that the event loop reads as they fill.

A child is *done* when its main process has been reaped, both pipes are at
end of file and nothing is left in its process group: only then are its
mutexes released (MUTEX-004) and its result reported.
"""
from __future__ import annotations

import enum
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import IO, Any, Callable, Dict, List, Mapping, Optional, Set, Tuple, Union


class _LazyPsutil:
    """psutil, imported on first use: a run that spawns nothing (every task
    a cache hit) never needs it, and importing it costs start-up time."""

    def __getattr__(self, name: str) -> Any:
        import psutil as module
        globals()["psutil"] = module
        return getattr(module, name)


psutil: Any = _LazyPsutil()

from .loop import EventLoop, Timer
from .values import value

# Poll interval where the kernel gives no exit notification (no pidfd) and
# while waiting for stragglers of a process group to go.
POLL_S = 0.05
READ_SIZE = 1 << 16
# posix_spawn with a new process group or session (POSIX_SPAWN_SETPGROUP,
# POSIX_SPAWN_SETSID): Linux/glibc.
_POSIX_SPAWN = hasattr(os, "posix_spawn") and sys.platform.startswith("linux")
# The environment variables (EXEC-008) that tell which task a process
# belongs to, when it has left that task's tree.
IDENTITY_VARIABLES = ("HAZ_ROOT", "HAZ_PROJECT", "HAZ_TASK")
# How long the final sweep gives orphans between SIGTERM and SIGKILL.
SWEEP_GRACE_S = 2.0

_STOP_SIGNALS = frozenset(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"))

# What subprocess's restore_signals puts back in a child: Python ignores
# these, and an ignored disposition survives exec.
_DEFAULT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ")
                         if hasattr(signal, name))

# EXEC-008/014: where hazrun has no controlling terminal (CI, cron, a build
# server, make in a script), a task started through posix_spawn leads a
# process group of its own in hazrun's session rather than a session of its
# own (setsid). Under Linux's autogroup (on by default) each new session is
# a scheduling group of its own: a thousand short tasks then cost the kernel
# a group each, set up and torn down, and the scheduler spread them worse
# across the CPUs (1,000 tasks of `mkdir && cp` took 5% longer; the python
# floor of bench_run.py, 5-10%).  At a terminal each task gets a session, as
# before: in hazrun's session it would be a background job of that terminal,
# where `bash -i` stops itself (SIGTTIN), dash's `set -m` spins, a prompt
# writes on the user's screen and `stty` or tcsetpgrp take the terminal (and
# with it Ctrl-C) from hazrun.  In a session of its own it has no terminal
# at all: /dev/tty fails (ENXIO) and shells run without job control.


def has_controlling_terminal() -> bool:
    """Whether this process has one (opening /dev/tty is the test)."""
    try:
        os.close(os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC))
    except OSError:
        return False
    return True


def _inheritable_fds() -> List[int]:
    """The fds above 2 this process holds that a child would inherit."""
    try:
        names = os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd")
    except OSError:
        return []
    return [fd for fd in (int(n) for n in names if n.isdigit()) if fd > 2 and _inheritable(fd)]


def _inheritable(fd: int) -> bool:
    try:
        return os.get_inheritable(fd)
    except OSError:  # closed since
        return False


# How long the pipes may stay open after the task's whole process group is
# gone (held by a process that left the group).
LINGER_S = 2.0
MIN_LINGER_S = 0.1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4


class Stream(str, enum.Enum):
    STDOUT = "stdout"
    STDERR = "stderr"


@value
class SpawnSpec:
    """What to run: a string runs under /bin/sh -c, a tuple is exec'd."""

    cmd: Union[str, Tuple[str, ...]]
    cwd: str
    env: Mapping[str, str]
    pass_fds: Tuple[int, ...] = ()


@value
class ExitStatus:
    """How the main process ended: an exit code or a signal number."""

    exit_code: Optional[int] = None
    signal: Optional[int] = None

    @classmethod
    def from_wait(cls, status: int) -> "ExitStatus":
        if os.WIFSIGNALED(status):
            return cls(signal=os.WTERMSIG(status))
        return cls(exit_code=os.WEXITSTATUS(status))

    @property
    def stopped(self) -> bool:
        """Ended by a signal that stops tasks (EXEC-014), or by the exit
        code a shell gives when one ends its command (128 + the number)."""
        if self.signal is not None:
            return self.signal in _STOP_SIGNALS
        return self.exit_code is not None and self.exit_code - 128 in _STOP_SIGNALS


class SpawnError(Exception):
    """The program could not be started (EXEC-009 ``spawn_error``)."""


def _libc() -> Any:
    """The C library through ctypes, imported here: only a run that spawns
    a task needs it.  Raises OSError where it cannot be loaded."""
    import ctypes
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> bool:
    """prctl(2) on Linux; False where there is none or it fails."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return _libc().prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


# sched_setattr(2)'s number where the C library has no wrapper for it (glibc
# before 2.41), by machine and pointer size: a 32-bit Python on a 64-bit
# kernel has the 32-bit numbers (314 is another call on i386, 274 on arm).
_SCHED_SETATTR = {("x86_64", 8): 314, ("amd64", 8): 314, ("aarch64", 8): 274,
                  ("arm64", 8): 274, ("riscv64", 8): 274, ("ppc64le", 8): 355,
                  ("ppc64", 8): 355, ("s390x", 8): 345, ("i386", 4): 351,
                  ("i686", 4): 351, ("x86_64", 4): 351, ("armv7l", 4): 380,
                  ("aarch64", 4): 380}
SCHED_FLAG_RESET_ON_FORK = 0x01
SHORT_SLICE_NS = 100_000  # the least EEVDF takes (0.1 ms)


def prefer_short_slice() -> bool:
    """EXEC-003: ask the scheduler to run the calling thread (the event loop)
    as soon as it wakes, before the rest of the slice of whatever it shares
    a CPU with (Linux 6.12's EEVDF custom slice; older kernels ignore it).

    hazrun's loop is a dispatcher: each time it wakes, a task has ended
    and the next one is waiting to be started.  posix_spawn wakes it as
    soon as /bin/sh is exec'd; with the default slice (0.7 ms per CPU
    doubling) it then often waited for that shell to block before it could
    go on, and another CPU went idle meanwhile (1,000 tasks of ``true``
    took 12% longer, of ``mkdir && cp`` 3%).  SCHED_FLAG_RESET_ON_FORK gives
    the tasks (and the pool's threads) the default slice: only the loop
    thread asks for less.  The thread's policy (SCHED_BATCH under
    ``chrt -b``) and nice value are passed as they are; nothing is asked
    under a negative nice, which that flag would take from the tasks, nor
    under a real-time policy, which it would turn into SCHED_OTHER.

    Done only when the command line asks (RunOptions.short_slice), as it
    changes the process; False where it is not supported.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import struct
        policy = os.sched_getscheduler(0) & ~getattr(os, "SCHED_RESET_ON_FORK", 0x40000000)
        nice = os.getpriority(os.PRIO_PROCESS, 0)  # the calling thread's, on Linux
        fair = {getattr(os, name) for name in ("SCHED_OTHER", "SCHED_BATCH", "SCHED_IDLE")
                if hasattr(os, name)}
        if nice < 0 or policy not in fair:
            return False
        # struct sched_attr, first version (56 bytes): size, policy, flags,
        # nice, priority, runtime (the slice, for the fair policies),
        # deadline, period, util_min/max.
        attr = struct.pack("IIQiIQQQII", 56, policy, SCHED_FLAG_RESET_ON_FORK, nice, 0,
                           SHORT_SLICE_NS, 0, 0, 0, 0)
        libc = _libc()
        try:
            return libc.sched_setattr(0, attr, 0) == 0
        except AttributeError:  # glibc before 2.41: no wrapper
            number = _SCHED_SETATTR.get((os.uname().machine, struct.calcsize("P")))
            return number is not None and libc.syscall(number, 0, attr, 0) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """EXEC-014: make this process adopt orphaned descendants (Linux only).

    Done only when the command line asks (a ProcessSet's ``subreaper``),
    not by the library of its own accord: it changes the process.
    """
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def hide_environment() -> bool:
    """REMOTE-001: keep this process's environment (the remote cache's token
    and signing key) from its tasks, which run as the same user: they get
    an environment without them, but /proc/PPID/environ (and ``ps e``)
    showed the parent's.  A process that is not dumpable has those files
    readable by root only; it also leaves no core dump and cannot be traced
    by its user.  Exec resets it, so tasks are as usual.  Linux only; the
    command line asks for it when such a secret is set."""
    return _prctl(PR_SET_DUMPABLE, 0)


# The watchdog: a small process that outlives hazrun only to end its tasks.
# hazrun tells it each task's process group on its stdin ("+PGID" / "-PGID");
# at end of file -- hazrun exited or was killed, even by SIGKILL -- it sends
# SIGTERM to every group still registered, then SIGKILL after a grace.
# Under make it also holds a copy of the jobserver's write end and hears of
# each token hazrun takes and gives back ("T" / "R" and the byte in hex):
# those still held then go back to make's pool once the tasks are gone
# (JOBS-001), or that make ran the rest of its build with fewer slots.
_WATCHDOG = r"""
import os, signal, sys, time
groups = set()
tokens = []
os.set_blocking(0, False)
buf = b""
while True:
    # Poll rather than block in read: a blocked reader would be woken, a
    # context switch, by every task hazrun starts.
    time.sleep(0.25)
    try:
        data = os.read(0, 65536)
    except BlockingIOError:
        continue
    if not data:
        break
    buf += data
    *lines, buf = buf.split(b"\n")
    for line in lines:
        if line[:1] == b"+": groups.add(int(line[1:]))
        elif line[:1] == b"-": groups.discard(int(line[1:]))
        elif line[:1] == b"T": tokens.append(bytes.fromhex(line[1:].decode()))
        elif line[:1] == b"R" and bytes.fromhex(line[1:].decode()) in tokens:
            tokens.remove(bytes.fromhex(line[1:].decode()))
def alive(g):
    try:
        os.killpg(g, 0)
        return True
    except OSError:
        return False
for sig in (signal.SIGTERM, signal.SIGKILL):
    for g in list(groups):
        try: os.killpg(g, sig)
        except OSError: groups.discard(g)
    deadline = time.monotonic() + float(sys.argv[1])
    while groups and time.monotonic() < deadline:
        groups = {g for g in groups if alive(g)}
        time.sleep(0.05)
if tokens and len(sys.argv) > 2:
    try: os.write(int(sys.argv[2]), b"".join(tokens))
    except OSError: pass
"""


class Watchdog:
    """Ends the tasks' process groups if hazrun dies without doing so.

    A parent-death signal (PR_SET_PDEATHSIG) would need a ``preexec_fn``,
    which is unsafe in a threaded parent, and would reach only the direct
    child; the watchdog reaches each task's whole process group and works
    on every POSIX system.  Descendants that left their group (setsid) are
    out of its reach.
    """

    def __init__(self, grace: float = 2.0, token_fd: Optional[int] = None):
        argv = [sys.executable, "-S", "-c", _WATCHDOG, str(grace)]
        if token_fd is not None:
            argv.append(str(token_fd))
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, bufsize=0,
            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
            pass_fds=() if token_fd is None else (token_fd,))
        # Never block the loop on a watchdog that stopped reading.
        os.set_blocking(self.proc.stdin.fileno(), False)

    def _send(self, line: str) -> None:
        try:
            os.write(self.proc.stdin.fileno(), line.encode() + b"\n")
        except (BrokenPipeError, ValueError, OSError):
            pass

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def token_taken(self, token: bytes) -> None:
        self._send(f"T{token.hex()}")

    def token_returned(self, token: bytes) -> None:
        self._send(f"R{token.hex()}")

    def close(self) -> None:
        """Every task has ended: nothing is left to watch.  Killed rather
        than told, so hazrun does not wait for its next poll."""
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()


class ProcessSet:
    """Every child of a run: spawning, reaping, and the final sweep.

    ``subreaper``: become one (:func:`become_subreaper`) before the first
    spawn, and ``short_slice``: :func:`prefer_short_slice` then; a run that
    spawns nothing leaves the process as it was.
    """

    def __init__(self, loop: EventLoop, subreaper: bool = False,
                 parent_death_signal: bool = False, short_slice: bool = False,
                 forced: Callable[[], bool] = lambda: False,
                 token_fd: Optional[int] = None):
        self.loop = loop
        self._forced = forced  # a second signal came: no grace left (EXEC-014)
        self._want_subreaper = subreaper
        self._want_short_slice = short_slice
        self.subreaper = False  # whether this process is one
        self.children: Dict[int, "Child"] = {}
        # Started with the first task: a run that spawns nothing needs none.
        self.parent_death_signal = parent_death_signal
        self.watchdog: Optional[Watchdog] = None
        self._token_fd = token_fd  # make's jobserver: see token_taken
        self.spawned = False
        self._poll_timer: Optional[Timer] = None
        self._devnull: Optional[int] = None
        self._inherited: Optional[List[int]] = None
        self._new_session: Optional[bool] = None  # a session per task (at a terminal)
        self._no_grace = False

    def spawn(self, spec: SpawnSpec, on_output: Callable[[Stream, bytes], None],
              on_done: Callable[["Child"], None]) -> "Child":
        """Start ``spec``; raise SpawnError if it cannot be started."""
        if isinstance(spec.cmd, str):
            argv = ["/bin/sh", "-c", spec.cmd]
        else:
            argv = list(spec.cmd)
        self._ensure_watchdog()
        if self._want_subreaper and not self.spawned:
            self.subreaper = become_subreaper()
        if self._want_short_slice and not self.spawned:
            prefer_short_slice()
        self.spawned = True
        if isinstance(spec.cmd, str) and _POSIX_SPAWN:
            pid, out, err = self._posix_spawn_shell(spec)
            child = Child(self, pid, out, err, on_output, on_done)
        else:
            # A session of its own (setsid), terminal or not: Popen can
            # give a process group only from Python 3.11 on.
            try:
                popen = subprocess.Popen(
                    argv, cwd=str(spec.cwd), env=dict(spec.env),
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, start_new_session=True,
                    pass_fds=spec.pass_fds, close_fds=True)
            except OSError as e:
                what = e.filename if e.filename else argv[0]
                raise SpawnError(f"{what}: {e.strerror or e}") from None
            except ValueError as e:  # a NUL in the command (EXEC-009)
                raise SpawnError(_unspawnable(e)) from None
            child = Child(self, popen.pid, _take_fd(popen.stdout), _take_fd(popen.stderr),
                          on_output, on_done, popen)
        child.identity = tuple((k, spec.env[k]) for k in IDENTITY_VARIABLES if k in spec.env)
        self.children[child.pid] = child
        if self.watchdog is not None:
            self.watchdog.watch(child.pgid)
        child.watch()
        return child

    def _ensure_watchdog(self) -> Optional[Watchdog]:
        if self.parent_death_signal and self.watchdog is None:
            self.watchdog = Watchdog(token_fd=self._token_fd)
        return self.watchdog

    def token_taken(self, token: bytes) -> None:
        """JOBS-001: a token of make's is held (told right after it was
        read): given back by the watchdog if hazrun dies holding it."""
        watchdog = self._ensure_watchdog()
        if watchdog is not None:
            watchdog.token_taken(token)

    def token_returned(self, token: bytes) -> None:
        """Told before the token goes back to make's pool: a death between
        the two loses it, rather than giving make one too many."""
        if self.watchdog is not None:
            self.watchdog.token_returned(token)

    def _posix_spawn_shell(self, spec: SpawnSpec):
        """A string command through posix_spawn: the loop thread is blocked
        only while the kernel starts /bin/sh, not for Popen's bookkeeping,
        which is most of a short task's cost to hazrun.

        posix_spawn has no working-directory action, so the script starts
        with a ``cd`` on its own first line's head (line numbers in the
        shell's messages stay as the user wrote them).

        The child starts as Popen's would (EXEC-008): the signals Python
        ignores (SIGPIPE, SIGXFSZ) back to their defaults, or ``seq | head``
        in a task prints "Broken pipe"; and only its three standard streams
        and the jobserver's fds open.  It leads a process group of its own,
        in hazrun's session where hazrun has no terminal (see
        has_controlling_terminal).  Every fd hazrun opens is close-on-exec
        (PEP 446); the inheritable ones hazrun itself inherited (``7>file``
        in the shell that started it) are closed in the child.
        """
        if self._devnull is None:
            self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        if self._inherited is None:
            self._inherited = _inheritable_fds()
        closes = [(os.POSIX_SPAWN_CLOSE, fd) for fd in self._inherited
                  if fd not in spec.pass_fds and _inheritable(fd)]
        if self._new_session is None:
            self._new_session = has_controlling_terminal()
        script = f"cd -- {shlex.quote(str(spec.cwd))} || exit 126; {spec.cmd}"
        try:
            for fd in spec.pass_fds:
                os.set_inheritable(fd, True)
            out_r, out_w = os.pipe()
        except OSError as e:  # a closed jobserver fd, no fds left
            raise SpawnError(f"cannot start /bin/sh: {e.strerror or e}") from None
        try:
            err_r, err_w = os.pipe()
        except OSError as e:
            os.close(out_r)
            os.close(out_w)
            raise SpawnError(f"cannot start /bin/sh: {e.strerror or e}") from None
        try:
            pid = os.posix_spawn(
                "/bin/sh", ["/bin/sh", "-c", script], spec.env,
                **({"setsid": True} if self._new_session else {"setpgroup": 0}),
                setsigdef=_DEFAULT_SIGNALS,
                file_actions=[(os.POSIX_SPAWN_DUP2, self._devnull, 0),
                              (os.POSIX_SPAWN_DUP2, out_w, 1),
                              (os.POSIX_SPAWN_DUP2, err_w, 2), *closes])
        except (OSError, ValueError) as e:
            for fd in (out_r, err_r):
                os.close(fd)
            if isinstance(e, ValueError):  # a NUL in the command (EXEC-009)
                raise SpawnError(_unspawnable(e)) from None
            raise SpawnError(f"/bin/sh: {e.strerror or e}") from None
        finally:
            os.close(out_w)
            os.close(err_w)
        return pid, out_r, err_r

    # Reaping ---------------------------------------------------------
    def reap(self) -> None:
        """Collect the exit statuses of our tasks' main processes.

        Only our own pids are waited for: a ``waitpid(-1)`` would also take
        the statuses of processes that other threads started (the cache's
        ``git``), or a library caller's own children.
        """
        for child in list(self.children.values()):
            if child.status is None:
                try:
                    pid, status = os.waitpid(child.pid, os.WNOHANG)
                except ChildProcessError:
                    continue
                if pid:
                    child.exited(status)

    def reap_group(self, pgid: int) -> None:
        """As a subreaper, reap adopted zombies of a task's process group,
        which would otherwise keep the group alive for ever."""
        if not self.subreaper:
            return
        try:
            adopted = psutil.Process().children()
        except psutil.Error:
            return
        for p in adopted:
            try:
                if os.getpgid(p.pid) == pgid and p.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(p.pid, os.WNOHANG)
            except (OSError, psutil.Error):
                pass

    def poll_soon(self) -> None:
        """Re-check every child shortly (no exit notification available)."""
        if self._poll_timer is None or self._poll_timer.cancelled:
            self._poll_timer = self.loop.call_later(POLL_S, self._poll)

    def _poll(self) -> None:
        self._poll_timer = None
        self.reap()
        pending = False
        for child in list(self.children.values()):
            child.advance()
            pending = pending or child.needs_polling()
        if pending:
            self.poll_soon()

    def terminate_all(self, grace: float) -> None:
        for child in list(self.children.values()):
            child.terminate(grace)

    def kill_all(self) -> None:
        """SIGKILL every tree now (a second signal, EXEC-014); the final
        sweep then gives orphans no grace either."""
        self._no_grace = True
        for child in list(self.children.values()):
            child.kill()

    def close(self) -> None:
        """EXEC-015: end adopted orphans, then stop the watchdog."""
        self.sweep_orphans()
        if self.watchdog is not None:
            self.watchdog.close()
            self.watchdog = None
        if self._devnull is not None:
            os.close(self._devnull)
            self._devnull = None

    def _ours(self) -> Set[int]:
        keep = set(self.children)
        if self.watchdog is not None:
            keep.add(self.watchdog.proc.pid)
        return keep

    def adopted(self, identity: Tuple[Tuple[str, str], ...]) -> List[psutil.Process]:
        """EXEC-014: the orphans re-parented to this subreaper (daemons
        whose parents exited) that carry a task's identity in their
        environment, with their descendants: stopped with that task, with
        its SIGTERM and grace, not only by the final sweep's SIGKILL."""
        if not self.subreaper or not identity:
            return []
        # Orphans are re-parented to the main thread: its list of children
        # tells at the cost of one read whether there is any to look at.
        kids = _leader_children()
        ours = self._ours()
        if kids is not None and kids <= ours:
            return []
        self._reap_strays(ours)  # adopted orphans that have exited since
        found: List[psutil.Process] = []
        try:
            strays = [p for p in psutil.Process().children() if p.pid not in ours]
        except psutil.Error:
            return []
        for p in strays:
            try:
                env = p.environ()
                if all(env.get(k) == v for k, v in identity):
                    found += [p] + p.children(recursive=True)
            except psutil.Error:
                continue  # gone, a zombie, or not ours to read
        return found

    def sweep_orphans(self, grace: Optional[float] = None) -> int:
        """EXEC-015: end adopted orphans (double-forked daemons) and reap
        them: SIGTERM, then SIGKILL to those alive ``grace`` seconds later
        (default SWEEP_GRACE_S; none after kill_all).

        Only meaningful as a subreaper, after spawning a task: orphans are
        its descendants.  Returns how many were ended.
        """
        if not self.subreaper or not self.spawned:
            return 0
        kids = _direct_children()
        if kids is not None and kids <= self._ours():
            return 0  # the common case, told without psutil's /proc scan
        if grace is None:
            grace = 0.0 if self._no_grace else SWEEP_GRACE_S
        me = psutil.Process()
        ended = 0
        termed: Set[int] = set()
        deadline = time.monotonic() + grace
        for _ in range(200 + int(grace / (POLL_S / 5))):
            keep = self._ours()
            try:
                strays = [p for p in me.children(recursive=True) if p.pid not in keep]
            except psutil.Error:
                strays = []
            self._reap_strays(keep)
            strays = [p for p in strays if _alive(p)]
            if not strays:
                break
            late = time.monotonic() >= deadline or self._no_grace or self._forced()
            for p in strays:
                try:
                    if p.pid not in termed:
                        p.terminate()
                        termed.add(p.pid)
                        ended += 1
                    elif late:
                        p.kill()
                except psutil.Error:
                    pass
            time.sleep(POLL_S / 5)
            self._reap_strays(keep)
        self._reap_strays(keep)
        return ended

    def _reap_strays(self, keep: Set[int]) -> None:
        try:
            procs = psutil.Process().children()
        except psutil.Error:
            return
        for p in procs:
            if p.pid in keep:
                continue
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(p.pid, os.WNOHANG)
            except (OSError, psutil.Error):
                pass


def _unspawnable(e: ValueError) -> str:
    if "null" in str(e):
        return "the command holds a NUL character, which no program can be given"
    return str(e)


def _leader_children() -> Optional[Set[int]]:
    """The children of this process's main thread, zombies included (None
    where /proc does not say): where the kernel puts adopted orphans."""
    try:
        return _task_children(os.getpid())
    except (OSError, ValueError):
        return None


def _direct_children() -> Optional[Set[int]]:
    """This process's children (zombies included) from /proc/self/task/*/
    children; None where the kernel does not offer that file."""
    kids: Set[int] = set()
    try:
        for tid in os.listdir("/proc/self/task"):
            kids |= _task_children(int(tid))
    except (OSError, ValueError):
        # No such file in this kernel, or a thread ended during the listing
        # (its children moved to a thread already read): ask psutil.
        return None
    return kids


def _task_children(tid: int) -> Set[int]:
    """/proc/self/task/TID/children; raises OSError or ValueError.  With
    os.open and os.read, not open(): this runs as each task ends, and a file
    object costs twice the system calls (fstat, ioctl, lseek)."""
    fd = os.open(f"/proc/self/task/{tid}/children", os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return {int(pid) for pid in b"".join(chunks).split()}


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Child:
    """One task's process tree, seen from the loop."""

    def __init__(self, owner: ProcessSet, pid: int, stdout: int, stderr: int,
                 on_output: Callable[[Stream, bytes], None],
                 on_done: Callable[["Child"], None],
                 popen: Optional[subprocess.Popen] = None):
        self.owner = owner
        self.loop = owner.loop
        self.popen = popen
        self.pid = pid
        self.pgid = pid  # leader of its own process group
        self._pipes = ((stdout, Stream.STDOUT), (stderr, Stream.STDERR))
        self.started = time.monotonic()
        self.ended: Optional[float] = None
        self.status: Optional[ExitStatus] = None
        self.done = False
        self.left_behind = False   # group members outlived the main process
        self._on_output = on_output
        self._on_done = on_done
        self._open: Dict[int, Stream] = {}
        self._pidfd: Optional[int] = None
        self._tree: Dict[int, psutil.Process] = {}
        self._termed: Set[int] = set()  # of the tree, those sent SIGTERM
        self._terminating = False
        self._kill_timer: Optional[Timer] = None
        self._linger_timer: Optional[Timer] = None
        self._grace: Optional[float] = None  # EXEC-014's, once the scheduler says
        # What its processes carry in their environment (EXEC-008's HAZ_*):
        # how an orphan adopted by the subreaper is told to be this task's.
        self.identity: Tuple[Tuple[str, str], ...] = ()

    # Watching ---------------------------------------------------------
    def watch(self) -> None:
        # The pipes stay blocking: each is read once per readiness report,
        # and a pipe that is readable never blocks that one read (we are
        # its only reader).  Saves two fcntl calls per pipe and task.
        for fd, stream in self._pipes:
            self._open[fd] = stream
            self.loop.add_reader(fd, lambda fd=fd: self._read(fd))
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                self._pidfd = pidfd_open(self.pid)
                self.loop.add_reader(self._pidfd, self._pidfd_ready)
            except OSError:
                self._pidfd = None
        if self._pidfd is None:
            self.owner.poll_soon()

    def _read(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._on_output(self._open[fd], data)
            return
        self._close_pipe(fd)
        self.advance()

    def _close_pipe(self, fd: int) -> None:
        self.loop.remove_reader(fd)
        del self._open[fd]
        # Exactly once (guarded by _open): a second close of the bare fd
        # number could close another child's pipe that reused it.
        os.close(fd)

    def _pidfd_ready(self) -> None:
        self.loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        # This one's status only: the others' pidfds tell when theirs come.
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid = 0
        if pid:
            self.exited(status)
        else:
            self.owner.reap()  # reaped elsewhere, or not yet: the usual way
        self.advance()

    def exited(self, status: int) -> None:
        """Record the main process's wait status (called by the reaper)."""
        if self.status is None:
            self.status = ExitStatus.from_wait(status)
            self.ended = time.monotonic()
            if self.popen is not None:
                # Keep Popen from waiting on a pid that is already reaped.
                self.popen.returncode = os.waitstatus_to_exitcode(status)

    @property
    def duration(self) -> float:
        """How long its main process ran (so far, if it still does)."""
        return (self.ended or time.monotonic()) - self.started

    @property
    def running(self) -> bool:
        """Its main process has not exited.  After that, what is left is
        reading the pipes to their end and ending a group left behind: the
        task's own outcome is known, and neither a timeout (EXEC-018) nor a
        cancellation (EXEC-012) changes it."""
        return not self.done and self.status is None

    def needs_polling(self) -> bool:
        return not self.done and (self._pidfd is None or self.status is not None)

    def advance(self) -> None:
        """Move towards done: main reaped, pipes closed, group empty."""
        if self.done:
            return
        if self.status is None:
            if self._pidfd is None:
                self.owner.poll_soon()
            return
        alive = _group_alive(self.pgid)
        if alive and self.owner.subreaper:
            self.owner.reap_group(self.pgid)
            alive = _group_alive(self.pgid)
        if alive:
            if not self._terminating:
                # The main process is gone but its group lives on (a
                # background job): end it, it must not outlive its task.
                self.left_behind = True
                self.terminate(self._stop_grace())
            self.owner.poll_soon()
            return
        if self.owner.subreaper and self._daemons_left():
            self.owner.poll_soon()
            return
        if self._open:
            # Everything of the group is gone; the pipes still deliver what
            # is buffered, then end of file.  If a process that left the
            # group (setsid) holds them, stop waiting after a while: the
            # orphan sweep ends it.
            if self._linger_timer is None:
                self._linger_timer = self.loop.call_later(
                    self._linger(), self._stop_reading)
            return
        self._finish()

    def _daemons_left(self) -> bool:
        """Whether a daemon of this task outlives it: one that left its
        group (setsid) and whose parent exited, adopted by this subreaper
        and told to be the task's by its environment.  It is part of the
        task's tree (EXEC-014): stopped now, as a background job in the
        group is, and the task ends, freeing its mutexes (MUTEX-004) and its
        job slot, only once it is gone."""
        strays = [p for p in self.owner.adopted(self.identity) if _alive(p)]
        if not strays:
            return False
        self.left_behind = True
        if not self._terminating:
            self.terminate(self._stop_grace())
        else:  # found after the others were signalled, or left to its parent then
            for p in strays:
                self._tree.setdefault(p.pid, p)
                if p.pid not in self._termed:
                    self._termed.add(p.pid)
                    try:
                        p.terminate()
                    except psutil.Error:
                        pass
        return True

    def _stop_reading(self) -> None:
        for fd in list(self._open):
            self._close_pipe(fd)
        self.left_behind = True
        self.advance()

    def _finish(self) -> None:
        self.done = True
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        if self._kill_timer is not None:
            self._kill_timer.cancel()
            self._kill_timer = None
        self.owner.children.pop(self.pid, None)
        if self.owner.watchdog is not None:
            self.owner.watchdog.forget(self.pgid)
        self._on_done(self)

    # Ending (EXEC-014) ------------------------------------------------
    def set_grace(self, grace: float) -> None:
        self._grace = grace

    def _stop_grace(self) -> float:
        """The grace for what the task left behind: its own (0 included:
        SIGKILL at once), or EXEC-014's default."""
        return 10.0 if self._grace is None else self._grace

    def _linger(self) -> float:
        """How long to read pipes that a process outside the group holds:
        no longer than the grace, but long enough (MIN_LINGER_S) to read
        what is already buffered in them."""
        if self._grace is None:
            return LINGER_S
        return min(max(self._grace, MIN_LINGER_S), LINGER_S)

    def terminate(self, grace: float) -> None:
        """SIGTERM to the group and every descendant; SIGKILL after grace."""
        if self.done:
            return
        if self._terminating:
            return
        self._terminating = True
        self._snapshot()
        self._signal(signal.SIGTERM)
        self._kill_timer = self.loop.call_later(grace, self.kill)
        self.owner.poll_soon()

    def kill(self) -> None:
        """SIGKILL to whatever is still alive of the tree, snapshotted again
        first because children fork while dying."""
        if self.done:
            return
        self._terminating = True
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        self._kill_timer = None
        self._snapshot()
        self._signal(signal.SIGKILL)
        self.owner.poll_soon()

    def _snapshot(self) -> None:
        try:
            main = psutil.Process(self.pid)
            procs = [main] + main.children(recursive=True)
        except psutil.Error:
            procs = []
        procs += self.owner.adopted(self.identity)
        for known in list(self._tree.values()):
            try:
                procs.extend(known.children(recursive=True))
            except psutil.Error:
                pass
        for p in procs:
            self._tree.setdefault(p.pid, p)

    def _signal(self, sig: int) -> None:
        """``sig`` to the task's group, and to each descendant that left it.

        Each process once: a second SIGTERM is "now" to a hazrun or a make
        under this one (it kills its own tasks without their grace, or dies
        while giving back jobserver tokens), and a shell's trap runs twice.
        So SIGTERM skips a member of the group (killpg reached it) and the
        task of a hazrun under this one (another task's HAZ_* in its
        environment, its parent of the tree): that hazrun stops it.  A
        setsid'd worker of this task gets it at once.  SIGKILL, at the end
        of the grace, reaches everything."""
        try:
            os.killpg(self.pgid, sig)
            in_group = True
        except (ProcessLookupError, PermissionError):
            in_group = False
        graceful = sig != signal.SIGKILL
        for p in list(self._tree.values()):
            try:
                if in_group and os.getpgid(p.pid) == self.pgid:
                    self._termed.add(p.pid)
                    continue  # reached by killpg
                if graceful and p.ppid() in self._tree and self._nested_task(p):
                    continue  # the nested hazrun's to stop
            except (OSError, psutil.Error):
                self._tree.pop(p.pid, None)
                continue
            try:
                p.send_signal(sig)  # psutil checks the pid was not reused
                self._termed.add(p.pid)
            except psutil.Error:
                self._tree.pop(p.pid, None)

    def _nested_task(self, p: psutil.Process) -> bool:
        """Whether ``p`` is a task of a hazrun this task runs: it carries
        other HAZ_* identity variables (EXEC-008) than this task's."""
        try:
            env = p.environ()
        except psutil.Error:
            return False
        theirs = tuple((k, env[k]) for k in IDENTITY_VARIABLES if k in env)
        return bool(theirs) and theirs != self.identity

    @property
    def terminating(self) -> bool:
        return self._terminating


def _take_fd(pipe: IO[bytes]) -> int:
    """The descriptor of one of Popen's pipes, now ours alone: a duplicate
    (non-inheritable, PEP 446), the file object closed, so that every
    child's pipes are bare descriptors closed exactly once."""
    fd = os.dup(pipe.fileno())
    pipe.close()
    return fd


def writer_gone(pid: Optional[int], age: float, gone_after: float, max_age: float) -> bool:
    """Whether a temp file ``age`` seconds old, written by process ``pid``
    (None: unknown), is a leftover: its writer is gone and ``gone_after``
    has passed (a writer in another pid namespace is not seen), or it is
    ``max_age`` old whatever its pid says (pid 1 in a container is always
    alive, and pids are reused)."""
    if age >= max_age:
        return True
    return age >= gone_after and (pid is None or not pid_alive(pid))


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts): the
    cache asks it of the writer named in a temp file's name."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

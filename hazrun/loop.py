"""The event loop: one thread, one selector (EXEC-003).

It waits on every registered pipe, on a self-pipe that other threads and
signal handlers write to, and on the nearest timer; pool work runs in a
ThreadPoolExecutor and its completion is handed back to the loop thread
through a queue plus a byte on the self-pipe.  Nothing here sleeps to poll.
"""
from __future__ import annotations

import collections
import heapq
import itertools
import os
import selectors
import time
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Tuple

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

Callback = Callable[[], None]


class Timer:
    """A handle to cancel a scheduled call."""

    __slots__ = ("deadline", "callback", "cancelled")

    def __init__(self, deadline: float, callback: Callback):
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


# Uploads at once (REMOTE-006): network-bound, each waits on its server.
UPLOAD_WORKERS = 4

# The longest wait on the selector (EXEC-018's timeouts and EXEC-014's grace
# may be far longer: the loop then wakes, finds nothing due and waits again).
MAX_WAIT_S = 3600.0


class EventLoop:
    """Selector, self-pipe, timers and a thread pool, driven by one thread."""

    def __init__(self, workers: int = 4):
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._timers: List[Tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        # Completed pool work; appended by pool threads, drained by the loop.
        self._done: Deque[Callback] = collections.deque()
        self._workers = workers
        # The pool, and the uploads' own: a slow cache server must not
        # hold up the hashing and lookups of the tasks still to run
        # (REMOTE-006).  Each is made on first use.
        self._pools: Dict[str, ThreadPoolExecutor] = {}
        self._wake_hooks: List[Callback] = []
        self.closed = False

    # -- registration ---------------------------------------------------
    def add_reader(self, fd: int, callback: Callback) -> None:
        self.selector.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int) -> None:
        self.selector.unregister(fd)

    def call_at(self, deadline: float, callback: Callback) -> Timer:
        timer = Timer(deadline, callback)
        heapq.heappush(self._timers, (deadline, next(self._seq), timer))
        return timer

    def call_later(self, delay: float, callback: Callback) -> Timer:
        return self.call_at(time.monotonic() + delay, callback)

    def on_wake(self, hook: Callback) -> None:
        """Run ``hook`` on the loop thread after every wake-up (cancellation)."""
        self._wake_hooks.append(hook)

    def submit(self, fn: Callable[..., Any], *args: Any,
               done: Callable[[Future], None], pool: str = "pool") -> Future:
        """Run ``fn(*args)`` in the pool (``pool="upload"``: the uploads'
        pool); call ``done(future)`` on the loop."""
        executor = self._pools.get(pool)
        if executor is None:
            # Made on first use: a run of hits answered on the loop never
            # needs one, nor concurrent.futures (and logging) imported.
            from concurrent.futures import ThreadPoolExecutor
            workers = self._workers if pool == "pool" else UPLOAD_WORKERS
            executor = self._pools[pool] = ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix=f"hazrun-{pool}")
        future = executor.submit(fn, *args)

        def finished(f: Future) -> None:
            self._done.append(lambda: done(f))
            self.wake()
        future.add_done_callback(finished)
        return future

    def call_soon_threadsafe(self, callback: Callback) -> None:
        """From any thread: run ``callback`` on the loop thread soon."""
        self._done.append(callback)
        self.wake()

    def wake(self) -> None:
        """Thread- and signal-safe: make the loop's wait return."""
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full, so the loop will wake anyway

    @property
    def wake_fd(self) -> int:
        return self._wake_w

    # -- running --------------------------------------------------------
    def run_once(self) -> None:
        """Wait for the next events and dispatch them.

        Shape: wait on the selector until a pipe, the self-pipe or the
        nearest timer is due; then run pipe callbacks, drained pool
        completions, wake hooks and due timers, in that order.
        """
        timeout = None
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if self._timers:
            # At most MAX_WAIT_S: epoll takes milliseconds in a C int, and a
            # timer days away (timeout = 1e10 meaning "never") must not
            # overflow it; waking early only looks at the timers again.
            timeout = min(MAX_WAIT_S, max(0.0, self._timers[0][0] - time.monotonic()))
        if self._done:
            timeout = 0.0
        woke = False
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                woke = True
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            else:
                key.data()
        while self._done:
            self._done.popleft()()
        if woke:
            for hook in self._wake_hooks:
                hook()
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()

    def close(self, wait: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        for executor in self._pools.values():
            executor.shutdown(wait=wait)
        self.selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

#!/usr/bin/env python3
"""The least a Python task runner can do, as a floor for bench_run.py.

    python3 scripts/floor_runner.py JOBS DIRS_FILE COMMAND

Runs COMMAND through /bin/sh in each directory DIRS_FILE lists, JOBS at a
time, the way hazrun starts a task (EXEC-003/008): posix_spawn, a process
group of its own (in the runner's session, as hazrun's are without a
terminal), stdin from /dev/null, stdout and stderr on two pipes read through
one selector, the exit seen through a pidfd.  Nothing else: no graph, no
states, no output lines, no checks, and not the scheduling hint hazrun's
loop asks for (process.prefer_short_slice), whose worth the "vs floor"
column then shows with the rest.  What hazrun takes beyond this runner's
time is the cost of everything the spec asks of it; what this runner takes
beyond make's is the cost of Python itself on the machine at hand.
Exits 1 if a command failed.
"""
import os
import selectors
import shlex
import sys


def main() -> int:
    jobs, dirs_file, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    root = os.getcwd()
    with open(dirs_file) as f:
        dirs = [line.strip() for line in f if line.strip()]
    sel = selectors.DefaultSelector()
    devnull = os.open(os.devnull, os.O_RDONLY)
    running, failed, nxt = 0, 0, 0

    def spawn(d: str) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.posix_spawn(
            "/bin/sh", ["/bin/sh", "-c", f"cd -- {shlex.quote(root + '/' + d)} || exit 126; {cmd}"],
            dict(os.environ, HAZ_PROJECT=d), setpgroup=0,
            file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0),
                          (os.POSIX_SPAWN_DUP2, out_w, 1),
                          (os.POSIX_SPAWN_DUP2, err_w, 2)])
        os.close(out_w)
        os.close(err_w)
        task = {"pid": pid, "open": 3}
        for fd in (out_r, err_r):
            sel.register(fd, selectors.EVENT_READ, (task, False))
        sel.register(os.pidfd_open(pid), selectors.EVENT_READ, (task, True))

    while nxt < len(dirs) or running:
        while nxt < len(dirs) and running < jobs:
            spawn(dirs[nxt])
            nxt += 1
            running += 1
        for key, _ in sel.select():
            task, is_pidfd = key.data
            if is_pidfd:
                _, status = os.waitpid(task["pid"], 0)
                failed += status != 0
            elif os.read(key.fd, 65536):
                continue
            sel.unregister(key.fd)
            os.close(key.fd)
            task["open"] -= 1
            if not task["open"]:
                running -= 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

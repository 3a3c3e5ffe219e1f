#!/usr/bin/env python3
"""Benchmark `hazrun run` against make, xargs and (if installed) doit on
N independent one-task projects, side by side in the same run (issue 3).

    python3 scripts/bench_run.py [--n 1000] [--repeat 3] [--cmd copy|true]
                                 [--baseline COMMIT]

Prints the median wall time of each runner, its ratio to `make -j2`, and
its ratio to the "python floor": scripts/floor_runner.py, which starts
tasks as hazrun does and does nothing else.  On a small VM that floor
moves with the machine's load; hazrun's ratio to it is its own overhead.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMANDS = {
    "copy": "mkdir -p dist && cp src/in.txt dist/out.txt",
    "true": "true",
}


def generate(root: Path, n: int, cmd: str) -> None:
    (root / "haz.toml").write_text('[workspace]\nmembers = ["p/*"]\n')
    make_lines = [".PHONY: all " + " ".join(f"t{i}" for i in range(n)),
                  "all: " + " ".join(f"t{i}" for i in range(n))]
    xargs = []
    for i in range(n):
        d = root / "p" / f"p{i:05d}"
        (d / "src").mkdir(parents=True)
        (d / "src" / "in.txt").write_text(f"input {i}\n")
        # Only a command that writes dist/ declares it: a task declaring
        # outputs it never makes gets a warning (EXEC-009), and 1,000 of
        # them are not the runner's overhead this measures.
        outputs = 'outputs = ["dist/**"]\n' if "dist/" in cmd else ""
        (d / "haz.toml").write_text(
            f'[tasks.build]\ncmd = "{cmd}"\ninputs = ["src/**"]\n{outputs}')
        make_lines.append(f"t{i}:\n\tcd p/p{i:05d} && {cmd}")
        xargs.append(f"p/p{i:05d}")
    (root / "Makefile").write_text("\n".join(make_lines) + "\n")
    (root / "dirs.txt").write_text("\n".join(xargs) + "\n")
    dodo = ["def task_build():",
            "    import glob",
            "    for d in sorted(glob.glob('p/*')):",
            f"        yield {{'name': d, 'actions': ['cd ' + d + ' && {cmd}'], 'verbosity': 0}}"]
    (root / "dodo.py").write_text("\n".join(dodo) + "\n")


def clean(root: Path) -> None:
    """Outputs and run state gone, so every task runs again.  hazrun's
    workspace snapshot (.haz/workspace.pickle) is kept: this measures
    running, in the steady state a second run is in; bench_load.py
    measures parsing the haz.toml files."""
    for d in (root / "p").iterdir():
        shutil.rmtree(d / "dist", ignore_errors=True)
    haz = root / ".haz"
    if haz.is_dir():
        for entry in haz.iterdir():
            if entry.name != "workspace.pickle":
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
    for f in root.glob(".doit.db*"):
        f.unlink()


def timed(argv, cwd, env=None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {proc.stderr.decode()[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cmd", choices=sorted(COMMANDS), default="copy")
    ap.add_argument("--baseline", metavar="COMMIT",
                    help="also run hazrun as of COMMIT (row 'base'), on a copy of the "
                         "workspace: each tree keeps its own workspace snapshot")
    args = ap.parse_args()
    cmd = COMMANDS[args.cmd]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("MAKEFLAGS", None)
    # As installed: pip compiles hazrun's modules once.  Without a bytecode
    # cache (PYTHONDONTWRITEBYTECODE in the environment, or a checkout that
    # cannot be written) every start compiles them again, 40-50 ms of a
    # run that is not hazrun's.  The cache goes to the temporary directory.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    runners = {
        "xargs -P2": ["sh", "-c", f"xargs -P2 -I{{}} sh -c 'cd {{}} && {cmd}' < dirs.txt"],
        "make -j2": ["make", "-s", "-j2"],
        # The floor for any Python runner on this machine: hazrun's way of
        # starting a task and nothing else (scripts/floor_runner.py).
        "python floor": [sys.executable, str(REPO / "scripts" / "floor_runner.py"),
                         "2", "dirs.txt", cmd],
        "hazrun -j2": [sys.executable, "-m", "hazrun", "run", "build", "-j2",
                       "--no-cache", "--output", "none"],
    }
    if shutil.which("doit"):
        runners["doit -n 2"] = ["doit", "-n", "2", "-P", "thread"]
    with tempfile.TemporaryDirectory(prefix="hazrun-bench-") as tmp:
        root = Path(tmp) / "ws"
        root.mkdir()
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        generate(root, args.n, cmd)
        where = {name: (root, env) for name in runners}
        if args.baseline:
            tree = Path(tmp) / "base"
            tree.mkdir()
            archive = subprocess.run(["git", "archive", args.baseline, "hazrun"], cwd=REPO,
                                     stdout=subprocess.PIPE, check=True)
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
            runners["base -j2"] = runners["hazrun -j2"]
            shutil.copytree(root, Path(tmp) / "ws-base", symlinks=True)
            where["base -j2"] = (Path(tmp) / "ws-base",
                                 dict(env, PYTHONPATH=str(tree),
                                      PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache-base")))
        times = {name: [] for name in runners}
        # Untimed: writes the workspace snapshot and the bytecode cache.
        for name in ("hazrun -j2", "base -j2"):
            if name in runners:
                timed(runners[name], *where[name])
        for _ in range(args.repeat):
            for name, argv in runners.items():
                clean(where[name][0])
                times[name].append(timed(argv, *where[name]))
    base = statistics.median(times["make -j2"])
    floor = statistics.median(times["python floor"])
    print(f"N = {args.n} independent tasks, cmd = {cmd!r}, median of {args.repeat} "
          "(hazrun's workspace snapshot warm)")
    print(f"{'runner':<14} {'median s':>9} {'per task ms':>12} {'vs make -j2':>12} "
          f"{'vs floor':>9}")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:<14} {m:9.3f} {1000 * m / args.n:12.2f} {m / base:11.2f}x "
              f"{m / floor:8.2f}x")
    if "base -j2" in times:
        # Each repeat ran every runner once, one after the other: a pair of
        # hazrun and base runs saw the same state of the machine, which
        # drifts by more than a small change is worth between repeats.
        ratios = [h / b for h, b in zip(times["hazrun -j2"], times["base -j2"])]
        print(f"hazrun / base, run by run: median {statistics.median(ratios):.3f}, "
              f"faster in {sum(r < 1 for r in ratios)} of {len(ratios)}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark hazrun's cache against make, doit and Turborepo (issue 4).

    python3 scripts/bench_cache.py [--repeat 5] [--runners make,doit,turbo,hazrun]
                                   [--skip-stat-cache] [--skip-big-file] [--keep]

Two generated workspaces, each task a real ``sh`` command run in its project
directory, with concurrency 2 for every runner:

* wide-1000: 1,000 independent projects, ``mkdir -p dist && cp src/in.txt
  dist/out.txt``, inputs ``src/**``, outputs ``dist/**``;
* layered-300: 300 projects in 6 layers of 50, each depending on 2-3
  projects of the layer below (a fixed seed); each ``cat``s its own
  ``src/in.txt`` and its dependencies' ``dist/out.txt`` into
  ``dist/out.txt`` (hazrun: ``deps = ["^build"]``).

Each runner gets its own copy of a workspace (a git work tree, so hazrun
and Turborepo list files through git), so that no runner sees the files
another one wrote.  Scenarios, timed as whole commands:

* cold: outputs and the runner's cache or database removed, every task runs;
* no-change: every task is up to date (a cache hit), outputs in place;
  measured after one untimed run, so that each runner is in its steady state;
* leaf (layered-300 only): the ``src/in.txt`` of the layer-0 project whose
  dependents make about 81 rebuilt tasks is changed before each run.

Repeats are interleaved across runners and the table shows medians with the
ratio to ``make -j2`` and to Turborepo.  Then two hazrun-only scenarios:
20,000 input files of 1 KiB in 100 projects, a no-change run with the stat
cache deleted (every input hashed) against one with it warm (CACHE-006), and
hashing a 1 GiB file against blake3's own throughput from Python.

Peers: doit is installed with ``pip install --target`` into the temp
directory when it is not importable; Turborepo with ``npm install turbo``
into each of its workspace copies (its tasks run through ``npm run``, which
needs a ``package.json`` per project and a lockfile).  A peer that cannot
be installed is skipped with a message.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
SEED = 0
LAYERS, WIDTH = 6, 50
LEAF_TARGET = 81
JOBS = 2
GITIGNORE = "dist/\n.haz/\nnode_modules/\n.turbo/\n.doit.db*\n__pycache__/\n"
TURBO_ENV = {"TURBO_TELEMETRY_DISABLED": "1", "DO_NOT_TRACK": "1",
             "TURBO_NO_UPDATE_NOTIFIER": "1", "NO_UPDATE_NOTIFIER": "1",
             "npm_config_update_notifier": "false", "npm_config_fund": "false",
             "npm_config_audit": "false"}


# -- the workspaces -----------------------------------------------------------

@dataclass
class Project:
    name: str
    deps: List[str] = field(default_factory=list)

    @property
    def rel(self) -> str:
        return f"p/{self.name}"

    def command(self) -> str:
        if not self.deps:
            return "mkdir -p dist && cp src/in.txt dist/out.txt"
        cats = " ".join(f"../{d}/dist/out.txt" for d in self.deps)
        return f"mkdir -p dist && cat src/in.txt {cats} > dist/out.txt"


def wide(n: int) -> List[Project]:
    return [Project(f"w{i:04d}") for i in range(n)]


def layered(seed: int = SEED, layers: int = LAYERS, width: int = WIDTH) -> List[Project]:
    rng = random.Random(seed)
    out: List[Project] = []
    for layer in range(layers):
        for i in range(width):
            deps = []
            if layer:
                below = rng.sample(range(width), rng.choice((2, 3)))
                deps = [f"l{layer - 1}-{j:02d}" for j in sorted(below)]
            out.append(Project(f"l{layer}-{i:02d}", deps))
    return out


def rebuilt_by(projects: Sequence[Project], name: str) -> int:
    """How many tasks a change to ``name``'s input rebuilds (itself included)."""
    dependents: Dict[str, List[str]] = {p.name: [] for p in projects}
    for p in projects:
        for d in p.deps:
            dependents[d].append(p.name)
    seen, todo = {name}, [name]
    while todo:
        for s in dependents[todo.pop()]:
            if s not in seen:
                seen.add(s)
                todo.append(s)
    return len(seen)


def choose_leaf(projects: Sequence[Project]) -> Tuple[str, int]:
    """The layer-0 project whose change rebuilds closest to LEAF_TARGET tasks."""
    layer0 = [p.name for p in projects if p.name.startswith("l0-")]
    counts = [(abs(rebuilt_by(projects, n) - LEAF_TARGET), n) for n in layer0]
    _, name = min(counts)
    return name, rebuilt_by(projects, name)


def write_sources(root: Path, projects: Sequence[Project]) -> None:
    for p in projects:
        (root / p.rel / "src").mkdir(parents=True, exist_ok=True)
        (root / p.rel / "src" / "in.txt").write_text(f"input of {p.name}\n")
    (root / ".gitignore").write_text(GITIGNORE)


def write_hazrun(root: Path, projects: Sequence[Project]) -> None:
    (root / "haz.toml").write_text('[workspace]\nmembers = ["p/*"]\n')
    for p in projects:
        lines = []
        if p.deps:
            lines.append("[project]\ndeps = [" + ", ".join(f'"{d}"' for d in p.deps) + "]\n")
        lines.append(f'[tasks.build]\ncmd = "{p.command()}"\ninputs = ["src/**"]\n'
                     'outputs = ["dist/**"]\ndeps = ["^build"]\n')
        (root / p.rel / "haz.toml").write_text("\n".join(lines))


def write_make(root: Path, projects: Sequence[Project]) -> None:
    outs = [f"{p.rel}/dist/out.txt" for p in projects]
    lines = [".PHONY: all", "all: " + " ".join(outs), ""]
    for p, out in zip(projects, outs):
        prereqs = [f"{p.rel}/src/in.txt"] + [f"p/{d}/dist/out.txt" for d in p.deps]
        lines += [f"{out}: {' '.join(prereqs)}", f"\tcd {p.rel} && {p.command()}", ""]
    (root / "Makefile").write_text("\n".join(lines))


DODO = '''\
import json

DOIT_CONFIG = {"verbosity": 0}


def task_build():
    for p in json.load(open("projects.json")):
        rel = "p/" + p["name"]
        yield {
            "name": p["name"],
            "actions": ["cd " + rel + " && " + p["cmd"]],
            "file_dep": [rel + "/src/in.txt"]
                        + ["p/" + d + "/dist/out.txt" for d in p["deps"]],
            "targets": [rel + "/dist/out.txt"],
        }
'''


def write_doit(root: Path, projects: Sequence[Project]) -> None:
    (root / "projects.json").write_text(json.dumps(
        [{"name": p.name, "deps": p.deps, "cmd": p.command()} for p in projects]))
    (root / "dodo.py").write_text(DODO)


def write_turbo(root: Path, projects: Sequence[Project], npm_version: str) -> None:
    (root / "package.json").write_text(json.dumps({
        "name": "bench-root", "private": True, "workspaces": ["p/*"],
        "packageManager": f"npm@{npm_version}"}, indent=2) + "\n")
    (root / "turbo.json").write_text(json.dumps({
        "$schema": "https://turborepo.com/schema.json",
        "tasks": {"build": {"dependsOn": ["^build"], "inputs": ["src/**"],
                            "outputs": ["dist/**"]}}}, indent=2) + "\n")
    for p in projects:
        (root / p.rel / "package.json").write_text(json.dumps({
            "name": p.name, "version": "0.0.0", "private": True,
            "scripts": {"build": p.command()},
            "dependencies": {d: "0.0.0" for d in p.deps}}, indent=2) + "\n")


def git_init(root: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=root, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-q",
        "-m", "workspace")


# -- the runners --------------------------------------------------------------

@dataclass
class Runner:
    name: str
    argv: List[str]
    env: Dict[str, str]
    write: Callable[[Path, Sequence[Project]], None]
    state: Tuple[str, ...]           # what "cold" removes besides dist/
    prepare: Optional[Callable[[Path], None]] = None   # after git init
    cold_repeat: Optional[int] = None  # None: --cold-repeat


def base_env() -> Dict[str, str]:
    env = dict(os.environ)
    # PYTHONDONTWRITEBYTECODE would make every Python run compile its modules
    # again, which no installed hazrun or doit does.
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHONPATH", "HAZ_CACHE_DIR",
                 "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    return env


def hazrun_runner(tree: Path = REPO, name: str = "hazrun") -> Runner:
    env = dict(base_env(), PYTHONPATH=str(tree))
    return Runner(f"{name} -j2", [sys.executable, "-m", "hazrun", "run", "build",
                                  f"-j{JOBS}", "--color", "never"],
                  env, write_hazrun, (".haz",))


def baseline_runner(tmp: Path, commit: str) -> Optional[Runner]:
    """hazrun as of ``commit`` (git archive into the temp directory), for a
    before/after column measured in the same run."""
    tree = tmp / f"hazrun-{commit}"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", commit, "hazrun"], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if archive.returncode != 0:
        print(f"--baseline {commit}: {archive.stderr.decode().strip()}; skipped")
        return None
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return hazrun_runner(tree, "base")


def make_runner() -> Optional[Runner]:
    if shutil.which("make") is None:
        print("make: not found, its column is skipped")
        return None
    return Runner("make -j2", ["make", "-s", f"-j{JOBS}"], base_env(), write_make, ())


def doit_runner(tmp: Path) -> Optional[Runner]:
    env = base_env()
    probe = subprocess.run([sys.executable, "-c", "import doit"], env=env,
                           stderr=subprocess.DEVNULL)
    if probe.returncode != 0:
        target = tmp / "pylib"
        print(f"doit: installing it into {target} with pip ...", flush=True)
        inst = subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                               "--disable-pip-version-check", "--target", str(target),
                               "doit"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if inst.returncode != 0:
            print("doit: pip install failed, its column is skipped:\n  "
                  + inst.stderr.decode(errors="replace").strip()[-500:])
            return None
        env["PYTHONPATH"] = str(target)
    return Runner("doit -n2", [sys.executable, "-m", "doit", "-n", str(JOBS), "-P",
                               "thread"], env, write_doit, (".doit.db", ".doit.db.db",
                                                           ".doit.db.dat", ".doit.db.dir",
                                                           ".doit.db.bak"))


def turbo_runner() -> Optional[Runner]:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        print("turbo: npm is unavailable, the Turborepo column is skipped")
        return None
    version = subprocess.run([npm, "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    env = dict(base_env(), **TURBO_ENV)

    def install(root: Path) -> None:
        print(f"turbo: npm install in {root} ...", flush=True)
        r = subprocess.run([npm, "install", "--save-dev", "turbo"], cwd=root, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError("npm install turbo failed: "
                               + r.stderr.decode(errors="replace")[-800:])
        if not (root / "package-lock.json").exists():
            raise RuntimeError("npm install made no package-lock.json")

    def write(root: Path, projects: Sequence[Project]) -> None:
        write_turbo(root, projects, version)

    return Runner("turbo", ["node_modules/.bin/turbo", "run", "build",
                            f"--concurrency={JOBS}", "--output-logs=errors-only"],
                  env, write, (".turbo", "node_modules/.cache/turbo"), prepare=install,
                  cold_repeat=1)


# -- measuring ------------------------------------------------------------------

class Failed(Exception):
    pass


def timed(runner: Runner, cwd: Path) -> Tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(runner.argv, cwd=cwd, env=runner.env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    text = (proc.stdout + proc.stderr).decode(errors="replace")
    if proc.returncode != 0:
        raise Failed(f"{runner.name} exited {proc.returncode} in {cwd}:\n{text[-2000:]}")
    return elapsed, text


def clean(root: Path, runner: Runner, projects: Sequence[Project]) -> None:
    for p in projects:
        shutil.rmtree(root / p.rel / "dist", ignore_errors=True)
    for rel in runner.state:
        path = root / rel
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


def check_outputs(root: Path, projects: Sequence[Project], runner: Runner) -> None:
    """Every output exists and holds its input followed by its deps' outputs."""
    expect: Dict[str, str] = {}
    for p in projects:  # layers come in order
        text = (root / p.rel / "src" / "in.txt").read_text()
        expect[p.name] = text + "".join(expect[d] for d in p.deps)
        try:
            found = (root / p.rel / "dist" / "out.txt").read_text()
        except OSError:
            raise Failed(f"{runner.name}: {p.rel}/dist/out.txt is missing") from None
        if found != expect[p.name]:
            raise Failed(f"{runner.name}: {p.rel}/dist/out.txt is wrong")


def summary_line(text: str) -> str:
    """hazrun's summary line or turbo's 'Cached:' line, for the report."""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("hazrun: ") and " tasks: " in s or s.startswith("Cached:"):
            return s
    return ""


@dataclass
class Table:
    rows: Dict[Tuple[str, str], Dict[str, List[float]]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def add(self, workspace: str, scenario: str, runner: str, seconds: float) -> None:
        self.rows.setdefault((workspace, scenario), {}).setdefault(runner, []).append(seconds)

    def print(self, runners: Sequence[str]) -> None:
        print()
        print(f"{'workspace':<12} {'scenario':<10} {'runner':<11} {'median ms':>10} "
              f"{'min ms':>8} {'n':>3} {'vs make':>8} {'vs turbo':>9}")
        for (ws, scenario), by_runner in self.rows.items():
            med = {r: statistics.median(ts) for r, ts in by_runner.items()}
            for r in runners:
                if r not in by_runner:
                    continue
                ts = by_runner[r]
                vs_make = f"{med[r] / med['make -j2']:7.2f}x" if "make -j2" in med else "-"
                vs_turbo = f"{med[r] / med['turbo']:8.2f}x" if "turbo" in med else "-"
                print(f"{ws:<12} {scenario:<10} {r:<11} {1000 * med[r]:10.1f} "
                      f"{1000 * min(ts):8.1f} {len(ts):3d} {vs_make:>8} {vs_turbo:>9}")
        for note in self.notes:
            print(note)


def bench_workspace(tmp: Path, label: str, projects: List[Project], runners: List[Runner],
                    args: argparse.Namespace, table: Table, leaf: Optional[str]) -> None:
    roots: Dict[str, Path] = {}
    live: List[Runner] = []
    for r in runners:
        root = tmp / label / r.name.split()[0]
        write_sources(root, projects)
        r.write(root, projects)
        git_init(root)
        try:
            if r.prepare is not None:
                r.prepare(root)
        except (RuntimeError, OSError) as e:
            print(f"{r.name}: skipped on {label}: {e}")
            continue
        roots[r.name] = root
        live.append(r)
    print(f"{label}: {len(projects)} projects; runners: {', '.join(r.name for r in live)}",
          flush=True)
    # cold: every task runs, nothing cached
    for i in range(args.cold_repeat):
        for r in live:
            if i >= (r.cold_repeat or args.cold_repeat):
                continue
            clean(roots[r.name], r, projects)
            t, _ = timed(r, roots[r.name])
            table.add(label, "cold", r.name, t)
            check_outputs(roots[r.name], projects, r)
    # no-change: one untimed run first (steady state), then the timed ones
    for r in live:
        timed(r, roots[r.name])
    time.sleep(2.1)  # sources older than any racy-timestamp margin, as in real trees
    for r in live:
        timed(r, roots[r.name])
    last: Dict[str, str] = {}
    for _ in range(args.repeat):
        for r in live:
            t, text = timed(r, roots[r.name])
            table.add(label, "no-change", r.name, t)
            last[r.name] = summary_line(text)
    for r in live:
        check_outputs(roots[r.name], projects, r)
        if last.get(r.name):
            table.notes.append(f"  {label} no-change, {r.name}: {last[r.name]}")
    if leaf is None:
        return
    for i in range(args.repeat):
        for r in live:
            src = roots[r.name] / "p" / leaf / "src" / "in.txt"
            src.write_text(f"input of {leaf}, change {i} at {time.time_ns()}\n")
            t, text = timed(r, roots[r.name])
            table.add(label, "leaf", r.name, t)
            last[r.name] = summary_line(text)
    for r in live:
        check_outputs(roots[r.name], projects, r)
        if last.get(r.name):
            table.notes.append(f"  {label} leaf, {r.name}: {last[r.name]}")


# -- hazrun alone: the stat cache and the hashing rate ---------------------------

STATS = """\
import json, sys
from hazrun.cache import Cache
from hazrun.scheduler import RunOptions, run_graph
from hazrun.workspace import load_workspace
ws = load_workspace(sys.argv[1])
cache = Cache(ws)
out = run_graph(ws, ["build"], options=RunOptions(jobs=2), cache=cache)
print(json.dumps(dict(cache.stats(), states=sorted({r.state.value for r in
                                                    out.results.values()}))))
"""


def bench_stat_cache(tmp: Path, args: argparse.Namespace, table: Table) -> None:
    root = tmp / "files-20k"
    projects = [Project(f"f{i:03d}") for i in range(100)]
    block = bytes(range(256)) * 4
    for p in projects:
        for d in range(10):
            src = root / p.rel / "src" / f"d{d}"
            src.mkdir(parents=True)
            for f in range(20):
                (src / f"f{f:02d}.txt").write_bytes(f"{p.name} {d} {f}\n".encode() + block)
    (root / ".gitignore").write_text(GITIGNORE)
    (root / "haz.toml").write_text('[workspace]\nmembers = ["p/*"]\n')
    for p in projects:
        (root / p.rel / "haz.toml").write_text(
            '[tasks.build]\ncmd = "mkdir -p dist && cp src/d0/f00.txt dist/out.txt"\n'
            'inputs = ["src/**"]\noutputs = ["dist/**"]\n')
    git_init(root)
    runner = hazrun_runner()
    timed(runner, root)  # fills the cache
    time.sleep(2.1)      # past the racy-timestamp margin
    timed(runner, root)
    stat_cache = root / ".haz" / "statcache.bin"
    for _ in range(args.repeat):
        stat_cache.unlink()
        t, _ = timed(runner, root)
        table.add("files-20k", "cold-hash", runner.name, t)
        t, text = timed(runner, root)
        table.add("files-20k", "warm-stat", runner.name, t)
    cold = statistics.median(table.rows[("files-20k", "cold-hash")][runner.name])
    warm = statistics.median(table.rows[("files-20k", "warm-stat")][runner.name])
    proc = subprocess.run([sys.executable, "-c", STATS, str(root)], env=runner.env,
                          capture_output=True, text=True, check=True)
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    table.notes.append(
        f"  files-20k: 20,000 inputs of 1 KiB in 100 projects; warm/cold-hash = "
        f"{warm / cold:.2f} (target <= 0.20); a warm no-change run read "
        f"{stats['files_hashed']} files ({stats['bytes_hashed']} bytes), "
        f"{stats['stat_hits']} stat-cache hits, states {stats['states']}")


BIG = """\
import os, sys, time, blake3
sys.path.insert(0, sys.argv[2])
from hazrun.cache.hashing import StatCache, hash_file
path = sys.argv[1]
size = os.path.getsize(path)
def rate(fn, n=3):
    best = None
    for _ in range(n):
        t = time.perf_counter(); fn(); dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return size / best / 1e9
with open(path, "rb") as f:
    data = f.read()
res = {
 "blake3 in memory, threads": rate(lambda: blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest()),
 "blake3 in memory, 1 thread": rate(lambda: blake3.blake3(data).digest()),
 "blake3 update_mmap, threads": rate(lambda: blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(path).digest()),
 "hazrun hash_file": rate(lambda: hash_file(path)),
 "hazrun stat cache probe (miss)": rate(lambda: StatCache(None).probe("big", path)),
}
del data
for k, v in res.items():
    print(f"{k}\\t{v:.2f}")
"""


def bench_big_file(tmp: Path) -> List[str]:
    path = tmp / "big.bin"
    chunk = os.urandom(16 << 20)
    with open(path, "wb") as f:
        for _ in range(64):
            f.write(chunk)
    proc = subprocess.run([sys.executable, "-c", BIG, str(path), str(REPO)],
                          capture_output=True, text=True, check=True)
    path.unlink()
    rates = dict(line.split("\t") for line in proc.stdout.strip().splitlines())
    limit = float(rates["blake3 update_mmap, threads"])
    lines = ["", "hashing a 1 GiB file (page cache warm), GB/s, best of 3:"]
    for k, v in rates.items():
        lines.append(f"  {k:<32} {float(v):6.2f}  {float(v) / limit:5.2f}x of update_mmap")
    return lines


def python_floor(env: Dict[str, str]) -> List[str]:
    """What any Python program pays here before its first line runs."""
    out = []
    for what, argv in (("python -c pass", [sys.executable, "-c", "pass"]),
                       ("python -S -c pass", [sys.executable, "-S", "-c", "pass"]),
                       ("python -m hazrun --version",
                        [sys.executable, "-m", "hazrun", "--version"])):
        ts = []
        for _ in range(7):
            t0 = time.perf_counter()
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
            ts.append(time.perf_counter() - t0)
        out.append(f"  {what:<28} {1000 * statistics.median(ts):7.1f} ms")
    return ["", "startup floor on this machine (median of 7):"] + out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per scenario")
    ap.add_argument("--cold-repeat", type=int, default=3,
                    help="timed cold runs (Turborepo: 1, its cold runs are long)")
    ap.add_argument("--runners", default="make,doit,turbo,hazrun",
                    help="comma-separated subset of make,doit,turbo,hazrun")
    ap.add_argument("--workspaces", default="wide,layered",
                    help="comma-separated subset of wide,layered")
    ap.add_argument("--wide", type=int, default=1000, help="projects of wide")
    ap.add_argument("--skip-stat-cache", action="store_true")
    ap.add_argument("--skip-big-file", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    ap.add_argument("--baseline", metavar="COMMIT",
                    help="also run hazrun as of COMMIT (column 'base')")
    args = ap.parse_args()
    wanted = args.runners.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="hazrun-bench-cache-"))
    table = Table()
    try:
        runners: List[Runner] = []
        for name in ("make", "doit", "turbo", "hazrun"):
            if name not in wanted:
                continue
            r = {"make": make_runner, "doit": lambda: doit_runner(tmp),
                 "turbo": turbo_runner, "hazrun": hazrun_runner}[name]()
            if r is not None:
                runners.append(r)
        if args.baseline:
            r = baseline_runner(tmp, args.baseline)
            if r is not None:
                runners.append(r)
        order = [r.name for r in runners]
        print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
        leaf_projects = layered()
        leaf, count = choose_leaf(leaf_projects)
        print(f"layered-300: seed {SEED}; leaf {leaf} rebuilds {count} tasks", flush=True)
        for ws in args.workspaces.split(","):
            if ws == "wide":
                bench_workspace(tmp, f"wide-{args.wide}", wide(args.wide), runners, args,
                                table, None)
            elif ws == "layered":
                bench_workspace(tmp, "layered-300", leaf_projects, runners, args, table,
                                leaf)
        if not args.skip_stat_cache and "hazrun" in wanted:
            bench_stat_cache(tmp, args, table)
        table.print(order)
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
        lines: List[str] = []
        if not args.skip_big_file:
            lines += bench_big_file(tmp)
        lines += python_floor(hazrun_runner().env)
        print("\n".join(lines))
    finally:
        for r in runners if "runners" in dir() else []:
            if r.name == "turbo":
                for root in tmp.glob("*/turbo"):
                    subprocess.run(["node_modules/.bin/turbo", "daemon", "stop"], cwd=root,
                                   env=r.env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

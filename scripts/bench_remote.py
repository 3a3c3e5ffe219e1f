#!/usr/bin/env python3
"""Benchmark the remote cache on loopback (issue 8, REMOTE-003/006).

    python3 scripts/bench_remote.py [--repeat 3] [--server nginx|turbo] [-j 2]

A layered-300-like workspace (300 projects in 6 layers of 50, each
depending on 2-3 projects of the layer below, a fixed seed; each task
``cat``s its input and its dependencies' outputs into ``dist/out.txt``),
in a git work tree, against a real server on 127.0.0.1 (nginx with WebDAV,
or turborepo-remote-cache from ``.ci/node``; see tests/remote_servers.py).
Every number is the median of ``--repeat`` runs, each on fresh copies.

* cold, no remote / cold, uploading: every task runs; the second also
  uploads every result (the run waits for its uploads before it exits);
* remote hits: an empty local cache and a full remote one: every task is
  downloaded, verified, stored locally and restored;
* local hits: the same run with a full local cache (outputs removed, so
  that both restore the same files);
* no change: outputs in place, local cache full.

It prints wall times, requests and the bytes that crossed the loopback
(answer bodies and whole requests, from the server's log; nginx only).

The cold runs write and fsync every output and cache entry: on a disk whose
speed drifts (a VM's burst credits), ``TMPDIR=/dev/shm`` measures hazrun's
own cost without the disk's noise.
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
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from remote_servers import TOKEN, Nginx, TurboServer  # noqa: E402

SEED, LAYERS, WIDTH = 0, 6, 50


def layered() -> Dict[str, List[str]]:
    rng = random.Random(SEED)
    out: Dict[str, List[str]] = {}
    for layer in range(LAYERS):
        for i in range(WIDTH):
            deps = []
            if layer:
                below = rng.sample(range(WIDTH), rng.choice((2, 3)))
                deps = [f"l{layer - 1}-{j:02d}" for j in sorted(below)]
            out[f"l{layer}-{i:02d}"] = deps
    return out


def generate(root: Path, projects: Dict[str, List[str]]) -> None:
    (root / "haz.toml").write_text('[workspace]\nmembers = ["p/*"]\n')
    (root / ".gitignore").write_text("dist/\n.haz/\n")
    for name, deps in projects.items():
        d = root / "p" / name
        (d / "src").mkdir(parents=True)
        (d / "src" / "in.txt").write_text(f"input of {name}\n" * 20)
        cats = " ".join(f"../{x}/dist/out.txt" for x in deps)
        cmd = f"mkdir -p dist && cat src/in.txt {cats} > dist/out.txt && echo built {name}"
        head = ("[project]\ndeps = [" + ", ".join(f'"{x}"' for x in deps) + "]\n\n"
                if deps else "")
        (d / "haz.toml").write_text(head + f'[tasks.build]\ncmd = "{cmd}"\n'
                                    'inputs = ["src/**"]\noutputs = ["dist/**"]\n'
                                    'deps = ["^build"]\n')
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(git + ["init", "-q"], cwd=root, check=True)
    subprocess.run(git + ["add", "-A"], cwd=root, check=True)
    subprocess.run(git + ["commit", "-q", "-m", "bench"], cwd=root, check=True)


def clean_outputs(root: Path) -> None:
    for d in (root / "p").iterdir():
        shutil.rmtree(d / "dist", ignore_errors=True)
    shutil.rmtree(root / ".haz", ignore_errors=True)


class Bench:
    def __init__(self, tmp: Path, server_kind: str, jobs: int):
        self.tmp = tmp
        self.jobs = jobs
        self.kind = server_kind
        self.template = tmp / "template"
        self.template.mkdir()
        generate(self.template, layered())
        if server_kind == "nginx":
            self.server = Nginx(tmp / "server")
        else:
            self.server = TurboServer(tmp / "server", TOKEN)
        self.n = 0

    def fresh(self) -> tuple:
        self.n += 1
        root = self.tmp / f"ws{self.n}"
        shutil.copytree(self.template, root, symlinks=True)
        return root, self.tmp / f"cache{self.n}"

    def remote_env(self, space: str) -> Dict[str, str]:
        if self.kind == "nginx":
            return {"HAZ_REMOTE_CACHE_URL": self.server.url(space)}
        return {"HAZ_REMOTE_CACHE_URL": self.server.url(), "HAZ_REMOTE_CACHE_PROTOCOL":
                "turbo", "HAZ_REMOTE_CACHE_TEAM": space, "HAZ_REMOTE_CACHE_TOKEN": TOKEN}

    def run(self, root: Path, cache: Path, remote: Optional[Dict[str, str]]) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_")}
        env["PYTHONPATH"] = str(REPO)
        env.pop("MAKEFLAGS", None)
        env.update(remote or {})
        summary = self.tmp / "summary.json"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "hazrun", "-C", str(root),
                               "--cache-dir", str(cache), "run", "build", f"-j{self.jobs}",
                               "--output", "none", "--summary-json", str(summary)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0 or b"warning" in proc.stderr:
            raise SystemExit(f"hazrun failed or warned: {proc.stderr.decode()[-3000:]}")
        doc = json.loads(summary.read_text())
        states = {t["state"] for t in doc["tasks"]}
        return {"s": elapsed, "states": states, "remote": doc.get("remote")}

    def traffic(self, space: str):
        if self.kind != "nginx":
            return None, len(self.server.requests(space))
        return self.server.traffic(space), len(self.server.requests(space))


def median(xs: List[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--server", choices=("nginx", "turbo"), default="nginx")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    args = ap.parse_args()
    rows: Dict[str, List[float]] = {k: [] for k in (
        "cold, no remote", "cold, lookups only (read-only)", "cold, uploading",
        "remote hits (empty local cache)",
        "local hits (full local cache)", "no change")}
    traffic = {}
    with tempfile.TemporaryDirectory(prefix="hazrun-bench-remote-") as tmp:
        bench = Bench(Path(tmp), args.server, args.jobs)
        try:
            for i in range(args.repeat):
                space = f"r{i}"
                root, cache = bench.fresh()
                r = bench.run(root, cache, None)
                assert r["states"] == {"succeeded"}, r
                rows["cold, no remote"].append(r["s"])

                # Every lookup misses (an empty space) and nothing is
                # uploaded: what the lookups alone add to a cold run.
                root, cache = bench.fresh()
                env = dict(bench.remote_env(f"empty{i}"), HAZ_REMOTE_CACHE_READ_ONLY="1")
                r = bench.run(root, cache, env)
                assert r["states"] == {"succeeded"} and r["remote"]["uploads"] == 0, r
                rows["cold, lookups only (read-only)"].append(r["s"])

                root, cache = bench.fresh()
                before = bench.traffic(space)
                r = bench.run(root, cache, bench.remote_env(space))
                assert r["states"] == {"succeeded"} and r["remote"]["uploads"] == 300, r
                rows["cold, uploading"].append(r["s"])
                after_up = bench.traffic(space)

                root, cache = bench.fresh()
                r = bench.run(root, cache, bench.remote_env(space))
                assert r["states"] == {"cached"} and r["remote"]["hits"] == 300, r
                rows["remote hits (empty local cache)"].append(r["s"])
                after_down = bench.traffic(space)
                traffic = {"upload": (before, after_up), "download": (after_up, after_down)}

                clean_outputs(root)
                r = bench.run(root, cache, bench.remote_env(space))
                assert r["states"] == {"cached"} and r["remote"]["hits"] == 0, r
                rows["local hits (full local cache)"].append(r["s"])
                assert bench.traffic(space) == after_down, "a local hit asked the remote"

                r = bench.run(root, cache, bench.remote_env(space))
                rows["no change"].append(r["s"])
        finally:
            bench.server.stop()
    print(f"layered-300 (6 x 50, 2-3 deps each), -j{args.jobs}, server {args.server} on "
          f"127.0.0.1, median of {args.repeat}")
    base = median(rows["local hits (full local cache)"])
    print(f"{'scenario':<34} {'median s':>9} {'vs local hits':>14}")
    for name, xs in rows.items():
        print(f"{name:<34} {median(xs):9.2f} {median(xs) / base:13.2f}x")
    cold = median(rows["cold, no remote"])
    for name in ("cold, lookups only (read-only)", "cold, uploading"):
        print(f"{name} vs cold, no remote: {100 * (median(rows[name]) / cold - 1):+.0f}%")
    lookups = median(rows["cold, lookups only (read-only)"])
    print(f"what the uploads add (cold, uploading vs lookups only): "
          f"{100 * (median(rows['cold, uploading']) / lookups - 1):+.0f}%")
    for what, ((b, nb), (a, na)) in traffic.items():
        line = f"{what}: {na - nb} requests"
        if a is not None and b is not None:
            line += (f", {(a[0] - b[0]) / 1024:.0f} KiB answered, "
                     f"{(a[1] - b[1]) / 1024:.0f} KiB sent")
        print(line)
    print("local hits: 0 requests, 0 bytes over the network")


if __name__ == "__main__":
    main()

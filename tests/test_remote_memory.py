"""REMOTE-002/003: artifacts stream through files, never through memory.

A 200 MB output goes up to nginx and comes back down into another clone;
hazrun's peak RSS (VmHWM, polled) grows by no more than a few MB compared
with the same round trip of a 1 KiB output.  (Not compared with runs
without a remote: those do not even import the HTTP client, whose few MB
say nothing about how artifacts flow.)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, hazrun_cmd, write_files
from remote_servers import nginx_server  # noqa: F401

SIZE = 200 << 20
SLACK = 8 << 20   # "a few MB": buffers, the tar and gzip state, one connection


def files(size: int):
    return {"haz.toml": '[workspace]\n[tasks.big]\n'
            f'cmd = "mkdir -p out && head -c {size} /dev/urandom > out/big.bin && echo done"\n'
            'outputs = ["out/**"]\n'}


def peak_rss(root: Path, cache: Path, url, summary: Path):
    """Run hazrun; return its peak RSS in bytes and the summary document."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("MAKEFLAGS", None)
    if url is not None:
        env["HAZ_REMOTE_CACHE_URL"] = url
    proc = subprocess.Popen(hazrun_cmd("-C", str(root), "--cache-dir", str(cache), "run",
                                       "big", "--summary-json", str(summary)),
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    status = Path(f"/proc/{proc.pid}/status")
    peak = 0
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(0.01)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    assert proc.returncode == 0, err
    return peak, json.loads(summary.read_text())


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_remote_003_200mb_round_trip_in_constant_memory(nginx_server, tmp_path):
    peaks = {}
    dirs = []
    try:
        for name, size in (("small", 1024), ("big", SIZE)):
            url = nginx_server.url(f"memory-{name}")
            up = write_files(tmp_path / f"{name}-up", files(size))
            down = write_files(tmp_path / f"{name}-down", files(size))
            dirs += [up, down]
            peaks[name, "upload"], doc = peak_rss(up, tmp_path / f"{name}-c1", url,
                                                  tmp_path / f"{name}-1.json")
            assert doc["remote"]["uploads"] == 1, doc
            peaks[name, "download"], doc = peak_rss(down, tmp_path / f"{name}-c2", url,
                                                    tmp_path / f"{name}-2.json")
            assert doc["remote"]["hits"] == 1 and doc["tasks"][0]["state"] == "cached", doc
            assert (down / "out/big.bin").stat().st_size == size
            assert digest(down / "out/big.bin") == digest(up / "out/big.bin")
    finally:
        for d in dirs:
            shutil.rmtree(d / "out", ignore_errors=True)
        for c in tmp_path.glob("*-c[12]"):
            shutil.rmtree(c, ignore_errors=True)
        for name in ("small", "big"):
            shutil.rmtree(nginx_server.root / f"memory-{name}", ignore_errors=True)
    mb = 1 << 20
    for way in ("upload", "download"):
        big, small = peaks["big", way], peaks["small", way]
        assert big - small <= SLACK, \
            f"{way} peak {big / mb:.1f} MB for 200 MB vs {small / mb:.1f} MB for 1 KiB"

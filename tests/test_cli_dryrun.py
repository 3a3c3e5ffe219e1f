"""CLI-002: ``run --dry-run`` prints each task's key and hit/miss, runs
nothing, and with -v says why each miss misses."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from conftest import run_hazrun

WS = """\
[workspace]
[tasks.gen]
cmd = "mkdir -p out && cp src/a out/g && touch ran-gen"
inputs = ["src/**"]
outputs = ["out/**"]
[tasks.use]
cmd = "cat out/g && touch ran-use"
deps = ["gen"]
inputs = ["out/**"]
[tasks.other]
cmd = "touch ran-other"
inputs = ["src/**"]
cache = false
"""

LINE = re.compile(r"(\S+)\s+([0-9a-f]{64}|\?)\s+(.*)")


@pytest.fixture
def ws(make_ws):
    return make_ws({"haz.toml": WS, "src/a": "1\n"})


def dry(ws, *args):
    proc = run_hazrun(ws, "run", "use", "other", "--dry-run", *args)
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        m = LINE.fullmatch(line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3))
    return rows, proc.stdout


def real_keys(ws, tmp_path):
    summary = tmp_path / "s.json"
    proc = run_hazrun(ws, "run", "use", "other", "--summary-json", str(summary))
    assert proc.returncode == 0, proc.stderr
    return {t["label"]: t["key"] for t in json.loads(summary.read_text())["tasks"]}


def test_cli_002_dry_run_runs_nothing_and_prints_canonical_order(ws):
    rows, out = dry(ws)
    assert list(rows) == ["root:gen", "root:other", "root:use"]
    assert rows["root:gen"][1] == "miss"
    assert rows["root:other"][1] == "miss (cache = false)"
    assert rows["root:use"] == ("?", "miss (upstream)")  # gen's outputs are not made yet
    assert not list(ws.glob("ran-*")) and not (ws / "out").exists()


def test_cli_002_after_a_run_every_key_is_the_runs_and_hits(ws, tmp_path):
    keys = real_keys(ws, tmp_path)
    rows, _ = dry(ws)
    assert rows["root:gen"] == (keys["root:gen"], "hit")
    assert rows["root:use"] == (keys["root:use"], "hit")
    rows, _ = dry(ws, "--force")
    assert rows["root:gen"][1] == "miss (--force)"


def test_cli_002_outputs_a_run_would_restore_count_as_restored(ws, tmp_path):
    """A fresh checkout: gen's outputs are not on disk, but a run restores
    them before use's key is taken; the dry run says what the run does."""
    keys = real_keys(ws, tmp_path)
    shutil.rmtree(ws / "out")
    rows, _ = dry(ws)
    assert rows["root:use"] == (keys["root:use"], "hit")
    assert not (ws / "out").exists()  # and still nothing written


def test_cli_002_verbose_says_why_a_task_misses(ws, tmp_path):
    real_keys(ws, tmp_path)
    (ws / "src/a").write_text("2\n")
    rows, out = dry(ws, "-v")
    assert rows["root:gen"][1] == "miss"
    assert "    input file modified: src/a" in out.splitlines()
    assert rows["root:use"] == ("?", "miss (upstream)")
    # Which dependency it waits for, not only that it waits.
    assert "    root:gen misses, so what it hands on is not known yet" in out.splitlines()


def test_cli_002_restored_symlinks_and_links_into_restored_outputs(make_ws, tmp_path):
    """A hit's outputs include a symlink, and a committed link of another
    task leads into them: after a fresh checkout the dry run still says
    what the run does."""
    ws = make_ws({"haz.toml": '[workspace]\nmembers = ["a", "b"]\n',
                  "a/haz.toml": '[tasks.build]\ncmd = "mkdir -p out && echo r > out/real.txt '
                                '&& ln -sf real.txt out/link"\noutputs = ["out/**"]\n',
                  "b/haz.toml": '[tasks.build]\ncmd = "cat in.txt ../a/out/link"\n'
                                'deps = ["a:build"]\ninputs = ["in.txt", "$root/a/out/**"]\n'})
    os.symlink("../a/out/real.txt", ws / "b/in.txt")
    summary = tmp_path / "s.json"
    assert run_hazrun(ws, "run", "build", "--summary-json", str(summary)).returncode == 0
    keys = {t["label"]: t["key"] for t in json.loads(summary.read_text())["tasks"]}
    shutil.rmtree(ws / "a/out")
    proc = run_hazrun(ws, "run", "build", "--dry-run", "-v")
    rows = {m.group(1): (m.group(2), m.group(3))
            for m in map(LINE.fullmatch, proc.stdout.splitlines()) if m}
    assert rows["b:build"] == (keys["b:build"], "hit"), proc.stdout
    assert "2 cached" in run_hazrun(ws, "run", "build").stderr


def test_cli_002_dry_run_refuses_summary_json_it_could_not_fill(ws, tmp_path):
    """CLI-003's states say what happened; a dry run makes nothing happen,
    and a silently missing file broke the scripts that read it."""
    summary = tmp_path / "s.json"
    proc = run_hazrun(ws, "run", "use", "--dry-run", "--summary-json", str(summary))
    assert proc.returncode == 2
    assert "--summary-json reports what a run did, and --dry-run runs nothing" in proc.stderr
    assert not summary.exists() and not list(ws.glob("ran-*"))

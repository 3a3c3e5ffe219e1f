"""CACHE-007: info, prune (LRU, size, age, 0) and clean, library and command."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hazrun.cache import clean, info, parse_age, parse_size, prune
from hazrun.cache.housekeeping import format_size
from hazrun.cache.model import StoreError
from hazrun.errors import UsageError

from conftest import REPO, hazrun_cmd
from test_cache_support import make_workspace, open_cache

GiB = 1 << 30


@pytest.mark.parametrize("text,expected", [
    ("0", 0), ("7", 7), ("10K", 10 << 10), ("10k", 10 << 10), ("500M", 500 << 20),
    ("5G", 5 * GiB), ("2T", 2 << 40), ("1.5G", int(1.5 * GiB)), ("5GiB", 5 * GiB),
    ("5GB", 5 * GiB), (" 3 M ", 3 << 20)])
def test_cache_007_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "5X", "-1", "5 G B", "1e3", "five"])
def test_cache_007_parse_size_rejects_with_the_value(text):
    with pytest.raises(UsageError) as e:
        parse_size(text)
    assert f"'{text}'" in str(e.value)


@pytest.mark.parametrize("text,expected", [
    ("0", 0), ("45", 45), ("45s", 45), ("5m", 300), ("12h", 43200), ("30d", 2592000),
    ("1.5h", 5400), ("2D", 172800)])
def test_cache_007_parse_age(text, expected):
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["", "d", "3w", "-1d", "1y", "soon"])
def test_cache_007_parse_age_rejects_with_the_value(text):
    with pytest.raises(UsageError) as e:
        parse_age(text)
    assert f"'{text}'" in str(e.value)


def test_cache_007_format_size():
    assert format_size(0) == "0 B" and format_size(1536) == "1.5 KiB"
    assert format_size(5 * GiB) == "5.0 GiB"


@pytest.fixture
def populated(tmp_path):
    """Three entries of 100 KiB of output each, used at t=1000, 2000, 3000;
    the 'shared' blob is an output of all three."""
    files = {"haz.toml": '[workspace]\nmembers = ["p/*"]\n'}
    for name in ("old", "mid", "new"):
        files[f"p/{name}/haz.toml"] = '[tasks.build]\ncmd = "x"\noutputs = ["out/**"]\n'
        files[f"p/{name}/out/shared.txt"] = "shared by everyone\n"
    root = make_workspace(tmp_path / "ws", files)
    keys = {}
    with open_cache(root) as c:
        for i, name in enumerate(("old", "mid", "new")):
            (root / f"p/{name}/out/own.bin").write_bytes(os.urandom(100 << 10))
            label = f"{name}:build"
            k = c.compute_key(label, {})
            c.store(label, k, c.collect_outputs(label), name.encode(), b"", 1.0)
            f = c.path / "entries" / k.key[:2] / (k.key + ".json")
            os.utime(f, (1000 * (i + 1),) * 2)
            keys[name] = k
    return root, root / ".haz" / "cache", keys


def present(cache_dir: Path, keys):
    return sorted(n for n, k in keys.items()
                  if (cache_dir / "entries" / k.key[:2] / (k.key + ".json")).exists())


def test_cache_007_info(populated):
    root, cache_dir, keys = populated
    i = info(cache_dir)
    assert i.path == cache_dir and i.entries == 3
    assert i.blobs == 3 + 1 + 3 + 1  # own outputs, shared, three stdouts, empty stderr
    assert 300 << 10 < i.bytes < 320 << 10


def test_cache_007_prune_by_size_removes_least_recently_used_first(populated):
    root, cache_dir, keys = populated
    r = prune(cache_dir, max_size=250 << 10, now=10_000)
    assert present(cache_dir, keys) == ["mid", "new"]
    assert r.removed_entries == 1 and r.entries == 2 and r.bytes <= 250 << 10
    assert r.removed_bytes >= 100 << 10
    prune(cache_dir, max_size=150 << 10, now=10_000)
    assert present(cache_dir, keys) == ["new"]
    # The shared blob is still there: 'new' names it.
    with open_cache(root) as c:
        os.unlink(root / "p/new/out/shared.txt")
        c.restore("new:build", c.lookup(keys["new"])).close()
    assert (root / "p/new/out/shared.txt").read_text() == "shared by everyone\n"


def test_cache_007_a_hit_refreshes_use_time(populated):
    root, cache_dir, keys = populated
    with open_cache(root) as c:
        c.restore("old:build", c.lookup(keys["old"])).close()  # now the newest
    prune(cache_dir, max_size=250 << 10)
    assert present(cache_dir, keys) == ["new", "old"]


def test_cache_007_prune_by_age(populated):
    root, cache_dir, keys = populated
    r = prune(cache_dir, max_age=7500, now=10_000)  # used before t=2500
    assert present(cache_dir, keys) == ["new"]
    assert r.removed_entries == 2
    assert info(cache_dir).blobs == 4  # new's own output, shared, stdout, stderr


@pytest.mark.parametrize("kw", [{"max_size": 0}, {"max_age": 0}])
def test_cache_007_zero_prunes_everything(populated, kw):
    root, cache_dir, keys = populated
    prune(cache_dir, **kw)
    assert present(cache_dir, keys) == []
    i = info(cache_dir)
    assert i.entries == 0 and i.blobs == 0


def test_cache_007_prune_removes_orphans_corrupt_entries_and_temp_files(populated):
    root, cache_dir, keys = populated
    orphan = cache_dir / "blobs" / "ab" / ("c" * 62)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"nobody names me")
    crashed = cache_dir / "tmp" / f"{dead_pid()}-dead.tmp"
    crashed.write_bytes(b"left by a crash")
    os.utime(crashed, (time.time() - 7200,) * 2)
    k = keys["mid"].key
    (cache_dir / "entries" / k[:2] / (k + ".json")).write_bytes(b"{trunc")
    r = prune(cache_dir, max_size=10 * GiB)
    assert not orphan.exists() and os.listdir(cache_dir / "tmp") == []
    assert present(cache_dir, keys) == ["new", "old"]
    assert r.removed_entries == 1


def test_cache_007_clean(populated):
    root, cache_dir, keys = populated
    r = clean(cache_dir)
    assert r.removed_entries == 3
    assert info(cache_dir).entries == 0 and info(cache_dir).blobs == 0
    with open_cache(root) as c:  # still usable afterwards
        k = c.compute_key("old:build", {})
        c.store("old:build", k, c.collect_outputs("old:build"), b"", b"", 1.0)
        assert c.lookup(k) is not None


def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("action", ["prune", "clean"])
def test_cache_007_a_running_writers_temp_files_are_left_alone(populated, action):
    """A concurrent run's staged blobs wait in tmp/ for its commit
    (CACHE-003): only the files of writers that are gone are removed."""
    root, cache_dir, keys = populated
    tmp = cache_dir / "tmp"
    now = time.time()
    files = {"live": (os.getpid(), 0), "live, a day old": (os.getpid(), 90000),
             "dead, fresh": (dead_pid(), 60), "dead, two hours old": (dead_pid(), 7200)}
    for what, (pid, age) in files.items():
        f = tmp / f"{pid}-{abs(hash(what)):x}.tmp"
        f.write_bytes(what.encode())
        os.utime(f, (now - age,) * 2)
    if action == "prune":
        prune(cache_dir, max_size=10 * GiB)
    else:
        clean(cache_dir)
    left = sorted(f.read_text() for f in tmp.iterdir())
    assert left == ["dead, fresh", "live"]


_WRITER = """
import os, sys, time
from pathlib import Path
from hazrun.cache.store import Store
store = Store(Path(sys.argv[1]))
store.ensure()
fd, path = store._open_tmp()  # a blob being staged (CACHE-003)
os.write(fd, b"x" * 100000)
print(path, flush=True)
time.sleep(120)
"""


def _writer(cache_dir):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(cache_dir)],
                            env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


@pytest.mark.parametrize("action", ["prune", "clean", "next store"])
def test_cache_007_a_killed_writers_temp_files_go_at_once(populated, action):
    """A hazrun killed in the middle of a store leaves its staged blobs in
    tmp/: its owner lock tells it is gone, so the next clean, prune or
    store removes them at once (they stayed an hour, hundreds of MB, and
    clean said it removed nothing); a live writer's stay."""
    root, cache_dir, keys = populated
    dead, dead_file = _writer(cache_dir)
    live, live_file = _writer(cache_dir)
    try:
        dead.kill()
        dead.wait()
        assert dead_file.exists()
        if action == "prune":
            prune(cache_dir, max_size=10 * GiB)
        elif action == "clean":
            clean(cache_dir)
        else:
            (root / "p/old/out/own.bin").write_bytes(b"changed")
            with open_cache(root) as c:
                k = c.compute_key("old:build", {})
                c.store("old:build", k, c.collect_outputs("old:build"), b"", b"", 1.0)
        assert not dead_file.exists()
        assert live_file.exists(), "a live writer's staged blob was removed"
        owners = [n for n in os.listdir(cache_dir / "tmp") if n.endswith(".owner")]
        assert owners == [live_file.name.rsplit("-", 1)[0] + ".owner"]
    finally:
        live.kill()
        live.wait()


def test_cache_007_a_store_after_tmp_was_removed(populated):
    root, cache_dir, keys = populated
    clean(cache_dir)
    shutil.rmtree(cache_dir / "tmp")  # by hand, or by an older hazrun's clean
    with open_cache(root) as c:
        k = c.compute_key("old:build", {})
        c.store("old:build", k, c.collect_outputs("old:build"), b"out", b"", 1.0)
        assert c.lookup(k) is not None


def test_cache_003_a_prune_between_stage_and_commit_stores_nothing_incomplete(populated):
    """Staging finds the shared blob stored and does not copy it; a prune
    then removes it before the commit: the entry must not be published."""
    root, cache_dir, keys = populated
    (root / "p/old/out/own.bin").write_bytes(b"new content")
    with open_cache(root) as c:
        k = c.compute_key("old:build", {})
        staged = c.stage("old:build", k, c.collect_outputs("old:build"), b"old", b"", 1.0)
        prune(cache_dir, max_size=0)
        with pytest.raises(StoreError, match="removed meanwhile"):
            c.commit(staged)
        assert c.lookup(k) is None  # no entry whose blobs are missing
        c.store("old:build", k, c.collect_outputs("old:build"), b"old", b"", 1.0)
        assert c.lookup(k) is not None


def test_cache_007_refuses_another_tools_tagged_cache(tmp_path, hazrun_env):
    """cargo's target/ carries the standard CACHEDIR.TAG too."""
    target = tmp_path / "target"
    (target / "tmp").mkdir(parents=True)
    (target / "tmp" / "build-artifact").write_text("not hazrun's")
    (target / "CACHEDIR.TAG").write_bytes(
        b"Signature: 8a477f597d28d172789f06886806bc55\n"
        b"# This file is a cache directory tag created by cargo.\n")
    for action in (lambda: clean(target), lambda: prune(target, max_size=0)):
        with pytest.raises(UsageError, match="not a hazrun cache directory"):
            action()
    p = run(["cache", "clean", "--cache-dir", str(target)], tmp_path, hazrun_env)
    assert p.returncode == 2 and "not a hazrun cache directory" in p.stderr
    assert (target / "tmp" / "build-artifact").read_text() == "not hazrun's"


def test_cache_007_missing_cache_is_empty(tmp_path):
    assert info(tmp_path / "none").entries == 0
    assert prune(tmp_path / "none", max_size=0).removed_entries == 0
    assert clean(tmp_path / "none").removed_entries == 0


def test_cache_007_refuses_a_directory_that_is_not_a_cache(tmp_path):
    (tmp_path / "home" / "blobs").mkdir(parents=True)
    (tmp_path / "home" / "blobs" / "precious").write_text("mine")
    with pytest.raises(UsageError):
        clean(tmp_path / "home")
    with pytest.raises(UsageError):
        prune(tmp_path / "home", max_size=0)
    assert (tmp_path / "home" / "blobs" / "precious").exists()


def _one_task_workspace(tmp_path, task='cmd = "mkdir -p out && echo x > out/x"\n'
                                       'outputs = ["out/**"]\n'):
    ws = tmp_path / "ws"
    (ws / "p" / "a").mkdir(parents=True)
    (ws / "haz.toml").write_text('[workspace]\nmembers = ["p/*"]\n')
    (ws / "p" / "a" / "haz.toml").write_text(f'[tasks.build]\n{task}')
    return ws


@pytest.mark.parametrize("contents", ["user files", "another tool's tag"])
def test_cache_007_a_run_never_makes_a_cache_of_a_directory_holding_files(
        tmp_path, hazrun_env, contents):
    """``cache clean`` deletes what a tagged directory holds: a run given a
    directory with someone's files in it must refuse it, not tag it (a
    later clean removed the user's files)."""
    ws = _one_task_workspace(tmp_path)
    target = tmp_path / "mine"
    (target / "blobs").mkdir(parents=True)
    (target / "blobs" / "precious").write_text("mine")
    if contents == "another tool's tag":
        (target / "CACHEDIR.TAG").write_bytes(b"Signature: 8a477f597d28d172789f06886806bc55\n")
    for how in (["--cache-dir", str(target)], []):
        env = dict(hazrun_env, HAZ_CACHE_DIR=str(target)) if not how else hazrun_env
        p = run([*how, "run", "build"], ws, env)
        assert p.returncode == 2, p.stderr
        assert f"cache directory {target} holds files and is not a hazrun cache" in p.stderr
        assert "Traceback" not in p.stderr
    assert not (ws / "p" / "a" / "out").exists()  # refused before anything ran
    assert sorted(os.listdir(target)) == (["CACHEDIR.TAG", "blobs"] if "tag" in contents
                                          else ["blobs"])
    p = run(["cache", "clean", "--cache-dir", str(target)], ws, hazrun_env)
    assert p.returncode == 2
    assert (target / "blobs" / "precious").read_text() == "mine"


@pytest.mark.parametrize("contents", ["new", "empty", "an interrupted start's layout"])
def test_cache_007_a_run_makes_a_cache_of_a_new_or_empty_directory(
        tmp_path, hazrun_env, contents):
    ws = _one_task_workspace(tmp_path)
    target = tmp_path / "cache"
    if contents != "new":
        target.mkdir()
    if contents == "an interrupted start's layout":
        for d in ("entries", "blobs", "tmp"):
            (target / d).mkdir()
        (target / "lock").write_bytes(b"")
        (target / "CACHEDIR.TAG.part-123.456").write_bytes(b"Signature")
    p = run(["--cache-dir", str(target), "run", "build"], ws, hazrun_env)
    assert p.returncode == 0, p.stderr
    assert info(target).entries == 1
    p = run(["--cache-dir", str(target), "run", "build"], ws, hazrun_env)
    assert p.returncode == 0 and "1 cached" in p.stderr


def test_cache_007_a_cache_tagged_by_another_run_meanwhile_is_not_refused(tmp_path, monkeypatch):
    """Two runs start on one new shared directory: the second finds no tag,
    then lists what the first wrote meanwhile (its tag, or its tag's part
    file renamed away since).  The moment is forced here: between the two
    steps, the other run's whole start-up happens, on the real directory."""
    from hazrun.cache import store as store_module
    shared = tmp_path / "shared"
    first_look = store_module.is_hazrun_cache
    looks = []

    def look_while_another_run_starts(path):
        found = first_look(path)
        if not looks:
            store_module.Store(shared).ensure()  # the other run
        looks.append(found)
        return found

    monkeypatch.setattr(store_module, "is_hazrun_cache", look_while_another_run_starts)
    store_module.Store(shared).check_adoptable()  # no UsageError
    assert looks[0] is False and (shared / "CACHEDIR.TAG").is_file()


def test_cache_007_a_default_cache_dir_linked_elsewhere_is_checked_too(tmp_path, hazrun_env):
    """.haz/cache is hazrun's own, unless it is a link to a directory of
    the user's: then it is checked as --cache-dir is."""
    ws = _one_task_workspace(tmp_path)
    mine = tmp_path / "mine"
    (mine / "blobs").mkdir(parents=True)
    (mine / "blobs" / "precious").write_text("mine")
    (ws / ".haz").mkdir()
    (ws / ".haz" / "cache").symlink_to(mine)
    p = run(["run", "build"], ws, hazrun_env)
    assert p.returncode == 2 and "holds files and is not a hazrun cache" in p.stderr
    assert sorted(os.listdir(mine)) == ["blobs"]


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="util-linux prlimit not installed")
def test_cache_007_a_tag_that_cannot_be_written_leaves_no_part_behind(tmp_path, hazrun_env):
    """A file size limit of 0 (as a full disk or a quota would): the run
    goes on without the cache, and the tag's part file is not left."""
    ws = _one_task_workspace(tmp_path, 'cmd = "true"\n')  # it writes no file itself
    target = tmp_path / "cache"
    p = subprocess.run(["prlimit", "--fsize=0", *hazrun_cmd("--cache-dir", str(target),
                                                             "run", "build")],
                       cwd=ws, env=hazrun_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=60)
    assert p.returncode == 0 and "not stored in the cache" in p.stderr, p.stderr
    assert [n for n in os.listdir(target) if n.startswith("CACHEDIR.TAG")] == []


def run(args, cwd, env):
    return subprocess.run(hazrun_cmd(*args), cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60)


def test_cache_007_command_info_prune_clean(populated, hazrun_env):
    root, cache_dir, keys = populated
    p = run(["cache", "info"], root / "p" / "old", hazrun_env)
    assert p.returncode == 0, p.stderr
    assert f"path: {cache_dir}" in p.stdout and "entries: 3" in p.stdout
    p = run(["cache", "prune", "--max-size", "250K"], root, hazrun_env)
    assert p.returncode == 0, p.stderr
    assert "pruned 1 entry (" in p.stdout and present(cache_dir, keys) == ["mid", "new"]
    p = run(["-C", str(root), "cache", "clean"], "/", hazrun_env)
    assert p.returncode == 0, p.stderr
    assert "removed 2 entries" in p.stdout and present(cache_dir, keys) == []


def test_cache_007_command_bad_values_exit_2(populated, hazrun_env):
    root, cache_dir, keys = populated
    p = run(["cache", "prune", "--max-size", "5X"], root, hazrun_env)
    assert p.returncode == 2 and "hazrun: error: invalid size '5X'" in p.stderr
    p = run(["cache", "prune", "--max-age", "3w"], root, hazrun_env)
    assert p.returncode == 2 and "'3w'" in p.stderr
    p = run(["cache", "prune"], root, hazrun_env)
    assert p.returncode == 2 and "--max-size" in p.stderr
    assert present(cache_dir, keys) == ["mid", "new", "old"]


def test_cache_007_command_cache_dir_option_and_environment(populated, hazrun_env, tmp_path):
    root, cache_dir, keys = populated
    p = run(["cache", "info", "--cache-dir", str(cache_dir)], tmp_path, hazrun_env)
    assert p.returncode == 0 and "entries: 3" in p.stdout
    env = dict(hazrun_env, HAZ_CACHE_DIR=str(cache_dir))
    p = run(["cache", "prune", "--max-age", "0"], tmp_path, env)
    assert p.returncode == 0, p.stderr
    assert present(cache_dir, keys) == []


def test_cache_007_command_outside_a_workspace_needs_a_cache_dir(tmp_path, hazrun_env):
    p = run(["cache", "info"], tmp_path, hazrun_env)
    assert p.returncode == 2 and "haz.toml" in p.stderr


def test_cache_007_use_time_is_recent_after_store(tmp_path):
    root = make_workspace(tmp_path / "ws")
    with open_cache(root) as c:
        k = c.compute_key("b:check", {})
        c.store("b:check", k, c.collect_outputs("b:check"), b"", b"", 1.0)
        f = c.path / "entries" / k.key[:2] / (k.key + ".json")
        assert abs(f.stat().st_mtime - time.time()) < 60

"""CLI-002 -v: what changed since the last recorded run of a task."""
from __future__ import annotations

import json
import os
import zlib

import pytest

from test_cache_support import make_workspace, open_cache

S1, S2 = "1" * 64, "2" * 64


@pytest.fixture
def root(tmp_path):
    return make_workspace(tmp_path / "ws")


def recorded(root, label="a:build", preds=None, environ=None):
    with open_cache(root, environ=environ or {}) as c:
        c.record(label, c.compute_key(label, preds or {}))


def explain(root, label="a:build", preds=None, environ=None):
    with open_cache(root, environ=environ or {}) as c:
        return c.explain(label, c.compute_key(label, preds or {}))


def test_cli_002_no_previous_run(root):
    assert explain(root) == ["no previous run recorded"]


def test_cli_002_nothing_changed_but_entry_gone(root):
    recorded(root)
    [line] = explain(root)
    assert "nothing changed" in line


def test_cli_002_input_files_added_removed_modified(root):
    recorded(root)
    (root / "pkg/a/src/main.c").write_text("changed")
    (root / "pkg/a/src/new.c").write_text("")
    os.unlink(root / "pkg/a/src/util.c")
    assert explain(root) == ["input file added: pkg/a/src/new.c",
                             "input file removed: pkg/a/src/util.c",
                             "input file modified: pkg/a/src/main.c"]


def test_cli_002_executable_bit(root):
    recorded(root)
    os.chmod(root / "pkg/a/src/main.c", 0o755)
    assert explain(root) == ["input file modified: pkg/a/src/main.c (now executable)"]


def test_cli_002_env_names_never_values(root):
    recorded(root, environ={"A_ENV": "old-secret"})
    lines = explain(root, environ={"A_ENV": "new-secret"})
    assert lines == ["environment variable A_ENV changed"]
    assert explain(root) == ["environment variable A_ENV now unset"]
    recorded(root)
    assert explain(root, environ={"A_ENV": ""}) == ["environment variable A_ENV now set"]


def test_cli_002_predecessor_changed(root):
    recorded(root, "a:test", {"a:build": S1})
    assert explain(root, "a:test", {"a:build": S2}) == [
        "predecessor a:build produced different outputs"]


def test_cli_002_definition_changed(root):
    recorded(root)
    toml = root / "pkg/a/haz.toml"
    toml.write_text(toml.read_text().replace('cmd = "make"', 'cmd = "make -j"'))
    assert explain(root) == ["definition changed: cmd"]


def test_cli_002_workspace_input(root):
    recorded(root)
    (root / "lock.txt").write_text("v2")
    assert explain(root) == ["workspace input modified: lock.txt"]


def test_cli_002_many_files_are_summarised(root):
    recorded(root)
    for i in range(25):
        (root / f"pkg/a/src/gen{i:02}.c").write_text("")
    lines = explain(root)
    assert len(lines) == 11 and lines[-1] == "... and 15 more input files added"


def packs(root):
    return sorted(p for p in (root / ".haz/explain").iterdir() if p.suffix == ".pack")


def test_cli_002_records_are_compact(root):
    recorded(root)
    recorded(root, "b:check")
    files = list((root / ".haz/explain").iterdir())
    assert sum(f.stat().st_size for f in files) < 2048
    assert "nothing changed" in explain(root)[0]
    assert "nothing changed" in explain(root, "b:check")[0]


def test_cli_002_one_pack_per_run_not_a_file_per_task(root):
    with open_cache(root) as c:
        for label in ("a:build", "a:test", "b:check"):
            c.record(label, c.compute_key(label, {"a:build": S1} if label == "a:test" else {}))
    assert len(packs(root)) == 1
    assert "nothing changed" in explain(root, "a:test", {"a:build": S1})[0]
    assert explain(root, "a:test", {"a:build": S2}) == [
        "predecessor a:build produced different outputs"]


def test_cli_002_a_long_command_changed_late_is_a_definition_change(root):
    toml = root / "pkg/a/haz.toml"
    long = "make all && echo the end of a long command line"
    toml.write_text(toml.read_text().replace('cmd = "make"', f'cmd = "{long}"'))
    recorded(root)
    toml.write_text(toml.read_text().replace(long, long + "!"))
    assert explain(root) == ["definition changed: cmd"]
    # Digests only: the command's text is not copied into .haz/explain.
    (pack,) = packs(root)
    assert b"long command" not in zlib.decompress(pack.read_bytes())


def test_cli_002_records_of_tasks_not_run_are_kept(root):
    recorded(root)
    recorded(root, "b:check")  # a run of b alone does not forget a
    (root / "pkg/a/src/main.c").write_text("changed")
    assert explain(root) == ["input file modified: pkg/a/src/main.c"]


def test_cli_002_packs_do_not_pile_up(root):
    labels = ("a:build", "b:check")
    for i in range(6):
        (root / "pkg/a/src/main.c").write_text(f"version {i}")
        for label in labels:
            recorded(root, label)
    # Each run's pack supersedes or folds the previous ones.
    assert len(packs(root)) == 1
    for label in labels:
        assert "nothing changed" in explain(root, label)[0]


def test_cli_002_explain_compares_with_the_previous_run_not_this_one(root):
    recorded(root)
    (root / "pkg/a/src/main.c").write_text("changed")
    with open_cache(root) as c:
        k = c.compute_key("a:build", {})
        c.record("a:build", k)
        assert c.explain("a:build", k) == ["input file modified: pkg/a/src/main.c"]
    assert "nothing changed" in explain(root)[0]


def test_cli_002_records_are_written_only_when_the_key_changes(root):
    recorded(root)
    before = {p.name: p.stat().st_ino for p in (root / ".haz/explain").iterdir()}
    recorded(root)  # the same key: nothing to write
    assert {p.name: p.stat().st_ino for p in (root / ".haz/explain").iterdir()} == before
    (root / "pkg/a/src/main.c").write_text("changed")
    recorded(root)
    after = {p.name: p.stat().st_ino for p in (root / ".haz/explain").iterdir()}
    assert after != before and len(packs(root)) == 1  # the superseded pack is gone
    assert explain(root) == ["nothing changed since the last run; its cache entry is "
                             "gone (pruned, cleaned, or never stored)"]


def test_cli_002_records_written_again_when_they_are_lost(root):
    recorded(root)
    for f in (root / ".haz/explain").iterdir():
        f.unlink()
    recorded(root)
    assert "nothing changed" in explain(root)[0]


@pytest.mark.parametrize("damage", ["cut short", "a byte changed", "gone"])
def test_cli_002_a_record_damaged_before_a_run_that_changed_nothing_is_written_again(
        root, damage):
    """A run keeps no record for a key that is the recorded one; where that
    record's pack was damaged before the run, it must keep one all the same,
    even where the pack's size is still the one the index says."""
    recorded(root)
    index = root / ".haz/explain/index.json"
    for f in (root / ".haz/explain").iterdir():
        if f.suffix == ".pack":
            data = f.read_bytes()
            if damage == "cut short":
                f.write_bytes(data[:-1])
            elif damage == "a byte changed":
                f.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
            else:
                f.unlink()
                # An index that says the pack it names has no size at all.
                obj = json.loads(index.read_text())
                obj["packs"] = {f.name: [1, -1]}
                index.write_text(json.dumps(obj))
    recorded(root)  # the same key, its record unreadable
    assert "nothing changed" in explain(root)[0]


@pytest.mark.parametrize("which", ["pack", "index", "both"])
def test_cli_002_corrupt_record_is_no_record(root, which):
    recorded(root)
    for f in (root / ".haz/explain").iterdir():
        if which == "both" or (f.suffix == ".pack") == (which == "pack"):
            f.write_bytes(b"garbage")
    assert explain(root) == ["no previous run recorded"]
    recorded(root)  # and written again
    assert "nothing changed" in explain(root)[0]


def test_cli_002_an_index_cannot_point_outside_its_directory(root):
    recorded(root)
    index = root / ".haz/explain/index.json"
    obj = json.loads(index.read_text())
    (root / "outside.pack").write_bytes(zlib.compress(b"{}"))
    obj["records"]["a:build"][1] = "../../outside.pack"
    index.write_text(json.dumps(obj))
    assert explain(root) == ["no previous run recorded"]


def test_cli_002_runs_saving_at_once_keep_each_others_records(tmp_path):
    """Two hazrun runs of one workspace (make -j a b) end together: each
    save merges with the index on disk under a lock, and removes no pack
    the other one's index names."""
    import threading

    from hazrun.cache.explain import RecordStore, encode

    directory = tmp_path / "explain"
    directory.mkdir()

    def rec(label, key):
        return (key, encode({"format": 1, "label": label, "key": key}))

    RecordStore(directory).save({f"t{i}": rec(f"t{i}", "k0") for i in range(100)})
    stale = RecordStore(directory)
    stale.load("t0")  # read the index long before its own save
    stores = [RecordStore(directory) for _ in range(8)]
    threads = [threading.Thread(target=s.save, args=({f"t{i}": rec(f"t{i}", f"k{n}")
                                                       for i in range(n, 100, 8)},))
               for n, s in enumerate(stores)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stale.save({"t0": rec("t0", "late")})
    fresh = RecordStore(directory)
    keys = {f"t{i}": (fresh.load(f"t{i}") or {}).get("key") for i in range(100)}
    assert keys["t0"] == "late"
    assert all(keys[f"t{i}"] == f"k{i % 8}" for i in range(1, 100))


def test_cli_002_a_verbose_run_says_why_each_task_runs(make_ws):
    """`hazrun -v run`: the reasons --dry-run -v gives before a run, said by
    the run itself as each task misses, so a rebuild in CI can be explained
    after the fact; hits say nothing."""
    from conftest import run_hazrun
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.t]\ncmd = "cat in.txt > out.txt"\n'
                              'inputs = ["in.txt"]\noutputs = ["out.txt"]\n'
                              '[tasks.u]\ncmd = "true"\ndeps = ["t"]\ninputs = []\n',
                  "in.txt": "1\n"})
    first = run_hazrun(ws, "-v", "run", "u")
    assert "hazrun: root:t runs: no previous run" in first.stderr, first.stderr
    (ws / "in.txt").write_text("2\n")
    second = run_hazrun(ws, "-v", "run", "u")
    assert "hazrun: root:t runs: input file modified: in.txt" in second.stderr, second.stderr
    assert "hazrun: root:u runs: predecessor root:t produced different outputs" \
        in second.stderr, second.stderr
    third = run_hazrun(ws, "-v", "run", "u")
    assert "2 cached" in third.stderr and " runs: " not in third.stderr, third.stderr
    quiet = run_hazrun(ws, "run", "u", "--force")
    assert " runs: " not in quiet.stderr

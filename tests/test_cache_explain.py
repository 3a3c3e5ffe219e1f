"""CLI-002 -v: what changed since the last recorded run of a task."""
from __future__ import annotations

import os

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


def test_cli_002_records_are_compact_and_per_label(root):
    recorded(root)
    recorded(root, "b:check")
    files = sorted((root / ".haz/explain").iterdir())
    assert len(files) == 2
    assert all(f.stat().st_size < 1024 for f in files)


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
    (record,) = (root / ".haz/explain").iterdir()
    first = os.stat(record).st_ino
    recorded(root)  # the same key: nothing to write
    assert os.stat(record).st_ino == first
    (root / "pkg/a/src/main.c").write_text("changed")
    recorded(root)
    assert os.stat(record).st_ino != first
    assert explain(root) == ["nothing changed since the last run; its cache entry is "
                             "gone (pruned, cleaned, or never stored)"]


def test_cli_002_records_written_again_when_they_are_lost(root):
    recorded(root)
    for f in (root / ".haz/explain").iterdir():
        f.unlink()
    recorded(root)
    assert "nothing changed" in explain(root)[0]


def test_cli_002_corrupt_record_is_no_record(root):
    recorded(root)
    for f in (root / ".haz/explain").iterdir():
        f.write_bytes(b"garbage")
    assert explain(root) == ["no previous run recorded"]

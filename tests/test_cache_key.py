"""CACHE-001: what enters a task's key, and what does not."""
from __future__ import annotations

import json
import os
import subprocess
import shutil
from pathlib import Path

import pytest

from hazrun.cache import FORMAT_VERSION
from hazrun.cache.key import canonical

from conftest import run_hazrun
from test_cache_support import build_outputs, make_workspace, open_cache

S1, S2 = "1" * 64, "2" * 64


@pytest.fixture
def root(tmp_path):
    return make_workspace(tmp_path / "ws")


def key(root: Path, label: str = "a:build", preds=None, environ=None, **kw) -> str:
    with open_cache(root, environ=environ or {}, **kw) as c:
        return c.compute_key(label, preds or {}).key


def test_cache_001_key_is_stable(root):
    assert key(root) == key(root)


def test_cache_001_input_change_changes_key(root):
    before = key(root)
    (root / "pkg/a/src/main.c").write_text("int main() { return 1; }\n")
    assert key(root) != before


def test_cache_001_added_and_removed_inputs_change_key(root):
    before = key(root)
    (root / "pkg/a/src/new.c").write_text("")
    added = key(root)
    assert added != before
    os.unlink(root / "pkg/a/src/new.c")
    assert key(root) == before


def test_cache_001_file_outside_inputs_does_not_change_key(root):
    before = key(root)
    (root / "outside.txt").write_text("changed")
    (root / "pkg/a/README").write_text("changed")
    (root / "pkg/b/src/b.txt").write_text("changed")
    assert key(root) == before


def test_cache_001_outputs_are_never_inputs(root):
    before = key(root, "b:check")
    (root / "pkg/b/out").mkdir()
    (root / "pkg/b/out/result").write_text("produced")
    assert key(root, "b:check") == before
    (root / "pkg/b/other").write_text("an input: default inputs are the project")
    assert key(root, "b:check") != before


def test_cache_001_workspace_inputs_change_every_key(root):
    before = key(root), key(root, "b:check")
    (root / "lock.txt").write_text("lock v2\n")
    after = key(root), key(root, "b:check")
    assert after[0] != before[0] and after[1] != before[1]


def test_cache_001_executable_bit_changes_key(root):
    before = key(root)
    os.chmod(root / "pkg/a/src/main.c", 0o755)
    assert key(root) != before


def test_cache_001_symlink_input_hashes_its_target(root):
    os.symlink("main.c", root / "pkg/a/src/link")
    before = key(root)
    (root / "pkg/a/src/main.c").write_text("content changes; the link does not")
    mid = key(root)
    os.unlink(root / "pkg/a/src/link")
    os.symlink("util.c", root / "pkg/a/src/link")
    assert key(root) != mid
    with open_cache(root) as c:
        rows = {r[0]: r for r in c.compute_key("a:build", {}).components["inputs"]}
    assert rows["pkg/a/src/link"][1] == "l"
    assert before != mid  # main.c itself is an input


@pytest.mark.parametrize("where", ["in the workspace", "outside the workspace"])
def test_cache_001_a_file_edited_behind_a_symlinked_input_changes_the_key(root, tmp_path,
                                                                          where):
    """The task reads through the link: the content it resolves to is part
    of the key, not only the target string (src/** does not cover it)."""
    shared = (root / "shared" if where == "in the workspace" else tmp_path / "outside")
    shared.mkdir()
    (shared / "config.txt").write_text("v1")
    os.symlink(os.path.relpath(shared / "config.txt", root / "pkg/a/src"),
               root / "pkg/a/src/config")
    v1 = key(root)
    assert key(root) == v1
    (shared / "config.txt").write_text("v2")
    v2 = key(root)
    assert v2 != v1
    (shared / "config.txt").write_text("v1")
    assert key(root) == v1
    with open_cache(root) as c:
        k = c.compute_key("a:build", {})
        c.record("a:build", k)
    (shared / "config.txt").write_text("v3")
    with open_cache(root) as c:
        assert c.explain("a:build", c.compute_key("a:build", {})) == [
            "input file modified: pkg/a/src/config"]


def test_cache_006_a_file_behind_a_link_is_not_read_again_while_unchanged(root, tmp_path):
    """Outside the workspace too, the stat cache vouches for the target."""
    outside = tmp_path / "outside.txt"
    outside.write_text("v1")
    os.utime(outside, (1, 1))  # old enough to trust (the racy-timestamp rule)
    os.symlink(str(outside), root / "pkg/a/src/config")
    key(root)
    with open_cache(root) as c:
        c.compute_key("a:build", {})
        assert c.stats()["files_hashed"] == 0
        # Kept by its absolute path, across runs.
        assert c.stat_cache.recorded(os.path.realpath(outside)) is not None


def test_cache_001_a_link_to_the_tasks_own_output_is_keyed_by_its_target(make_ws):
    """Following it would put the last run's output into the next key: a
    task writing the date would never hit."""
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.t]\ncmd = "date +%N > res.txt"\n'
                              'outputs = ["res.txt"]\n', "latest": ""})
    os.unlink(ws / "latest")
    os.symlink("res.txt", ws / "latest")
    states = [run_hazrun(ws, "run", "t").stderr for _ in range(3)]
    assert "1 succeeded" in states[0]
    assert all("1 cached" in s for s in states[1:]), states


def test_cache_001_links_to_directories_and_dangling_links_are_keyed_by_target(root):
    """A link to a directory is keyed by its target string (its files are
    inputs only where the globs select them); a dangling link too, until
    it resolves to a file."""
    (root / "pkg/a/lib").mkdir()
    os.symlink("../lib", root / "pkg/a/src/dirlink")
    os.symlink("../elsewhere.txt", root / "pkg/a/src/dangling")
    before = key(root)
    (root / "pkg/a/lib/inside.txt").write_text("under the linked directory")
    assert key(root) == before
    (root / "pkg/a/elsewhere.txt").write_text("now the link resolves")
    assert key(root) != before


def test_cache_001_symlink_and_file_with_same_bytes_differ(root):
    (root / "pkg/a/src/x").write_text("main.c")
    as_file = key(root)
    os.unlink(root / "pkg/a/src/x")
    os.symlink("main.c", root / "pkg/a/src/x")
    assert key(root) != as_file


def test_cache_001_env_unset_differs_from_empty(root):
    unset = key(root, environ={})
    empty = key(root, environ={"A_ENV": ""})
    value = key(root, environ={"A_ENV": "1"})
    assert len({unset, empty, value}) == 3
    assert key(root, environ={"A_ENV": "1"}) == value


def test_cache_001_workspace_env_enters_every_key(root):
    assert key(root, "b:check", environ={"WS_ENV": "x"}) != key(root, "b:check")


def test_cache_001_unlisted_env_does_not_matter(root):
    assert key(root, environ={"OTHER": "x"}) == key(root)


def test_cache_001_env_values_are_never_kept_raw(root):
    with open_cache(root, environ={"A_ENV": "hunter2-secret"}) as c:
        k = c.compute_key("a:build", {})
        c.record("a:build", k)
    assert b"hunter2-secret" not in canonical(k.components)
    assert k.components["env"]["A_ENV"] is not None
    for dirpath, _, names in os.walk(root / ".haz"):
        for n in names:
            assert b"hunter2" not in Path(dirpath, n).read_bytes()


def test_cache_001_early_cutoff_same_pred_stream_same_key(root):
    assert key(root, "a:test", {"a:build": S1}) == key(root, "a:test", {"a:build": S1})
    assert key(root, "a:test", {"a:build": S1}) != key(root, "a:test", {"a:build": S2})


def test_cache_002_rerun_with_same_bytes_keeps_successor_key(root):
    """A predecessor that runs again and writes the same bytes: same key."""
    with open_cache(root) as c:
        build_outputs(root)
        s1 = c.collect_outputs("a:build").stream_hash
    shutil.rmtree(root / "pkg/a/dist")
    build_outputs(root)  # fresh files, new mtimes, same content
    with open_cache(root) as c:
        s2 = c.collect_outputs("a:build").stream_hash
    assert s1 == s2


def test_cache_001_predecessor_streams_must_match_hard_deps(root):
    with open_cache(root) as c:
        with pytest.raises(AssertionError, match="internal error"):
            c.compute_key("a:test", {})
        with pytest.raises(AssertionError):
            c.compute_key("a:build", {"a:test": S1})


def test_cache_001_definition_changes_key(root):
    before = key(root)
    toml = root / "pkg/a/haz.toml"
    toml.write_text(toml.read_text().replace('cmd = "make"', 'cmd = "make all"'))
    assert key(root) != before


def test_cache_001_output_globs_enter_definition(root):
    before = key(root)
    toml = root / "pkg/a/haz.toml"
    toml.write_text(toml.read_text().replace('"link"]', '"link", "extra"]'))
    assert key(root) != before


def test_cache_001_components_are_canonical_and_versioned(root):
    with open_cache(root, environ={"A_ENV": "v"}) as c:
        parts = c.compute_key("a:test", {"a:build": S1}).components
    assert parts["format"] == FORMAT_VERSION
    assert parts["definition"] == {"label": "a:test", "cmd": "make test",
                                   "inputs": ["src/**", "dist/**"], "outputs": [],
                                   "env": []}
    assert set(parts["platform"]) == {"os", "arch"}
    assert parts["preds"] == {"a:build": S1}
    assert [r[0] for r in parts["workspace_inputs"]] == ["lock.txt"]
    paths = [r[0] for r in parts["inputs"]]
    assert paths == sorted(paths) == ["pkg/a/src/main.c", "pkg/a/src/util.c"]
    assert all(r[1] == "-" and len(r[2]) == 64 for r in parts["inputs"])
    json.dumps(parts)  # JSON-able


def test_cache_001_outputs_produced_during_the_run_are_inputs_of_later_keys(root):
    """a:test reads dist/**: a listing taken before a:build ran lacks those
    files, yet the first run's key must equal the next run's, which lists
    them from the start."""
    with open_cache(root) as c:
        c.compute_key("a:build", {})  # lists the workspace: no dist/ yet
        build_outputs(root)
        stream = c.collect_outputs("a:build").stream_hash
        first = c.compute_key("a:test", {"a:build": stream})
    assert any(r[0] == "pkg/a/dist/lib.txt" for r in first.components["inputs"])
    with open_cache(root) as c:
        assert c.compute_key("a:test", {"a:build": stream}).key == first.key


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_cache_001_produced_files_git_ignores_are_not_inputs(root):
    env = dict(os.environ, GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    subprocess.run(["git", "init", "-q", str(root)], check=True, env=env)
    (root / ".gitignore").write_text("dist/\n")
    with open_cache(root) as c:
        c.compute_key("a:build", {})
        build_outputs(root)
        stream = c.collect_outputs("a:build").stream_hash
        first = c.compute_key("a:test", {"a:build": stream})
    assert not any("dist" in r[0] for r in first.components["inputs"])
    with open_cache(root) as c:
        assert c.compute_key("a:test", {"a:build": stream}).key == first.key


def test_cache_001_vanished_input_is_left_out(root):
    with open_cache(root) as c:
        c.compute_key("a:build", {})  # listing taken
        os.unlink(root / "pkg/a/src/util.c")
        k = c.compute_key("a:build", {})
    assert [r[0] for r in k.components["inputs"]] == ["pkg/a/src/main.c"]
    assert key(root) == k.key  # as a fresh listing sees it


def test_cache_001_fifo_in_inputs_is_not_read(root):
    os.mkfifo(root / "pkg/a/src/pipe")
    k = key(root)  # must not block
    assert k == key(root)


def test_cache_001_key_is_blake3_of_the_canonical_components(root):
    """Keys splice per-key rows into a per-task encoding: the bytes must be
    exactly canonical() of all the components, whatever the strings hold."""
    import blake3
    with open_cache(root, environ={"A_ENV": "v"}) as c:
        k = c.compute_key("a:test", {"a:build": S1})
    assert k.key == blake3.blake3(b"hazrun-key\0" + canonical(k.components)).hexdigest()


@pytest.mark.parametrize("cmd", [
    "plain", "quotes \" and \\ backslashes", "ünïcödé \u2028 \U0001f600 \x01",
    "\0hole", "\0label", ["a", "\0hole", "\0label"],
])
def test_cache_001_key_encoding_survives_any_string(cmd):
    from hazrun.cache import key as K
    rows = [["p/é \"x\"\\y\x7f\U0001f600", "x", "a" * 64], ["p/q", "l", "b" * 64]]
    preds = {"z:b": S1, "a:\"q\u00e9": S2}
    keys = set()
    for label in ("p:build", "q:build", "\0label"):
        parts = {"format": FORMAT_VERSION, "definition": {
            "label": label, "cmd": cmd, "inputs": None, "outputs": ["dist/**"], "env": []},
            "platform": K.platform_info(), "env": {"X": None, "Y": "c" * 64}}
        for ws_rows, in_rows in (([], []), (rows[:1], rows), (rows, [])):
            key, full = K.Static(parts).key(ws_rows, in_rows, preds)
            assert full == K.assemble(parts, ws_rows, in_rows, preds)
            assert key == K.key_of(full)
            keys.add(key)
    assert len(keys) == 9  # labels and rows all tell keys apart


def test_cache_001_file_produced_before_the_listing_is_an_input_once(root):
    """A file noted as produced while the listing is being taken may be in
    both the listing and the produced files: it is one input."""
    with open_cache(root) as c:
        (root / "pkg/a/src/gen.c").write_text("generated\n")
        c._note_produced(["pkg/a/src/gen.c"])  # as a restore racing the listing
        k = c.compute_key("a:build", {})
    paths = [r[0] for r in k.components["inputs"]]
    assert paths == ["pkg/a/src/gen.c", "pkg/a/src/main.c", "pkg/a/src/util.c"]
    assert key(root) == k.key

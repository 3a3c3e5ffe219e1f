"""load_workspace keeps a validated load in .haz/workspace.pickle and uses it
while no haz.toml changed (start-up time), never when one did."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hazrun import ConfigError, load_workspace
from hazrun.workspace import SNAPSHOT

WS = '[workspace]\nmembers = ["packages/*"]\n'
TASK = '[tasks.build]\ncmd = "make"\ninputs = ["src/**"]\n'
OLD = time.time() - 3600


def backdate(root: Path) -> None:
    for path in root.rglob("haz.toml"):
        os.utime(path, (OLD, OLD))


@pytest.fixture
def root(make_ws):
    r = make_ws({"haz.toml": WS, "packages/a/haz.toml": TASK,
                 "packages/b/haz.toml": TASK + '[project]\ndeps = ["a"]\n'})
    backdate(r)
    return r


def test_snapshot_written_and_used_when_nothing_changed(root, monkeypatch):
    first = load_workspace(root)
    assert (root / SNAPSHOT).is_file()
    import hazrun.config as config
    monkeypatch.setattr(config, "read_located", lambda located: pytest.fail("parsed"))
    second = load_workspace(root)
    assert second == first
    assert second.graph.hard_preds == first.graph.hard_preds


def test_no_snapshot_while_a_haz_toml_is_new(make_ws):
    r = make_ws({"haz.toml": WS, "packages/a/haz.toml": TASK})
    load_workspace(r)
    assert not (r / SNAPSHOT).exists()


def test_changed_haz_toml_is_read_again_even_with_same_size_and_mtime(root):
    load_workspace(root)
    path = root / "packages/a/haz.toml"
    st = os.stat(path)
    path.write_text(TASK.replace("make", "mako"))  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # only ctime tells
    ws = load_workspace(root)
    assert ws.task("a:build").cmd == "mako"


def test_new_and_removed_projects_are_seen(root):
    load_workspace(root)
    (root / "packages/c").mkdir()
    (root / "packages/c/haz.toml").write_text(TASK)
    backdate(root)
    assert "c:build" in load_workspace(root).graph.tasks
    (root / "packages/c/haz.toml").unlink()
    assert "c:build" not in load_workspace(root).graph.tasks


def test_errors_are_never_kept(root):
    load_workspace(root)
    (root / "packages/b/haz.toml").write_text(TASK + '[project]\ndeps = ["nope"]\n')
    backdate(root)
    for _ in range(2):
        with pytest.raises(ConfigError):
            load_workspace(root)


def test_corrupt_snapshot_is_ignored(root):
    first = load_workspace(root)
    (root / SNAPSHOT).write_bytes(b"garbage")
    assert load_workspace(root) == first


def test_cfg_001_root_found_without_parsing_toml_while_it_is_unchanged(root, monkeypatch):
    """CFG-001: the snapshot also says what the root haz.toml parsed to, so
    a load from the root parses no TOML at all (nor imports a parser)."""
    first = load_workspace(root)
    import hazrun.config as config
    monkeypatch.setattr(config, "parse_toml", lambda path: pytest.fail(f"parsed {path}"))
    assert load_workspace(root) == first
    # From a project directory, its own haz.toml must still be parsed to
    # tell that it is no root.
    monkeypatch.undo()
    assert load_workspace(root / "packages/a") == first


def test_cfg_001_changed_root_is_parsed_again_even_with_same_size_and_mtime(root):
    load_workspace(root)
    path = root / "haz.toml"
    st = os.stat(path)
    path.write_text(WS.replace("packages/*", "packages/a"))  # one project, same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    ws = load_workspace(root)
    assert sorted(ws.graph.tasks) == ["a:build"]


def test_cfg_001_root_that_is_no_longer_a_workspace_is_not_taken_from_the_snapshot(root):
    load_workspace(root)
    (root / "haz.toml").write_text(TASK)  # now a project file, no [workspace]
    from hazrun import NoWorkspaceError
    with pytest.raises(NoWorkspaceError):
        load_workspace(root)


def test_cfg_002_projects_from_the_snapshot_have_their_paths(root):
    import copy
    import pickle
    first = load_workspace(root)
    second = load_workspace(root)  # from the snapshot: paths made on first use
    for name, fresh in first.projects.items():
        loaded = second.projects[name]
        assert loaded.dir_name == str(fresh.dir)
        assert isinstance(loaded.dir, Path) and loaded.dir == fresh.dir
        assert isinstance(loaded.config_file, Path)
        assert loaded.config_file == fresh.config_file
    # Pickled again before and after first use (a snapshot of a snapshot).
    untouched = load_workspace(root).projects["a"]
    for project in (untouched, copy.copy(untouched), pickle.loads(pickle.dumps(untouched))):
        assert project == first.projects["a"]
        assert project.dir == root.resolve() / "packages" / "a"


class _Payload:
    """What a crafted snapshot holds: unpickling it calls exec."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("where", ["header", "workspace"])
def test_a_crafted_snapshot_runs_no_code(root, tmp_path, where):
    """The snapshot is a file in the workspace, which a checkout or an
    archive can bring: loading makes only hazrun's own objects from it, so
    a crafted one is passed over (loaded afresh) and runs nothing."""
    import pickle
    load_workspace(root)
    snap = root / SNAPSHOT
    marker = tmp_path / "PWNED"
    if where == "header":
        snap.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        # A true header, then the payload where the key should be.
        import io
        from hazrun.workspace import _load
        header = _load(io.BytesIO(snap.read_bytes()))
        snap.write_bytes(pickle.dumps(header) + pickle.dumps(_Payload(marker)))
    ws = load_workspace(root)
    assert not marker.exists(), "loading the workspace ran code from its snapshot"
    assert sorted(ws.projects) == ["a", "b"]

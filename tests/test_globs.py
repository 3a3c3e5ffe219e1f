"""CFG-006: the glob matcher, and which files are a task's inputs."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from hazrun import load_workspace
from hazrun.files import list_workspace_files, select_inputs
from hazrun.globs import GlobSet, GlobSyntaxError, check_pattern, compile_glob

HAS_GIT = shutil.which("git") is not None


def matches(pattern: str, path: str, base: str = "") -> bool:
    return compile_glob(pattern, base).match(path)


# --------------------------------------------------------------------------
# Syntax

@pytest.mark.parametrize("pattern, yes, no", [
    ("**", ["a", "a/b", "a/b/c.txt", ".hidden/x"], []),
    ("**/*.py", ["x.py", "a/x.py", "a/b/c/x.py"], ["x.pyc", "a/x.txt", "a.py/x"]),
    ("src/**", ["src/a", "src/a/b/c"], ["src", "srcx/a", "x/src/a"]),
    ("src/**/test_*.py", ["src/test_a.py", "src/a/b/test_b.py"], ["src/a/xtest_b.py", "test_a.py"]),
    ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/b/c", "a/xb"]),
    ("*", ["a", "a.txt"], ["a/b"]),
    ("*.txt", ["a.txt", ".txt"], ["a/b.txt", "a.txt.bak"]),
    ("src/*", ["src/a"], ["src/a/b", "src"]),
    ("*/x", ["a/x"], ["x", "a/b/x"]),
    ("?.c", ["a.c", "_.c"], ["ab.c", ".c", "a/.c"]),
    ("a?b", ["axb"], ["a/b", "ab"]),
    ("f[0-9].txt", ["f1.txt"], ["fa.txt", "f10.txt"]),
    ("f[!0-9]", ["fa"], ["f1"]),
    ("a.b", ["a.b", "a.b/c"], ["axb"]),          # '.' is literal
    ("a+(b)", ["a+(b)"], ["aab"]),               # regex characters are literal
])
def test_cfg_006_glob_wildcards(pattern, yes, no):
    g = compile_glob(pattern)
    for path in yes:
        assert g.match(path), f"{pattern!r} should match {path!r}"
    for path in no:
        assert not g.match(path), f"{pattern!r} should not match {path!r}"


def test_cfg_006_literal_directory_pattern_matches_everything_beneath():
    g = compile_glob("dist")
    assert g.match("dist") and g.match("dist/a") and g.match("dist/a/b.js")
    assert not g.match("distx") and not g.match("x/dist")
    deep = compile_glob("build/out")
    assert deep.match("build/out/x") and not deep.match("build/outer")
    # A wildcard pattern does not get the implicit directory meaning.
    assert not compile_glob("dis?").match("dist/a")


def test_cfg_006_patterns_are_relative_to_the_project_directory():
    assert matches("src/**", "packages/a/src/x.c", base="packages/a")
    assert not matches("src/**", "src/x.c", base="packages/a")
    assert not matches("src/**", "packages/b/src/x.c", base="packages/a")
    assert matches("./src/*", "packages/a/src/x", base="packages/a")


def test_cfg_006_root_prefix_is_relative_to_workspace_root():
    assert matches("$root/VERSION", "VERSION", base="packages/a")
    assert not matches("$root/VERSION", "packages/a/VERSION", base="packages/a")
    assert matches("$root/packages/core/dist/**", "packages/core/dist/x", base="packages/app")
    assert matches("!$root/x", "x", base="p")
    assert compile_glob("!$root/x", "p").negated


def test_cfg_006_exclusion():
    s = GlobSet.compile(["src/**", "!src/gen/**", "!**/*.tmp"], "p")
    assert s.match("p/src/a.c")
    assert not s.match("p/src/gen/a.c")
    assert not s.match("p/src/deep/a.tmp")
    assert not s.match("p/other.c")
    files = sorted(["p/src/a.c", "p/src/gen/b.c", "p/src/c.tmp", "p/x", "q/src/a.c"])
    assert s.select(files) == ["p/src/a.c"]


def test_cfg_006_select_narrows_by_prefix_but_keeps_every_match():
    files = sorted(["a/dist", "a/dist/x", "a/distant/y", "a/dist-2/z", "a/b/dist/w", "b/dist/x"])
    assert GlobSet.compile(["dist"], "a").select(files) == ["a/dist", "a/dist/x"]
    assert GlobSet.compile(["**/dist/*"], "a").select(files) == ["a/b/dist/w", "a/dist/x"]
    assert GlobSet.compile(["dist*/**"], "a").select(files) == [
        "a/dist-2/z", "a/dist/x", "a/distant/y"]
    assert GlobSet.compile(["$root/b/**", "x"], "a").select(files) == ["b/dist/x"]


@pytest.mark.parametrize("pattern, why", [
    ("../x", "'..' is not allowed in a pattern"),
    ("a/../../x", "'..' is not allowed in a pattern"),
    ("a/../b", "'..' is not allowed in a pattern"),
    ("/abs", "absolute paths are not allowed"),
    ("!/abs", "absolute paths are not allowed"),
    ("$root/../up", "'..' is not allowed in a pattern"),
    ("", "empty pattern"),
    ("!", "empty pattern"),
    (".", "pattern names no file"),
    ("a[", "unclosed '['"),
    ("a[]", "unclosed '['"),
    ("[z-a]", "invalid character class"),
])
def test_cfg_006_invalid_patterns(pattern, why):
    assert why in (check_pattern(pattern) or "")
    with pytest.raises(GlobSyntaxError):
        compile_glob(pattern)


def test_cfg_006_bracket_edge_cases_are_members():
    assert matches("a[]]", "a]")                # ']' first in a class is a member
    assert matches("[[]x", "[x")
    assert matches("f[\\]", "f\\")
    assert not matches("f[!]]", "f]") and matches("f[!]]", "fx")


# --------------------------------------------------------------------------
# Input files

def _ws(make_ws, task: str, extra=None):
    files = {
        "haz.toml": '[workspace]\nmembers = ["packages/*"]\n',
        "VERSION": "1",
        "packages/a/haz.toml": task,
        "packages/a/src/main.c": "x",
        "packages/a/src/gen/out.c": "x",
        "packages/a/dist/app": "x",
        "packages/a/README.md": "x",
        "packages/a/.haz/cache/blob": "x",
        "packages/a/sub/.git/HEAD": "x",
        "packages/b/haz.toml": '[tasks.t]\ncmd = "x"\n',
        "packages/b/src/b.c": "x",
        ".haz/cache/entry": "x",
    }
    files.update(extra or {})
    return make_ws(files)


def _inputs(root: Path, label: str = "a:build"):
    ws = load_workspace(root)
    files = list_workspace_files(ws.root)
    return select_inputs(files, ws.task(label), ws.project_of(label).rel_dir)


def _no_git(monkeypatch):
    monkeypatch.setattr("hazrun.files.shutil.which", lambda name: None)


def test_cfg_006_default_inputs_are_every_project_file(make_ws, monkeypatch):
    _no_git(monkeypatch)
    root = _ws(make_ws, '[tasks.build]\ncmd = "x"\n')
    assert _inputs(root) == [
        "packages/a/README.md", "packages/a/dist/app", "packages/a/haz.toml",
        "packages/a/src/gen/out.c", "packages/a/src/main.c"]


def test_cfg_006_inputs_globs_with_exclusion_and_root(make_ws, monkeypatch):
    _no_git(monkeypatch)
    root = _ws(make_ws, '[tasks.build]\ncmd = "x"\n'
                        'inputs = ["src/**", "!src/gen/**", "$root/VERSION"]\n')
    assert _inputs(root) == ["VERSION", "packages/a/src/main.c"]


@pytest.mark.parametrize("task, expected", [
    ('outputs = ["dist", "src/gen/**"]',
     ["packages/a/README.md", "packages/a/haz.toml", "packages/a/src/main.c"]),
    ('inputs = ["**/*.c", "dist/**"]\noutputs = ["src/gen/*.c", "dist/**"]',
     ["packages/a/src/main.c"]),
])
def test_cfg_006_own_outputs_are_never_inputs(make_ws, monkeypatch, task, expected):
    _no_git(monkeypatch)
    root = _ws(make_ws, f'[tasks.build]\ncmd = "x"\n{task}\n')
    assert _inputs(root) == expected


def test_cfg_006_without_git_walks_and_skips_git_and_haz_dirs(make_ws, monkeypatch):
    _no_git(monkeypatch)
    root = _ws(make_ws, '[tasks.build]\ncmd = "x"\n', {".gitignore": "dist/\n",
                                                       ".git/config": "x"})
    files = list_workspace_files(root)
    assert "packages/a/dist/app" in files       # no git: .gitignore means nothing
    assert ".gitignore" in files
    assert not [f for f in files if "/.git/" in "/" + f or "/.haz/" in "/" + f]
    assert files == sorted(files)


def test_cfg_006_walk_lists_symlinks_and_does_not_follow_directory_links(make_ws, monkeypatch):
    _no_git(monkeypatch)
    root = _ws(make_ws, '[tasks.build]\ncmd = "x"\n')
    os.symlink("src", root / "packages/a/srclink")
    os.symlink("main.c", root / "packages/a/src/alias.c")
    files = list_workspace_files(root)
    assert "packages/a/srclink" in files and "packages/a/src/alias.c" in files
    assert "packages/a/srclink/main.c" not in files


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=60)


def git_init(root: Path) -> None:
    git(root, "init", "-q")
    git(root, "config", "user.name", "hazrun tests")
    git(root, "config", "user.email", "tests@hazrun.invalid")


@pytest.mark.skipif(not HAS_GIT, reason="git not installed")
def test_cfg_006_git_ignored_files_are_not_inputs(make_ws):
    root = _ws(make_ws, '[tasks.build]\ncmd = "x"\n', {
        ".gitignore": "dist/\n*.log\n",
        "packages/a/debug.log": "x",
        "packages/a/src/.gitignore": "gen/\n",
    })
    git_init(root)
    git(root, "add", "haz.toml", "packages/a/haz.toml")
    git(root, "commit", "-q", "-m", "init")
    # Tracked, untracked-not-ignored: inputs.  Ignored, .git/, .haz/: never.
    assert _inputs(root) == ["packages/a/README.md", "packages/a/haz.toml",
                             "packages/a/src/.gitignore", "packages/a/src/main.c"]
    files = list_workspace_files(root)
    assert not [f for f in files if f.startswith(".git/") or "/.haz/" in "/" + f]
    assert "packages/a/sub/.git/HEAD" not in files


@pytest.mark.skipif(not HAS_GIT, reason="git not installed")
def test_cfg_006_input_patterns_selecting_nothing_there_are_warned(make_ws):
    """'scr/**' for 'src/**', or a file git ignores named as an input: no
    edit ever changed the key, and every run replayed the first output, in
    silence.  A wildcard over ignored files a dependency made ('dist/**')
    is not warned about: they reach the key through that dependency."""
    from conftest import run_hazrun
    root = make_ws({
        "haz.toml": '[workspace]\nmembers = ["p/*"]\n',
        ".gitignore": "dist/\nconfig.local\n",
        "p/a/src/main.c": "v1\n",
        "p/a/config.local": "c1\n",
        "p/a/haz.toml": (
            '[tasks.build]\ncmd = "mkdir -p dist && cat src/main.c > dist/out"\n'
            'inputs = ["src/**"]\noutputs = ["dist/**"]\n'
            '[tasks.typo]\ncmd = "cat src/main.c"\ninputs = ["scr/**"]\n'
            '[tasks.local]\ncmd = "cat config.local"\ninputs = ["config.local", "src/**"]\n'
            '[tasks.test]\ncmd = "cat dist/out"\ndeps = ["build"]\ninputs = ["dist/**"]\n'),
    })
    git_init(root)
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    # The second run with a remote cache (nothing there): the loop's quick
    # attempt gives way to the pool's, and the warnings must survive that.
    for extra in ([], ["--remote-cache", "http://127.0.0.1:9/c"]):
        proc = run_hazrun(root, "run", "a:typo", "a:local", "a:test", *extra)
        assert proc.returncode == 0, proc.stderr
        warnings = [l for l in proc.stderr.splitlines() if "selects no file" in l]
        assert sorted(warnings) == [
            "hazrun: warning: a:local: inputs pattern 'config.local' selects no file: git "
            "ignores it, and what git ignores is never an input (to make it one, stop "
            "ignoring it: 'git check-ignore -v p/a/config.local' names the line that does)",
            "hazrun: warning: a:typo: inputs pattern 'scr/**' selects no file: there is no "
            "p/a/scr/, so no edit makes the task run again (a typo?)",
        ], proc.stderr
    # A dry run restores nothing: a dependency's outputs not made yet are
    # no typo.
    import shutil
    shutil.rmtree(root / "p/a/dist")
    dry = run_hazrun(root, "run", "a:test", "--dry-run")
    assert "selects no file" not in dry.stderr, dry.stderr


def test_cfg_006_an_input_that_is_the_tasks_own_output_is_told_so(make_ws):
    """Not blamed on git, which is not even there."""
    from conftest import run_hazrun
    root = make_ws({"haz.toml": '[workspace]\n[tasks.c]\ncmd = "echo x > gen.txt"\n'
                                'inputs = ["gen.txt", "haz.toml"]\noutputs = ["gen.txt"]\n',
                    "gen.txt": "old\n"})
    proc = run_hazrun(root, "run", "c")
    assert ("root:c: inputs pattern 'gen.txt' selects no file: it is among the task's own "
            "outputs, which are never inputs") in proc.stderr, proc.stderr
    assert "git" not in proc.stderr


@pytest.mark.skipif(not HAS_GIT, reason="git not installed")
def test_cfg_006_git_deleted_tracked_file_is_not_an_input(make_ws):
    from hazrun.cache import Cache
    root = _ws(make_ws, '[tasks.build]\ncmd = "x"\n')
    git_init(root)
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    (root / "packages/a/README.md").unlink()
    with Cache(load_workspace(root), environ={}) as cache:
        keyed = [row[0] for row in cache.compute_key("a:build", {}).components["inputs"]]
    assert "packages/a/README.md" not in keyed
    assert "packages/a/src/main.c" in keyed


@pytest.mark.skipif(not HAS_GIT, reason="git not installed")
def test_cfg_006_git_submodule_root_and_untracked_files_listed_right(make_ws):
    root = _ws(make_ws, '[tasks.build]\ncmd = "x"\n', {"packages/a/new.c": "x"})
    git_init(root)
    git(root, "add", "haz.toml", "packages/a/haz.toml")
    (root / "packages/a/vendor").mkdir()
    (root / "packages/a/vendor/lib.c").write_text("x")
    # A gitlink (what 'git submodule add' records): a directory, not a file.
    git(root, "update-index", "--add", "--cacheinfo",
        "160000,1111111111111111111111111111111111111111,packages/a/vendor")
    files = list_workspace_files(root)
    assert "packages/a/vendor" not in files
    assert "packages/a/new.c" in files and "packages/a/haz.toml" in files


@pytest.mark.skipif(not HAS_GIT, reason="git not installed")
def test_cfg_006_workspace_in_a_subdirectory_of_a_git_work_tree(tmp_path, make_ws):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".gitignore").write_text("*.o\n")
    (repo / "unrelated.txt").write_text("x")
    git_init(repo)
    root = repo / "ws"
    for rel, text in {"haz.toml": '[workspace]\n[tasks.build]\ncmd = "x"\n',
                      "a.c": "x", "a.o": "x"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    # Paths stay relative to the workspace root; the repo's ignores apply.
    assert list_workspace_files(root) == ["a.c", "haz.toml"]
    assert _inputs(root, "root:build") == ["a.c", "haz.toml"]


@pytest.mark.skipif(not HAS_GIT, reason="git not installed")
def test_cfg_006_listing_started_ahead_is_the_same_and_used_only_at_the_root(make_ws):
    from hazrun.files import Listing

    root = _ws(make_ws, '[tasks.build]\ncmd = "x"\n', {".gitignore": "dist/\n"})
    git_init(root)
    git(root, "add", "haz.toml")
    git(root, "commit", "-q", "-m", "init")
    expected = list_workspace_files(root)
    ahead = Listing(root)
    try:
        assert list_workspace_files(root, ahead) == expected
        assert ahead.files(root) is not None
    finally:
        ahead.close()
    # Started in a project directory, it is not the root's listing: unused.
    elsewhere = Listing(root / "packages" / "a")
    try:
        assert elsewhere.files(root) is None
        assert list_workspace_files(root, elsewhere) == expected
    finally:
        elsewhere.close()


def test_cfg_006_listing_outside_git_falls_back_to_the_walk(make_ws):
    from hazrun.files import Listing

    root = _ws(make_ws, '[tasks.build]\ncmd = "x"\n')
    ahead = Listing(root)  # not a work tree (the test's tmp dir is no repository)
    try:
        assert ahead.files(root) is None
        assert "packages/a/src/main.c" in list_workspace_files(root, ahead)
    finally:
        ahead.close()


def test_cfg_006_whole_directory_patterns_select_what_matching_each_file_selects():
    """'dir/**' selects its slice of the listing without matching each path:
    the same paths, including names with newlines and odd characters."""
    from hazrun.globs import GlobSet
    files = sorted(["p/a/src/x", "p/a/src/y/z.c", "p/a/src/new\nline", "p/a/srcx",
                    "p/a/src", "p/a/dist/o", "p/b/src/x", "p/a/src/[x]", "p/a/.hidden",
                    "top"])
    for patterns in (("src/**",), ("**",), ("$root/p/b/**",), ("src/**", "!src/y/**")):
        globs = GlobSet.compile(patterns, "p/a")
        expected = [f for f in files if globs.match(f)]
        assert globs.select(files) == expected, patterns
    assert GlobSet.compile(("src/**",), "p/a").includes[0].whole
    assert not GlobSet.compile(("src/*.c",), "p/a").includes[0].whole


def _hazrun_unprivileged(root: Path, *args: str) -> subprocess.CompletedProcess:
    """hazrun on ``root``; as root, without the capabilities that read any
    directory, so a mode 000 directory is unreadable to it as to a user."""
    import sys
    from conftest import REPO
    argv = [sys.executable, "-m", "hazrun", "-C", str(root), *args]
    if os.geteuid() == 0:
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *argv]
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    env.pop("MAKEFLAGS", None)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def _told_unreadable(stderr: str) -> Dict[str, str]:
    """directory -> the task named, from 'cannot read directory' warnings."""
    found = re.findall(r"hazrun: warning: cannot read directory '([^']*)' \(permission "
                       r"denied\): its files are inputs of no task \((\S+) would read "
                       r"them\), so edits there make no task run again", stderr)
    assert len(found) == stderr.count("cannot read directory"), stderr
    return dict(found)


@pytest.mark.parametrize("in_git", [False, True])
def test_cfg_006_a_directory_that_cannot_be_read_is_told_where_inputs_may_be(
        make_ws, tmp_path, in_git):
    """The walk (outside git) and git (an untracked directory) passed over a
    directory they could not list: its files were no input, and an edit
    there replayed the old result without a word.  Now it is told, once a
    run, where some task's inputs may lie, and not where none can: under an
    exclude, below the depth a pattern reaches, in the task's own outputs.
    The git case has the workspace below the top of the repository, where
    git names the directory from the top."""
    if in_git and not HAS_GIT:
        pytest.skip("git not installed")
    root = make_ws({  # outside git: pytest's tmp_path
        "haz.toml": '[workspace]\nmembers = ["p/*"]\ninputs = ["shared/**"]\n',
        "shared/sec/x": "x\n",
        "p/a/haz.toml": '[tasks.build]\ncmd = "true"\n'
                        '[tasks.lint]\ncmd = "true"\ninputs = ["src/**", "!src/private/**"]\n',
        "p/a/src/private/key.c": "x\n",
        "p/b/haz.toml": '[tasks.build]\ncmd = "true"\ninputs = ["docs/*.md"]\n',
        "p/b/docs/x.md": "x\n",
        "p/b/docs/old/y.md": "x\n",
        "p/c/haz.toml": '[tasks.build]\ncmd = "mkdir -p out/d"\noutputs = ["out/**"]\n',
        "p/c/out/d/z": "x\n",
    })
    unreadable = [root / d for d in ("p/a/src/private", "shared/sec", "p/b/docs/old",
                                     "p/c/out/d")]
    if in_git:
        git_init(tmp_path)
        git(tmp_path, "add", "ws/haz.toml", "ws/p/a/haz.toml", "ws/p/b/haz.toml",
            "ws/p/b/docs/x.md", "ws/p/c/haz.toml")
        git(tmp_path, "commit", "-q", "-m", "init")
    for d in unreadable:
        d.chmod(0)
    try:
        for _ in range(2):  # told again by the next run: nothing changed
            proc = _hazrun_unprivileged(root, "run", "build", "lint")
            assert proc.returncode == 0, proc.stderr
            told = _told_unreadable(proc.stderr)
            assert told.keys() == {"p/a/src/private", "shared/sec"}, proc.stderr
            assert told["p/a/src/private"] == "a:build"  # not a:lint, which excludes it
    finally:
        for d in unreadable:
            d.chmod(0o755)
    proc = _hazrun_unprivileged(root, "run", "build", "lint")
    assert proc.returncode == 0 and "cannot read" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("in_git", [False, True])
def test_cfg_006_a_workspace_root_that_cannot_be_listed_is_told(make_ws, tmp_path, in_git):
    """Every task's inputs may lie under the root: the warning names '.'
    (git names the workspace from the top of the repository above it)."""
    if in_git and not HAS_GIT:
        pytest.skip("git not installed")
    root = make_ws({"haz.toml": '[workspace]\nmembers = ["p/*"]\n',
                    "p/a/haz.toml": '[tasks.build]\ncmd = "true"\n',
                    "p/a/x.c": "x\n"})
    if in_git:
        git_init(tmp_path)
        git(tmp_path, "add", "ws/haz.toml", "ws/p/a/haz.toml")
        git(tmp_path, "commit", "-q", "-m", "init")
    assert _hazrun_unprivileged(root, "run", "build").returncode == 0  # makes .haz/
    root.chmod(0o111)
    try:
        proc = _hazrun_unprivileged(root, "run", "build")
    finally:
        root.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    assert _told_unreadable(proc.stderr) == {".": "a:build"}, proc.stderr
    assert "git ignores" not in proc.stderr


def test_cfg_006_a_directory_gone_while_walked_is_not_called_unreadable(tmp_path):
    """os.walk reports a directory removed under it (ENOENT) as it reports
    one it may not read: only the second holds files that are no input."""
    from hazrun.files import _walk_files
    unreadable = []
    assert _walk_files(tmp_path / "gone", unreadable) == []
    assert unreadable == []
    (tmp_path / "here").mkdir()
    assert _walk_files(tmp_path / "here" / "file-not-dir", unreadable) == [] and not unreadable

"""CFG-001..005: finding the root, projects, task keys, validation.

CFG-004 (references) is tested with the graph in test_graph.py, CFG-006
(globs and input files) in test_globs.py.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hazrun import ConfigError, NoWorkspaceError, load_workspace
from hazrun.config import MutexMode, MutexSpec

from conftest import hazrun_cmd

WS = '[workspace]\nmembers = ["packages/*"]\n'


def config_error(root: Path, start: Path = None) -> str:
    """Load the workspace, expect a ConfigError, return its message."""
    with pytest.raises(ConfigError) as info:
        load_workspace(start or root)
    assert info.value.exit_code == 2
    return str(info.value)


def one_project(make_ws, body: str) -> Path:
    """A workspace with one project 'a' whose haz.toml is ``body``."""
    return make_ws({"haz.toml": WS, "packages/a/haz.toml": body})


def run_hazrun(args, env, cwd=None):
    return subprocess.run(hazrun_cmd(*args), env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


# --------------------------------------------------------------------------
# CFG-001 Root

def test_cfg_001_root_found_upward_from_nested_directory(make_ws):
    root = make_ws({
        "haz.toml": WS,
        "packages/a/haz.toml": '[tasks.build]\ncmd = "true"\n',
        "packages/a/src/deep/er/file.txt": "x",
    })
    ws = load_workspace(root / "packages/a/src/deep/er")
    assert ws.root == root.resolve()
    assert list(ws.graph.tasks) == ["a:build"]


@pytest.mark.parametrize("body", [
    # TOML 1.1's newline in an inline table, and its \\e and \\x escapes: each a
    # valid haz.toml if read as TOML 1.1.
    '[tasks.t]\ncmd = "x"\nmutex = [{ name = "db",\n  mode = "shared" }]\n',
    '[tasks.t]\ncmd = "x"\ndescription = "\\e[1m"\n',
    '[tasks.t]\ncmd = "x"\ndescription = "\\x41"\n',
])
def test_cfg_001_toml_1_1_is_refused_on_every_python(make_ws, body):
    """haz.toml is TOML 1.0 as tomllib reads it: Python 3.9's tomli must not
    accept what 3.11 refuses (setup.cfg pins tomli below 2.4)."""
    msg = config_error(one_project(make_ws, body))
    assert msg.startswith("packages/a/haz.toml: invalid TOML"), msg


@pytest.mark.parametrize("body, why", [
    ('[tasks.t]\ncmd = "echo a\\u0000b"\n', "[tasks.t] key 'cmd': must not hold a NUL"),
    ('[tasks.t]\ncmd = ["echo", "a\\u0000b"]\n', "[tasks.t] key 'cmd': must not hold a NUL"),
    ("[tasks.t]\ncmd = \"x\"\ndeep = " + "[" * 1000 + "]" * 1000 + "\n",
     "invalid TOML: nested too deeply"),
])
def test_cfg_003_what_toml_accepts_but_cannot_run_or_read(make_ws, body, why):
    """A NUL in a command is valid TOML that no exec takes (it crashed the
    run); arrays nested a thousand deep are a RecursionError of the parser."""
    msg = config_error(one_project(make_ws, body))
    assert msg.startswith("packages/a/haz.toml:") and why in msg, msg


def test_cfg_001_root_found_from_current_directory(make_ws, monkeypatch):
    root = make_ws({"haz.toml": WS, "packages/a/haz.toml": '[tasks.t]\ncmd = "true"\n'})
    monkeypatch.chdir(root / "packages/a")
    assert load_workspace().root == root.resolve()


def test_cfg_001_haz_toml_without_workspace_table_is_passed_over(make_ws):
    # The project's own haz.toml is nearer, but it has no [workspace] table.
    root = make_ws({"haz.toml": WS, "packages/a/haz.toml": '[tasks.t]\ncmd = "true"\n'})
    assert load_workspace(root / "packages/a").root == root.resolve()


def test_cfg_001_nearest_workspace_wins(make_ws):
    root = make_ws({
        "haz.toml": '[workspace]\n[tasks.outer]\ncmd = "true"\n',
        "inner/haz.toml": '[workspace]\n[tasks.inner]\ncmd = "true"\n',
    })
    assert list(load_workspace(root / "inner").graph.tasks) == ["root:inner"]
    assert list(load_workspace(root).graph.tasks) == ["root:outer"]


def test_cfg_001_no_root_found_names_directory(tmp_path):
    start = tmp_path / "nowhere" / "deep"
    start.mkdir(parents=True)
    (tmp_path / "nowhere" / "haz.toml").write_text('[tasks.t]\ncmd = "x"\n')  # no [workspace]
    with pytest.raises(NoWorkspaceError) as info:
        load_workspace(start)
    assert info.value.exit_code == 2
    assert str(start.resolve()) in str(info.value)


@pytest.mark.parametrize("text, what", [
    ('[[workspace]]\nmembers = ["p/*"]\n', "an array of tables ([[workspace]])"),
    ('workspace = "yes"\n', "a string")])
def test_cfg_001_a_workspace_key_that_is_no_table_is_named(tmp_path, text, what):
    (tmp_path / "haz.toml").write_text(text)
    with pytest.raises(NoWorkspaceError) as info:
        load_workspace(tmp_path)
    assert (f"{tmp_path.resolve() / 'haz.toml'}: key 'workspace' must be a table, "
            f"[workspace], got {what}") in str(info.value)


@pytest.mark.parametrize("table", ["workspaces", "Workspace", "worksapce"])
def test_cfg_001_a_misspelt_workspace_table_is_named(tmp_path, table):
    (tmp_path / "haz.toml").write_text(f'[{table}]\nmembers = ["p/*"]\n')
    with pytest.raises(NoWorkspaceError) as info:
        load_workspace(tmp_path)
    assert (f"{tmp_path.resolve() / 'haz.toml'} has a [{table}] table: did you mean "
            "[workspace]?") in str(info.value)


def test_cfg_001_no_root_cli_exit_2_names_directory(tmp_path, hazrun_env):
    start = tmp_path / "empty"
    start.mkdir()
    for args, cwd in ((["list"], start), (["-C", str(start), "list"], None),
                      (["graph", "-C", str(start)], None)):
        proc = run_hazrun(args, hazrun_env, cwd=cwd)
        assert proc.returncode == 2, proc
        assert proc.stderr.startswith("hazrun: error: no haz.toml with a [workspace]")
        assert str(start.resolve()) in proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stdout == ""


def test_cfg_001_dash_c_not_a_directory(tmp_path, hazrun_env):
    f = tmp_path / "file"
    f.write_text("")
    proc = run_hazrun(["-C", str(f), "list"], hazrun_env)
    assert proc.returncode == 2
    assert str(f) in proc.stderr and "not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cfg_001_dash_c_before_or_after_subcommand(make_ws, hazrun_env, tmp_path):
    root = make_ws({"haz.toml": WS, "packages/a/haz.toml": '[tasks.build]\ncmd = "true"\n'})
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    before = run_hazrun(["-C", str(root / "packages/a"), "list"], hazrun_env, cwd=outside)
    after = run_hazrun(["list", "-C", str(root)], hazrun_env, cwd=outside)
    assert before.returncode == after.returncode == 0, (before.stderr, after.stderr)
    assert "a:build" in before.stdout
    assert before.stdout == after.stdout


def test_cfg_001_broken_project_file_below_root_does_not_hide_other_errors(make_ws):
    # Started inside a project whose haz.toml does not parse: the root above
    # is still found and the whole workspace's problems come together.
    root = make_ws({
        "haz.toml": WS,
        "packages/a/haz.toml": '[tasks.build]\ncmd = "unterminated\n',
        "packages/b/haz.toml": '[tasks.build]\ncmd = "true"\ncolour = 1\n',
    })
    msg = config_error(root, start=root / "packages/a")
    assert "packages/a/haz.toml: invalid TOML" in msg
    assert "packages/b/haz.toml: [tasks.build]: unknown key 'colour'" in msg


def test_cfg_001_broken_file_with_no_root_above_reports_syntax_error(tmp_path):
    (tmp_path / "haz.toml").write_text("[workspace\n")
    msg = config_error(tmp_path)
    assert "invalid TOML" in msg and "line 1, column" in msg


# --------------------------------------------------------------------------
# CFG-002 Projects

def test_cfg_002_members_globs_select_directories_with_haz_toml(make_ws):
    root = make_ws({
        "haz.toml": '[workspace]\nmembers = ["packages/*", "apps/**/svc-?"]\n',
        "packages/a/haz.toml": '[tasks.t]\ncmd = "x"\n',
        "packages/b/haz.toml": '[tasks.t]\ncmd = "x"\n',
        "packages/no-config/README": "not a project",
        "packages/file.txt": "a file, not a directory",
        "apps/x/y/svc-1/haz.toml": '[tasks.t]\ncmd = "x"\n',
        "apps/svc-2/haz.toml": '[tasks.t]\ncmd = "x"\n',
        "apps/x/svc-10/haz.toml": '[tasks.t]\ncmd = "x"\n',   # '?' is one char
        "other/c/haz.toml": '[tasks.t]\ncmd = "x"\n',         # not a member
    })
    ws = load_workspace(root)
    assert sorted(ws.projects) == ["a", "b", "svc-1", "svc-2"]
    assert ws.projects["svc-1"].rel_dir == "apps/x/y/svc-1"
    assert ws.projects["a"].dir == root.resolve() / "packages/a"
    assert ws.projects["a"].config_file == root.resolve() / "packages/a/haz.toml"


@pytest.mark.parametrize("members, expected", [
    (["packages/[!a]*"], ["b", "c"]),
    (["packages/[^a]*"], ["b", "c"]),                 # as in inputs and outputs
    (["packages/*", "!packages/[^a]*"], ["a"]),       # the same class, as an exclude
    (["packages/*"], ["a", "b", "c"]),                # '*' matches a leading dot
    (["packages/b", "tools/x"], ["b", "x"]),          # literal paths
    (["**/haz-*"], ["haz-deep"]),
    (["tools/**"], ["tools", "x"]),                   # '**': none included
    (["linked/**"], ["b"]),                           # through a symlinked directory
])
def test_cfg_002_member_globs_follow_the_glob_rules_of_haz_toml(make_ws, members, expected):
    """GLOBS in haz.toml(5): one set of rules for includes, excludes, inputs
    and outputs (includes went through Python's glob module)."""
    files = {"haz.toml": f"[workspace]\nmembers = {json.dumps(members)}\n"}
    for rel, name in (("packages/a", "a"), ("packages/b", "b"), ("packages/.c", "c"),
                      ("tools", "tools"), ("tools/x", "x"), ("deep/er/haz-deep", "haz-deep")):
        files[f"{rel}/haz.toml"] = f'[project]\nname = "{name}"\n[tasks.t]\ncmd = "x"\n'
    root = make_ws(files)
    os.symlink("..", root / "packages" / "loop")  # '**' must not walk round it
    (root / "linked").mkdir()
    os.symlink("../packages/b", root / "linked" / "to-b")
    assert sorted(load_workspace(root).projects) == expected


def test_cfg_002_members_exclusion(make_ws):
    root = make_ws({
        "haz.toml": '[workspace]\nmembers = ["packages/*", "!packages/legacy", '
                    '"!packages/old-*"]\n',
        "packages/a/haz.toml": '[tasks.t]\ncmd = "x"\n',
        "packages/legacy/haz.toml": '[tasks.t]\ncmd = "x"\n',
        "packages/old-1/haz.toml": "this is not even TOML [",
        "packages/older/haz.toml": '[tasks.t]\ncmd = "x"\n',
    })
    assert sorted(load_workspace(root).projects) == ["a", "older"]


def test_cfg_002_members_absent_root_only_workspace(make_ws):
    root = make_ws({"haz.toml": '[workspace]\n[tasks.build]\ncmd = "true"\n',
                    "sub/haz.toml": '[tasks.t]\ncmd = "x"\n'})
    ws = load_workspace(root)
    assert list(ws.projects) == ["root"]
    assert ws.projects["root"].rel_dir == ""
    assert ws.settings.members == ()


def test_cfg_002_root_is_a_project_only_with_tasks(make_ws):
    root = make_ws({"haz.toml": WS, "packages/a/haz.toml": '[tasks.t]\ncmd = "x"\n'})
    assert list(load_workspace(root).projects) == ["a"]
    (root / "haz.toml").write_text(WS + '[tasks.lint]\ncmd = "x"\n')
    ws = load_workspace(root)
    assert sorted(ws.projects) == ["a", "root"]
    assert "root:lint" in ws.graph


def test_cfg_002_default_names(make_ws):
    root = make_ws({
        "haz.toml": WS + '[tasks.t]\ncmd = "x"\n',
        "packages/dir-name/haz.toml": '[tasks.t]\ncmd = "x"\n',
        "packages/other/haz.toml": '[project]\nname = "my.lib@2/x-y"\n[tasks.t]\ncmd = "x"\n',
    })
    ws = load_workspace(root)
    assert sorted(ws.projects) == ["dir-name", "my.lib@2/x-y", "root"]
    assert ws.projects["root"].dir == root.resolve()
    assert ws.projects["my.lib@2/x-y"].rel_dir == "packages/other"
    assert "my.lib@2/x-y:t" in ws.graph


@pytest.mark.parametrize("name", ["-lead", ".hidden", "a:b", "with space", "", "é", "_x"])
def test_cfg_002_invalid_project_name(make_ws, name):
    root = one_project(make_ws, f'[project]\nname = "{name}"\n[tasks.t]\ncmd = "x"\n')
    msg = config_error(root)
    assert msg.startswith("packages/a/haz.toml: [project] key 'name': ")
    assert f"project name '{name}' must match" in msg
    assert "no ':'" in msg


@pytest.mark.parametrize("name", ["my_lib", "@scope/ui"])
def test_cfg_002_underscores_and_npm_scopes_are_names(make_ws, name):
    root = one_project(make_ws, f'[project]\nname = "{name}"\n[tasks.t]\ncmd = "x"\n')
    assert f"{name}:t" in load_workspace(root).graph


def test_cfg_002_invalid_directory_name_asks_for_project_name(make_ws):
    root = make_ws({"haz.toml": WS, "packages/my pkg/haz.toml": '[tasks.t]\ncmd = "x"\n'})
    msg = config_error(root)
    assert "packages/my pkg/haz.toml: project name 'my pkg' must match" in msg
    assert 'set [project] name = "..."' in msg


def test_cfg_002_duplicate_names_name_both_files(make_ws):
    root = make_ws({
        "haz.toml": '[workspace]\nmembers = ["libs/*", "apps/*"]\n',
        "apps/util/haz.toml": '[tasks.t]\ncmd = "x"\n',
        "libs/util/haz.toml": '[tasks.t]\ncmd = "x"\n',
    })
    msg = config_error(root)
    assert "project name 'util' is also used by" in msg
    assert "apps/util/haz.toml" in msg and "libs/util/haz.toml" in msg


def test_cfg_002_duplicate_name_with_root_project(make_ws):
    root = make_ws({
        "haz.toml": WS + '[tasks.t]\ncmd = "x"\n',
        "packages/a/haz.toml": '[project]\nname = "root"\n[tasks.t]\ncmd = "x"\n',
    })
    msg = config_error(root)
    assert "packages/a/haz.toml: [project] key 'name': project name 'root' is also " \
           "used by haz.toml" in msg


def test_cfg_002_member_may_not_have_workspace_table(make_ws):
    root = one_project(make_ws, '[workspace]\n[tasks.t]\ncmd = "x"\n')
    msg = config_error(root)
    assert "packages/a/haz.toml: [workspace]: only the workspace root" in msg


def test_cfg_002_member_linking_outside_root_is_an_error(make_ws, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "haz.toml").write_text('[tasks.t]\ncmd = "x"\n')
    root = make_ws({"haz.toml": WS, "packages/a/haz.toml": '[tasks.t]\ncmd = "x"\n'})
    (root / "packages/ext").symlink_to(outside)
    msg = config_error(root)
    assert "haz.toml: [workspace] key 'members': 'packages/*' matches packages/ext" in msg
    assert "outside the workspace root" in msg
    # Excluded, it is no longer looked at.
    (root / "haz.toml").write_text('[workspace]\nmembers = ["packages/*", "!packages/ext"]\n')
    assert sorted(load_workspace(root).projects) == ["a"]


def test_cfg_002_member_linking_inside_root_uses_real_directory(make_ws):
    root = make_ws({"haz.toml": WS, "real/b/haz.toml": '[tasks.t]\ncmd = "x"\n'})
    (root / "packages").mkdir()
    (root / "packages/b").symlink_to(root / "real/b")
    ws = load_workspace(root)
    assert ws.projects["b"].rel_dir == "real/b"


@pytest.mark.parametrize("pattern", ["packages/b", "packages/**", "packages/*"])
def test_cfg_002_a_member_that_is_a_link_is_its_real_directory_however_matched(
        make_ws, pattern):
    """A literal member path, a '**' whose top is the link itself and a '*'
    entry: each is resolved to the directory the link leads to."""
    root = make_ws({"haz.toml": f'[workspace]\nmembers = ["{pattern}"]\n',
                    "real/b/haz.toml": '[tasks.t]\ncmd = "x"\n'})
    if pattern == "packages/**":
        (root / "packages").symlink_to(root / "real/b")
    else:
        (root / "packages").mkdir()
        (root / "packages/b").symlink_to(root / "real/b")
    ws = load_workspace(root)
    assert ws.projects["b"].rel_dir == "real/b"


# --------------------------------------------------------------------------
# CFG-003 Tasks: every key, valid values

def test_cfg_003_all_task_keys_parsed(make_ws):
    root = one_project(make_ws, '''
        [project]
        deps = []

        [tasks.build]
        cmd = "make all"
        inputs = ["src/**", "!src/**/*.tmp", "$root/VERSION"]
        outputs = ["dist/**", "build.log"]
        env = ["CC", "_X1"]
        tags = ["heavy", "io"]
        mutex = ["db", {name = "port", mode = "shared"}, {name = "gpu"}]
        cache = false
        timeout = 90
        grace = 2.5
        description = "Build it"

        [tasks.test]
        cmd = ["pytest", "-q"]
        deps = ["build"]
        after = ["lint"]

        [tasks.lint]
        cmd = "lint"

        [tasks.all]
        deps = ["build", "test"]
    ''')
    ws = load_workspace(root)
    b = ws.task("a:build")
    assert b.cmd == "make all"
    assert b.inputs == ("src/**", "!src/**/*.tmp", "$root/VERSION")
    assert b.outputs == ("dist/**", "build.log")
    assert b.env == ("CC", "_X1")
    assert b.tags == ("heavy", "io")
    assert b.mutex == (MutexSpec("db", MutexMode.EXCLUSIVE),
                       MutexSpec("port", MutexMode.SHARED),
                       MutexSpec("gpu", MutexMode.EXCLUSIVE))
    assert b.cache is False and b.timeout == 90.0 and b.grace == 2.5
    assert b.description == "Build it"
    t = ws.task("a:test")
    assert t.cmd == ("pytest", "-q") and t.deps == ("build",) and t.after == ("lint",)
    assert t.inputs is None  # absent: every file of the project (CFG-006)
    assert t.outputs == () and t.cache is True and t.timeout is None and t.grace is None
    assert ws.task("a:all").cmd is None


def test_cfg_003_workspace_keys_parsed(make_ws):
    root = make_ws({"haz.toml": '''
        [workspace]
        members = []
        concurrency = 3
        env = ["CI"]
        inputs = ["pnpm-lock.yaml"]
        grace = 4

        [workspace.tags]
        heavy = 1
        io = 4
    '''})
    s = load_workspace(root).settings
    assert (s.concurrency, s.env, s.inputs, s.grace) == (3, ("CI",), ("pnpm-lock.yaml",), 4.0)
    assert dict(s.tags) == {"heavy": 1, "io": 4}
    defaults = load_workspace(make_ws({"haz.toml": "[workspace]\n"}, name="w2")).settings
    assert defaults.grace == 10.0 and defaults.concurrency is None


def test_cfg_003_project_deps(make_ws):
    root = make_ws({"haz.toml": WS,
                    "packages/a/haz.toml": '[project]\ndeps = ["b"]\n[tasks.t]\ncmd = "x"\n',
                    "packages/b/haz.toml": '[tasks.t]\ncmd = "x"\n'})
    assert load_workspace(root).projects["a"].deps == ("b",)


# CFG-003/005: every key's type check.  (body of [tasks.t], expected words)
TASK_TYPE_ERRORS = [
    ('cmd = 3', "key 'cmd': must be a string (run by /bin/sh -c) or a non-empty array"),
    ('cmd = []', "key 'cmd': must be a string"),
    ('cmd = ["ok", 1]', "key 'cmd': must be a string"),
    ('cmd = "  "', "key 'cmd': must not be empty"),
    ('cmd = "x"\ndeps = "build"', "key 'deps': must be an array of strings, got a string (\"build\"); write [\"build\"]"),
    ('cmd = "x"\ndeps = [1]', "key 'deps': must be an array of strings, got an array holding an integer (1)"),
    ('cmd = "x"\nafter = "build"', "key 'after': must be an array of strings"),
    ('cmd = "x"\ninputs = "src/**"', "key 'inputs': must be an array of strings"),
    ('cmd = "x"\noutputs = [true]', "key 'outputs': must be an array of strings"),
    ('cmd = "x"\nenv = "HOME"', "key 'env': must be an array of strings"),
    ('cmd = "x"\nenv = ["1BAD"]', "key 'env': '1BAD' is not an environment variable name"),
    ('cmd = "x"\ntags = "heavy"', "key 'tags': must be an array of strings"),
    ('cmd = "x"\ntags = [""]', "key 'tags': tag names must not be empty"),
    ('cmd = "x"\nmutex = "db"', "key 'mutex': must be an array"),
    ('cmd = "x"\nmutex = [1]', "key 'mutex': entries must be"),
    ('cmd = "x"\nmutex = [{name = "db", mode = "weird"}]',
     "key 'mutex': mode of mutex 'db' must be \"shared\" or \"exclusive\""),
    ('cmd = "x"\nmutex = [{nmae = "db"}]', "unknown key 'nmae' in a mutex table (did you mean 'name'?)"),
    ('cmd = "x"\nmutex = [{mode = "shared"}]', "each mutex table needs name"),
    ('cmd = "x"\nmutex = ["db", "db"]', "mutex 'db' is listed twice"),
    ('cmd = "x"\ncache = "no"', "key 'cache': must be true or false, got a string (\"no\")"),
    ('cmd = "x"\ncache = "false"', "key 'cache': must be true or false, got a string "
                                "(\"false\"); write it without the quotes"),
    ('cmd = "x"\ntimeout = "5"', "key 'timeout': must be a number of seconds, got a string (\"5\"); "
                                "write it without the quotes"),
    ('cmd = "x"\ntimeout = true', "key 'timeout': must be a number of seconds, got a boolean (true)"),
    ('cmd = "x"\ntimeout = 0', "key 'timeout': must be greater than 0, got 0"),
    ('cmd = "x"\ntimeout = -1', "key 'timeout': must not be negative"),
    ('cmd = "x"\ntimeout = nan', "key 'timeout': must be a finite number of seconds, got nan"),
    ('cmd = "x"\ntimeout = inf', "key 'timeout': must be a finite number of seconds, got inf"),
    ('cmd = "x"\ngrace = -0.5', "key 'grace': must not be negative"),
    ('cmd = "x"\ngrace = -inf', "key 'grace': must be a finite number of seconds"),
    ('cmd = "x"\ngrace = [1]', "key 'grace': must be a number of seconds, got an array"),
    ('cmd = "x"\ntimeout = 00:10:00', "key 'timeout': must be a number of seconds, got a time "
                                      "(00:10:00)"),
    ('cmd = "x"\ntags = "heavy, gpu"', "key 'tags': must be an array of strings, got a string "
                                       "(\"heavy, gpu\"); write [\"heavy\", \"gpu\"]"),
    ('cmd = "x"\ndescription = 7', "key 'description': must be a string, got an integer (7)"),
]


@pytest.mark.parametrize("body, expected", TASK_TYPE_ERRORS,
                         ids=[b.split("\n")[-1] for b, _ in TASK_TYPE_ERRORS])
def test_cfg_003_task_key_type_checks(make_ws, body, expected):
    root = one_project(make_ws, f"[tasks.t]\n{body}\n")
    msg = config_error(root)
    assert msg.startswith("packages/a/haz.toml: [tasks.t]"), msg
    assert expected in msg, msg
    assert "\n" not in msg, "one problem, one line"


WORKSPACE_TYPE_ERRORS = [
    ('members = "packages/*"', "[workspace] key 'members': must be an array of strings"),
    ("concurrency = 0", "[workspace] key 'concurrency': must be at least 1"),
    ('concurrency = "4"', "[workspace] key 'concurrency': must be an integer, got a string "
                          "(\"4\"); write it without the quotes"),
    ("concurrency = 2.5", "[workspace] key 'concurrency': must be an integer, got a number (2.5)"),
    ('env = ["A-B"]', "[workspace] key 'env': 'A-B' is not an environment variable name"),
    ("inputs = [1]", "[workspace] key 'inputs': must be an array of strings"),
    ('grace = "10s"', "[workspace] key 'grace': must be a number of seconds"),
    ("grace = nan", "[workspace] key 'grace': must be a finite number of seconds"),
    ("remote_cache = {timeout = inf}",
     "[workspace.remote_cache] key 'timeout': must be a finite number of seconds"),
    ("tags = 3", "[workspace] key 'tags': must be a table of TAG = cap"),
    ("tags = {heavy = 0}", "[workspace] key 'tags': cap of tag 'heavy' must be at least 1"),
    ('remote_cache = {url = "http://x", protocol = "ftp"}',
     "[workspace.remote_cache] key 'protocol': must be \"http\" or \"turbo\""),
    ("remote_cache = {read_only = 1}", "[workspace.remote_cache] key 'read_only': must be true or false"),
]


@pytest.mark.parametrize("line, expected", WORKSPACE_TYPE_ERRORS,
                         ids=[line for line, _ in WORKSPACE_TYPE_ERRORS])
def test_cfg_003_workspace_key_type_checks(make_ws, line, expected):
    root = make_ws({"haz.toml": f"[workspace]\n{line}\n"})
    msg = config_error(root)
    assert msg == f"haz.toml: {expected}" or msg.startswith(f"haz.toml: {expected}"), msg


def test_cfg_003_no_quotes_hint_where_it_would_not_help(make_ws):
    """concurrency = "1.5" without its quotes is still no integer."""
    msg = config_error(make_ws({"haz.toml": '[workspace]\nconcurrency = "1.5"\n'}))
    assert msg == ("haz.toml: [workspace] key 'concurrency': must be an integer, got a "
                   "string (\"1.5\")"), msg


def test_cfg_003_remote_cache_token_is_an_error_and_not_echoed(make_ws):
    root = make_ws({"haz.toml": '[workspace.remote_cache]\nurl = "http://c"\n'
                                'token = "s3cr3t-value"\n'})
    msg = config_error(root)
    assert "HAZ_REMOTE_CACHE_TOKEN" in msg
    assert "s3cr3t-value" not in msg


@pytest.mark.parametrize("body, expected", [
    ('[project]\nname = 1\n[tasks.t]\ncmd = "x"', "[project] key 'name': must be a string"),
    ('[project]\ndeps = "b"\n[tasks.t]\ncmd = "x"', "[project] key 'deps': must be an array of strings"),
    ('project = 1\n[tasks.t]\ncmd = "x"', "[project]: must be a table, got an integer (1)"),
    ('tasks = 1', "[tasks]: must be a table, got an integer"),
    ('[tasks]\nt = "echo"', "[tasks.t]: must be a table, got a string (\"echo\"); write [tasks.t] with cmd = \"echo\""),
    ('[tasks]\n"docs.html" = "make docs"', "[tasks.\"docs.html\"]: must be a table, got a string "
     "(\"make docs\"); write [tasks.\"docs.html\"] with cmd = \"make docs\""),
])
def test_cfg_003_project_and_table_type_checks(make_ws, body, expected):
    msg = config_error(one_project(make_ws, body + "\n"))
    assert msg.startswith("packages/a/haz.toml: " + expected), msg


@pytest.mark.parametrize("name, table", [("a:b", '[tasks."a:b"]'), ("-x", "[tasks.-x]"),
                                         ("with space", '[tasks."with space"]')])
def test_cfg_003_invalid_task_name(make_ws, name, table):
    """The table is named as written in haz.toml: quoted unless a bare key."""
    msg = config_error(one_project(make_ws, f'[tasks."{name}"]\ncmd = "x"\n'))
    assert f"{table}: task name '{name}' must match" in msg


# --------------------------------------------------------------------------
# CFG-005 Validation

def test_cfg_005_toml_syntax_error_with_line_and_column(make_ws):
    root = one_project(make_ws, '[tasks.build]\ncmd = "ok"\ndeps = [\n  "a",\n  oops\n]\n')
    msg = config_error(root)
    assert msg.startswith("packages/a/haz.toml: invalid TOML: ")
    assert "(at line 5, column 3)" in msg


def test_cfg_005_toml_syntax_error_in_root_file(make_ws):
    root = make_ws({"haz.toml": '[workspace]\nmembers = ["a",\n'})
    msg = config_error(root)
    assert "haz.toml: invalid TOML" in msg and "line 3, column 1" in msg


def test_cfg_005_toml_not_utf8(make_ws):
    root = one_project(make_ws, "")
    (root / "packages/a/haz.toml").write_bytes(b'[tasks.t]\ncmd = "\xff"\n')
    msg = config_error(root)
    assert msg.startswith("packages/a/haz.toml: invalid TOML")


@pytest.mark.parametrize("files, expected", [
    ({"packages/a/haz.toml": '[tasks.build]\ncmd = "x"\ndescrption = "d"\n'},
     "packages/a/haz.toml: [tasks.build]: unknown key 'descrption' (did you mean 'description'?)"),
    ({"packages/a/haz.toml": '[task.build]\ncmd = "x"\n'},
     "packages/a/haz.toml: unknown table 'task' (did you mean 'tasks'?)"),
    ({"packages/a/haz.toml": '[project]\nnmae = "x"\n[tasks.t]\ncmd = "x"\n'},
     "packages/a/haz.toml: [project]: unknown key 'nmae' (did you mean 'name'?)"),
    ({"packages/a/haz.toml": '[tasks.t]\ncmd = "x"\ntimeuot = 3\n'},
     "packages/a/haz.toml: [tasks.t]: unknown key 'timeuot' (did you mean 'timeout'?)"),
    ({"haz.toml": '[workspace]\nmember = ["packages/*"]\n'},
     "haz.toml: [workspace]: unknown key 'member' (did you mean 'members'?)"),
    ({"haz.toml": '[workspace]\n[workspace.remote_cache]\nurll = "http://x"\n'},
     "haz.toml: [workspace.remote_cache]: unknown key 'urll' (did you mean 'url'?)"),
    ({"haz.toml": '[workspace]\n[workspaces]\nx = 1\n'},
     "haz.toml: unknown table 'workspaces' (did you mean 'workspace'?)"),
    ({"packages/a/haz.toml": '[tasks.t]\ncmd = "x"\nzzz = 1\n'},
     "packages/a/haz.toml: [tasks.t]: unknown key 'zzz'"),
])
def test_cfg_005_unknown_key_did_you_mean(make_ws, files, expected):
    root = make_ws({"haz.toml": WS, **files})
    msg = config_error(root)
    assert expected in msg, msg
    if "zzz" in expected:
        assert "did you mean" not in msg


def test_cfg_005_a_group_task_has_no_outputs(make_ws):
    """A task without cmd writes nothing: outputs on it would claim the
    files its deps wrote (an output overlap at run time)."""
    root = one_project(make_ws, '[tasks.build]\ncmd = "x"\noutputs = ["dist/**"]\n'
                                '[tasks.all]\ndeps = ["build"]\noutputs = ["dist/**"]\n'
                                '[tasks.fine]\ndeps = ["build"]\noutputs = []\n')
    msg = config_error(root)
    assert ("packages/a/haz.toml: [tasks.all] key 'outputs': a task without 'cmd' "
            "produces nothing") in msg, msg
    assert "[tasks.build]" not in msg and "[tasks.fine]" not in msg


def test_cfg_005_task_with_neither_cmd_nor_deps(make_ws):
    root = one_project(make_ws, '[tasks.empty]\ndescription = "nothing"\n'
                                '[tasks.also]\ndeps = []\n[tasks.group]\ndeps = ["empty"]\n')
    msg = config_error(root)
    assert "packages/a/haz.toml: [tasks.empty]: has neither 'cmd' nor 'deps'" in msg
    assert "packages/a/haz.toml: [tasks.also]: has neither 'cmd' nor 'deps'" in msg
    assert "[tasks.group]" not in msg


@pytest.mark.parametrize("key, pattern, why", [
    ("inputs", "../other/**", "'..' is not allowed in a pattern; name files elsewhere "
                              "in the workspace with $root/..."),
    ("inputs", "src/../../x", "'..' is not allowed"),
    ("inputs", "src/../x", "'..' is not allowed"),
    ("inputs", "!../x", "'..' is not allowed"),
    ("outputs", "../dist", "'..' is not allowed"),
    ("inputs", "/etc/passwd", "absolute paths are not allowed"),
    ("outputs", "/tmp/out", "absolute paths are not allowed"),
    ("inputs", "$root/../x", "'..' is not allowed"),
    ("inputs", "$root//abs", "absolute paths are not allowed"),
    ("outputs", "$root/dist", "outputs must be inside the project directory"),
    ("inputs", "", "empty pattern"),
    ("inputs", "src/[ab", "unclosed '['"),
])
def test_cfg_005_escaping_and_absolute_globs(make_ws, key, pattern, why):
    msg = config_error(one_project(make_ws, f'[tasks.t]\ncmd = "x"\n{key} = ["{pattern}"]\n'))
    assert msg.startswith(f"packages/a/haz.toml: [tasks.t] key '{key}': '{pattern}': "), msg
    assert why in msg


@pytest.mark.parametrize("files", [
    {"haz.toml": '[workspace]\ninputs = ["../x"]\n[tasks.t]\ncmd = "x"\n'},
    {"haz.toml": '[workspace]\n[tasks.t]\ncmd = "x"\ninputs = ["$root/../x"]\n'},
])
def test_cfg_005_dotdot_advice_only_where_root_would_help(make_ws, files):
    """Workspace-level patterns and $root/ ones are rooted already: telling
    their author to use $root/ would change nothing."""
    msg = config_error(make_ws(files))
    assert "'..' is not allowed in a pattern" in msg
    assert "$root/..." not in msg


@pytest.mark.parametrize("key, pattern", [
    ("inputs", "../lock"), ("inputs", "/abs"), ("members", "../elsewhere/*"), ("members", "/x/*"),
])
def test_cfg_005_escaping_workspace_globs(make_ws, key, pattern):
    msg = config_error(make_ws({"haz.toml": f'[workspace]\n{key} = ["{pattern}"]\n'}))
    assert msg.startswith(f"haz.toml: [workspace] key '{key}': '{pattern}': ")


def test_cfg_005_all_errors_of_one_load_reported_together(make_ws, hazrun_env):
    root = make_ws({
        "haz.toml": '[workspace]\nmembers = ["packages/*"]\nconcurrency = 0\n',
        "packages/a/haz.toml": '''
            [project]
            deps = ["bb", "a"]
            [tasks.build]
            cmd = "x"
            deps = ["b:biuld", "nope"]
            inputs = ["../x"]
            [tasks.empty]
        ''',
        "packages/b/haz.toml": '''
            [tasks.build]
            cmd = 1
            colour = "red"
            [tasks.x]
            cmd = "x"
            deps = ["y"]
            [tasks.y]
            cmd = "y"
            after = ["x"]
        ''',
        "packages/c/haz.toml": "[tasks.build\n",
        "packages/d/haz.toml": '[project]\nname = "b"\n[tasks.t]\ncmd = "x"\n',
    })
    expected = [
        "haz.toml: [workspace] key 'concurrency': must be at least 1",
        "packages/a/haz.toml: [project] key 'deps': unknown project 'bb' (did you mean 'b'?)",
        "packages/a/haz.toml: [project] key 'deps': project 'a' depends on itself",
        "packages/a/haz.toml: [tasks.build] key 'deps': 'b:biuld': project 'b' has no "
        "task 'biuld' (did you mean 'build'?)",
        "packages/a/haz.toml: [tasks.build] key 'deps': 'nope': project 'a' has no task 'nope'",
        "packages/a/haz.toml: [tasks.build] key 'inputs': '../x': '..' is not allowed",
        "packages/a/haz.toml: [tasks.empty]: has neither 'cmd' nor 'deps'",
        "packages/b/haz.toml: [tasks.build] key 'cmd': must be a string",
        "packages/b/haz.toml: [tasks.build]: unknown key 'colour'",
        "packages/b/haz.toml: [tasks.x]: dependency cycle: b:x -> b:y -> b:x",
        "packages/c/haz.toml: invalid TOML",
        "packages/d/haz.toml: [project] key 'name': project name 'b' is also used by "
        "packages/b/haz.toml",
    ]
    msg = config_error(root)
    for line in expected:
        assert line in msg, f"{line!r} missing from:\n{msg}"
    assert len(msg.splitlines()) == len(expected), msg
    # The command line prints them all, each as its own error line.
    proc = subprocess.run(hazrun_cmd("-C", str(root), "list"), env=hazrun_env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == len(expected)
    assert all(line.startswith("hazrun: error: ") for line in lines), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_cfg_005_whole_workspace_validated_when_one_task_targeted(make_ws, hazrun_env):
    root = make_ws({
        "haz.toml": WS,
        "packages/a/haz.toml": '[tasks.build]\ncmd = "touch ran"\n',
        "packages/b/haz.toml": '[tasks.build]\ncmd = "true"\ntimeout = "soon"\n',
    })
    for args in (["graph", "a:build"], ["graph", "--dot", "a:build"], ["run", "a:build"]):
        proc = subprocess.run(hazrun_cmd("-C", str(root), *args), env=hazrun_env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "packages/b/haz.toml: [tasks.build] key 'timeout'" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stdout == ""
    assert not (root / "packages/a/ran").exists(), "nothing runs on a config error"


BROKEN_CONFIGS = {
    "syntax": {"packages/a/haz.toml": "[tasks.t\n"},
    "types": {"packages/a/haz.toml": '[tasks.t]\ncmd = {a = 1}\nmutex = [[1]]\ntimeout = []\n'},
    "bad-glob": {"packages/a/haz.toml": '[tasks.t]\ncmd = "x"\ninputs = ["a[]", "[z-a]", "a[!]"]\n'},
    "cycle": {"packages/a/haz.toml": '[tasks.t]\ncmd = "x"\ndeps = ["b:t"]\n',
              "packages/b/haz.toml": '[tasks.t]\ncmd = "x"\ndeps = ["a:t"]\n'},
    "self": {"packages/a/haz.toml": '[project]\ndeps=["a"]\n[tasks.t]\ncmd = "x"\ndeps = ["t", "^t"]\n'},
    "refs": {"packages/a/haz.toml": '[tasks.t]\ncmd = "x"\ndeps = ["^", ":", "a:", ":t", "^^t"]\n'},
    "not-tables": {"packages/a/haz.toml": 'tasks = [1, 2]\nproject = "p"\n'},
    "members-type": {"haz.toml": "[workspace]\nmembers = [{a = 1}]\n"},
    "workspace-not-table": {"haz.toml": "workspace = 1\n[tasks.t]\ncmd = 'x'\n"},
    "remote-table-type": {"haz.toml": "[workspace]\nremote_cache = 5\n"},
    "not-utf8": {"packages/a/haz.toml": "cmd = '\udcff'"},
}


@pytest.mark.parametrize("case", sorted(BROKEN_CONFIGS))
def test_cfg_005_broken_config_never_prints_traceback(make_ws, hazrun_env, case):
    files = {"haz.toml": WS, **BROKEN_CONFIGS[case]}
    root = make_ws({k: v for k, v in files.items() if "\udcff" not in v})
    for rel, text in files.items():
        if "\udcff" in text:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(text.encode("utf-8", "surrogateescape"))
    for args in (["list"], ["graph"], ["graph", "--dot", "t"], ["run", "t"]):
        proc = subprocess.run(hazrun_cmd("-C", str(root), *args), env=hazrun_env,
                              capture_output=True, text=True, timeout=60)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
        assert proc.stderr.startswith("hazrun: error: "), proc.stderr
        assert proc.stdout == ""


# Values of every TOML type, valid and not, for every key.
FUZZ_VALUES = ['1', '-1', '0', '2.5', 'true', '"x"', '""', '"../x"', '"/a"', '"a[]"',
               '"$root/"', '"!"', '[]', '[1]', '["a", 2]', '["x"]', '["^x"]', '["a:b"]',
               '[":"]', '["^"]', '[{name = "m"}]', '[{name = 1}]', '[{mode = "shared"}]',
               '[["a"]]', '{}', '{a = 1}', '{heavy = 0}', '[{}]', '["src/**", "!x"]',
               '["dist"]', '["a[!]"]', '1979-05-27', 'inf', 'nan']
FUZZ_TASK_KEYS = ["cmd", "deps", "after", "inputs", "outputs", "env", "tags", "mutex",
                  "cache", "timeout", "grace", "description", "bogus"]
FUZZ_WS_KEYS = ["members", "concurrency", "env", "inputs", "grace", "tags",
                "remote_cache", "bogus"]


@pytest.mark.parametrize("seed", range(60))
def test_cfg_005_random_configs_load_or_raise_config_error(tmp_path, seed):
    """Whatever the values, a load succeeds or raises a HazError: never
    another exception (which the command line would print as a traceback)."""
    import random
    from hazrun import HazError
    rng = random.Random(seed)
    for n in range(10):
        root = tmp_path / f"w{n}"
        root.mkdir()
        lines = ["[workspace]", 'members = ["p/*"]']
        lines += [f"{k} = {rng.choice(FUZZ_VALUES)}"
                  for k in rng.sample(FUZZ_WS_KEYS[1:], rng.randint(0, 3))]
        (root / "haz.toml").write_text("\n".join(lines) + "\n")
        for _ in range(rng.randint(1, 3)):
            lines = []
            if rng.random() < 0.5:
                deps = rng.choice(FUZZ_VALUES + ['["a"]', '["b", "c"]'])
                lines += ["[project]", f"deps = {deps}"]
            for t in range(rng.randint(0, 3)):
                lines.append(f"[tasks.{rng.choice('abc')}{t}]")
                lines += [f"{k} = {rng.choice(FUZZ_VALUES)}"
                          for k in rng.sample(FUZZ_TASK_KEYS, rng.randint(0, 4))]
            d = root / "p" / rng.choice("abcd")
            d.mkdir(parents=True, exist_ok=True)
            (d / "haz.toml").write_text("\n".join(lines) + "\n")
        try:
            load_workspace(root).graph.canonical_order()
        except HazError as e:
            assert str(e) and e.exit_code == 2


def test_cfg_002_a_member_glob_that_selects_nothing_is_a_warning(make_ws, hazrun_env):
    root = make_ws({"haz.toml": '[workspace]\nmembers = ["pakages/*", "packages/*"]\n',
                    "packages/a/haz.toml": '[tasks.build]\ncmd = "true"\n'})
    expected = ("haz.toml: [workspace] key 'members': 'pakages/*' matches no directory "
                "with a haz.toml")
    for _ in range(2):  # a fresh load, then one from the snapshot
        ws = load_workspace(root)
        assert ws.warnings == (expected,) and list(ws.graph.tasks) == ["a:build"]
    proc = run_hazrun(["-C", str(root), "list"], hazrun_env)
    assert proc.returncode == 0 and f"hazrun: warning: {expected}" in proc.stderr
    (root / "haz.toml").write_text('[workspace]\nmembers = ["packages/*"]\n')
    assert load_workspace(root).warnings == ()


def test_cfg_002_members_under_a_symlinked_directory_are_found(make_ws):
    """'vendor/**' through vendor/lib -> ../third_party (inside the root), as
    Python's glob did; the link loop back to the root is walked once."""
    root = make_ws({"haz.toml": '[workspace]\nmembers = ["vendor/**"]\n',
                    "third_party/zlib/haz.toml": '[tasks.t]\ncmd = "x"\n'})
    (root / "vendor").mkdir()
    os.symlink("../third_party", root / "vendor" / "lib")
    os.symlink("..", root / "vendor" / "up")
    assert sorted(load_workspace(root).projects) == ["zlib"]


# --------------------------------------------------------------------------
# Mistakes of a first use (CFG-001/002/005), told plainly

def test_cfg_001_a_byte_order_mark_is_passed_over(make_ws):
    """Windows editors write one; tomllib called it 'Invalid statement (at
    line 1, column 1)', of a character the editor does not show."""
    root = make_ws({"haz.toml": WS, "packages/a/haz.toml": '[tasks.build]\ncmd = "x"\n'})
    (root / "packages/a/haz.toml").write_bytes(b"\xef\xbb\xbf[tasks.build]\ncmd = \"x\"\n")
    (root / "haz.toml").write_bytes(b"\xef\xbb\xbf" + WS.encode())
    assert list(load_workspace(root).graph.tasks) == ["a:build"]
    (root / "packages/a/haz.toml").write_bytes(b'[tasks.build]\ncmd = "x"\n# caf\xe9\n')
    assert "packages/a/haz.toml: invalid TOML: not UTF-8 (invalid continuation byte, " \
        "line 3)" in config_error(root)


def test_cfg_002_a_haz_toml_that_is_a_directory_is_an_error(make_ws):
    """A member's dropped the project without a word; the root's said no
    haz.toml was there."""
    root = make_ws({"haz.toml": WS, "packages/b/haz.toml": '[tasks.build]\ncmd = "x"\n'})
    (root / "packages/a/haz.toml").mkdir(parents=True)
    msg = config_error(root)
    assert msg.count("packages/a/haz.toml: is a directory; a haz.toml must be a file") == 1
    assert msg.count("\n") == 0  # once, also when loaded from inside it
    assert config_error(root, root / "packages/a") == msg
    lone = make_ws({"x": ""}) / "lone"
    (lone / "haz.toml").mkdir(parents=True)
    with pytest.raises(ConfigError) as info:
        load_workspace(lone)
    assert "haz.toml: is a directory; a haz.toml must be a file" in str(info.value)


def test_cfg_005_every_bad_mutex_and_env_entry_is_reported(make_ws):
    root = one_project(make_ws, '[tasks.build]\ncmd = "x"\n'
                                'mutex = [{name = ""}, "db", "db", {nam = "x"}, 3]\n'
                                'env = ["1BAD", "A-B", "OK", "A=B"]\n')
    msg = config_error(root)
    for reason in ("mutex names must not be empty", "unknown key 'nam' in a mutex table",
                   "got an integer", "mutex 'db' is listed twice",
                   "'1BAD' is not an environment", "'A-B' is not an environment",
                   "'A=B' is not an environment"):
        assert reason in msg, reason
    assert "'OK'" not in msg


@pytest.mark.parametrize("member, advice", [
    ("/tmp", 'absolute paths are not allowed; members are directories relative to the '
             'workspace root (e.g. "packages/*")'),
    (".", "names the root itself"),
    ("./", "names the root itself"),
])
def test_cfg_002_member_patterns_get_advice_that_fits_members(make_ws, member, advice):
    root = make_ws({"haz.toml": f'[workspace]\nmembers = ["{member}"]\n'})
    msg = config_error(root)
    assert f"haz.toml: [workspace] key 'members': '{member}': {advice}" in msg
    assert "$root" not in msg



@pytest.mark.parametrize("bad", ["!/abs", "!", "!.", "!../x", "![z-a]"])
def test_cfg_005_a_bad_member_exclude_is_an_error_not_a_traceback(make_ws, bad):
    """CFG-005: an exclude in [workspace] members that no glob can be is
    reported (naming file, key and pattern) like a bad include; it used to
    end the load with a GlobSyntaxError."""
    root = make_ws({"haz.toml": f'[workspace]\nmembers = ["packages/*", {json.dumps(bad)}]\n',
                    "packages/a/haz.toml": '[tasks.b]\ncmd = "true"\n'})
    message = config_error(root)
    assert "haz.toml: [workspace] key 'members'" in message and repr(bad) in message


def test_cfg_002_members_walk_does_not_follow_links_out_of_the_workspace(make_ws):
    """CFG-002: 'packages/**' does not walk a symlink that leads out of the
    workspace (a sysroot link to /usr cost every command a walk of /usr;
    a link to another checkout gave an error per haz.toml in it)."""
    other = make_ws({"haz.toml": '[workspace]\nmembers = ["q/*"]\n',
                     "q/x/haz.toml": '[tasks.b]\ncmd = "true"\n'}, name="other")
    root = make_ws({"haz.toml": '[workspace]\nmembers = ["packages/**"]\n',
                    "packages/a/haz.toml": '[tasks.b]\ncmd = "true"\n'})
    (root / "packages" / "a" / "vendor").symlink_to(other / "q")
    ws = load_workspace(root)
    assert list(ws.graph.tasks) == ["a:b"]


@pytest.mark.parametrize("key", ["inputs", "outputs"])
def test_cfg_006_a_list_of_excludes_only_is_an_error(make_ws, key):
    """CFG-006: ['!*.md'] selects nothing (no include to take from); as
    inputs, no edit would ever make the task run again, silently."""
    root = one_project(make_ws, f'[tasks.a]\ncmd = "true"\n{key} = ["!*.md"]\n')
    message = config_error(root)
    assert f"packages/a/haz.toml: [tasks.a] key '{key}'" in message
    assert "only excludes" in message and '["**", "!*.md"]' in message


def test_cfg_006_workspace_inputs_absolute_path_advice_names_the_root(make_ws):
    root = make_ws({"haz.toml": WS + 'inputs = ["/etc/passwd"]\n',
                    "packages/a/haz.toml": '[tasks.a]\ncmd = "true"\n'})
    message = config_error(root)
    assert "[workspace] key 'inputs': '/etc/passwd'" in message
    assert "relative to the workspace root" in message and "project" not in message


@pytest.mark.parametrize("outputs", ['["*"]', '["**"]', '["haz.toml"]', '["*.toml", "out"]'])
def test_cfg_005_outputs_that_match_the_projects_haz_toml_are_refused(make_ws, outputs):
    """Outputs are never inputs: with '*' as outputs, edits to haz.toml
    (and the sources) never changed the key, and a hit put the stored
    copies back over them."""
    root = one_project(make_ws, f'[tasks.gen]\ncmd = "echo x > out.txt"\noutputs = {outputs}\n')
    message = config_error(root)
    assert "[tasks.gen] key 'outputs'" in message and "matches this project's haz.toml" in message


def test_cfg_005_a_task_name_that_is_no_bare_key_is_quoted_in_messages(make_ws):
    root = one_project(make_ws, '[tasks."docs.html"]\ncmd = 1\n')
    assert '[tasks."docs.html"] key \'cmd\'' in config_error(root)


def test_cfg_005_load_warnings_come_with_its_errors(make_ws, hazrun_env):
    """A members typo ('lib/*') is a warning, and the error it causes (an
    unknown project) was all the user saw: the warning says why."""
    root = make_ws({"haz.toml": '[workspace]\nmembers = ["lib/*", "docs"]\n',
                    "libs/cfoo/haz.toml": '[tasks.build]\ncmd = "true"\n',
                    "docs/haz.toml": '[tasks.build]\ncmd = "true"\nafter = ["cfoo:build"]\n'})
    proc = run_hazrun(["-C", str(root), "list"], hazrun_env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == ("hazrun: warning: haz.toml: [workspace] key 'members': 'lib/*' "
                        "matches no directory with a haz.toml"), lines
    assert "unknown project 'cfoo'" in lines[1], lines


def test_cfg_002_a_project_that_is_no_member_is_told_when_run_from_inside(make_ws, hazrun_env):
    """Run from inside a directory whose haz.toml no members pattern
    matches: its tasks are not the workspace's, and hazrun says so rather
    than running the rest of the workspace without a word."""
    root = make_ws({"haz.toml": '[workspace]\nmembers = ["libs/*"]\n',
                    "libs/a/haz.toml": '[tasks.build]\ncmd = "true"\n',
                    "apps/cli/haz.toml": '[tasks.build]\ncmd = "true"\n',
                    "apps/cli/src/main.c": ""})
    inside = run_hazrun(["list"], hazrun_env, cwd=root / "apps/cli/src")
    assert inside.returncode == 0, inside.stderr
    assert ("apps/cli/haz.toml is not a member of the workspace: no pattern of "
            "[workspace] members in haz.toml matches apps/cli") in inside.stderr
    member = run_hazrun(["list"], hazrun_env, cwd=root / "libs/a")
    assert member.returncode == 0 and "not a member" not in member.stderr, member.stderr
    # Left out by a '!' of members: on purpose, nothing to say.
    (root / "haz.toml").write_text('[workspace]\nmembers = ["libs/*", "apps/*", "!apps/cli"]\n')
    excluded = run_hazrun(["list"], hazrun_env, cwd=root / "apps/cli/src")
    assert excluded.returncode == 0 and "not a member" not in excluded.stderr, excluded.stderr

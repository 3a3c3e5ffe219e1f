"""``hazrun list`` and ``hazrun graph [TARGET...] [--dot]`` (CLI section 8)."""
from __future__ import annotations

import subprocess
import textwrap

import pytest

from conftest import REPO, hazrun_cmd

FILES = {
    "haz.toml": '''
        [workspace]
        members = ["packages/*"]
        [tasks.fmt]
        cmd = "x"
        description = "Format everything"
    ''',
    "packages/app/haz.toml": '''
        [project]
        deps = ["lib"]
        [tasks.build]
        cmd = "x"
        deps = ["^build"]
        description = "Build the app"
        [tasks.test]
        cmd = "x"
        deps = ["build"]
        after = ["docs:build"]
        tags = ["heavy", "io"]
        mutex = ["db", {name = "port", mode = "shared"}]
        cache = false
    ''',
    "packages/lib/haz.toml": '''
        [tasks.build]
        cmd = "x"
        description = 'Build the "lib"'
    ''',
    "packages/docs/haz.toml": '''
        [tasks.build]
        cmd = "x"
    ''',
}

NOTES = "[tags: heavy, io; mutex: db, port (shared); not cached]"


@pytest.fixture
def ws(make_ws):
    return make_ws(FILES)


def hazrun(env, *args, cwd=None):
    proc = subprocess.run(hazrun_cmd(*args), env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def expect(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def test_cli_list_projects_and_tasks_in_canonical_order(ws, hazrun_env):
    proc = hazrun(hazrun_env, "-C", str(ws), "list")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == expect(f"""
        projects:
          app   packages/app  deps: lib
          docs  packages/docs
          lib   packages/lib
          root  .
        tasks:
          docs:build
          lib:build   Build the "lib"
          app:build   Build the app
          app:test  {NOTES}
          root:fmt    Format everything
    """)


def test_cli_list_from_a_project_directory(ws, hazrun_env):
    proc = hazrun(hazrun_env, "list", cwd=ws / "packages/app")
    assert proc.returncode == 0
    assert proc.stdout == hazrun(hazrun_env, "list", "-C", str(ws)).stdout


def test_graph_003_graph_text_in_canonical_order(ws, hazrun_env):
    proc = hazrun(hazrun_env, "graph", "-C", str(ws))
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == expect(f"""
        docs:build
        lib:build
        app:build  <- deps: lib:build
        app:test  <- deps: app:build; after: docs:build  {NOTES}
        root:fmt
    """)


def test_graph_004_graph_limited_to_targets_closure(ws, hazrun_env):
    # docs:build is only a soft predecessor of app:test: not in the closure,
    # and the 'after' edge to it is not shown.
    proc = hazrun(hazrun_env, "-C", str(ws), "graph", "test")
    assert proc.returncode == 0
    assert proc.stdout == expect(f"""
        lib:build
        app:build  <- deps: lib:build
        app:test  <- deps: app:build  {NOTES}
    """)
    both = hazrun(hazrun_env, "-C", str(ws), "graph", "app:test", "docs:build")
    assert both.stdout.splitlines()[0] == "docs:build"
    assert f"app:test  <- deps: app:build; after: docs:build  {NOTES}" in both.stdout


def test_cli_graph_dot(ws, hazrun_env):
    proc = hazrun(hazrun_env, "-C", str(ws), "graph", "--dot")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == expect('''
        digraph hazrun {
          rankdir=LR;
          node [shape=box];
          "docs:build";
          "lib:build";
          "app:build";
          "app:test";
          "root:fmt";
          "lib:build" -> "app:build";
          "app:build" -> "app:test";
          "docs:build" -> "app:test" [style=dashed, label="after"];
        }
    ''')


def test_cli_graph_dot_with_target(ws, hazrun_env):
    proc = hazrun(hazrun_env, "-C", str(ws), "graph", "app:build", "--dot")
    assert proc.returncode == 0
    assert proc.stdout == expect('''
        digraph hazrun {
          rankdir=LR;
          node [shape=box];
          "lib:build";
          "app:build";
          "lib:build" -> "app:build";
        }
    ''')


def test_cli_graph_dot_quotes_every_label(make_ws, hazrun_env):
    root = make_ws({"haz.toml": '[workspace]\nmembers = ["p/*"]\n',
                    "p/a/haz.toml": '[project]\nname = "web/site@2.x"\n[tasks."e2e-test"]\n'
                                    'cmd = "x"\n'})
    proc = hazrun(hazrun_env, "-C", str(root), "graph", "--dot")
    assert proc.returncode == 0
    assert '  "web/site@2.x:e2e-test";\n' in proc.stdout


def test_cli_graph_unknown_target(ws, hazrun_env):
    proc = hazrun(hazrun_env, "-C", str(ws), "graph", "tset")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("hazrun: error: unknown target 'tset': no project has a task "
                           "of that name (did you mean 'test'?) (hazrun list shows every "
                           "task)\n")


def test_cli_empty_workspace(make_ws, hazrun_env):
    root = make_ws({"haz.toml": "[workspace]\n"})
    proc = hazrun(hazrun_env, "-C", str(root), "list")
    assert (proc.returncode, proc.stdout) == (0, "projects:\ntasks:\n")
    proc = hazrun(hazrun_env, "-C", str(root), "graph")
    assert (proc.returncode, proc.stdout) == (0, "")


def test_cli_demo_workspace_lists(hazrun_env):
    proc = hazrun(hazrun_env, "-C", str(REPO / "demo"), "list")
    assert proc.returncode == 0, proc.stderr
    assert "app:build" in proc.stdout and "docs:build" in proc.stdout
    proc = hazrun(hazrun_env, "-C", str(REPO / "demo"), "graph", "--dot")
    assert proc.returncode == 0 and proc.stdout.startswith("digraph hazrun {")


def test_cli_no_command_is_usage_error(hazrun_env, tmp_path):
    proc = hazrun(hazrun_env, cwd=tmp_path)
    assert proc.returncode == 2
    assert "usage: hazrun" in proc.stderr


def test_cli_errors_are_prefixed_lines_on_stderr(make_ws, hazrun_env):
    root = make_ws({"haz.toml": '[workspace]\nmembers = ["p/*"]\n',
                    "p/a/haz.toml": '[tasks.a]\ncmd = 1\n[tasks.b]\n',
                    "p/b/haz.toml": '[tasks.c]\ncmd = "x"\ndeps = ["a:z"]\n'})
    proc = hazrun(hazrun_env, "-C", str(root), "list")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "hazrun: error: p/a/haz.toml: [tasks.a] key 'cmd': must be a string (run by "
        "/bin/sh -c) or a non-empty array of strings (run directly), got an integer (1)",
        "hazrun: error: p/a/haz.toml: [tasks.b]: has neither 'cmd' nor 'deps'; give it "
        "a command to run, or deps to group",
        "hazrun: error: p/b/haz.toml: [tasks.c] key 'deps': 'a:z': project 'a' has no "
        "task 'z'",
    ]


def test_exec_021_exit_runs_atexit_hooks_flushes_output_and_keeps_the_status(ws, hazrun_env):
    """The console script ends without interpreter teardown (start-up time),
    yet with everything an exit owes: atexit hooks, flushed stdio, the status."""
    import sys
    script = ("import atexit, sys\n"
              "atexit.register(lambda: print('atexit hook ran'))\n"
              "print('printed first, still buffered')\n"
              "from hazrun.cli import main\n"
              "main(sys.argv[1:])\n")
    proc = subprocess.run([sys.executable, "-c", script, "-C", str(ws), "list"],
                          env=hazrun_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "printed first, still buffered" and lines[1] == "projects:"
    assert lines[-1] == "atexit hook ran"
    failing = subprocess.run([sys.executable, "-c", script, "-C", str(ws), "run", "nope"],
                             env=hazrun_env, capture_output=True, text=True, timeout=60)
    assert failing.returncode == 2 and failing.stdout.endswith("atexit hook ran\n")

"""CFG-004 references, GRAPH-001..004: labels, edges, canonical order, targets."""
from __future__ import annotations

import random
import subprocess
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from hazrun import ConfigError, UsageError, load_workspace
from hazrun.graph import EdgeKind

from conftest import hazrun_cmd

WS = '[workspace]\nmembers = ["packages/*"]\n'


def config_error(root: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_workspace(root)
    return str(info.value)


def edges(ws) -> Set[Tuple[str, str, str]]:
    return {(p, s, k.value) for p, s, k in ws.graph.edges()}


# --------------------------------------------------------------------------
# CFG-004 References

def test_cfg_004_same_project_caret_and_explicit_references(make_ws):
    root = make_ws({
        "haz.toml": WS,
        "packages/app/haz.toml": '''
            [project]
            deps = ["lib", "util", "docs"]
            [tasks.build]
            cmd = "x"
            deps = ["^build", "gen"]
            [tasks.gen]
            cmd = "x"
            [tasks.test]
            cmd = "x"
            deps = ["build", "tools:check"]
            after = ["^lint"]
        ''',
        "packages/lib/haz.toml": '[tasks.build]\ncmd = "x"\n[tasks.lint]\ncmd = "x"\n',
        "packages/util/haz.toml": '[tasks.build]\ncmd = "x"\n',
        "packages/docs/haz.toml": '[tasks.render]\ncmd = "x"\n',   # no build: passed over
        "packages/tools/haz.toml": '[tasks.check]\ncmd = "x"\n',
    })
    ws = load_workspace(root)
    assert ws.graph.hard_preds["app:build"] == ("app:gen", "lib:build", "util:build")
    assert ws.graph.hard_preds["app:test"] == ("app:build", "tools:check")
    assert ws.graph.soft_preds["app:test"] == ("lib:lint",)
    assert ws.graph.hard_succs["lib:build"] == ["app:build"]
    assert ws.graph.soft_succs["lib:lint"] == ["app:test"]
    assert ws.graph.hard_preds["docs:render"] == ()



def test_cfg_004_caret_reference_no_project_has_is_an_error(make_ws):
    """'^biuld' with no 'biuld' anywhere is a typo: passed over, it left
    the edge out and app built before lib, silently."""
    root = make_ws({
        "haz.toml": WS,
        "packages/app/haz.toml": '[project]\ndeps = ["lib"]\n'
                                 '[tasks.build]\ncmd = "x"\ndeps = ["^biuld"]\n',
        "packages/lib/haz.toml": '[tasks.build]\ncmd = "x"\n',
    })
    msg = config_error(root)
    assert "packages/app/haz.toml: [tasks.build] key 'deps': '^biuld': no project has a " \
        "task 'biuld' (did you mean 'build'?)" in msg
    # A name some project has, even one outside the dependencies: passed over.
    (root / "packages/other").mkdir()
    (root / "packages/other/haz.toml").write_text('[tasks.biuld]\ncmd = "x"\n')
    assert load_workspace(root).graph.hard_preds["app:build"] == ()

def test_cfg_004_caret_only_follows_project_deps(make_ws):
    root = make_ws({
        "haz.toml": WS,
        "packages/a/haz.toml": '[tasks.build]\ncmd = "x"\ndeps = ["^build"]\n',
        "packages/b/haz.toml": '[tasks.build]\ncmd = "x"\n',
    })
    # 'a' declares no project deps: '^build' names nothing, and that is fine.
    assert load_workspace(root).graph.hard_preds["a:build"] == ()


def test_cfg_004_duplicate_references_and_deps_with_after(make_ws):
    root = make_ws({
        "haz.toml": WS,
        "packages/a/haz.toml": '''
            [project]
            deps = ["b"]
            [tasks.t]
            cmd = "x"
            deps = ["b:t", "^t", "b:t"]
            after = ["^t", "u"]
            [tasks.u]
            cmd = "x"
        ''',
        "packages/b/haz.toml": '[tasks.t]\ncmd = "x"\n',
    })
    ws = load_workspace(root)
    # GRAPH-002: listed in both deps and after, an edge is hard only.
    assert edges(ws) == {("b:t", "a:t", "hard"), ("a:u", "a:t", "soft")}


@pytest.mark.parametrize("ref, expected", [
    ("nope:build", "'nope:build': unknown project 'nope'"),
    ("bb:build", "'bb:build': unknown project 'bb' (did you mean 'b'?)"),
    ("b:biuld", "'b:biuld': project 'b' has no task 'biuld' (did you mean 'build'?)"),
    ("b:zzz", "'b:zzz': project 'b' has no task 'zzz'"),
    ("tset", "'tset': project 'a' has no task 'tset' (did you mean 'test'?)"),
    ("^", "'^' names no task"),
    (":build", "':build': unknown project ''"),
])
def test_cfg_005_unknown_reference(make_ws, ref, expected):
    root = make_ws({
        "haz.toml": WS,
        "packages/a/haz.toml": f'[tasks.build]\ncmd = "x"\nafter = ["{ref}"]\n'
                               '[tasks.test]\ncmd = "x"\n',
        "packages/b/haz.toml": '[tasks.build]\ncmd = "x"\n',
    })
    msg = config_error(root)
    assert msg.startswith("packages/a/haz.toml: [tasks.build] key 'after': " + expected), msg
    if "zzz" in ref or "nope" in ref:
        assert "did you mean" not in msg


def test_cfg_005_unknown_project_in_project_deps(make_ws):
    root = make_ws({"haz.toml": WS,
                    "packages/app/haz.toml": '[project]\ndeps = ["libb"]\n[tasks.t]\ncmd = "x"\n',
                    "packages/lib/haz.toml": '[tasks.t]\ncmd = "x"\n'})
    assert config_error(root) == ("packages/app/haz.toml: [project] key 'deps': unknown "
                                  "project 'libb' (did you mean 'lib'?)")


@pytest.mark.parametrize("project_deps, ref, expected", [
    ('["a"]', "t", "[project] key 'deps': project 'a' depends on itself"),
    ("[]", "build", "[tasks.build] key 'deps': 'build': task 'a:build' depends on itself"),
    ("[]", "a:build", "[tasks.build] key 'deps': 'a:build': task 'a:build' depends on itself"),
])
def test_cfg_005_self_dependency(make_ws, project_deps, ref, expected):
    root = make_ws({"haz.toml": WS, "packages/a/haz.toml": f'''
        [project]
        deps = {project_deps}
        [tasks.build]
        cmd = "x"
        deps = ["{ref}"]
        [tasks.t]
        cmd = "x"
    '''})
    msg = config_error(root)
    assert f"packages/a/haz.toml: {expected}" in msg
    assert msg.count("\n") == 0, msg


@pytest.mark.parametrize("files, expected", [
    ({"packages/a/haz.toml": '[tasks.build]\ncmd = "x"\ndeps = ["b:build"]\n',
      "packages/b/haz.toml": '[tasks.build]\ncmd = "x"\ndeps = ["a:build"]\n'},
     ["packages/a/haz.toml: [tasks.build]: dependency cycle: a:build -> b:build -> a:build"]),
    # Through '^' and across three projects; reported from the smallest label.
    ({"packages/c/haz.toml": '[project]\ndeps = ["a"]\n[tasks.build]\ncmd = "x"\ndeps = ["^build"]\n',
      "packages/a/haz.toml": '[project]\ndeps = ["b"]\n[tasks.build]\ncmd = "x"\ndeps = ["^build"]\n',
      "packages/b/haz.toml": '[project]\ndeps = ["c"]\n[tasks.build]\ncmd = "x"\ndeps = ["^build"]\n'},
     ["packages/a/haz.toml: [tasks.build]: dependency cycle: a:build -> b:build -> "
      "c:build -> a:build"]),
    # Soft edges count: the order would be impossible.
    ({"packages/a/haz.toml": '[tasks.x]\ncmd = "x"\nafter = ["y"]\n[tasks.y]\ncmd = "x"\n'
                             'deps = ["x"]\n'},
     ["packages/a/haz.toml: [tasks.x]: dependency cycle: a:x -> a:y -> a:x"]),
    # Two separate cycles, both reported; the tail leading into one is not.
    ({"packages/a/haz.toml": '[tasks.p]\ncmd = "x"\ndeps = ["q"]\n[tasks.q]\ncmd = "x"\n'
                             'deps = ["p"]\n[tasks.r]\ncmd = "x"\ndeps = ["p", "s"]\n'
                             '[tasks.s]\ncmd = "x"\nafter = ["r"]\n'},
     ["packages/a/haz.toml: [tasks.p]: dependency cycle: a:p -> a:q -> a:p",
      "packages/a/haz.toml: [tasks.r]: dependency cycle: a:r -> a:s -> a:r"]),
])
def test_cfg_005_cycles_printed_as_label_chain(make_ws, files, expected):
    msg = config_error(make_ws({"haz.toml": WS, **files}))
    assert sorted(msg.splitlines()) == sorted(expected)


def test_cfg_005_cycle_reported_with_other_problems(make_ws):
    root = make_ws({"haz.toml": WS,
                    "packages/a/haz.toml": '[tasks.build]\ncmd = "x"\ndeps = ["b:build", "b:nope"]\n',
                    "packages/b/haz.toml": '[tasks.build]\ncmd = "x"\ndeps = ["a:build"]\ncolor = 1\n'})
    msg = config_error(root)
    assert "dependency cycle: a:build -> b:build -> a:build" in msg
    assert "'b:nope': project 'b' has no task 'nope'" in msg
    assert "unknown key 'color'" in msg


def test_cfg_005_long_cycle_shortest_path_deep_graph_no_recursion_error(make_ws):
    n = 3000
    body = "".join(f'[tasks.t{i:04d}]\ncmd = "x"\ndeps = ["t{(i + 1) % n:04d}"]\n'
                   for i in range(n))
    msg = config_error(make_ws({"haz.toml": WS, "packages/a/haz.toml": body}))
    chain = msg.split("dependency cycle: ")[1].split(" -> ")
    assert len(chain) == n + 1 and chain[0] == chain[-1] == "a:t0000"
    assert chain[1] == "a:t0001"  # each task, then the one it depends on


# --------------------------------------------------------------------------
# GRAPH-001 Labels, GRAPH-002 Edge kinds

def test_graph_001_labels_are_project_colon_task(make_ws):
    root = make_ws({"haz.toml": WS + '[tasks.fmt]\ncmd = "x"\n',
                    "packages/web.app/haz.toml": '[tasks."e2e.test"]\ncmd = "x"\n'})
    ws = load_workspace(root)
    assert set(ws.graph.tasks) == {"root:fmt", "web.app:e2e.test"}
    for label, task in ws.graph.tasks.items():
        assert task.label == label == f"{task.project}:{task.name}"
        assert ws.project_of(label).name == task.project


def test_graph_002_hard_and_soft_edges(make_ws):
    root = make_ws({"haz.toml": WS, "packages/a/haz.toml": '''
        [tasks.a]
        cmd = "x"
        [tasks.b]
        cmd = "x"
        deps = ["a"]
        [tasks.c]
        cmd = "x"
        after = ["a", "b"]
    '''})
    ws = load_workspace(root)
    assert edges(ws) == {("a:a", "a:b", "hard"), ("a:a", "a:c", "soft"),
                         ("a:b", "a:c", "soft")}
    assert {k for _, _, k in ws.graph.edges()} == {EdgeKind.HARD, EdgeKind.SOFT}
    assert EdgeKind.HARD.value == "hard" and EdgeKind.SOFT.value == "soft"


# --------------------------------------------------------------------------
# GRAPH-003 Canonical order

def reference_order(labels: List[str], preds: Dict[str, Set[str]]) -> List[str]:
    """GRAPH-003 by its definition, quadratic: repeatedly place the smallest
    (by UTF-8 bytes) label whose predecessors are all placed."""
    placed: List[str] = []
    done: Set[str] = set()
    while len(placed) < len(labels):
        ready = [l for l in labels if l not in done and preds[l] <= done]
        assert ready, "cycle"
        first = min(ready, key=lambda l: l.encode())
        placed.append(first)
        done.add(first)
    return placed


def check_canonical(ws, subset=None) -> List[str]:
    g = ws.graph
    order = g.canonical_order(subset)
    nodes = set(g.tasks) if subset is None else set(subset)
    assert sorted(order) == sorted(nodes) and len(order) == len(set(order))
    pos = {l: i for i, l in enumerate(order)}
    for p, s, _ in g.edges():
        if p in nodes and s in nodes:
            assert pos[p] < pos[s], f"{p} must come before {s}"
    preds = {l: {p for p in g.hard_preds[l] + g.soft_preds[l] if p in nodes} for l in nodes}
    assert order == reference_order(sorted(nodes), preds)
    return order


def test_graph_003_smallest_ready_label_first(make_ws):
    root = make_ws({
        "haz.toml": WS,
        "packages/z/haz.toml": '[tasks.build]\ncmd = "x"\n',
        "packages/b/haz.toml": '[project]\ndeps = ["z"]\n[tasks.build]\ncmd = "x"\n'
                               'deps = ["^build"]\n[tasks.test]\ncmd = "x"\ndeps = ["build"]\n',
        "packages/a/haz.toml": '[tasks.lint]\ncmd = "x"\nafter = ["z:build"]\n'
                               '[tasks.zz]\ncmd = "x"\n',
    })
    order = check_canonical(load_workspace(root))
    # a:zz is ready from the start but larger than z:build; a:lint waits (soft)
    # for z:build and then is the smallest ready label.
    assert order == ["a:zz", "z:build", "a:lint", "b:build", "b:test"]


def test_graph_003_byte_order_of_labels(make_ws):
    names = ["Zeta", "alpha", "a-b", "a.b", "a", "a/b", "a@b", "B", "0x", "a0"]
    files = {"haz.toml": '[workspace]\nmembers = ["p/*"]\n'}
    for i, name in enumerate(names):
        files[f"p/d{i}/haz.toml"] = f'[project]\nname = "{name}"\n[tasks.t]\ncmd = "x"\n'
    order = check_canonical(load_workspace(make_ws(files)))
    # ':' (0x3a) sorts after '-', '.', '/', digits and before '@', letters.
    assert order == ["0x:t", "B:t", "Zeta:t", "a-b:t", "a.b:t", "a/b:t", "a0:t", "a:t",
                     "a@b:t", "alpha:t"]
    assert order == sorted(order, key=str.encode)


def test_graph_003_subset_order(make_ws):
    root = make_ws({"haz.toml": WS, "packages/a/haz.toml": '''
        [tasks.a]
        cmd = "x"
        [tasks.b]
        cmd = "x"
        deps = ["a"]
        [tasks.c]
        cmd = "x"
        after = ["b"]
        [tasks.d]
        cmd = "x"
    '''})
    ws = load_workspace(root)
    # Without b in the set, nothing orders c after a.
    assert check_canonical(ws, {"a:c", "a:a", "a:d"}) == ["a:a", "a:c", "a:d"]
    assert check_canonical(ws, {"a:c", "a:b", "a:a"}) == ["a:a", "a:b", "a:c"]
    assert check_canonical(ws, set()) == []


# The random workspaces: projects with random names in a hidden rank order;
# every edge goes from a lower to a higher (project rank, task index), so
# the graph is acyclic while the labels' byte order says nothing about it.
PROJECT_NAMES = ["app", "api", "Core", "core-utils", "db", "docs", "e2e", "lib.x",
                 "lib", "ui", "ui@2", "web/site", "zeta", "0tools", "alpha"]
TASK_NAMES = ["build", "test", "lint", "gen", "Pack", "check", "a", "z.e"]


def random_workspace(seed: int):
    """Returns (files, expected hard preds, expected soft preds)."""
    rng = random.Random(seed)
    projects = rng.sample(PROJECT_NAMES, rng.randint(3, len(PROJECT_NAMES)))
    tasks = {p: rng.sample(TASK_NAMES, rng.randint(1, 4)) for p in projects}
    rank = {(p, t): (i, j) for i, p in enumerate(projects) for j, t in enumerate(tasks[p])}
    hard: Dict[str, Set[str]] = {f"{p}:{t}": set() for p, t in rank}
    soft: Dict[str, Set[str]] = {f"{p}:{t}": set() for p, t in rank}
    pdeps = {p: sorted(rng.sample(projects[:i], rng.randint(0, min(i, 3))))
             for i, p in enumerate(projects)}
    bodies = {}
    for p in projects:
        tables = []
        for t in tasks[p]:
            label = f"{p}:{t}"
            refs = {"deps": [], "after": []}
            earlier = [(q, u) for (q, u), r in rank.items() if r < rank[(p, t)]]
            for q, u in rng.sample(earlier, min(len(earlier), rng.randint(0, 3))):
                kind = rng.choice(["deps", "after"])
                refs[kind].append(u if q == p else f"{q}:{u}")
                (hard if kind == "deps" else soft)[label].add(f"{q}:{u}")
            if pdeps[p] and rng.random() < 0.5:
                # A name some project has (one none has is an error).
                u = rng.choice(sorted({u for ts in tasks.values() for u in ts}))
                kind = rng.choice(["deps", "after"])
                refs[kind].append("^" + u)
                for q in pdeps[p]:
                    if u in tasks[q]:
                        (hard if kind == "deps" else soft)[label].add(f"{q}:{u}")
            lines = [f'[tasks."{t}"]', 'cmd = "true"']
            for kind in ("deps", "after"):
                rng.shuffle(refs[kind])
                if refs[kind] or rng.random() < 0.2:
                    lines.append(f"{kind} = [" + ", ".join(f'"{r}"' for r in refs[kind]) + "]")
            tables.append("\n".join(lines))
        rng.shuffle(tables)
        dep_list = ", ".join(f'"{q}"' for q in rng.sample(pdeps[p], len(pdeps[p])))
        bodies[p] = f'[project]\nname = "{p}"\ndeps = [{dep_list}]\n\n' + "\n\n".join(tables) + "\n"
    for label in hard:
        soft[label] -= hard[label]
    return bodies, hard, soft


def write_shuffled(root: Path, bodies: Dict[str, str], rng: random.Random) -> None:
    """Member directories created, and haz.toml files written, in random order
    under random directory names."""
    root.mkdir()
    (root / "haz.toml").write_text('[workspace]\nmembers = ["pkgs/*"]\n')
    names = list(bodies)
    rng.shuffle(names)
    dirs = {p: f"d{rng.randrange(10**6):06d}-{i}" for i, p in enumerate(names)}
    for p in names:
        (root / "pkgs" / dirs[p]).mkdir(parents=True)
    rng.shuffle(names)
    for p in names:
        (root / "pkgs" / dirs[p] / "haz.toml").write_text(bodies[p])


@pytest.mark.parametrize("seed", range(40))
def test_graph_003_canonical_order_property_random_dags(tmp_path, seed):
    bodies, hard, soft = random_workspace(seed)
    orders = []
    for attempt in range(3):
        root = tmp_path / f"ws{attempt}"
        write_shuffled(root, bodies, random.Random(seed * 1000 + attempt))
        ws = load_workspace(root)
        # CFG-004: every reference resolved to exactly the expected edges.
        assert {l: set(ws.graph.hard_preds[l]) for l in ws.graph.tasks} == hard
        assert {l: set(ws.graph.soft_preds[l]) for l in ws.graph.tasks} == soft
        orders.append(check_canonical(ws))
        # A run's subset: a random target set's closure keeps the property.
        rng = random.Random(seed)
        subset = ws.graph.closure(rng.sample(sorted(ws.graph.tasks), 2))
        check_canonical(ws, subset)
    assert orders[0] == orders[1] == orders[2]


# --------------------------------------------------------------------------
# GRAPH-004 Targets

@pytest.fixture
def target_ws(make_ws):
    return load_workspace(make_ws({
        "haz.toml": WS,
        "packages/app/haz.toml": '''
            [project]
            deps = ["lib"]
            [tasks.build]
            cmd = "x"
            deps = ["^build", "gen"]
            [tasks.gen]
            cmd = "x"
            [tasks.test]
            cmd = "x"
            deps = ["build"]
            after = ["docs:build", "lint"]
            [tasks.lint]
            cmd = "x"
        ''',
        "packages/lib/haz.toml": '[tasks.build]\ncmd = "x"\n[tasks.test]\ncmd = "x"\n'
                                 'deps = ["build"]\n',
        "packages/docs/haz.toml": '[tasks.build]\ncmd = "x"\nafter = ["app:build"]\n',
    }))


def test_graph_004_task_name_targets_every_project_with_it(target_ws):
    assert target_ws.graph.select(["build"]) == {"app:build", "app:gen", "lib:build",
                                                 "docs:build"}


def test_graph_004_closure_of_hard_deps_only(target_ws):
    g = target_ws.graph
    # Soft predecessors (docs:build, app:lint) are not pulled in.
    assert g.select(["app:test"]) == {"app:test", "app:build", "app:gen", "lib:build"}
    assert g.select(["docs:build"]) == {"docs:build"}
    assert g.select(["lib:test", "app:gen"]) == {"lib:test", "lib:build", "app:gen"}
    assert g.select([]) == set()


def test_graph_004_soft_edges_order_tasks_that_are_in_the_run(target_ws):
    g = target_ws.graph
    run = g.select(["test", "docs:build", "lint"])
    order = g.canonical_order(run)
    assert order.index("docs:build") < order.index("app:test")
    assert order.index("app:lint") < order.index("app:test")
    assert order.index("app:build") < order.index("docs:build")


@pytest.mark.parametrize("targets, expected", [
    (["biuld"], "unknown target 'biuld': no project has a task of that name "
                "(did you mean 'build'?)"),
    (["app:tset"], "unknown target 'app:tset': project 'app' has no task 'tset' "
                   "(did you mean 'app:test'?)"),
    # A project that does not exist is said as such, not answered with
    # another project's task of the same name.
    (["ap:build"], "unknown target 'ap:build': no project 'ap' (did you mean 'app'?)"),
    (["zzz:build"], "unknown target 'zzz:build': no project 'zzz' (hazrun list"),
    ([":build"], "unknown target ':build': a target is 'task' or 'project:task'"),
    (["app:"], "unknown target 'app:': a target is 'task' or 'project:task'"),
    (["qqqq"], "unknown target 'qqqq': no project has a task of that name (hazrun list"),
])
def test_graph_004_unknown_target_did_you_mean(target_ws, targets, expected):
    with pytest.raises(UsageError) as info:
        target_ws.graph.select(targets + ["build"])
    assert info.value.exit_code == 2
    assert expected in str(info.value)


def test_graph_004_unknown_target_of_a_project_without_tasks(make_ws):
    """A project with no tasks exists all the same; a did-you-mean looks at
    the named project's own tasks only."""
    root = make_ws({"haz.toml": WS, "packages/docs/haz.toml": "",
                    "packages/app/haz.toml": '[tasks.test]\ncmd = "x"\n[tasks.lint]\ncmd = "x"\n'})
    ws = load_workspace(root)
    for target, expected in [
            ("docs:build", "unknown target 'docs:build': project 'docs' has no tasks"),
            ("app:tset", "project 'app' has no task 'tset' (did you mean 'app:test'?)"),
            ("app:lnt", "project 'app' has no task 'lnt' (did you mean 'app:lint'?)"),
            ("app:build", "project 'app' has no task 'build' (hazrun list")]:
        with pytest.raises(UsageError) as info:
            ws.graph.select([target], ws.projects)
        assert expected in str(info.value), str(info.value)


def test_graph_004_unknown_target_cli_exit_2(make_ws, hazrun_env):
    root = make_ws({"haz.toml": WS, "packages/a/haz.toml": '[tasks.build]\ncmd = "touch ran"\n'})
    for args in (["graph", "biuld"], ["graph", "--dot", "a:biuld"], ["run", "biuld"]):
        proc = subprocess.run(hazrun_cmd("-C", str(root), *args), env=hazrun_env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("hazrun: error: unknown target")
        assert "did you mean 'build'?" in proc.stderr or "did you mean 'a:build'?" in proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (root / "packages/a/ran").exists()


# --------------------------------------------------------------------------
# A large workspace (no timing here: see scripts/bench_load.py)

def test_graph_load_1000_projects_3_tasks(tmp_path):
    root = tmp_path / "big"
    (root / "packages").mkdir(parents=True)
    (root / "haz.toml").write_text(WS)
    deps_of = {}
    for i in range(1000):
        deps = [f"p{j:04d}" for j in (i - 1, i - 7) if j >= 0 and i % 10 != 0]
        deps_of[f"p{i:04d}"] = deps
        d = root / "packages" / f"p{i:04d}"
        d.mkdir()
        (d / "haz.toml").write_text(
            "[project]\ndeps = [" + ", ".join(f'"{n}"' for n in deps) + "]\n"
            '[tasks.build]\ncmd = "x"\ndeps = ["^build"]\n'
            '[tasks.test]\ncmd = "x"\ndeps = ["build"]\n'
            '[tasks.lint]\ncmd = "x"\nafter = ["^lint", "build"]\n')
    ws = load_workspace(root)
    assert len(ws.projects) == 1000 and len(ws.graph) == 3000
    all_edges = list(ws.graph.edges())
    hard = sum(1 for *_, k in all_edges if k is EdgeKind.HARD)
    with_deps = [i for i in range(1000) if i % 10 != 0 and i >= 1]
    n_deps = sum(len([j for j in (i - 1, i - 7) if j >= 0]) for i in with_deps)
    assert hard == 1000 + n_deps              # test->build, build->^build
    assert len(all_edges) - hard == 1000 + n_deps   # lint->build, lint->^lint
    assert ws.graph.hard_preds["p0008:build"] == ("p0001:build", "p0007:build")
    assert ws.graph.hard_preds["p0010:build"] == ()
    assert ws.graph.hard_preds["p0999:test"] == ("p0999:build",)
    assert ws.graph.soft_preds["p0999:lint"] == ("p0992:lint", "p0998:lint", "p0999:build")
    order = ws.graph.canonical_order()
    assert len(order) == 3000 and order[0] == "p0000:build"
    pos = {l: i for i, l in enumerate(order)}
    assert all(pos[p] < pos[s] for p, s, _ in all_edges)
    # GRAPH-004 on the big graph: the build closure follows project deps.
    expected, stack = set(), ["p0999"]
    while stack:
        p = stack.pop()
        if p not in expected:
            expected.add(p)
            stack.extend(deps_of[p])
    run = ws.graph.select(["p0999:test"])
    assert run == {"p0999:test"} | {f"{p}:build" for p in expected}
    assert "p0999:lint" not in run and "p0998:test" not in run

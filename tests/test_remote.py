"""The remote cache end to end against real servers: nginx with WebDAV for
``http``, turborepo-remote-cache for ``turbo`` (REMOTE-002/003/006/007)."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

from conftest import REPO, hazrun_cmd, intervals, run_hazrun, timed, write_files
from remote_servers import TOKEN, FixedStatusServer, remote, remote_server  # noqa: F401

q = json.dumps

WORKSPACE = {
    "haz.toml": '[workspace]\nmembers = ["p/*"]\n',
    "p/lib/src/a.txt": "alpha\n",
    "p/lib/haz.toml": """
        [tasks.build]
        cmd = "mkdir -p dist && cp src/a.txt dist/a.txt && chmod 755 dist/a.txt && ln -sf a.txt dist/link && echo lib says hi && echo lib warns >&2"
        inputs = ["src/**"]
        outputs = ["dist/**"]
        """,
    "p/app/src/b.txt": "beta\n",
    "p/app/haz.toml": """
        [project]
        deps = ["lib"]
        [tasks.build]
        cmd = "mkdir -p dist/sub && cat ../lib/dist/a.txt src/b.txt > dist/sub/b.txt && echo app built"
        inputs = ["src/**"]
        outputs = ["dist/**"]
        deps = ["^build"]
        [tasks.test]
        cmd = "cat dist/sub/b.txt"
        deps = ["build"]
        """,
    "p/tool/haz.toml": """
        [tasks.build]
        cmd = "echo never cached"
        cache = false
        """,
}
CACHED_TASKS = ["app:build", "app:test", "lib:build"]


def clones(tmp_path, n=2):
    """n copies of one workspace, each with its own local cache."""
    out = []
    for i in range(n):
        root = write_files(tmp_path / f"clone{i}", WORKSPACE)
        out.append((root, tmp_path / f"cache{i}"))
    return out


def run(root, cache, env, *args, summary=None):
    argv = ["--cache-dir", str(cache), "run", "build", "test", *args]
    if summary is not None:
        argv += ["--summary-json", str(summary)]
    return run_hazrun(root, *argv, env=env)


def task_lines(proc):
    """Task output lines (prefixed [label]) of stdout and stderr, sorted."""
    return sorted(l for l in (proc.stdout + proc.stderr).splitlines() if l.startswith("["))


def tree(root):
    """path -> (mode, content or symlink target) of every output file."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if ".haz" in rel.split("/") or not any(p == "dist" for p in rel.split("/")):
            continue
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = (oct(path.stat().st_mode & 0o777), path.read_bytes())
    return out


def states(summary):
    doc = json.loads(Path(summary).read_text())
    return {t["label"]: t["state"] for t in doc["tasks"]}, doc


def test_remote_003_second_clone_gets_every_task_from_the_remote(remote, tmp_path):
    (ws1, c1), (ws2, c2) = clones(tmp_path)
    env = remote.env()
    first = run(ws1, c1, env, summary=tmp_path / "s1.json")
    assert first.returncode == 0, first.stderr
    st, doc = states(tmp_path / "s1.json")
    assert st["lib:build"] == st["app:build"] == st["app:test"] == "succeeded"
    # REMOTE-003: only fresh successes of cacheable tasks are uploaded.
    assert doc["remote"] == {"hits": 0, "misses": 3, "uploads": 3, "errors": 0,
                             "disabled": False}
    assert len(remote.keys()) == 3

    second = run(ws2, c2, env, summary=tmp_path / "s2.json")
    assert second.returncode == 0, second.stderr
    st, doc = states(tmp_path / "s2.json")
    assert [st[l] for l in CACHED_TASKS] == ["cached"] * 3
    assert st["tool:build"] == "succeeded"
    assert doc["remote"] == {"hits": 3, "misses": 0, "uploads": 0, "errors": 0,
                             "disabled": False}
    # Outputs (contents, modes, symlinks) and logs are the first run's.
    assert tree(ws2) == tree(ws1)
    assert task_lines(second) == task_lines(first)
    assert "[lib:build] lib warns" in second.stderr
    assert "remote cache: 3 hits, 0 uploads, 0 errors" in second.stderr
    assert "warning" not in second.stderr, second.stderr


def test_remote_003_a_dry_run_tells_remote_hits_down_the_chain(remote, tmp_path):
    """CLI-002: --dry-run asked only the local cache, and a fresh clone whose
    every task the remote holds was told 'miss' and '?' (upstream)."""
    (ws1, c1), (ws2, c2) = clones(tmp_path)
    env = remote.env()
    assert run(ws1, c1, env).returncode == 0
    dry = run_hazrun(ws2, "--cache-dir", str(c2), "run", "build", "test", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    said = {line.split()[0]: line.split(None, 2)[2] for line in dry.stdout.splitlines()}
    # app:build and app:test are keyed through lib:build's remote outputs.
    assert [said[l] for l in CACHED_TASKS] == ["hit (remote)"] * 3, dry.stdout
    assert said["tool:build"].startswith("miss")
    # As it said: the run hits them all, now from the local store.
    real = run(ws2, c2, env, summary=tmp_path / "s.json")
    assert real.returncode == 0, real.stderr
    st, doc = states(tmp_path / "s.json")
    assert [st[l] for l in CACHED_TASKS] == ["cached"] * 3
    assert doc["remote"]["hits"] == 0  # the dry run downloaded them


def test_remote_006_a_download_that_cannot_be_restored_is_no_hit(remote, tmp_path):
    """A directory where the entry has a file: the download is fine, the
    restore is not, and the task runs.  The summary counted it a remote hit."""
    ws1, ws2 = (write_files(tmp_path / f"ws{i}", {
        "haz.toml": '[workspace]\n[tasks.build]\n'
                    'cmd = "rm -rf dist && mkdir -p dist && echo x > dist/f"\n'
                    'outputs = ["dist/**"]\n'}) for i in (1, 2))
    env = remote.env()
    assert run_hazrun(ws1, "--cache-dir", str(tmp_path / "c1"), "run", "build",
                      env=env).returncode == 0
    (ws2 / "dist/f").mkdir(parents=True)
    (ws2 / "dist/f/in-the-way").write_text("")
    proc = run_hazrun(ws2, "--cache-dir", str(tmp_path / "c2"), "run", "build",
                      "--summary-json", str(tmp_path / "s.json"), env=env)
    assert proc.returncode == 0, proc.stderr
    st, doc = states(tmp_path / "s.json")
    assert st["root:build"] == "succeeded"
    assert (doc["remote"]["hits"], doc["remote"]["misses"]) == (0, 1), doc["remote"]
    assert "remote cache: 0 hits" in proc.stderr


def test_remote_003_a_remote_hit_is_local_next_time(remote, tmp_path):
    """A download goes into the local store; a local hit never asks the remote."""
    (ws1, c1), (ws2, c2) = clones(tmp_path)
    env = remote.env()
    assert run(ws1, c1, env).returncode == 0
    assert run(ws2, c2, env).returncode == 0
    asked = len(remote.requests())
    shutil.rmtree(ws2 / "p/lib/dist")
    shutil.rmtree(ws2 / "p/app/dist")
    third = run(ws2, c2, env, summary=tmp_path / "s3.json")
    assert third.returncode == 0, third.stderr
    st, doc = states(tmp_path / "s3.json")
    assert [st[l] for l in CACHED_TASKS] == ["cached"] * 3
    assert len(remote.requests()) == asked, remote.requests()[asked:]
    assert doc["remote"]["hits"] == 0 and doc["remote"]["misses"] == 0
    assert tree(ws2) == tree(ws1)


def test_remote_003_a_local_hit_never_asks_the_remote(remote, tmp_path):
    (ws1, c1), = clones(tmp_path, 1)
    assert run(ws1, c1, {k: v for k, v in remote.env().items()
                         if not k.startswith("HAZ_")}).returncode == 0
    before = len(remote.requests())
    again = run(ws1, c1, remote.env(), summary=tmp_path / "s.json")
    assert again.returncode == 0
    st, _ = states(tmp_path / "s.json")
    assert [st[l] for l in CACHED_TASKS] == ["cached"] * 3
    # Nothing asked, and nothing uploaded that the local store already had.
    assert remote.requests()[before:] == []


def test_remote_001_a_run_of_local_hits_never_loads_the_http_client(tmp_path):
    """The remote client (http.client, ssl) is made on first need: a run
    whose every lookup hits locally needs none, and pays no start-up for
    it (the address is a closed port: any request would be an error)."""
    (ws1, c1), = clones(tmp_path, 1)
    assert run(ws1, c1, {}).returncode == 0
    probe = (
        "import json, sys\n"
        "from hazrun import RunOptions, load_workspace, run_graph\n"
        "from hazrun.cache.remote import resolve_remote\n"
        "remote = resolve_remote(None, {'HAZ_REMOTE_CACHE_URL': 'http://127.0.0.1:9/c'})\n"
        "out = run_graph(load_workspace(sys.argv[1]), ['build', 'test'],\n"
        "                options=RunOptions(cache_dir=sys.argv[2], remote=remote))\n"
        "print(json.dumps([sorted({r.state.value for r in out.results.values()}),\n"
        "                  out.remote, 'http.client' in sys.modules]))\n")
    proc = subprocess.run([sys.executable, "-c", probe, str(ws1), str(c1)],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    got_states, stats, loaded = json.loads(proc.stdout)
    assert got_states == ["cached", "succeeded"]  # tool:build has cache = false
    assert stats == {"hits": 0, "misses": 0, "uploads": 0, "errors": 0, "disabled": False}
    assert loaded is False


def test_remote_007_read_only_uploads_nothing(remote, tmp_path):
    (ws1, c1), (ws2, c2), (ws3, c3) = clones(tmp_path, 3)
    ro = run(ws1, c1, remote.env(HAZ_REMOTE_CACHE_READ_ONLY="yes"),
             summary=tmp_path / "ro.json")
    assert ro.returncode == 0, ro.stderr
    assert not [r for r in remote.requests() if r.startswith("PUT")]
    assert remote.keys() == []
    assert states(tmp_path / "ro.json")[1]["remote"]["uploads"] == 0
    # The command line switch too; and read-only still downloads.
    assert run(ws2, c2, remote.env()).returncode == 0
    puts = len([r for r in remote.requests() if r.startswith("PUT")])
    third = run(ws3, c3, remote.env(), "--remote-cache-read-only",
                summary=tmp_path / "s3.json")
    assert third.returncode == 0
    assert states(tmp_path / "s3.json")[1]["remote"]["hits"] == 3
    assert len([r for r in remote.requests() if r.startswith("PUT")]) == puts


def test_remote_001_command_line_url_wins_and_no_remote_cache_disables(remote, tmp_path):
    (ws1, c1), (ws2, c2) = clones(tmp_path)
    bad = FixedStatusServer(500)
    try:
        # The environment names a broken server; --remote-cache overrides it.
        env = remote.env(HAZ_REMOTE_CACHE_URL=bad.url())
        first = run(ws1, c1, env, "--remote-cache", remote.url, summary=tmp_path / "s.json")
        assert first.returncode == 0, first.stderr
        assert bad.requests == []
        assert states(tmp_path / "s.json")[1]["remote"]["uploads"] == 3
        # --no-remote-cache: no remote at all, and no "remote" in the summary.
        off = run(ws2, c2, env, "--no-remote-cache", summary=tmp_path / "off.json")
        assert off.returncode == 0
        assert bad.requests == []
        st, doc = states(tmp_path / "off.json")
        assert "remote" not in doc
        assert st["lib:build"] == "succeeded"
    finally:
        bad.stop()


def test_remote_001_haz_toml_configures_the_remote(remote, tmp_path):
    (ws1, c1), (ws2, c2) = clones(tmp_path)
    team = f'team = "{remote.name}"\n' if remote.protocol == "turbo" else ""
    for ws in (ws1, ws2):
        (ws / "haz.toml").write_text(
            WORKSPACE["haz.toml"] + "[workspace.remote_cache]\n"
            f'url = "{remote.url}"\nprotocol = "{remote.protocol}"\n{team}timeout = 5\n')
    env = {k: v for k, v in remote.env().items()
           if not k.startswith("HAZ_") or k == "HAZ_REMOTE_CACHE_TOKEN"}
    assert run(ws1, c1, env).returncode == 0
    second = run(ws2, c2, env, summary=tmp_path / "s.json")
    assert states(tmp_path / "s.json")[1]["remote"]["hits"] == 3, second.stderr


def test_remote_001_token_never_printed(remote, tmp_path):
    (ws1, c1), (ws2, c2) = clones(tmp_path)
    env = remote.env()
    procs = [run(ws1, c1, env, "-v", summary=tmp_path / "a.json"),
             run(ws2, c2, env, "-v", summary=tmp_path / "b.json")]
    for proc in procs:
        assert proc.returncode == 0
        assert TOKEN not in proc.stdout + proc.stderr
    for name in ("a.json", "b.json"):
        assert TOKEN not in (tmp_path / name).read_text()


def test_remote_002_head_get_put_with_the_backends(remote, tmp_path):
    """The backends' three operations on the real servers."""
    from hazrun.cache.remote import make_backend, resolve_remote
    env = remote.env()
    settings = resolve_remote(None, env)
    backend = make_backend(settings)
    key = "ab" * 32
    try:
        assert backend.exists(key) is False
        assert backend.fetch(key, io.BytesIO(), want_tag=False) is None
        body = os.urandom(300_000)
        backend.store(key, io.BytesIO(body), len(body), 1.5, None)
        assert backend.exists(key) is True
        out = io.BytesIO()
        size, tag = backend.fetch(key, out, want_tag=False)
        assert size == len(body) and out.getvalue() == body and tag is None
        # The same connection again (keep-alive), many times.
        for _ in range(20):
            assert backend.exists(key) is True
    finally:
        backend.close()
    if remote.protocol == "turbo":
        assert any("/v8/artifacts/" + key in r and "slug=" + remote.name in r
                   for r in remote.requests())
    assert remote.artifact(key).read_bytes() == body


def test_remote_002_turbo_team_id_parameter():
    from hazrun.cache.remote import TurboBackend, resolve_remote
    env = {"HAZ_REMOTE_CACHE_URL": "http://127.0.0.1:1/base/", "HAZ_REMOTE_CACHE_TEAM":
           "team_abc", "HAZ_REMOTE_CACHE_PROTOCOL": "turbo"}
    backend = TurboBackend(resolve_remote(None, env))
    assert backend._target("k") == "/base/v8/artifacts/k?slug=team_abc&teamId=team_abc"
    env["HAZ_REMOTE_CACHE_TEAM"] = "my team"
    backend = TurboBackend(resolve_remote(None, env))
    assert backend._target("k") == "/base/v8/artifacts/k?slug=my+team"


# -- verification (REMOTE-003) -------------------------------------------------------

def _upload_once(remote, tmp_path):
    (ws1, c1), (ws2, c2) = clones(tmp_path)
    assert run(ws1, c1, remote.env(), summary=tmp_path / "s1.json").returncode == 0
    doc = json.loads((tmp_path / "s1.json").read_text())
    keys = {t["label"]: t["key"] for t in doc["tasks"]}
    return ws2, c2, keys


def _members(path):
    with tarfile.open(path, "r:gz") as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]


def _write_archive(path, members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())


def _rejected(remote, ws2, c2, tmp_path, label, why):
    proc = run(ws2, c2, remote.env(), summary=tmp_path / "s2.json")
    assert proc.returncode == 0, proc.stderr
    st, doc = states(tmp_path / "s2.json")
    assert st[label] == "succeeded"  # ran, as on a miss
    assert f"{label}: remote cache entry" in proc.stderr
    assert why in proc.stderr, proc.stderr
    assert doc["remote"]["errors"] >= 1
    return proc


def test_remote_003_bytes_changed_on_the_server_are_rejected(remote, tmp_path):
    ws2, c2, keys = _upload_once(remote, tmp_path)
    path = remote.artifact(keys["lib:build"])
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    proc = _rejected(remote, ws2, c2, tmp_path, "lib:build", "rejected")
    assert "hazrun: warning: lib:build: remote cache entry" in proc.stderr
    # Nothing of it reached the work tree before the task ran again.
    assert (ws2 / "p/lib/dist/a.txt").read_text() == "alpha\n"


def test_remote_003_a_blob_that_does_not_match_its_digest_is_rejected(remote, tmp_path):
    ws2, c2, keys = _upload_once(remote, tmp_path)
    path = remote.artifact(keys["lib:build"])
    members = _members(path)
    altered = []
    for info, data in members:
        if data == b"alpha\n":
            data = b"ALPHA\n"  # same size, other content
        altered.append((info, data))
    assert altered != members
    _write_archive(path, altered)
    _rejected(remote, ws2, c2, tmp_path, "lib:build", "does not match its digest")
    assert (ws2 / "p/lib/dist/a.txt").read_text() == "alpha\n"


def test_remote_003_an_artifact_for_another_key_is_rejected(remote, tmp_path):
    ws2, c2, keys = _upload_once(remote, tmp_path)
    shutil.copyfile(remote.artifact(keys["app:test"]), remote.artifact(keys["lib:build"]))
    _rejected(remote, ws2, c2, tmp_path, "lib:build",
              f"holds the entry of key {keys['app:test'][:12]}")


def test_remote_003_a_manifest_writing_outside_its_outputs_is_rejected(remote, tmp_path):
    ws2, c2, keys = _upload_once(remote, tmp_path)
    path = remote.artifact(keys["lib:build"])
    members = []
    for info, data in _members(path):
        if info.name == "manifest.json":
            doc = json.loads(data)
            doc["outputs"][0]["path"] = "../app/src/b.txt"
            data = json.dumps(doc).encode()
        members.append((info, data))
    _write_archive(path, members)
    _rejected(remote, ws2, c2, tmp_path, "lib:build", "not normalised or leaves the project")
    assert (ws2 / "p/app/src/b.txt").read_text() == "beta\n"


def test_remote_003_not_an_archive_is_rejected(remote, tmp_path):
    ws2, c2, keys = _upload_once(remote, tmp_path)
    remote.artifact(keys["lib:build"]).write_bytes(b"<html>not found</html>")
    _rejected(remote, ws2, c2, tmp_path, "lib:build", "not a whole gzip'd tar")


def test_remote_003_a_huge_extended_header_is_refused_before_it_is_read(remote, tmp_path):
    """tarfile reads a GNU long-name (or pax) payload whole into memory: an
    artifact claiming 2 GiB there took 4 GB of memory before any check."""
    import gzip
    import tarfile

    ws2, c2, keys = _upload_once(remote, tmp_path)
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = tarfile.GNUTYPE_LONGNAME, 2 << 30
    remote.artifact(keys["lib:build"]).write_bytes(
        gzip.compress(header.tobuf(tarfile.GNU_FORMAT) + bytes(1 << 20)))
    _rejected(remote, ws2, c2, tmp_path, "lib:build",
              f"an extended header of {2 << 30} bytes")


# -- uploads off the critical path (REMOTE-006) -----------------------------------------

class SlowPut(FixedStatusServer):
    """GET/HEAD: 404.  PUT: holds the request until released (or stopped)."""

    def __init__(self):
        import http.server
        self.requests = []
        self.put_started = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.requests.append(f"{self.command} {self.path}")
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET

            def do_PUT(self):
                outer.requests.append(f"PUT {self.path}")
                outer.put_started.set()
                outer.release.wait(60)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.serve(Handler)

    def stop(self):
        self.release.set()
        super().stop()


def _env(url, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_")}
    env.update(HAZ_REMOTE_CACHE_URL=url, **extra)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("MAKEFLAGS", None)
    env["NO_COLOR"] = "1"
    return env


class SlowGet(FixedStatusServer):
    """GET: 404 after ``delay`` seconds, each request's span recorded.
    PUT: 200 at once."""

    def __init__(self, delay: float):
        import http.server
        self.requests = []
        self.spans = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                start = time.monotonic()
                time.sleep(delay)
                outer.spans[self.path] = [start, time.monotonic()]
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_PUT(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.serve(Handler)


def test_remote_003_admitted_tasks_ask_the_remote_side_by_side(make_ws, tmp_path):
    """A lookup that waits on the network does not hold up the next one: a
    lane stuck for long gets company (_more_lanes), so with -j2 two tasks'
    GETs are in flight at once, and never more than two (EXEC-004)."""
    from conftest import max_overlap
    files = {"haz.toml": '[workspace]\nmembers = ["p/*"]\n'}
    for i in range(6):
        files[f"p/t{i}/haz.toml"] = '[tasks.build]\ncmd = "true"\n'
    ws = make_ws(files)
    server = SlowGet(0.3)
    try:
        proc = run_hazrun(ws, "--cache-dir", str(tmp_path / "c"), "run", "build", "-j2",
                          env=_env(server.url()))
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    assert len(server.spans) == 6
    assert max_overlap(server.spans) == 2


def test_remote_006_successors_do_not_wait_for_uploads(make_ws, tmp_path):
    log = tmp_path / "spans.log"
    ws = make_ws({
        "haz.toml": '[workspace]\nmembers = ["p/*"]\n',
        "p/a/haz.toml": f'[tasks.build]\ncmd = {q(timed("a", "mkdir -p out && echo a > out/a", log))}\n'
                        'outputs = ["out/**"]\n',
        "p/b/haz.toml": '[project]\ndeps = ["a"]\n'
                        f'[tasks.build]\ncmd = {q(timed("b", "true", log))}\ndeps = ["^build"]\n',
    })
    server = SlowPut()
    try:
        start = time.monotonic()
        proc = run_hazrun(ws, "--cache-dir", str(tmp_path / "c"), "run", "build",
                          "--summary-json", str(tmp_path / "s.json"),
                          env=_env(server.url(), HAZ_REMOTE_CACHE_TIMEOUT="2"))
        elapsed = time.monotonic() - start
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    spans = intervals(log)
    # b started at once, not after a's upload gave up (2 s timeout) ...
    assert (spans["b"][0] - spans["a"][1]) / 1e9 < 1.5
    # ... and the run waited for the uploads before it exited.
    assert elapsed >= 2
    assert "PUT timeout" in proc.stderr
    doc = json.loads((tmp_path / "s.json").read_text())
    assert {t["state"] for t in doc["tasks"]} == {"succeeded"}
    assert doc["remote"]["uploads"] == 0 and doc["remote"]["errors"] >= 1


def test_remote_006_uploads_a_server_holds_never_hold_up_the_chain(make_ws, tmp_path):
    """A chain of 8 tasks, every PUT held by the server: each task still
    starts after its predecessor, before any upload is answered.  Uploads
    shared the pool (4 workers) with the keys and lookups, so the 5th task
    waited for an upload to end."""
    from conftest import wait_for
    log = tmp_path / "spans.log"
    files = {"haz.toml": '[workspace]\nmembers = ["p/*"]\n'}
    for i in range(8):
        deps = f'deps = ["t{i - 1}:build"]\n' if i else ""
        files[f"p/t{i}/haz.toml"] = (
            f'[tasks.build]\ncmd = {q(timed(f"t{i}", "mkdir -p out && echo x > out/f", log))}\n'
            f'outputs = ["out/**"]\n{deps}')
    ws = make_ws(files)
    server = SlowPut()
    proc = subprocess.Popen(
        hazrun_cmd("-C", str(ws), "--cache-dir", str(tmp_path / "c"), "run", "t7:build",
                   "-j2"), env=_env(server.url(), HAZ_REMOTE_CACHE_TIMEOUT="60"),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: log.exists() and len(intervals(log)) == 8,
                 what="every task of the chain to run while its uploads are held")
        assert server.put_started.is_set()
        server.release.set()
        _, err = proc.communicate(timeout=60)
    finally:
        server.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    spans = intervals(log)
    order = sorted(spans, key=lambda label: spans[label][0])
    assert order == [f"t{i}" for i in range(8)]


def test_remote_006_ctrl_c_abandons_uploads_at_once(make_ws, tmp_path):
    ws = make_ws({
        "haz.toml": '[workspace]\nmembers = ["p/*"]\n',
        "p/a/haz.toml": '[tasks.build]\ncmd = "mkdir -p out && echo a > out/a"\n'
                        'outputs = ["out/**"]\n',
    })
    server = SlowPut()
    try:
        proc = subprocess.Popen(
            hazrun_cmd("-C", str(ws), "--cache-dir", str(tmp_path / "c"), "run", "build",
                       "--summary-json", str(tmp_path / "s.json")),
            env=_env(server.url(), HAZ_REMOTE_CACHE_TIMEOUT="60"),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert server.put_started.wait(30), "the upload never started"
            time.sleep(0.2)
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        server.stop()
    assert took < 5, f"hazrun took {took:.1f}s to exit after Ctrl-C"
    assert b"Traceback" not in err, err.decode()
    assert proc.returncode == 130, err.decode()
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["tasks"][0]["state"] == "succeeded"
    assert doc["remote"]["uploads"] == 0


def test_remote_006_summary_json_has_no_remote_without_one(make_ws, tmp_path):
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\ncmd = "true"\n'})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_")}
    proc = run_hazrun(ws, "--cache-dir", str(tmp_path / "c"), "run", "x",
                      "--summary-json", str(tmp_path / "s.json"), env=env)
    assert proc.returncode == 0
    doc = json.loads((tmp_path / "s.json").read_text())
    assert "remote" not in doc and doc["version"] == 1
    assert "remote cache" not in proc.stderr

"""A remote cache that fails never fails a run (REMOTE-005): a server that is
down, one that never answers, 401, 500; the failure policy on a fake
backend; the socket timeout bounds each operation, not a transfer."""
from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest

from conftest import run_hazrun, write_files
from remote_servers import TOKEN, FixedStatusServer, SilentServer, free_port

N_TASKS = 6


def workspace(tmp_path: Path, fail: bool = False) -> Path:
    files = {"haz.toml": '[workspace]\nmembers = ["p/*"]\n'}
    for i in range(N_TASKS):
        cmd = f"mkdir -p out && echo {i} > out/f && echo task {i}"
        if fail and i == 0:
            cmd = "echo broken; exit 1"
        files[f"p/t{i}/haz.toml"] = f'[tasks.build]\ncmd = "{cmd}"\noutputs = ["out/**"]\n'
    return write_files(tmp_path / "ws", files)


def env_for(url: Optional[str], **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_")}
    if url is not None:
        env["HAZ_REMOTE_CACHE_URL"] = url
        env["HAZ_REMOTE_CACHE_TOKEN"] = TOKEN
    env.update(extra)
    return env


def run_against(server, ws: Path, tmp_path: Path, *args: str, timeout: int = 90):
    """``hazrun run build`` with ``server`` as its remote cache and a
    summary in tmp_path/s.json; the server is stopped after."""
    try:
        return run_hazrun(ws, "--cache-dir", str(tmp_path / "c"), "run", "build", *args,
                          "--summary-json", str(tmp_path / "s.json"),
                          env=env_for(server.url()), timeout=timeout)
    finally:
        server.stop()


def redirecting(location) -> FixedStatusServer:
    """A server answering every request with 302 to ``location(path)``."""
    import http.server

    class Redirecting(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(302)
            self.send_header("Location", location(self.path))
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_PUT = do_HEAD = _answer

        def log_message(self, *args) -> None:
            pass

    server = FixedStatusServer(500)
    server.stop()
    server.serve(Redirecting)
    return server


class Scenario:
    def __init__(self, kind: str):
        self.kind = kind
        self.server = None
        if kind == "down":
            self.url = f"http://127.0.0.1:{free_port()}/cache"
            self.warning = "GET connection refused"
        elif kind == "slow":
            self.server = SilentServer()
            self.url = self.server.url()
            self.warning = "GET timeout (no answer within 0.5s)"
        else:
            self.server = FixedStatusServer(int(kind))
            self.url = self.server.url()
            self.warning = f"GET HTTP {kind}"

    def requests(self) -> Optional[List[str]]:
        return getattr(self.server, "requests", None)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture(params=["down", "slow", "401", "500"])
def scenario(request):
    s = Scenario(request.param)
    yield s
    s.stop()


def test_remote_005_a_failing_remote_is_warned_about_and_dropped(scenario, tmp_path):
    ws = workspace(tmp_path)
    start = time.monotonic()
    proc = run_hazrun(ws, "--cache-dir", str(tmp_path / "c"), "run", "build", "-j4",
                      "--summary-json", str(tmp_path / "s.json"),
                      env=env_for(scenario.url, HAZ_REMOTE_CACHE_TIMEOUT="0.5"))
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "s.json").read_text())
    assert {t["state"] for t in doc["tasks"]} == {"succeeded"}
    assert doc["exit_code"] == 0
    # One warning per kind, naming the server; then the remote is dropped.
    assert proc.stderr.count(scenario.warning) == 1, proc.stderr
    assert f"hazrun: warning: remote cache {scenario.url}: " in proc.stderr
    assert "3 failures in a row; not asked again in this run" in proc.stderr
    assert doc["remote"]["disabled"] is True
    assert doc["remote"]["errors"] <= 3
    assert doc["remote"]["hits"] == 0 and doc["remote"]["uploads"] == 0
    requests = scenario.requests()
    if requests is not None:
        assert len(requests) <= 3, requests
    if scenario.kind == "401":
        assert "check HAZ_REMOTE_CACHE_TOKEN" in proc.stderr
    if scenario.kind == "slow":
        # Three lookups time out together, then nobody waits for it again.
        assert elapsed < 8, elapsed
    assert TOKEN not in proc.stdout + proc.stderr
    assert TOKEN not in (tmp_path / "s.json").read_text()
    # The local cache still works: the next run (no remote) hits.
    again = run_hazrun(ws, "--cache-dir", str(tmp_path / "c"), "run", "build",
                       env=env_for(None))
    assert f"{N_TASKS} cached" in again.stderr, again.stderr


def test_remote_005_exit_code_is_the_same_with_a_failing_remote(tmp_path):
    ws = workspace(tmp_path, fail=True)
    plain = run_hazrun(ws, "--cache-dir", str(tmp_path / "c1"), "run", "build",
                       env=env_for(None))
    bad = FixedStatusServer(500)
    try:
        remote = run_hazrun(ws, "--cache-dir", str(tmp_path / "c2"), "run", "build",
                            "--summary-json", str(tmp_path / "s.json"), env=env_for(bad.url()))
    finally:
        bad.stop()
    assert plain.returncode == remote.returncode == 1
    doc = json.loads((tmp_path / "s.json").read_text())
    states = {t["label"]: t["state"] for t in doc["tasks"]}
    assert states["t0:build"] == "failed"
    assert sum(s == "succeeded" for s in states.values()) == N_TASKS - 1


def test_remote_005_put_failures_are_warnings(tmp_path):
    """GET answers 404 (a plain miss, no warning); PUT fails."""
    server = FixedStatusServer(500)
    server.status_for = {"GET": 404, "HEAD": 404}
    ws = workspace(tmp_path)
    proc = run_against(server, ws, tmp_path, "-j2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("PUT HTTP 500") == 1, proc.stderr
    assert "GET" not in proc.stderr
    doc = json.loads((tmp_path / "s.json").read_text())
    # Lookups after the third failed PUT never reach the remote (REMOTE-005),
    # so how many GETs were misses depends on how the tasks interleaved.
    assert doc["remote"]["uploads"] == 0 and 1 <= doc["remote"]["misses"] <= N_TASKS
    assert {t["state"] for t in doc["tasks"]} == {"succeeded"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("location", ["http://[::1/x", "http://127.0.0.1:99999/x",
                                      "http://bad host/x"])
def test_remote_005_a_redirect_to_an_invalid_url_is_a_bad_answer(tmp_path, location):
    """Its ValueError escaped the failure policy: each such lookup kept its
    request slot, and once three had, the run waited for a slot for ever.
    It is a bad answer like any other: counted, warned once, the tasks
    stored locally."""
    server = redirecting(lambda path: location)
    ws = workspace(tmp_path)
    proc = run_against(server, ws, tmp_path, timeout=45)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("GET bad answer (a redirect to an invalid URL)") == 1, proc.stderr
    assert "cache key not computed" not in proc.stderr
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["remote"]["errors"] >= 1 and doc["remote"]["disabled"]
    assert {t["state"] for t in doc["tasks"]} == {"succeeded"}
    again = run_hazrun(ws, "--cache-dir", str(tmp_path / "c"), "run", "build",
                       env=env_for(None))
    assert f"{N_TASKS} cached" in again.stderr, again.stderr


def test_remote_005_credentials_in_the_url_are_never_printed(tmp_path):
    server = FixedStatusServer(401)
    ws = workspace(tmp_path)
    url = f"http://builder:pw-SECRET-9@127.0.0.1:{server.port}/cache"
    try:
        proc = run_hazrun(ws, "--cache-dir", str(tmp_path / "c"), "run", "build",
                          "--remote-cache", url, "--summary-json", str(tmp_path / "s.json"),
                          env=env_for(None))
    finally:
        server.stop()
    assert proc.returncode == 0
    assert f"remote cache http://127.0.0.1:{server.port}/cache: GET HTTP 401" in proc.stderr
    assert "pw-SECRET-9" not in proc.stdout + proc.stderr
    assert "pw-SECRET-9" not in (tmp_path / "s.json").read_text()
    assert server.auth and all(a.startswith("Basic ") for a in server.auth)


# -- the policy, on a fake backend ------------------------------------------------

class FakeBackend:
    """Answers fetches from a script: "fail", "404", "hit" (garbage bytes),
    or blocks until released; counts calls and the most in flight."""

    def __init__(self, script=None, block: Optional[threading.Event] = None):
        self.script = list(script or [])
        self.block = block
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.aborted = False

    def fetch(self, key, dest, want_tag):
        from hazrun.cache.remote import Abandoned, RemoteError
        with self.lock:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            step = self.script.pop(0) if self.script else "fail"
        try:
            if self.block is not None:
                self.block.wait(10)
                if self.aborted:
                    raise Abandoned()
            if step == "fail":
                raise RemoteError("GET", "HTTP 500", status=500)
            if step == "404":
                return None
            dest.write(b"not an archive")
            return 14, None
        finally:
            with self.lock:
                self.in_flight -= 1

    def abort(self):
        self.aborted = True
        if self.block is not None:
            self.block.set()

    def close(self):
        pass


def make_client(tmp_path, backend):
    from hazrun.cache.remote import RemoteCache, resolve_remote
    from hazrun.cache.store import Store
    warnings: List[str] = []
    settings = resolve_remote(None, {"HAZ_REMOTE_CACHE_URL": "http://cache.invalid"})
    client = RemoteCache(settings, Store(tmp_path / "store"), warnings.append, backend)
    return client, warnings


KEY = "cd" * 32


def test_remote_005_a_success_or_404_resets_the_count(tmp_path):
    backend = FakeBackend(["fail", "fail", "404", "fail", "fail", "fail", "404"])
    client, warnings = make_client(tmp_path, backend)
    for _ in range(5):
        assert client.fetch(KEY, "a:b") is False
    assert not client.disabled
    assert client.fetch(KEY, "a:b") is False
    assert client.disabled
    # Not asked again.
    assert client.fetch(KEY, "a:b") is False
    assert backend.calls == 6
    assert client.stats() == {"hits": 0, "misses": 6, "uploads": 0, "errors": 5,
                              "disabled": True}
    assert [w for w in warnings if "GET HTTP 500" in w] == \
        ["remote cache http://cache.invalid: GET HTTP 500"]


def test_remote_005_verification_failures_do_not_count(tmp_path):
    backend = FakeBackend(["hit"] * 5)
    client, warnings = make_client(tmp_path, backend)
    for _ in range(5):
        assert client.fetch(KEY, "a:b") is False
    assert not client.disabled and backend.calls == 5
    assert len([w for w in warnings if "rejected" in w]) == 5
    assert client.stats()["errors"] == 5


def test_remote_005_at_most_three_requests_to_an_unproven_server(tmp_path):
    release = threading.Event()
    backend = FakeBackend(block=release)
    client, _ = make_client(tmp_path, backend)
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.fetch(KEY, "a:b")))
               for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while backend.in_flight < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert backend.in_flight == 3
    release.set()
    for t in threads:
        t.join(10)
    assert results == [False] * 8
    assert backend.calls == 3 and backend.max_in_flight == 3
    assert client.disabled


def test_remote_006_cancel_releases_waiters_at_once(tmp_path):
    release = threading.Event()
    backend = FakeBackend(block=release)
    client, warnings = make_client(tmp_path, backend)
    threads = [threading.Thread(target=client.fetch, args=(KEY, "a:b")) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    start = time.monotonic()
    client.cancel()
    for t in threads:
        t.join(5)
    assert time.monotonic() - start < 2
    assert not any(t.is_alive() for t in threads)
    assert backend.calls == 3
    assert client.stats()["errors"] == 0 and not client.disabled
    assert not warnings  # abandoning is not a failure
    assert client.uploading is False


# -- REMOTE-002: timeout bounds each socket operation, not the transfer ------------

class Dribble:
    """Sends a 200 answer of ``n`` bytes in pieces, ``gap`` seconds apart."""

    def __init__(self, n: int, pieces: int, gap: float):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.body = os.urandom(n)
        self.pieces, self.gap = pieces, gap
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.body))
            step = len(self.body) // self.pieces + 1
            for i in range(0, len(self.body), step):
                time.sleep(self.gap)
                conn.sendall(self.body[i:i + step])

    def stop(self):
        self.sock.close()
        self.thread.join(5)


def test_remote_002_timeout_bounds_each_read_not_the_transfer():
    from hazrun.cache.remote import make_backend, resolve_remote
    server = Dribble(100_000, pieces=6, gap=0.25)
    try:
        settings = resolve_remote(None, {"HAZ_REMOTE_CACHE_URL":
                                         f"http://127.0.0.1:{server.port}",
                                         "HAZ_REMOTE_CACHE_TIMEOUT": "0.8"})
        backend = make_backend(settings)
        out = io.BytesIO()
        start = time.monotonic()
        size, _ = backend.fetch("ef" * 32, out, want_tag=False)
        took = time.monotonic() - start
        backend.close()
    finally:
        server.stop()
    assert size == 100_000 and out.getvalue() == server.body
    assert took > 0.8  # longer than the timeout in all, yet no timeout


def test_remote_002_a_silent_server_times_out_within_the_timeout():
    from hazrun.cache.remote import RemoteError, make_backend, resolve_remote
    server = SilentServer()
    try:
        backend = make_backend(resolve_remote(None, {
            "HAZ_REMOTE_CACHE_URL": server.url(), "HAZ_REMOTE_CACHE_TIMEOUT": "0.3"}))
        start = time.monotonic()
        with pytest.raises(RemoteError) as e:
            backend.fetch("ef" * 32, io.BytesIO(), want_tag=False)
        assert e.value.kind == "GET timeout"
        assert time.monotonic() - start < 2
        backend.close()
    finally:
        server.stop()


# -- REMOTE-002: answers as servers really write them ---------------------------

class Scripted:
    """Answers each request on a kept-alive connection with the next of
    ``answers`` (raw bytes); counts connections and requests."""

    def __init__(self, answers: List[bytes]):
        self.answers = list(answers)
        self.connections = 0
        self.requests: List[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                while self.answers:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        data = conn.recv(65536)
                        if not data:
                            break
                        head += data
                    if not head:
                        break
                    self.requests.append(head.split(b"\r\n", 1)[0])
                    answer = self.answers.pop(0)
                    conn.sendall(answer)
                    if b"Connection: close" in answer or b"HTTP/1.0" in answer[:8]:
                        break

    def stop(self):
        self.sock.close()
        self.thread.join(5)


def turbo_backend(port: int):
    from hazrun.cache.remote import make_backend, resolve_remote
    return make_backend(resolve_remote(None, {
        "HAZ_REMOTE_CACHE_URL": f"http://127.0.0.1:{port}", "HAZ_REMOTE_CACHE_PROTOCOL":
        "turbo", "HAZ_REMOTE_CACHE_TOKEN": TOKEN, "HAZ_REMOTE_CACHE_TIMEOUT": "5"}))


def test_remote_002_answers_with_folded_repeated_and_chunked_fields_are_read():
    body = b"x" * 3000
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000])
                       for i in range(0, len(body), 1000)) + b"0\r\n\r\n"
    server = Scripted([
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nServer: test\r\nX-Artifact-Tag: first\r\n"
        b"X-Extra: a\r\n b\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
        b"HTTP/1.1 200 OK\r\ncontent-length: 3000\r\nx-artifact-tag:  second  \r\n\r\n"
        + body,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
        b"HTTP/1.1 204 No Content\r\nX-Folded: a\r\n\t b \r\nX-Twice: 1\r\n"
        b"X-Twice: 2\r\n\r\n",
    ])
    try:
        backend = turbo_backend(server.port)
        first, second = io.BytesIO(), io.BytesIO()
        assert backend.fetch("ab" * 32, first, want_tag=True) == (3000, "first")
        assert backend.fetch("cd" * 32, second, want_tag=True) == (3000, "second")
        assert backend.fetch("ef" * 32, io.BytesIO(), want_tag=True) is None
        answer = backend.client.request("GET", "/x", backend.client.headers())
        assert backend.client.finish(answer) == b""
        fields = answer.resp.headers
        assert (fields.get("x-folded"), fields.get("X-TWICE"), fields.get_all("x-twice")) \
            == ("a b", "1", ["1", "2"])
        backend.close()
    finally:
        server.stop()
    assert first.getvalue() == body and second.getvalue() == body
    assert server.connections == 1 and len(server.requests) == 4  # kept alive


def test_remote_002_an_answer_without_length_is_read_to_its_close():
    server = Scripted([b"HTTP/1.0 200 OK\r\nX-Artifact-Tag: t\r\n\r\nall of it",
                       b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"])
    try:
        backend = turbo_backend(server.port)
        out = io.BytesIO()
        assert backend.fetch("ab" * 32, out, want_tag=True) == (9, "t")
        assert backend.fetch("cd" * 32, io.BytesIO(), want_tag=True) is None
        backend.close()
    finally:
        server.stop()
    assert out.getvalue() == b"all of it"
    assert server.connections == 2  # the first connection ended with its answer


def test_remote_002_an_answer_with_endless_fields_is_an_error_not_a_hang():
    from hazrun.cache.remote import RemoteError
    server = Scripted([b"HTTP/1.1 200 OK\r\n" + b"X-Pad: y\r\n" * 200 + b"\r\n"])
    try:
        backend = turbo_backend(server.port)
        with pytest.raises(RemoteError) as e:
            backend.fetch("ab" * 32, io.BytesIO(), want_tag=False)
        backend.close()
    finally:
        server.stop()
    assert e.value.kind == "GET bad answer"


def test_remote_005_a_413_before_the_body_was_read_is_a_413_not_a_hang_up():
    """turborepo-remote-cache answers an artifact over BODY_LIMIT with 413
    and closes while hazrun still sends: that answer is the error (with
    its hint), and the artifact is not sent again as to a stale connection."""
    from hazrun.cache.remote import RemoteError
    server = Scripted([b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n"
                       b"Connection: close\r\n\r\n"])
    try:
        backend = turbo_backend(server.port)
        data = os.urandom(16 << 20)
        with pytest.raises(RemoteError) as e:
            backend.store("ab" * 32, io.BytesIO(data), len(data), 1.0, None)
        backend.close()
    finally:
        server.stop()
    assert e.value.kind == "PUT HTTP 413"
    assert "refuses an artifact this big" in str(e.value)
    assert server.connections == 1 and len(server.requests) == 1


def test_remote_005_a_413_hint_is_only_for_uploads():
    """'the server refuses an artifact this big' said of a GET misled."""
    from hazrun.cache.remote.transport import _status_error
    assert "this big" in str(_status_error("PUT", 413))
    assert str(_status_error("GET", 413)) == "GET HTTP 413"


@pytest.mark.timeout(60)
def test_remote_005_a_redirect_from_https_to_http_is_not_followed(tmp_path):
    """Whoever sits on the plain leg could hand over any artifact, and an
    unsigned one is taken on the transport's word: the redirect is a bad
    answer, and the plain server is never asked."""
    import shutil as _shutil
    import ssl
    import subprocess as sp
    openssl = _shutil.which("openssl")
    assert openssl, "openssl is needed to make the test server's certificate"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    sp.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
           timeout=30)
    plain = FixedStatusServer(404)
    target = plain.url()

    tls = redirecting(lambda path: target + path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    tls.httpd.socket = context.wrap_socket(tls.httpd.socket, server_side=True)
    ws = workspace(tmp_path)
    try:
        proc = run_hazrun(ws, "--cache-dir", str(tmp_path / "c"), "run", "build",
                          env=env_for(f"https://127.0.0.1:{tls.port}/cache",
                                      SSL_CERT_FILE=str(cert)))
    finally:
        tls.stop()
        plain.stop()
    assert proc.returncode == 0, proc.stderr
    assert "GET bad answer (a redirect from https to plain http, not followed)" in proc.stderr
    assert plain.requests == []


def test_remote_006_cancel_ends_a_connect_the_server_never_answers():
    """A server that drops the SYNs (a firewall, a VPN that is down): a
    Ctrl-C must end the connect in progress, not wait out the timeout (the
    socket is not yet the connection's while it connects)."""
    from hazrun.cache.remote import make_backend, resolve_remote
    from hazrun.cache.remote.transport import Abandoned
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):  # the accept queue full: later SYNs go unanswered
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    backend = make_backend(resolve_remote(None, {
        "HAZ_REMOTE_CACHE_URL": f"http://127.0.0.1:{port}", "HAZ_REMOTE_CACHE_TIMEOUT": "600"}))
    outcome: List[BaseException] = []

    def fetch():
        try:
            backend.fetch("ef" * 32, io.BytesIO(), want_tag=False)
        except BaseException as e:
            outcome.append(e)
    thread = threading.Thread(target=fetch, daemon=True)
    try:
        thread.start()
        # Until the fetch is connecting (the client's sockets in progress).
        deadline = time.monotonic() + 1
        while (not getattr(backend.client, "_connecting", None)
               and time.monotonic() < deadline):
            time.sleep(0.01)
        backend.abort()
        thread.join(30)
        assert not thread.is_alive(), "the connect was not ended by the cancel"
        assert len(outcome) == 1 and isinstance(outcome[0], Abandoned), outcome
    finally:
        backend.close()
        for s in fillers:
            s.close()
        listener.close()


def test_remote_001_a_run_holding_secrets_hides_its_environment(tmp_path):
    """Tasks get no token, but they run as hazrun's user and could read it
    from /proc/PPID/environ: hazrun holding one makes itself non-dumpable
    (that file then readable by root only), and only then."""
    import subprocess
    import sys
    from conftest import REPO
    probe = ("import ctypes, os, sys\n"
             "sys.argv = ['hazrun', '-C', sys.argv[1], 'run', 't', '--no-cache']\n"
             "import hazrun.scheduler as s\n"
             "orig = s.run_graph\n"
             "def spy(*a, **k):\n"
             "    print('dumpable', ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))\n"
             "    return orig(*a, **k)\n"
             "s.run_graph = spy\n"
             "import hazrun.cli\n"
             "hazrun.cli.main(sys.argv[1:])\n")
    ws = write_files(tmp_path / "ws", {"haz.toml": '[workspace]\n[tasks.t]\ncmd = "true"\n'})
    for env_extra, expected in (({"HAZ_REMOTE_CACHE_TOKEN": "s3cret"}, "dumpable 0"),
                                ({"HAZ_REMOTE_CACHE_URL": "http://u:pw@127.0.0.1:9/c"},
                                 "dumpable 0"),
                                ({}, "dumpable 1")):
        env = dict(os.environ, PYTHONPATH=str(REPO), **env_extra)
        for name in ("HAZ_REMOTE_CACHE_TOKEN", "HAZ_REMOTE_CACHE_URL"):
            if name not in env_extra:
                env.pop(name, None)
        proc = subprocess.run([sys.executable, "-c", probe, str(ws)], env=env,
                              capture_output=True, text=True, timeout=60)
        assert expected in proc.stdout, (env_extra, proc.stdout, proc.stderr)


def test_remote_002_a_relative_redirect_is_taken_against_the_requests_url():
    """RFC 9110: 'Location: moved' for /v8/artifacts/KEY is /v8/artifacts/moved;
    it was taken against the server's root (/moved)."""
    server = Scripted([
        b"HTTP/1.1 302 Found\r\nLocation: moved\r\nContent-Length: 0\r\n"
        b"Connection: close\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
    ])
    try:
        backend = turbo_backend(server.port)
        assert backend.fetch("ab" * 32, io.BytesIO(), want_tag=False) is None
        backend.close()
    finally:
        server.stop()
    assert server.requests[0].startswith(b"GET /v8/artifacts/" + b"ab" * 32)
    assert server.requests[1] == b"GET /v8/artifacts/moved HTTP/1.1", server.requests

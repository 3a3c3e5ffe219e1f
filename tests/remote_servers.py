"""Real cache servers for the remote cache tests (REMOTE-002).

- :class:`Nginx`: Debian's nginx with WebDAV PUT, for the ``http`` protocol;
- :class:`TurboServer`: the open-source ``turborepo-remote-cache`` (npm),
  for the ``turbo`` protocol;
- :class:`FixedStatusServer`: a tiny http.server in a thread that answers
  every request with one status (401, 500);
- :class:`SilentServer`: a socket that accepts and never answers.

Each listens on 127.0.0.1 on a free port and counts the requests it got.
``.ci/run`` installs nginx and the npm server; :func:`require` skips a test
when one is missing outside CI and fails it under CI.
"""
from __future__ import annotations

import http.server
import json
import os
import pwd
import grp
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
TURBO_BIN = REPO / ".ci" / "node" / "node_modules" / ".bin" / "turborepo-remote-cache"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require(what: str, found: Optional[str], install: str) -> str:
    """The program's path; skip (fail under CI) when it is not installed."""
    if found:
        return found
    message = f"{what} is not installed ({install}; bash .ci/run does it)"
    if os.environ.get("CI"):
        pytest.fail(message + " -- CI must have it", pytrace=False)
    pytest.skip(message)


def nginx_path() -> str:
    return require("nginx", shutil.which("nginx") or
                   next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None),
                   "apt-get install nginx")


def turbo_path() -> str:
    found = str(TURBO_BIN) if TURBO_BIN.exists() else shutil.which("turborepo-remote-cache")
    return require("turborepo-remote-cache", found and shutil.which("node") and found,
                   "npm install --prefix .ci/node turborepo-remote-cache")


def _wait_listening(port: int, proc: subprocess.Popen, log: Path, deadline_s: float = 30):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: "
                               f"{log.read_text(errors='replace')[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}: "
                       f"{log.read_text(errors='replace')[-3000:]}")


class _Process:
    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Nginx(_Process):
    """nginx serving ``root`` with WebDAV PUT; ``url(prefix)`` is a fresh
    directory of it, so tests sharing one server do not see each other."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.root = workdir / "root"
        self.root.mkdir(parents=True)
        self.port = free_port()
        self.access_log = workdir / "access.log"
        self.error_log = workdir / "error.log"
        conf = workdir / "nginx.conf"
        conf.write_text(self.config())
        self.proc = subprocess.Popen(
            [nginx_path(), "-c", str(conf), "-p", str(workdir), "-e", str(self.error_log),
             "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait_listening(self.port, self.proc, self.error_log)
        self._wait_answering()

    def _wait_answering(self, deadline_s: float = 30) -> None:
        """The master listens before it forks its worker: wait for an answer,
        so that the worker exists before any test's leak check starts."""
        import http.client
        deadline = time.monotonic() + deadline_s
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("HEAD", "/")
                conn.getresponse().read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                conn.close()

    def config(self) -> str:
        user = ""
        if os.geteuid() == 0:
            # Workers run as this user, not nobody, so they can write the root.
            user = (f"user {pwd.getpwuid(os.getuid()).pw_name} "
                    f"{grp.getgrgid(os.getgid()).gr_name};\n")
        d = self.dir
        return f"""{user}worker_processes 1;
pid {d}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    log_format hazrun '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent $request_length';
    access_log {self.access_log} hazrun;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
        client_max_body_size 0;
        location / {{
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
    }}
}}
"""

    def url(self, prefix: str) -> str:
        return f"http://127.0.0.1:{self.port}/{prefix}"

    def path(self, prefix: str, key: str) -> Path:
        return self.root / prefix / key

    def requests(self, prefix: str) -> List[str]:
        """'METHOD /path' of every request under ``prefix``."""
        out = []
        if self.access_log.exists():
            for line in self.access_log.read_text(errors="replace").splitlines():
                start = line.find('"')
                if start < 0:
                    continue
                method, _, rest = line[start + 1:].partition(" ")
                path = rest.partition(" ")[0]
                if path.startswith(f"/{prefix}/"):
                    out.append(f"{method} {path}")
        return out


    def traffic(self, prefix: str) -> "tuple[int, int]":
        """(bytes of answer bodies sent, bytes of requests received) under
        ``prefix``."""
        sent = received = 0
        if self.access_log.exists():
            for line in self.access_log.read_text(errors="replace").splitlines():
                if f" /{prefix}/" not in line:
                    continue
                fields = line.rsplit(" ", 3)
                sent += int(fields[-2])
                received += int(fields[-1])
        return sent, received


class TurboServer(_Process):
    """turborepo-remote-cache with local storage; a team per test keeps
    tests apart."""

    def __init__(self, workdir: Path, token: str, signature_key: Optional[str] = None):
        self.dir = workdir
        self.storage = workdir / "storage"
        self.storage.mkdir(parents=True)
        self.port = free_port()
        self.token = token
        self.log = workdir / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_")}
        env.update(HOST="127.0.0.1", PORT=str(self.port), STORAGE_PROVIDER="local",
                   STORAGE_PATH=str(self.storage), STORAGE_PATH_USE_TMP_FOLDER="false",
                   TURBO_TOKEN=token, LOG_LEVEL="info", NODE_ENV="production",
                   BODY_LIMIT=str(1 << 30))
        if signature_key:
            env["TURBO_REMOTE_CACHE_SIGNATURE_KEY"] = signature_key
        binary = turbo_path()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([binary], env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        _wait_listening(self.port, self.proc, self.log)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def path(self, team: str, key: str) -> Path:
        return self.storage / team / key

    def requests(self, team: str) -> List[str]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            req = rec.get("req")
            if rec.get("message") == "incoming request" and req and \
                    f"slug={team}" in req.get("url", ""):
                out.append(f"{req['method']} {req['url']}")
        return out


class FixedStatusServer:
    """Answers every request with ``status`` (and a short body), or with
    ``status_for[method]``; records requests and Authorization headers."""

    def __init__(self, status: int):
        self.status = status
        self.status_for: dict = {}
        self.requests: List[str] = []
        self.auth: List[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                outer.requests.append(f"{self.command} {self.path}")
                if self.headers.get("Authorization"):
                    outer.auth.append(self.headers["Authorization"])
                length = int(self.headers.get("Content-Length") or 0)
                while length > 0:
                    chunk = self.rfile.read(min(length, 1 << 16))
                    if not chunk:
                        break
                    length -= len(chunk)
                body = b'{"error":"nope"}' if self.command != "HEAD" else b""
                self.send_response(outer.status_for.get(self.command, outer.status))
                self.send_header("Content-Length", "16")
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = _answer

            def log_message(self, *args) -> None:
                pass

        self.serve(Handler)

    def serve(self, handler: type) -> None:
        """Answer with ``handler`` on a free port of 127.0.0.1, in a thread."""
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cache"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class SilentServer:
    """Listens (the kernel completes connects) but never accepts or answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cache"

    def stop(self) -> None:
        self.sock.close()


# -- fixtures and helpers shared by the tests/test_remote*.py modules ----------

TOKEN = "tok-3f9a1c-SECRET"


@pytest.fixture(scope="module")
def nginx_server(tmp_path_factory):
    server = Nginx(tmp_path_factory.mktemp("nginx"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def turbo_server(tmp_path_factory):
    server = TurboServer(tmp_path_factory.mktemp("turbo"), TOKEN)
    yield server
    server.stop()


class Remote:
    """One test's view of a server: its env for hazrun, and what the server
    saw and holds."""

    def __init__(self, protocol: str, server, name: str):
        self.protocol = protocol
        self.server = server
        self.name = name  # nginx: the URL's directory; turbo: the team

    @property
    def url(self) -> str:
        return self.server.url(self.name) if self.protocol == "http" else self.server.url()

    def env(self, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_")}
        env.update(HAZ_REMOTE_CACHE_URL=self.url, HAZ_REMOTE_CACHE_PROTOCOL=self.protocol,
                   HAZ_REMOTE_CACHE_TOKEN=TOKEN)
        if self.protocol == "turbo":
            env["HAZ_REMOTE_CACHE_TEAM"] = self.name
        env.update(extra)
        return env

    def requests(self) -> List[str]:
        return self.server.requests(self.name)

    def artifact(self, key: str) -> Path:
        return self.server.path(self.name, key)

    def keys(self) -> List[str]:
        d = self.server.root / self.name if self.protocol == "http" \
            else self.server.storage / self.name
        if not d.exists():
            return []
        return sorted(p.name for p in d.iterdir() if len(p.name) == 64)


_counter = [0]


def unique(prefix: str) -> str:
    _counter[0] += 1
    return f"{prefix}{os.getpid()}x{_counter[0]}"


@pytest.fixture(scope="module", params=["http", "turbo"])
def remote_server(request, tmp_path_factory):
    """nginx for http, turborepo-remote-cache for turbo; module-scoped (so
    set up before the per-test leak check) and shared by a module's tests."""
    if request.param == "http":
        server = Nginx(tmp_path_factory.mktemp("nginx"))
    else:
        server = TurboServer(tmp_path_factory.mktemp("turbo"), TOKEN)
    yield request.param, server
    server.stop()


@pytest.fixture
def remote(remote_server):
    """Each test once against nginx (http) and once against turbo, with a
    directory or team of its own."""
    protocol, server = remote_server
    return Remote(protocol, server, unique("t"))

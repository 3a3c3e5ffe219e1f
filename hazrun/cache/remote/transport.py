"""REMOTE-002: the two wire protocols, behind one small interface.

A :class:`RemoteBackend` does three things with one cache server: ask
whether it holds a key (HEAD), download an artifact into a file (GET), and
upload one from a file (PUT).  ``http`` addresses ``<url>/<key>`` (a
signature tag is the second object ``<url>/<key>.tag``); ``turbo`` speaks
the Turborepo remote cache API, ``<url>/v8/artifacts/<key>``.

Only :mod:`http.client`.  Each pool thread keeps one keep-alive connection
per backend.  ``timeout`` is the socket timeout, so it bounds connect and
every read and write, not a whole transfer.  Bodies stream between the
socket and files in fixed-size pieces: no artifact is ever held in memory.

Failures raise :class:`RemoteError`, whose ``kind`` is the warning's class
(``GET timeout``, ``PUT HTTP 500``); a 404 is not an error but an answer.
Nothing here counts failures or warns: that is the client's policy.
"""
from __future__ import annotations

import base64
import http.client
import io
import socket
import ssl
import threading
import urllib.parse
from typing import IO, Any, Dict, List, Optional, Set, Tuple, Union

from ... import __version__
from .settings import RemoteSettings

PIECE = 1 << 16            # bytes per socket read or write
MAX_SMALL = 4096           # a tag object, an error page we read and drop
SMALL_BODY = 64 * 1024     # sent with the request's head in one write
MAX_DRAIN = 1 << 16        # an error body longer than this closes the connection
MAX_REDIRECTS = 3
USER_AGENT = f"hazrun/{__version__}"
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
          ConnectionAbortedError)


class RemoteError(Exception):
    """A request that failed: no answer, or an answer other than success or
    404.  ``op`` is the method, ``what`` the error class; ``str()`` never
    holds a credential."""

    def __init__(self, op: str, what: str, detail: str = "", status: int = 0):
        super().__init__(f"{op} {what}" + (f" ({detail})" if detail else ""))
        self.op = op
        self.what = what
        self.detail = detail
        self.status = status

    @property
    def kind(self) -> str:
        return f"{self.op} {self.what}"


class Abandoned(Exception):
    """The run was cancelled while (or before) the request ran."""


class LocalError(Exception):
    """Writing what was downloaded failed on this machine (disk full)."""


def classify(op: str, e: BaseException, timeout: float) -> RemoteError:
    """A socket-level exception as a RemoteError of a stable class."""
    if isinstance(e, (socket.timeout, TimeoutError)):
        return RemoteError(op, "timeout", f"no answer within {timeout:g}s")
    if isinstance(e, ConnectionRefusedError):
        return RemoteError(op, "connection refused", "is the server running?")
    if isinstance(e, _STALE):
        return RemoteError(op, "connection closed", "the server hung up")
    if isinstance(e, socket.gaierror):
        return RemoteError(op, "unknown host", e.strerror or "")
    if isinstance(e, (ssl.SSLError, ssl.CertificateError)):
        return RemoteError(op, "TLS error", getattr(e, "reason", None) or type(e).__name__)
    if isinstance(e, http.client.HTTPException):
        return RemoteError(op, "bad answer", type(e).__name__)
    if isinstance(e, OSError):
        return RemoteError(op, "network error", e.strerror or type(e).__name__)
    return RemoteError(op, "error", type(e).__name__)


class _Fields:
    """An answer's header fields, as HTTPResponse uses its ``headers``
    (get, get_all, items): the first value of a name, case-insensitively."""

    __slots__ = ("_items", "_first")

    def __init__(self, items: List[Tuple[str, str]]):
        self._items = items
        self._first: Dict[str, str] = {}
        for name, value in items:
            self._first.setdefault(name.lower(), value)

    def get(self, name: str, failobj: Optional[str] = None) -> Optional[str]:
        return self._first.get(name.lower(), failobj)

    def get_all(self, name: str, failobj: Optional[List[str]] = None) -> Optional[List[str]]:
        name = name.lower()
        found = [v for n, v in self._items if n.lower() == name]
        return found or failobj

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def items(self) -> List[Tuple[str, str]]:
        return list(self._items)

    def keys(self) -> List[str]:
        return [n for n, _ in self._items]


def _read_fields(fp: IO[bytes]) -> List[Tuple[str, str]]:
    """The header fields up to the blank line, with http.client's limits;
    a folded line continues the field before it."""
    items: List[Tuple[str, str]] = []
    while True:
        line = fp.readline(http.client._MAXLINE + 1)  # type: ignore[attr-defined]
        if len(line) > http.client._MAXLINE:  # type: ignore[attr-defined]
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return items
        if len(items) >= http.client._MAXHEADERS:  # type: ignore[attr-defined]
            raise http.client.HTTPException(
                f"got more than {http.client._MAXHEADERS} headers")  # type: ignore[attr-defined]
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t"):
            if items:
                name, value = items[-1]
                items[-1] = (name, f"{value} {text.strip()}")
            continue
        name, colon, value = text.partition(":")
        if colon:
            items.append((name.strip(), value.strip(" \t")))


class _FastResponse(http.client.HTTPResponse):
    """HTTPResponse with the header fields parsed by :func:`_read_fields`
    rather than by the email package, which was a third of the CPU time of
    an upload or a lookup (REMOTE-002's requests; REMOTE-006: uploads stay
    cheap).  The rest of
    ``begin`` is http.client's own logic."""

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:  # skip any 100 Continue
            version, status, reason = self._read_status()  # type: ignore[attr-defined]
            if status != http.client.CONTINUE:
                break
            _read_fields(self.fp)  # type: ignore[arg-type]
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = _Fields(_read_fields(self.fp))  # type: ignore[assignment,arg-type]
        encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(encoding) and encoding.lower() == "chunked"  # type: ignore[union-attr]
        self.chunk_left = None
        self.will_close = self._check_close()  # type: ignore[attr-defined]
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if (status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED)
                or 100 <= status < 200 or self._method == "HEAD"):  # type: ignore[attr-defined]
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


class _Response:
    """What a request returned: status, headers, and the open response."""

    def __init__(self, status: int, headers: Dict[str, str],
                 resp: http.client.HTTPResponse, conn: http.client.HTTPConnection,
                 reusable: bool):
        self.status = status
        self.headers = headers
        self.resp = resp
        self.conn = conn
        self.reusable = reusable


class HttpClient:
    """Connections to one server: one per pool thread, kept alive, all of
    them closed (or shut down at once by :meth:`abort`) at the end."""

    def __init__(self, settings: RemoteSettings):
        parts = urllib.parse.urlsplit(settings.url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port
        self.base_path = parts.path
        self.timeout = settings.timeout
        self.settings = settings
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: Set[http.client.HTTPConnection] = set()
        self._connecting: Set[socket.socket] = set()  # see _connect
        self._aborted = False

    # -- connections ------------------------------------------------------
    def _new(self, scheme: str, host: str, port: Optional[int]) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = cls(host, port, timeout=self.timeout, blocksize=PIECE)
        conn.response_class = _FastResponse
        conn._create_connection = self._connect  # type: ignore[attr-defined]
        with self._lock:
            if self._aborted:
                raise Abandoned()
            self._open.add(conn)
        return conn

    def _connect(self, address: Tuple[str, int], timeout: Any = None,
                 source_address: Any = None, *more: Any) -> socket.socket:
        """socket.create_connection, with each socket known to :meth:`abort`
        while it connects: http.client sets ``conn.sock`` only once connected,
        and a server that drops the SYNs (a firewall, a VPN that is down)
        kept a Ctrl-C'd run waiting out the whole timeout (REMOTE-006)."""
        host, port = address
        error: Optional[OSError] = None
        for family, kind, proto, _, where in socket.getaddrinfo(host, port, 0,
                                                                socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            with self._lock:
                if self._aborted:
                    sock.close()
                    raise Abandoned()
                self._connecting.add(sock)
            try:
                if timeout is not None:
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(where)
                return sock
            except OSError as e:
                error = e
                sock.close()
            finally:
                with self._lock:
                    self._connecting.discard(sock)
            if self._aborted:
                raise Abandoned()
        raise error or OSError(f"{host}: no address to connect to")

    def _discard(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        with self._lock:
            self._open.discard(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None

    def _own(self) -> Tuple[http.client.HTTPConnection, bool]:
        """This thread's connection to the server; True if it was used before."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        conn = self._local.conn = self._new(self.scheme, self.host, self.port)
        return conn, False

    def abort(self) -> None:
        """Cancel: fail every request in flight now, and every later one."""
        with self._lock:
            self._aborted = True
            conns = list(self._open)
            socks = list(self._connecting)
        for conn in conns:
            sock = conn.sock
            if sock is not None:
                socks.append(sock)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # a connect in progress fails too
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            conns = list(self._open)
            self._open.clear()
        for conn in conns:
            conn.close()

    # -- requests ---------------------------------------------------------
    def headers(self) -> Dict[str, str]:
        """User-Agent and the credentials (REMOTE-001: the token as Bearer)."""
        h = {"User-Agent": USER_AGENT}
        if self.settings.token:
            h["Authorization"] = "Bearer " + self.settings.token
        elif self.settings.basic_auth:
            h["Authorization"] = "Basic " + base64.b64encode(
                self.settings.basic_auth.encode("utf-8")).decode("ascii")
        return h

    def request(self, method: str, target: str, headers: Dict[str, str],
                body: Union[IO[bytes], bytes, None] = None) -> _Response:
        """Send one request to the server and read the answer's head.

        A kept-alive connection that the server closed while idle is
        replaced and the request sent again, once.  GET and HEAD follow
        redirects (without the credentials when the host changes).
        """
        if self._aborted:
            raise Abandoned()
        rewind = hasattr(body, "seek")  # a file, not bytes
        start = body.tell() if rewind else 0
        conn, reused = self._own()
        try:
            resp = self._send(conn, method, target, headers, body)
        except _STALE as e:
            self._discard(conn)
            if not reused or self._aborted:
                raise self._failed(method, e)
            if rewind:
                body.seek(start)
            conn, _ = self._own()
            resp = self._try(conn, method, target, headers, body)
        except BaseException as e:
            self._discard(conn)
            raise self._failed(method, e)
        answer = self._answer(resp, conn, own=True)
        if method in ("GET", "HEAD") and answer.status in (301, 302, 303, 307, 308):
            host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6
            port = f":{self.port}" if self.port else ""
            return self._redirect(method, answer, headers,
                                  f"{self.scheme}://{host}{port}{target}")
        return answer

    def _try(self, conn, method, target, headers, body) -> http.client.HTTPResponse:
        try:
            return self._send(conn, method, target, headers, body)
        except BaseException as e:
            self._discard(conn)
            raise self._failed(method, e)

    def _failed(self, method: str, e: BaseException) -> BaseException:
        if self._aborted:
            return Abandoned()
        if isinstance(e, (Abandoned, KeyboardInterrupt, SystemExit, MemoryError)):
            return e
        return classify(method, e, self.timeout)

    @staticmethod
    def _send(conn, method, target, headers, body) -> http.client.HTTPResponse:
        try:
            conn.request(method, target, body=body, headers=headers)
        except (BrokenPipeError, ConnectionResetError) as e:
            if body is None or conn.sock is None:
                raise
            # REMOTE-005: a server may answer before the whole body came (413)
            # and hang up: that answer says what went wrong, and the body
            # is not sent again as to a stale kept-alive connection.
            try:
                return conn.getresponse()
            except Exception:
                raise e from None
        return conn.getresponse()

    def _answer(self, resp: http.client.HTTPResponse, conn, own: bool) -> _Response:
        headers = {k.lower(): v for k, v in resp.getheaders()}
        return _Response(resp.status, headers, resp, conn, own and not resp.will_close)

    def _redirect(self, method: str, answer: _Response, headers: Dict[str, str],
                  url: str) -> _Response:
        """REMOTE-002: follow ``answer``'s redirects; ``url``: the request's own, which a
        relative Location is taken against (RFC 9110), as is each hop's."""
        for _ in range(MAX_REDIRECTS):
            location = answer.headers.get("location", "")
            self.finish(answer)
            if not location:
                raise RemoteError(method, f"HTTP {answer.status}", "a redirect without "
                                  "a location", answer.status)
            try:
                url = urllib.parse.urljoin(url, location)
                parts = urllib.parse.urlsplit(url)
                host, port = parts.hostname, parts.port  # a bad port raises
                if parts.scheme not in ("http", "https") or not host:
                    raise RemoteError(method, "bad answer", "a redirect to a non-HTTP URL")
                if self.scheme == "https" and parts.scheme == "http":
                    # Whoever sits on the plain leg could hand over any
                    # artifact (unsigned ones are taken on the transport's
                    # word): not followed.
                    raise RemoteError(method, "bad answer",
                                      "a redirect from https to plain http, not followed")
                conn = self._new(parts.scheme, host, port)
            except (ValueError, http.client.InvalidURL):  # '[::1', port 99999, a space in the host
                # REMOTE-005: the server's answer is bad, as any other.
                raise RemoteError(method, "bad answer", "a redirect to an invalid URL") from None
            same = (parts.scheme, host, port) == (self.scheme, self.host, self.port)
            h = dict(headers)
            if not same:
                h.pop("Authorization", None)
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            resp = self._try(conn, method, target, h, None)
            answer = self._answer(resp, conn, own=False)
            if answer.status not in (301, 302, 303, 307, 308):
                return answer
        self.finish(answer)
        raise RemoteError(method, "too many redirects")

    def finish(self, answer: _Response, limit: int = MAX_DRAIN) -> bytes:
        """Read the rest of a small body so the connection can be reused;
        a long one closes the connection instead.  Returns what was read."""
        data = b""
        try:
            data = answer.resp.read(limit + 1)
        except BaseException:
            answer.reusable = False
        if len(data) > limit or not answer.reusable or not answer.resp.isclosed():
            self._discard(answer.conn)
        elif answer.conn is not getattr(self._local, "conn", None):
            self._discard(answer.conn)
        return data[:limit]

    def download(self, method: str, answer: _Response, dest: IO[bytes]) -> int:
        """Stream the answer's body into ``dest``; returns the byte count."""
        total = 0
        buf = bytearray(PIECE)
        view = memoryview(buf)
        try:
            while True:
                try:
                    n = answer.resp.readinto(buf)
                except BaseException as e:
                    self._discard(answer.conn)
                    raise self._failed(method, e)
                if not n:
                    break
                try:
                    dest.write(view[:n])
                except OSError as e:
                    self._discard(answer.conn)
                    raise LocalError(f"cannot write the download: {e.strerror or e}") from None
                total += n
        finally:
            view.release()
        length = answer.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) != total:
            self._discard(answer.conn)
            raise RemoteError(method, "connection closed", "the answer was cut short")
        if not answer.reusable or answer.conn is not getattr(self._local, "conn", None):
            self._discard(answer.conn)
        return total


def _status_error(op: str, status: int) -> RemoteError:
    hint = ""
    if status in (401, 403):
        hint = "check HAZ_REMOTE_CACHE_TOKEN (or the URL's user:password)"
        if op == "PUT":
            hint += ", or use --remote-cache-read-only"
    elif status == 413 and op == "PUT":  # of a GET it says nothing of size
        hint = "the server refuses an artifact this big"
    return RemoteError(op, f"HTTP {status}", hint, status)


class RemoteBackend:
    """One cache server (REMOTE-002).  Methods raise RemoteError, Abandoned
    or LocalError; they are safe to call from several threads at once."""

    name = ""

    def __init__(self, settings: RemoteSettings):
        self.settings = settings
        self.client = HttpClient(settings)

    def _target(self, key: str) -> str:
        """The request target (path and query) of ``key``'s artifact."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        """HEAD: does the server hold ``key``?"""
        return self._head(self._target(key))

    def fetch(self, key: str, dest: IO[bytes], want_tag: bool) -> Optional[Tuple[int, Optional[str]]]:
        """GET the artifact of ``key`` into ``dest``: (bytes, tag or None),
        or None if the server does not have it (404)."""
        raise NotImplementedError

    def store(self, key: str, src: IO[bytes], size: int, duration_s: float,
              tag: Optional[str]) -> None:
        """PUT ``size`` bytes of ``src`` (from its start) as the artifact of
        ``key``, with its signature ``tag`` if there is one."""
        raise NotImplementedError

    def abort(self) -> None:
        self.client.abort()

    def close(self) -> None:
        self.client.close()

    # -- shared by both protocols --------------------------------------------
    def _head(self, target: str) -> bool:
        answer = self.client.request("HEAD", target, self.client.headers())
        self.client.finish(answer)
        if answer.status == 404:
            return False
        if 200 <= answer.status < 300:
            return True
        raise _status_error("HEAD", answer.status)

    def _get(self, target: str, dest: IO[bytes]) -> Optional[Tuple[int, Dict[str, str]]]:
        answer = self.client.request("GET", target, self.client.headers())
        if answer.status == 404:
            self.client.finish(answer)
            return None
        if not 200 <= answer.status < 300:
            self.client.finish(answer)
            raise _status_error("GET", answer.status)
        return self.client.download("GET", answer, dest), answer.headers

    def _put(self, target: str, src: IO[bytes], size: int,
             extra: Dict[str, str]) -> None:
        headers = self.client.headers()
        headers.update({"Content-Type": "application/octet-stream",
                        "Content-Length": str(size)})
        headers.update(extra)
        src.seek(0)
        # A small body goes as bytes: http.client then sends it with the
        # head in one write, rather than two (and a wait for Nagle).
        body: Union[IO[bytes], bytes] = src.read() if size <= SMALL_BODY else src
        answer = self.client.request("PUT", target, headers, body=body)
        self.client.finish(answer)
        if not 200 <= answer.status < 300:
            raise _status_error("PUT", answer.status)


class HttpBackend(RemoteBackend):
    """``http``: ``<url>/<key>``, the tag as ``<url>/<key>.tag`` (WebDAV nginx
    or Apache, Artifactory generic repositories, bazel-remote, S3 gateways)."""

    name = "http"

    def _target(self, name: str) -> str:
        return f"{self.client.base_path}/{name}"

    def fetch(self, key, dest, want_tag):
        got = self._get(self._target(key), dest)
        if got is None:
            return None
        tag = None
        if want_tag:
            answer = self.client.request("GET", self._target(key + ".tag"),
                                         self.client.headers())
            body = self.client.finish(answer, limit=MAX_SMALL)
            if 200 <= answer.status < 300:
                tag = body.decode("ascii", "replace").strip()
            elif answer.status != 404:
                raise _status_error("GET", answer.status)
        return got[0], tag

    def store(self, key, src, size, duration_s, tag):
        # The artifact first: a PUT the server refuses (too big, a timeout)
        # must not leave this upload's tag beside the artifact already
        # there, which every signed reader would reject from then on
        # (REMOTE-004).  A reader between the two PUTs meets a new artifact
        # with the old tag: a miss, with a warning, for that moment.
        self._put(self._target(key), src, size, {})
        if tag is not None:
            data = tag.encode("ascii") + b"\n"
            self._put(self._target(key + ".tag"), io.BytesIO(data), len(data),
                      {"Content-Type": "text/plain"})


class TurboBackend(RemoteBackend):
    """``turbo``: the Turborepo remote cache API (the open-source
    turborepo-remote-cache server, Vercel's)."""

    name = "turbo"

    def _target(self, key: str) -> str:
        query: List[Tuple[str, str]] = []
        team = self.settings.team
        if team:
            query.append(("slug", team))
            if team.startswith("team_"):
                query.append(("teamId", team))
        q = "?" + urllib.parse.urlencode(query) if query else ""
        return f"{self.client.base_path}/v8/artifacts/{key}{q}"

    def fetch(self, key, dest, want_tag):
        got = self._get(self._target(key), dest)
        if got is None:
            return None
        size, headers = got
        return size, headers.get("x-artifact-tag")

    def store(self, key, src, size, duration_s, tag):
        extra = {"x-artifact-duration": str(max(0, int(round(duration_s * 1000))))}
        if tag is not None:
            extra["x-artifact-tag"] = tag
        self._put(self._target(key), src, size, extra)


def make_backend(settings: RemoteSettings) -> RemoteBackend:
    if settings.protocol == "turbo":
        return TurboBackend(settings)
    if settings.protocol == "http":
        return HttpBackend(settings)
    raise AssertionError(f"internal error: unknown protocol {settings.protocol!r}")

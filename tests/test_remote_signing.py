"""REMOTE-003/004: the artifact format and its signature, as units and on
the real servers (nginx keeps the tag as <key>.tag, turborepo-remote-cache
as x-artifact-tag)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import tarfile

import pytest

from hazrun.cache import Cache
from hazrun.cache.remote import Rejected, pack, sign, unpack, verify
from hazrun.cache.store import Store

from conftest import run_hazrun, write_files
from remote_servers import TOKEN, Nginx, Remote, TurboServer, unique

KEY_A = "signing-key-A"
KEY_B = "signing-key-B"
WORKSPACE = {
    "haz.toml": '[workspace]\nmembers = ["p/*"]\n',
    "p/a/src/in.txt": "in\n",
    "p/a/haz.toml": '[tasks.build]\ncmd = "mkdir -p out && cp src/in.txt out/x && echo made"\n'
                    'outputs = ["out/**"]\n',
}


def spec_tag(secret: bytes, key: str, team: str, archive: bytes) -> str:
    """REMOTE-004 written out from the spec, independently of hazrun."""
    f = b""
    for field in (b"hazrun-artifact-v1", key.encode(), team.encode(), archive):
        f += len(field).to_bytes(4, "big") + field
    return base64.b64encode(hmac.new(secret, f, hashlib.sha256).digest()).decode()


# -- units ---------------------------------------------------------------------------

@pytest.fixture
def stored(tmp_path):
    """A Store holding one entry (a:build), and its manifest."""
    root = write_files(tmp_path / "ws", WORKSPACE)
    from hazrun.workspace import load_workspace
    ws = load_workspace(root)
    (root / "p/a/out").mkdir()
    (root / "p/a/out/x").write_text("in\n")
    (root / "p/a/out/big").write_bytes(os.urandom(3 << 20))
    with Cache(ws, tmp_path / "cache") as c:
        key = c.compute_key("a:build", {})
        c.store("a:build", key, c.collect_outputs("a:build"), b"made\n", b"warn\n", 1.25)
        manifest = c.lookup(key)
    return Store(tmp_path / "cache"), manifest


def test_remote_003_pack_is_deterministic_and_unpacks_into_another_store(stored, tmp_path):
    store, manifest = stored
    one, two = io.BytesIO(), io.BytesIO()
    size = pack(store, manifest, one)
    pack(store, manifest, two)
    assert size == len(one.getvalue()) and one.getvalue() == two.getvalue()
    with tarfile.open(fileobj=io.BytesIO(one.getvalue()), mode="r:gz") as tar:
        names = tar.getnames()
        assert names[0] == "manifest.json"
        assert all(n.startswith("blobs/") for n in names[1:])
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
    other = Store(tmp_path / "other")
    other.ensure()
    got = unpack(other, one, manifest.key)
    assert got == manifest
    assert other.read_manifest(manifest.key) == manifest
    for e in manifest.outputs:
        assert other.has_valid_blob(e.digest, e.size)
    assert other.has_valid_blob(manifest.stdout.digest, manifest.stdout.size)


def test_remote_003_pack_writes_the_bytes_tarfile_and_gzip_would(stored):
    """pack writes its ustar headers and gzip frame itself (for speed): the
    result must be what tarfile and GzipFile make of the same members, so
    that any tar and gzip read it."""
    import gzip

    from hazrun.cache.store import encode_manifest
    store, manifest = stored
    art = io.BytesIO()
    pack(store, manifest, art)

    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w", format=tarfile.PAX_FORMAT) as tar:
        members = [("manifest.json", encode_manifest(manifest))] + [
            ("blobs/" + d, store.blob_path(d).read_bytes() if n else b"")
            for d, n in sorted(manifest.blobs().items())]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    assert gzip.decompress(art.getvalue()) == expected.getvalue()
    head = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=head, compresslevel=1, mtime=0):
        pass
    assert art.getvalue()[:10] == head.getvalue()[:10]


def test_remote_003_pack_refuses_a_blob_changed_in_the_local_cache(stored):
    from hazrun.cache.store import CorruptBlob
    store, manifest = stored
    path = store.blob_path(manifest.stdout.digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"mane\n")  # same size, other bytes
    with pytest.raises(CorruptBlob, match="corrupt"):
        pack(store, manifest, io.BytesIO())
    path.write_bytes(b"ma")  # shorter
    with pytest.raises(CorruptBlob, match="corrupt"):
        pack(store, manifest, io.BytesIO())


def test_remote_003_an_artifact_whose_gzip_check_fails_is_rejected(stored, tmp_path):
    """The manifest (paths, modes, link targets) has no digest of its own:
    gzip's CRC is what tells a bit changed in it.  Here the payload names
    out/y for out/x, deflated again behind the original header and trailer
    (a flipped bit, as found on a server, restored a file under another
    name): refused, and nothing is stored."""
    import gzip
    import zlib
    store, manifest = stored
    art = io.BytesIO()
    pack(store, manifest, art)
    raw = art.getvalue()
    payload = gzip.decompress(raw)
    assert payload.count(b'"out/x"') == 1
    deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
    body = deflate.compress(payload.replace(b'"out/x"', b'"out/y"')) + deflate.flush()
    forged = io.BytesIO(raw[:10] + body + raw[-8:])  # the original CRC and length
    other = Store(tmp_path / "other")
    other.ensure()
    with pytest.raises(Rejected, match="not a whole gzip'd tar"):
        unpack(other, forged, manifest.key)
    assert other.read_manifest(manifest.key) is None


def test_remote_003_unpack_checks(stored, tmp_path):
    store, manifest = stored
    art = io.BytesIO()
    pack(store, manifest, art)
    other = Store(tmp_path / "other")
    other.ensure()
    with pytest.raises(Rejected, match="holds the entry of key"):
        unpack(other, art, "0" * 64)
    with pytest.raises(Rejected, match="nope"):
        unpack(other, art, manifest.key, check=lambda m: "nope")
    # A member the manifest does not name; a blob missing.
    members = []
    with tarfile.open(fileobj=io.BytesIO(art.getvalue()), mode="r:gz") as tar:
        for m in tar.getmembers():
            members.append((m, tar.extractfile(m).read()))

    def rebuild(ms):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for m, data in ms:
                m.size = len(data)
                tar.addfile(m, io.BytesIO(data))
        return buf

    extra = tarfile.TarInfo("blobs/" + "1" * 64)
    with pytest.raises(Rejected, match="unexpected member"):
        unpack(other, rebuild(members + [(extra, b"x")]), manifest.key)
    with pytest.raises(Rejected, match="is missing from it"):
        unpack(other, rebuild(members[:-1]), manifest.key)
    with pytest.raises(Rejected, match="does not start with its manifest"):
        unpack(other, rebuild(members[1:]), manifest.key)
    link = tarfile.TarInfo(members[1][0].name)
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    with pytest.raises(Rejected, match="unexpected member"):
        unpack(other, rebuild([members[0], (link, b"")]), manifest.key)
    truncated = io.BytesIO(art.getvalue()[: len(art.getvalue()) // 2])
    with pytest.raises(Rejected, match="not a whole gzip'd tar"):
        unpack(other, truncated, manifest.key)
    assert other.read_manifest(manifest.key) is None  # nothing half-written


def test_remote_004_tag_is_the_spec_formula(stored):
    store, manifest = stored
    art = io.BytesIO()
    size = pack(store, manifest, art)
    data = art.getvalue()
    for team in (None, "team_x", "ünï"):
        tag = sign(b"s3", manifest.key, team, art, size)
        assert tag == spec_tag(b"s3", manifest.key, team or "", data)
        assert len(base64.b64decode(tag, validate=True)) == 32 and tag.endswith("=")
        verify(b"s3", manifest.key, team, art, size, tag + "\n")
        with pytest.raises(Rejected, match="does not match"):
            verify(b"other", manifest.key, team, art, size, tag)
        with pytest.raises(Rejected, match="carries no signature tag"):
            verify(b"s3", manifest.key, team, art, size, None)
    # The team and the key are signed too.
    tag = sign(b"s3", manifest.key, "t1", art, size)
    with pytest.raises(Rejected):
        verify(b"s3", manifest.key, "t2", art, size, tag)
    with pytest.raises(Rejected):
        verify(b"s3", "0" * 64, "t1", art, size, tag)


def test_remote_004_an_archive_too_big_for_the_length_prefix_is_not_signed():
    with pytest.raises(ValueError, match="4 GiB"):
        sign(b"k", "0" * 64, None, io.BytesIO(), 1 << 32)


# -- on the servers ---------------------------------------------------------------------

@pytest.fixture(scope="module", params=["http", "turbo"])
def signing_server(request, tmp_path_factory):
    if request.param == "http":
        server = Nginx(tmp_path_factory.mktemp("nginx"))
    else:
        # The server keeps tags only when it has a signature key of its own
        # (it does not check them; hazrun does).
        server = TurboServer(tmp_path_factory.mktemp("turbo"), TOKEN,
                             signature_key="server-side")
    yield request.param, server
    server.stop()


@pytest.fixture
def remote(signing_server):
    protocol, server = signing_server
    return Remote(protocol, server, unique("s"))


def _run(root, cache, env, summary):
    return run_hazrun(root, "--cache-dir", str(cache), "run", "build",
                      "--summary-json", str(summary), env=env)


def _clone(tmp_path, name):
    return write_files(tmp_path / name, WORKSPACE), tmp_path / (name + "-cache")


def _doc(path):
    doc = json.loads(path.read_text())
    return doc["tasks"][0], doc["remote"]


def test_remote_004_signed_round_trip_and_tag_format(remote, tmp_path):
    ws1, c1 = _clone(tmp_path, "one")
    up = _run(ws1, c1, remote.env(HAZ_REMOTE_CACHE_SIGNATURE_KEY=KEY_A), tmp_path / "1.json")
    assert up.returncode == 0, up.stderr
    task, _ = _doc(tmp_path / "1.json")
    key = task["key"]
    archive = remote.artifact(key).read_bytes()
    stored_tag = remote.server.path(remote.name, key + ".tag").read_text().strip()
    team = remote.name if remote.protocol == "turbo" else ""
    assert stored_tag == spec_tag(KEY_A.encode(), key, team, archive)
    assert KEY_A not in up.stdout + up.stderr

    ws2, c2 = _clone(tmp_path, "two")
    down = _run(ws2, c2, remote.env(HAZ_REMOTE_CACHE_SIGNATURE_KEY=KEY_A), tmp_path / "2.json")
    task, stats = _doc(tmp_path / "2.json")
    assert task["state"] == "cached" and stats["hits"] == 1, down.stderr
    assert "warning" not in down.stderr
    assert KEY_A not in down.stdout + down.stderr + (tmp_path / "2.json").read_text()

    # Without a key, no tag is checked.
    ws3, c3 = _clone(tmp_path, "three")
    _run(ws3, c3, remote.env(), tmp_path / "3.json")
    assert _doc(tmp_path / "3.json")[0]["state"] == "cached"


def test_remote_004_a_wrong_key_is_rejected(remote, tmp_path):
    ws1, c1 = _clone(tmp_path, "one")
    assert _run(ws1, c1, remote.env(HAZ_REMOTE_CACHE_SIGNATURE_KEY=KEY_A),
                tmp_path / "1.json").returncode == 0
    ws2, c2 = _clone(tmp_path, "two")
    down = _run(ws2, c2, remote.env(HAZ_REMOTE_CACHE_SIGNATURE_KEY=KEY_B), tmp_path / "2.json")
    assert down.returncode == 0
    task, stats = _doc(tmp_path / "2.json")
    assert task["state"] == "succeeded" and stats["hits"] == 0
    assert "a:build: remote cache entry" in down.stderr
    assert "signature tag does not match" in down.stderr
    assert KEY_A not in down.stderr and KEY_B not in down.stderr


def test_remote_004_a_missing_tag_is_rejected(remote, tmp_path):
    ws1, c1 = _clone(tmp_path, "one")
    assert _run(ws1, c1, remote.env(), tmp_path / "1.json").returncode == 0
    task, _ = _doc(tmp_path / "1.json")
    # No key: no tag was sent.
    assert not remote.server.path(remote.name, task["key"] + ".tag").exists()
    assert not [r for r in remote.requests() if ".tag" in r]
    ws2, c2 = _clone(tmp_path, "two")
    down = _run(ws2, c2, remote.env(HAZ_REMOTE_CACHE_SIGNATURE_KEY=KEY_A), tmp_path / "2.json")
    assert down.returncode == 0
    task, stats = _doc(tmp_path / "2.json")
    assert task["state"] == "succeeded" and stats["hits"] == 0
    if remote.protocol == "http":
        assert "carries no signature tag" in down.stderr, down.stderr
    else:
        # This server answers 404 for an artifact without a tag: a plain miss.
        assert stats["misses"] == 1


def test_remote_004_a_tag_that_does_not_match_the_bytes_is_rejected(remote, tmp_path):
    ws1, c1 = _clone(tmp_path, "one")
    assert _run(ws1, c1, remote.env(HAZ_REMOTE_CACHE_SIGNATURE_KEY=KEY_A),
                tmp_path / "1.json").returncode == 0
    task, _ = _doc(tmp_path / "1.json")
    # One bit changed where the tar does not look (the gzip trailer): only
    # the signature notices.
    path = remote.artifact(task["key"])
    data = bytearray(path.read_bytes())
    data[-10] ^= 1
    path.write_bytes(bytes(data))
    ws2, c2 = _clone(tmp_path, "two")
    down = _run(ws2, c2, remote.env(HAZ_REMOTE_CACHE_SIGNATURE_KEY=KEY_A), tmp_path / "2.json")
    assert _doc(tmp_path / "2.json")[0]["state"] == "succeeded"
    assert "signature tag does not match" in down.stderr


class _RefusingStore:
    """An http store in memory that can refuse artifact PUTs (413) while it
    still takes tags: a server's size limit, met by a second upload."""

    def __init__(self):
        import http.server
        import threading
        self.objects = {}
        self.refuse = False
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status, body=b""):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                body = outer.objects.get(self.path)
                self._reply(404) if body is None else self._reply(200, body)

            def do_HEAD(self):
                self._reply(404 if self.path not in outer.objects else 200)

            def do_PUT(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outer.refuse and not self.path.endswith(".tag"):
                    return self._reply(413)
                outer.objects[self.path] = body
                self._reply(201)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/c"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def test_remote_004_a_refused_upload_leaves_the_stored_entry_verifiable(tmp_path):
    """http: the tag went up first, so an artifact PUT the server refused
    left a new tag beside the old artifact, and every signed reader
    rejected that key from then on.  The artifact goes first now."""
    server = _RefusingStore()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_")}
    env.update(HAZ_REMOTE_CACHE_URL=server.url(), HAZ_REMOTE_CACHE_SIGNATURE_KEY=KEY_A)
    try:
        ws1, c1 = _clone(tmp_path, "one")
        assert _run(ws1, c1, env, tmp_path / "1.json").returncode == 0
        key = _doc(tmp_path / "1.json")[0]["key"]
        stored = dict(server.objects)
        # Run afresh (--force: a new archive for the same key), refused.
        server.refuse = True
        ws2, c2 = _clone(tmp_path, "two")
        forced = run_hazrun(ws2, "--cache-dir", str(c2), "run", "build", "--force", env=env)
        assert forced.returncode == 0 and "PUT HTTP 413" in forced.stderr, forced.stderr
        assert server.objects == stored
        server.refuse = False
        ws3, c3 = _clone(tmp_path, "three")
        down = _run(ws3, c3, env, tmp_path / "3.json")
    finally:
        server.stop()
    task, stats = _doc(tmp_path / "3.json")
    assert (task["key"], task["state"], stats["hits"]) == (key, "cached", 1), down.stderr

"""CACHE-002..005: storing, looking up and restoring entries, with faults."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hazrun.cache import (CacheMissError, Manifest, Materialised, OutputEntry,
                          StoreError, stream_hash)
from hazrun.cache.store import Store

from conftest import REPO
from test_cache_support import build_outputs, make_workspace, open_cache, store_build, tree


@pytest.fixture
def root(tmp_path):
    return make_workspace(tmp_path / "ws")


def entry_file(cache, key) -> Path:
    return cache.path / "entries" / key.key[:2] / (key.key + ".json")


def blob_file(cache, digest) -> Path:
    return cache.path / "blobs" / digest[:2] / digest[2:]


def no_temp_files(root: Path):
    return [p for p in tree(root) if ".hazrun-" in p or p.endswith(".tmp")]


def test_cache_003_hit_after_store(root):
    with open_cache(root) as c:
        assert c.lookup(c.compute_key("a:build", {})) is None
        key, m = store_build(c)
        manifest = c.lookup(key)
    assert manifest is not None
    assert manifest.label == "a:build" and manifest.key == key.key
    assert manifest.duration_s == 2.5
    assert manifest.outputs == m.outputs
    # A new run (new Cache) computes the same key and hits.
    with open_cache(root) as c2:
        assert c2.compute_key("a:build", {}).key == key.key
        assert c2.lookup(key) == manifest
        assert c2.take_warnings() == []


def test_cache_003_staged_entry_is_invisible_until_committed(root):
    """A store in two halves: staged copies in tmp/ are no entry yet; the
    outputs may change once staged and the entry keeps the staged bytes."""
    with open_cache(root) as c:
        build_outputs(root)
        key = c.compute_key("a:build", {})
        m = c.collect_outputs("a:build")
        staged = c.stage("a:build", key, m, b"built\n", b"", 2.5)
        assert staged is not None and staged.blobs
        assert c.lookup(key) is None and not entry_file(c, key).exists()
        for blob in staged.blobs:
            assert not blob_file(c, blob.digest).exists()
        (root / "pkg" / "a" / "dist" / "lib.txt").write_bytes(b"a successor wrote this\n")
        assert c.commit(staged) is True
        assert c.lookup(key) is not None
        assert no_temp_files(c.path) == []
    (root / "pkg" / "a" / "dist" / "lib.txt").unlink()
    with open_cache(root) as c:
        restored = c.restore("a:build", c.lookup(key))
        restored.close()
    assert (root / "pkg" / "a" / "dist" / "lib.txt").read_bytes() == b"library\n"


def test_cache_003_prune_between_stage_and_commit(root):
    """A prune leaves a live writer's staged blobs: the commit completes the
    entry.  Staged blobs removed all the same (by hand, by an older hazrun)
    fail the commit, and no entry is left half there."""
    from hazrun.cache import StoreError
    from hazrun.cache.housekeeping import prune

    with open_cache(root) as c:
        build_outputs(root)
        key = c.compute_key("a:build", {})
        staged = c.stage("a:build", key, c.collect_outputs("a:build"), b"out\n", b"", 1.0)
        prune(c.path, max_size=None, max_age=None)
        assert c.commit(staged)
        with c.restore("a:build", c.lookup(key)) as r:
            assert r.stdout.read() == b"out\n"
        prune(c.path, max_size=0)
        staged = c.stage("a:build", key, c.collect_outputs("a:build"), b"out\n", b"", 1.0)
        for f in (c.path / "tmp").iterdir():
            f.unlink()
        with pytest.raises(StoreError):
            c.commit(staged)
        assert c.lookup(key) is None
        assert c.take_warnings() == []


def test_cache_003_manifest_json_fields(root):
    with open_cache(root) as c:
        key, m = store_build(c, stdout=b"o", stderr=b"e")
    data = json.loads(entry_file(c, key).read_text())
    assert data["format"] == 1 and data["label"] == "a:build" and data["key"] == key.key
    assert set(data) >= {"duration_s", "stdout", "stderr", "outputs"}
    by_path = {o["path"]: o for o in data["outputs"]}
    assert by_path["link"] == {"path": "link", "mode": 0, "symlink": "dist/lib.txt",
                               "size": len("dist/lib.txt")}
    assert by_path["bin/tool"]["mode"] == 0o755
    assert set(by_path["dist/lib.txt"]) == {"path", "mode", "digest", "size"}
    # Logs are blobs too.
    assert blob_file(c, data["stdout"]["digest"]).read_bytes() == b"o"


def test_cache_002_collect_outputs_paths_modes_and_symlinks(root):
    with open_cache(root) as c:
        build_outputs(root)
        m = c.collect_outputs("a:build")
    paths = [e.path for e in m.outputs]
    assert paths == ["bin/tool", "dist/lib.txt", "dist/sub/data.bin", "link"]
    e = {e.path: e for e in m.outputs}
    assert e["bin/tool"].mode == 0o755 and e["dist/sub/data.bin"].mode == 0o640
    assert e["link"].symlink == "dist/lib.txt" and e["link"].digest is None
    assert m.root_paths("pkg/a")[0] == "pkg/a/bin/tool"
    assert m.stream_hash == stream_hash(m.outputs)


def test_cache_002_stream_hash_depends_on_content_mode_and_target_only(root):
    with open_cache(root) as c:
        build_outputs(root)
        first = c.collect_outputs("a:build")
        assert c.collect_outputs("a:build").stream_hash == first.stream_hash
        os.chmod(root / "pkg/a/bin/tool", 0o700)
        assert c.collect_outputs("a:build").stream_hash != first.stream_hash
        os.chmod(root / "pkg/a/bin/tool", 0o755)
        os.unlink(root / "pkg/a/link")
        os.symlink("dist/sub/data.bin", root / "pkg/a/link")
        assert c.collect_outputs("a:build").stream_hash != first.stream_hash


def test_cache_002_collect_does_not_follow_symlinked_directories(root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("x")
    with open_cache(root) as c:
        build_outputs(root)
        os.symlink(outside, root / "pkg/a/dist/ext")
        m = c.collect_outputs("a:build")
    e = {e.path: e for e in m.outputs}
    assert "dist/ext/secret" not in e
    assert e["dist/ext"].symlink == str(outside)


def test_cache_004_outputs_restored_after_deletion_with_modes_and_symlinks(root):
    with open_cache(root) as c:
        key, m = store_build(c)
        before = tree(root / "pkg/a")
        shutil.rmtree(root / "pkg/a/dist")
        shutil.rmtree(root / "pkg/a/bin")
        os.unlink(root / "pkg/a/link")
        manifest = c.lookup(key)
        with c.restore("a:build", manifest) as r:
            assert r.materialised == m
            assert r.duration_s == 2.5
    assert tree(root / "pkg/a") == before
    assert os.readlink(root / "pkg/a/link") == "dist/lib.txt"
    assert os.stat(root / "pkg/a/bin/tool").st_mode & 0o777 == 0o755
    assert no_temp_files(root) == []


def test_cache_004_an_output_whose_name_takes_252_bytes_is_restored(root):
    """The temp name beside it is cut by bytes: cut at 64 characters, 63
    emoji made it longer than a file name may be, and it never restored."""
    name = "\U0001F600" * 63  # 252 bytes
    with open_cache(root) as c:
        build_outputs(root)
        (root / "pkg/a/dist" / name).write_text("smile\n")
        key, _ = store_build(c)
        shutil.rmtree(root / "pkg/a/dist")
        with c.restore("a:build", c.lookup(key)):
            pass
    assert (root / "pkg/a/dist" / name).read_text() == "smile\n"
    assert no_temp_files(root) == []


def test_cache_004_restore_overwrites_changed_outputs(root):
    with open_cache(root) as c:
        key, _ = store_build(c)
        (root / "pkg/a/dist/lib.txt").write_text("stale")
        os.chmod(root / "pkg/a/bin/tool", 0o600)
        os.unlink(root / "pkg/a/link")
        os.symlink("elsewhere", root / "pkg/a/link")
        c.restore("a:build", c.lookup(key)).close()
    assert (root / "pkg/a/dist/lib.txt").read_bytes() == b"library\n"
    assert os.stat(root / "pkg/a/bin/tool").st_mode & 0o777 == 0o755
    assert os.readlink(root / "pkg/a/link") == "dist/lib.txt"


def _signatures(directory: Path):
    """(inode, mtime, ctime) of every file and symlink: a write or a rename
    into place changes the ctime."""
    out = {}
    for rel in tree(directory):
        st = os.lstat(directory / rel)
        out[rel] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    return out


def test_cache_004_outputs_in_place_are_not_written_again(root):
    with open_cache(root) as c:
        key, _ = store_build(c)
    with open_cache(root) as c:  # the next run: same outputs on disk
        before = _signatures(root / "pkg/a")
        with c.restore("a:build", c.lookup(key)) as r:
            assert r.stdout.read() == b"built\n"
        assert _signatures(root / "pkg/a") == before
        assert c.take_warnings() == []
    assert no_temp_files(root) == []


def test_cache_004_same_size_change_with_the_old_mtime_is_restored(root):
    lib = root / "pkg/a/dist/lib.txt"
    with open_cache(root) as c:
        key, _ = store_build(c)
        os.utime(lib, (1_000_000_000, 1_000_000_000))  # old: the stat cache trusts it
        c.restore("a:build", c.lookup(key)).close()
        assert c.stat_cache.probe("pkg/a/dist/lib.txt", str(lib)) is not None
    st = os.stat(lib)
    lib.write_bytes(b"LIBRARY\n")  # same size, mtime put back: only ctime tells
    os.utime(lib, ns=(st.st_atime_ns, st.st_mtime_ns))
    with open_cache(root) as c:
        c.restore("a:build", c.lookup(key)).close()
    assert lib.read_bytes() == b"library\n"


@pytest.mark.parametrize("as_file", [False, True])
def test_cache_003_logs_round_trip_byte_for_byte(root, as_file):
    stdout = b"line 1\n\xff\xfe not utf-8 \x00\r\nno newline at end"
    stderr = os.urandom(3 << 20)  # beyond the 1 MiB spool: goes to disk
    with open_cache(root) as c:
        build_outputs(root)
        key = c.compute_key("a:build", {})
        m = c.collect_outputs("a:build")
        if as_file:
            out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
            out.write(stdout)   # left at the end: store reads from the start
            err.write(stderr)
            c.store("a:build", key, m, out, err, 1.0)
            out.close()
            err.close()
        else:
            c.store("a:build", key, m, stdout, stderr, 1.0)
        with c.restore("a:build", c.lookup(key)) as r:
            assert r.stdout.read() == stdout
            assert r.stderr.read() == stderr


def test_cache_003_empty_outputs_and_logs(root):
    with open_cache(root) as c:
        key = c.compute_key("b:check", {})
        m = c.collect_outputs("b:check")
        assert m.outputs == ()
        c.store("b:check", key, m, b"", b"", 0.0)
        with c.restore("b:check", c.lookup(key)) as r:
            assert r.stdout.read() == b"" and r.stderr.read() == b""
            assert r.materialised.stream_hash == m.stream_hash


def test_cache_004_corrupted_blob_is_a_miss_and_writes_nothing(root):
    with open_cache(root) as c:
        key, m = store_build(c)
        data = blob_file(c, [e for e in m.outputs if e.path == "dist/sub/data.bin"][0].digest)
        raw = bytearray(data.read_bytes())
        raw[100] ^= 0xFF  # same size, different content
        data.write_bytes(bytes(raw))
        # The work tree before the restore: dist/lib.txt stale, the rest gone.
        shutil.rmtree(root / "pkg/a/dist/sub")
        shutil.rmtree(root / "pkg/a/bin")
        (root / "pkg/a/dist/lib.txt").write_text("stale")
        before = tree(root)
        manifest = c.lookup(key)
        assert manifest is not None  # sizes match: only reading finds it
        with pytest.raises(CacheMissError) as e:
            c.restore("a:build", manifest)
        assert e.value.label == "a:build" and "corrupt" in str(e.value)
        assert "\n" not in str(e.value)
        assert tree(root) == before  # nothing written, no temp file left
        assert not (root / "pkg/a/bin").exists()
        # The corrupt blob was removed: the next lookup misses with a warning,
        # and the next store replaces it (CACHE-005).
        assert c.lookup(key) is None
        assert any("missing" in w for w in c.take_warnings())
        store_build(c)
        c.restore("a:build", c.lookup(key)).close()
    assert (root / "pkg/a/dist/sub/data.bin").read_bytes() == bytes(range(256)) * 10


def test_cache_004_missing_log_blob_is_a_miss(root):
    with open_cache(root) as c:
        key, _ = store_build(c, stdout=b"unique stdout")
        manifest = c.lookup(key)
        os.unlink(blob_file(c, manifest.stdout.digest))
        assert c.lookup(key) is None
        with pytest.raises(CacheMissError):
            c.restore("a:build", manifest)


def test_cache_003_truncated_manifest_is_a_miss_with_a_warning(root):
    with open_cache(root) as c:
        key, _ = store_build(c)
        f = entry_file(c, key)
        f.write_bytes(f.read_bytes()[:40])
        assert c.lookup(key) is None
        warnings = c.take_warnings()
        assert len(warnings) == 1 and "corrupt" in warnings[0] and key.key[:12] in warnings[0]
        assert c.take_warnings() == []  # drained
        # A store over the corrupt entry replaces it (CACHE-005).
        store_build(c)
        assert c.lookup(key) is not None


@pytest.mark.parametrize("payload", [b"", b"{}", b"[1,2]", b'{"format": 99}', b"\xff\xfe",
                                     b"[" * 100000])
def test_cache_003_garbage_manifest_is_a_miss(root, payload):
    with open_cache(root) as c:
        key, _ = store_build(c)
        entry_file(c, key).write_bytes(payload)
        assert c.lookup(key) is None
        assert c.take_warnings()


def _manifest_with(c, key, entries):
    m = c.lookup(key)
    return Manifest(m.label, m.key, m.duration_s, m.stdout, m.stderr, tuple(entries))


@pytest.mark.parametrize("bad", ["../../x", "dist/../../../x", "/tmp/x", "dist//x",
                                 "dist/./x", "dist/", ".", "", "dist/x\0y",
                                 "src/main.c", ".git/hooks/dist"])
def test_cache_004_manifest_path_escaping_or_not_normalised_is_rejected(root, bad):
    with open_cache(root) as c:
        key, m = store_build(c)
        lib = [e for e in m.outputs if e.path == "dist/lib.txt"][0]
        evil = OutputEntry(bad, 0o644, lib.digest, lib.size)
        before = tree(root.parent)
        # /tmp/x may be anyone's: what counts is that the restore left it be.
        tmp_x = _signature_of(Path("/tmp/x"))
        with pytest.raises(CacheMissError):
            c.restore("a:build", _manifest_with(c, key, [lib, evil]))
        assert tree(root.parent) == before
        assert not (root.parent / "x").exists() and _signature_of(Path("/tmp/x")) == tmp_x


def _signature_of(path: Path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def test_cache_004_manifest_from_disk_naming_parent_path_is_rejected(root):
    with open_cache(root) as c:
        key, _ = store_build(c)
        f = entry_file(c, key)
        data = json.loads(f.read_text())
        data["outputs"][1]["path"] = "../../x"
        f.write_text(json.dumps(data))
        manifest = c.lookup(key)
        with pytest.raises(CacheMissError) as e:
            c.restore("a:build", manifest)
        assert "../../x" in str(e.value)
    assert not (root.parent / "x").exists()


@pytest.mark.parametrize("order", [[999], [0, 1], [-1], [1.5], "12", [True], [7, 0, 7]])
def test_cache_003_an_order_its_logs_cannot_account_for_is_no_entry(root, order):
    """Manifest.order (EXEC-017's interleaved replay): counts past a log's
    size, or that are no counts, make the entry corrupt, not a replay that
    reads short or a crash."""
    with open_cache(root) as c:
        key, _ = store_build(c)  # stdout "built\n" (6 bytes), empty stderr
        f = entry_file(c, key)
        data = json.loads(f.read_text())
        assert data["stdout"]["size"] < 999 and data["stderr"]["size"] == 0
        data["order"] = order
        f.write_text(json.dumps(data))
        assert c.lookup(key) is None
        assert any("bad order" in w for w in c.take_warnings())
        # What it can account for is read back as written, however long
        # (a later hazrun may record more switches than this one).
        for good in ([2, 0, 4], [0] * 5000 + [6]):
            data["order"] = good
            f.write_text(json.dumps(data))
            assert c.lookup(key).order == tuple(good)


@pytest.mark.parametrize("field, value", [("duration_s", "Infinity"), ("duration_s", "NaN"),
                                          ("duration_s", "-1"), ("created", "Infinity")])
def test_cache_003_a_manifest_with_a_number_that_is_not_finite_is_no_entry(root, field, value):
    """JSON as Python reads it has Infinity and NaN: 'saved infs by the
    cache' was printed for a downloaded manifest saying so."""
    with open_cache(root) as c:
        key, _ = store_build(c)
        f = entry_file(c, key)
        text = f.read_text()
        data = json.loads(text)
        f.write_text(text.replace(f'"{field}":{json.dumps(data[field])}', f'"{field}":{value}')
                     .replace(f'"{field}": {json.dumps(data[field])}', f'"{field}": {value}'))
        assert value in f.read_text()
        assert c.lookup(key) is None
        assert any("ignoring" in w or "unusable" in w or "corrupt" in w
                   for w in c.take_warnings())


@pytest.mark.parametrize("path,target", [("dist/\ud800", None), ("dist/x", "\ud800"),
                                         ("dist/x", "a\0b")])
def test_cache_004_names_no_file_system_takes_are_a_miss(root, path, target):
    with open_cache(root) as c:
        key, m = store_build(c)
        lib = [e for e in m.outputs if e.path == "dist/lib.txt"][0]
        odd = (OutputEntry(path, 0, None, 1, target) if target
               else OutputEntry(path, 0o644, lib.digest, lib.size))
        before = tree(root)
        with pytest.raises(CacheMissError):
            c.restore("a:build", _manifest_with(c, key, [lib, odd]))
        assert tree(root) == before


def test_cache_004_file_and_directory_of_the_same_name_rejected(root):
    with open_cache(root) as c:
        key, m = store_build(c)
        lib = [e for e in m.outputs if e.path == "dist/lib.txt"][0]
        clash = OutputEntry("dist/lib.txt/x", 0o644, lib.digest, lib.size)
        with pytest.raises(CacheMissError):
            c.restore("a:build", _manifest_with(c, key, [lib, clash]))


def test_cache_004_output_symlink_out_of_workspace_is_stored_as_a_symlink(root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "pkg/a/dist").mkdir(parents=True)
    os.symlink(outside / "target.txt", root / "pkg/a/dist/out-link")
    with open_cache(root) as c:
        key = c.compute_key("a:build", {})
        m = c.collect_outputs("a:build")
        assert [e.symlink for e in m.outputs] == [str(outside / "target.txt")]
        c.store("a:build", key, m, b"", b"", 1.0)
        os.unlink(root / "pkg/a/dist/out-link")
        c.restore("a:build", c.lookup(key)).close()
    assert os.readlink(root / "pkg/a/dist/out-link") == str(outside / "target.txt")
    assert list(outside.iterdir()) == []  # the link was made, nothing written through it


def test_cache_004_restore_never_writes_through_a_symlink_out_of_the_workspace(root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    with open_cache(root) as c:
        key, _ = store_build(c)
        shutil.rmtree(root / "pkg/a/dist")
        shutil.rmtree(root / "pkg/a/bin")
        os.symlink(outside, root / "pkg/a/dist")  # dist/ now leads out
        with pytest.raises(CacheMissError) as e:
            c.restore("a:build", c.lookup(key))
        assert "out of the workspace" in str(e.value)
    assert list(outside.iterdir()) == []
    assert not (root / "pkg/a/bin").exists()  # nothing else restored either


def test_cache_004_existing_output_symlink_is_replaced_not_followed(root, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    with open_cache(root) as c:
        key, _ = store_build(c)
        os.unlink(root / "pkg/a/dist/lib.txt")
        os.symlink(outside, root / "pkg/a/dist/lib.txt")
        c.restore("a:build", c.lookup(key)).close()
    assert outside.read_text() == "precious"
    assert not os.path.islink(root / "pkg/a/dist/lib.txt")
    assert (root / "pkg/a/dist/lib.txt").read_bytes() == b"library\n"


def test_cache_004_symlinked_directory_inside_the_workspace_is_followed(root):
    real = root / "pkg/a/real-dist"
    with open_cache(root) as c:
        key, _ = store_build(c)
        shutil.rmtree(root / "pkg/a/dist")
        real.mkdir()
        os.symlink("real-dist", root / "pkg/a/dist")
        c.restore("a:build", c.lookup(key)).close()
    assert (real / "lib.txt").read_bytes() == b"library\n"


def test_cache_004_directory_in_the_way_is_a_miss(root):
    with open_cache(root) as c:
        key, _ = store_build(c)
        os.unlink(root / "pkg/a/bin/tool")
        (root / "pkg/a/bin/tool").mkdir()
        (root / "pkg/a/dist/lib.txt").write_text("stale")
        with pytest.raises(CacheMissError):
            c.restore("a:build", c.lookup(key))
    assert (root / "pkg/a/dist/lib.txt").read_text() == "stale"


def test_cache_004_manifest_of_another_label_is_rejected(root):
    with open_cache(root) as c:
        key, _ = store_build(c)
        with pytest.raises(CacheMissError):
            c.restore("a:test", c.lookup(key))


def test_cache_007_restore_refreshes_use_time(root):
    with open_cache(root) as c:
        key, _ = store_build(c)
        f = entry_file(c, key)
        os.utime(f, (1000, 1000))
        c.lookup(key)
        c.restore("a:build", c.lookup(key)).close()
    # By the end of the run (hits are refreshed together when it closes).
    assert f.stat().st_mtime > 1000


def test_cache_007_lookup_alone_does_not_refresh_use_time(root):
    with open_cache(root) as c:
        key, _ = store_build(c)
        f = entry_file(c, key)
        os.utime(f, (1000, 1000))
        assert c.lookup(key) is not None
    assert f.stat().st_mtime == 1000  # a lookup alone is no use


def test_cache_007_use_time_refresh_of_a_pruned_entry_is_no_error(root):
    with open_cache(root) as c:
        key, _ = store_build(c)
        c.restore("a:build", c.lookup(key)).close()
        os.unlink(entry_file(c, key))  # pruned by another process meanwhile
    assert c.take_warnings() == []


def test_cache_005_read_false_never_looks_up_write_false_never_stores(root):
    with open_cache(root) as c:
        key, _ = store_build(c)
    with open_cache(root, read=False) as c:
        assert c.lookup(key) is None
    with open_cache(root, write=False) as c:
        (root / "pkg/a/src/main.c").write_text("changed")
        key2 = c.compute_key("a:build", {})
        m = c.collect_outputs("a:build")  # still works: successors need it
        c.store("a:build", key2, m, b"", b"", 1.0)
        assert c.lookup(key2) is None


def test_cache_005_task_with_cache_false_is_never_stored(tmp_path):
    root = make_workspace(tmp_path / "ws", {"pkg/b/haz.toml": """
        [tasks.check]
        cmd = "check"
        cache = false
    """})
    with open_cache(root) as c:
        key = c.compute_key("b:check", {})
        c.store("b:check", key, c.collect_outputs("b:check"), b"", b"", 1.0)
        assert c.lookup(key) is None


def test_cache_003_cache_dir_from_environment_and_argument(root, tmp_path):
    with open_cache(root, environ={"HAZ_CACHE_DIR": "elsewhere"}) as c:
        assert c.path == root / "elsewhere"
    with open_cache(root, environ={"HAZ_CACHE_DIR": str(tmp_path / "abs")},
                    cache_dir=tmp_path / "arg") as c:
        assert c.path == tmp_path / "arg"
        key, _ = store_build(c)
    assert (tmp_path / "arg" / "CACHEDIR.TAG").is_file()
    assert not (root / ".haz" / "cache").exists()


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody (root included) can create files in."""
    d = tmp_path / "ro-cache"
    d.mkdir()
    os.chmod(d, 0o555)
    immutable = False
    probe = d / "probe"
    try:
        probe.touch()
    except OSError:
        pass
    else:
        probe.unlink()
        if shutil.which("chattr") and subprocess.run(
                ["chattr", "+i", str(d)], stderr=subprocess.DEVNULL).returncode == 0:
            immutable = True
        else:
            os.chmod(d, 0o755)
            pytest.skip("cannot make a read-only directory here (root without chattr)")
    yield d
    if immutable:
        subprocess.run(["chattr", "-i", str(d)], check=True)
    os.chmod(d, 0o755)


def test_cache_003_read_only_cache_dir_raises_store_error(root, read_only_dir):
    with open_cache(root, cache_dir=read_only_dir) as c:
        build_outputs(root)
        key = c.compute_key("a:build", {})
        m = c.collect_outputs("a:build")
        with pytest.raises(StoreError) as e:
            c.store("a:build", key, m, b"", b"", 1.0)
        msg = str(e.value)
        assert e.value.label == "a:build" and str(read_only_dir) in msg
        assert "\n" not in msg
        assert c.lookup(key) is None  # a read-only cache is still read


def test_cache_003_cache_dir_under_a_file_raises_store_error(root):
    (root / "not-a-dir").write_text("")
    with open_cache(root, cache_dir=root / "not-a-dir" / "cache") as c:
        build_outputs(root)
        key = c.compute_key("a:build", {})
        with pytest.raises(StoreError):
            c.store("a:build", key, c.collect_outputs("a:build"), b"", b"", 1.0)


def test_cache_003_output_changed_after_hashing_is_not_stored(root):
    with open_cache(root) as c:
        build_outputs(root)
        key = c.compute_key("a:build", {})
        m = c.collect_outputs("a:build")
        (root / "pkg/a/dist/lib.txt").write_text("changed after collect")
        with pytest.raises(StoreError):
            c.store("a:build", key, m, b"", b"", 1.0)
        assert c.lookup(key) is None


def test_cache_003_corrupt_existing_blob_is_replaced_on_store(root):
    with open_cache(root) as c:
        key, m = store_build(c)
        lib = [e for e in m.outputs if e.path == "dist/lib.txt"][0]
        blob_file(c, lib.digest).write_bytes(b"LIBRARY\n")  # same size
        store_build(c)
        assert blob_file(c, lib.digest).read_bytes() == b"library\n"


_STORER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from hazrun import load_workspace
from hazrun.cache import Cache
c = Cache(load_workspace(sys.argv[2]), environ={})
key = c.compute_key("a:build", {})
m = c.collect_outputs("a:build")
for i in range(int(sys.argv[3])):
    c.store("a:build", key, m, b"x" * 200000, b"err", 1.0)
print(key.key)
"""


def test_cache_003_two_processes_storing_the_same_key_leave_a_valid_entry(root):
    build_outputs(root)
    from test_cache_support import backdate
    backdate(root)
    with open_cache(root) as c:
        key = c.compute_key("a:build", {})
    procs = [subprocess.Popen([sys.executable, "-c", _STORER, str(REPO), str(root), "25"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    store = Store(root / ".haz" / "cache")
    seen = 0
    try:
        # Meanwhile a reader never sees a partial manifest.
        while any(p.poll() is None for p in procs):
            m = store.read_manifest(key.key) if (store.entries).exists() else None
            if m is not None:
                seen += 1
                assert m.key == key.key and len(m.outputs) == 4
    finally:
        results = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err.decode()
        assert out.decode().strip() == key.key
    with open_cache(root) as c:
        shutil.rmtree(root / "pkg/a/dist")
        with c.restore("a:build", c.lookup(key)) as r:
            assert r.stdout.read() == b"x" * 200000
        assert c.take_warnings() == []
    assert (root / "pkg/a/dist/lib.txt").read_bytes() == b"library\n"
    assert os.listdir(root / ".haz/cache/tmp") == []


def test_cache_003_threads_store_and_restore_concurrently(tmp_path):
    """The scheduler's pool calls one Cache from many threads at once."""
    n = 24
    files = {"haz.toml": '[workspace]\nmembers = ["p/*"]\n'}
    for i in range(n):
        files[f"p/t{i}/haz.toml"] = '[tasks.build]\ncmd = "x"\noutputs = ["out/**"]\n'
        files[f"p/t{i}/src.txt"] = f"source {i}\n"
        files[f"p/t{i}/out/o.txt"] = f"output {i}\n" * 1000
    root = make_workspace(tmp_path / "ws", files)
    labels = [f"t{i}:build" for i in range(n)]
    with open_cache(root) as c:
        def run(label):
            key = c.compute_key(label, {})
            m = c.collect_outputs(label)
            c.store(label, key, m, label.encode() * 1000, b"", 0.1)
            return key

        with ThreadPoolExecutor(8) as pool:
            keys = list(pool.map(run, labels))
        for i in range(n):
            shutil.rmtree(root / f"p/t{i}/out")

        def back(args):
            label, key = args
            with c.restore(label, c.lookup(key)) as r:
                return r.stdout.read() == label.encode() * 1000

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(back, zip(labels, keys)))
        assert c.take_warnings() == []
    for i in range(n):
        assert (root / f"p/t{i}/out/o.txt").read_text() == f"output {i}\n" * 1000


def test_cache_004_lookup_rejects_entry_of_another_label(root):
    with open_cache(root) as c:
        key, _ = store_build(c)
        f = entry_file(c, key)
        data = json.loads(f.read_text())
        data["label"] = "a:test"
        f.write_text(json.dumps(data))
        assert c.lookup(key) is None
        assert c.take_warnings()


def test_cache_002_materialised_of_sorts_outputs():
    a = OutputEntry("b", 0o644, "0" * 64, 1)
    b = OutputEntry("a", 0, None, 1, "b")
    m = Materialised.of([a, b])
    assert [e.path for e in m.outputs] == ["a", "b"]
    assert m.stream_hash == Materialised.of([b, a]).stream_hash
    assert m.root_paths("") == ["a", "b"]


def test_cache_001_threads_computing_keys_share_one_listing(root):
    """Concurrent first calls list the workspace once and agree."""
    with open_cache(root) as c:
        barrier = threading.Barrier(6)

        def key(_):
            barrier.wait()
            return c.compute_key("a:build", {}).key

        with ThreadPoolExecutor(6) as pool:
            assert len(set(pool.map(key, range(6)))) == 1


def test_cache_004_lookup_needs_no_blob_of_an_output_in_place(root):
    """A blob restore would not read (its output is in place, as the stat
    cache knows) is not checked by lookup; one it would read is verified
    while read, and its absence is a miss that writes nothing."""
    with open_cache(root) as c:
        key, m = store_build(c)
    for p in ("dist/lib.txt", "dist/sub/data.bin", "bin/tool"):  # old enough
        os.utime(root / "pkg/a" / p, (1_000_000_000, 1_000_000_000))  # to be remembered
    with open_cache(root) as c:
        c.restore("a:build", c.lookup(key)).close()  # in place: hashed, remembered
        lib = [e for e in m.outputs if e.path == "dist/lib.txt"][0]
        os.unlink(blob_file(c, lib.digest))
    with open_cache(root) as c:  # the next run: nothing changed
        manifest = c.lookup(key)
        assert manifest is not None and c.take_warnings() == []
        c.restore("a:build", manifest).close()
        assert (root / "pkg/a/dist/lib.txt").read_bytes() == b"library\n"
        # Now the output is gone too: restoring it needs the missing blob.
        os.unlink(root / "pkg/a/dist/lib.txt")
        before = tree(root)
        with pytest.raises(CacheMissError) as e:
            c.restore("a:build", c.lookup(key))
        assert "missing" in str(e.value)
        assert tree(root) == before and no_temp_files(root) == []


def test_cache_004_outputs_in_place_behind_a_symlink_out_of_the_workspace_are_rejected(
        root, tmp_path):
    """Outputs in place are told by their paths, but a symlinked directory on
    the way still gets the checks a write would get."""
    outside = tmp_path / "outside"
    with open_cache(root) as c:
        key, _ = store_build(c)
        shutil.move(str(root / "pkg/a/dist"), str(outside))
        os.symlink(outside, root / "pkg/a/dist")  # same files, now outside
        with pytest.raises(CacheMissError) as e:
            c.restore("a:build", c.lookup(key))
        assert "out of the workspace" in str(e.value)


def test_cache_007_shared_lock_is_not_held_between_uses(root):
    """prune and clean (exclusive) wait for a store or restore, not for the
    run: after each use the shared lock is released."""
    import fcntl
    with open_cache(root) as c:
        key, _ = store_build(c)
        os.unlink(root / "pkg/a/dist/lib.txt")  # the restore reads a blob
        c.restore("a:build", c.lookup(key)).close()
        fd = os.open(c.path / "lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if held
        finally:
            os.close(fd)


def test_cache_002_stream_hash_is_blake3_of_the_documented_json():
    import blake3
    from hazrun.cache import FORMAT_VERSION
    entries = [OutputEntry("z/é \"q\"\\x", 0o755, "a" * 64, 3),
               OutputEntry("a\u2028\x01", 0, None, 5, "../t\n\U0001f600")]
    text = json.dumps([FORMAT_VERSION, [["a\u2028\x01", "l", 0, "../t\n\U0001f600"],
                                        ["z/é \"q\"\\x", "f", 0o755, "a" * 64]]],
                      separators=(",", ":"), ensure_ascii=True)
    expected = blake3.blake3(b"hazrun-stream\0" + text.encode("ascii")).hexdigest()
    assert stream_hash(entries) == expected
    assert Materialised.of(entries).stream_hash == expected


def test_cache_004_a_killed_restores_leftover_is_no_output_and_is_removed(root):
    """A restore killed between writing an output's temp file and renaming
    it leaves ``.NAME.hazrun-PID-X.tmp``: never stored as an output, and
    removed by the next restore into that directory once its writer is gone."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    dead, alive = proc.pid, os.getpid()
    dist = root / "pkg/a/dist"
    with open_cache(root) as c:
        key, m = store_build(c)
        now = time.time()
        leftovers = {  # name: (age in seconds, removed?)
            f".lib.txt.hazrun-{dead}-0123456789ab.tmp": (120, True),
            ".lib.txt.hazrun-0123456789ab.tmp": (120, True),  # an older hazrun's
            f".lib.txt.hazrun-{dead}-0123456789ac.tmp": (5, False),  # another namespace?
            f".lib.txt.hazrun-{alive}-0123456789ab.tmp": (5, False),  # in progress
            f".lib.txt.hazrun-{alive}-0123456789ac.tmp": (7200, True),  # pid reused
        }
        for name, (age, _) in leftovers.items():
            (dist / name).write_bytes(b"half a file")
            os.utime(dist / name, (now - age,) * 2)
        assert c.collect_outputs("a:build") == m  # none of them is an output
        # ... nor an input: a task reading dist/ would miss on each of them.
        from hazrun.files import list_workspace_files
        listed = list_workspace_files(root)
        assert "pkg/a/dist/lib.txt" in listed
        assert not [f for f in listed if ".hazrun-" in f]
        (dist / "lib.txt").unlink()
        c.restore("a:build", c.lookup(key)).close()
    assert (dist / "lib.txt").read_bytes() == b"library\n"
    assert {n: not (dist / n).exists() for n in leftovers} == {
        n: removed for n, (_, removed) in leftovers.items()}


class _SpooledAsOn39(io.RawIOBase):
    """A log spool as tempfile.SpooledTemporaryFile is on Python 3.9 and
    3.10: read and seek, but no seekable() (it came in 3.11)."""

    def __init__(self, data: bytes):
        self._f = io.BytesIO(data)
        self.read = self._f.read
        self.seek = self._f.seek

    def __getattribute__(self, name):
        if name == "seekable":
            raise AttributeError(name)
        return super().__getattribute__(name)


def test_cache_003_logs_from_a_spool_without_seekable_are_stored(root):
    """hazrun stored nothing at all on Python 3.9 and 3.10: the log spools
    there have no seekable().  Read from their start, as on 3.11."""
    with open_cache(root) as c:
        build_outputs(root)
        key = c.compute_key("a:build", {})
        out = _SpooledAsOn39(b"built\n")
        out.read(3)  # not at the start: the store rewinds it
        assert c.store("a:build", key, c.collect_outputs("a:build"), out,
                       _SpooledAsOn39(b""), 1.0)
        with c.restore("a:build", c.lookup(key)) as r:
            assert r.stdout.read() == b"built\n"


def test_remote_006_packing_and_unpacking_stop_at_ctrl_c(root):
    """Ctrl-C abandons an upload being packed, and a download being
    unpacked, between chunks: a 300 MB artifact kept the run 5 s after the
    signal.  Nothing half-written is left in the store."""
    import hazrun.cache.remote.artifact as artifact

    with open_cache(root) as c:
        build_outputs(root)
        (root / "pkg/a/dist/big.bin").write_bytes(os.urandom(3 << 20))
        key = c.compute_key("a:build", {})
        c.store("a:build", key, c.collect_outputs("a:build"), b"out", b"", 1.0)
        manifest = c.lookup(key)
        store = Store(c.path)
        calls = []

        def cancelled_after(n):
            def cancelled():
                calls.append(1)
                return len(calls) > n
            return cancelled

        with tempfile.TemporaryFile() as out:
            with pytest.raises(artifact.Cancelled):
                artifact.pack(store, manifest, out, cancelled_after(2))
            assert len(calls) == 3  # stopped at the third chunk, not the last
            calls.clear()
            out.seek(0)
            out.truncate()
            artifact.pack(store, manifest, out)
            blobs = sorted((c.path / "blobs").rglob("*"))
            shutil.rmtree(c.path / "blobs")
            with pytest.raises(artifact.Cancelled):
                artifact.unpack(store, out, key.key, cancelled=cancelled_after(2))
            # its temp file removed (the .owner is the live Store's lock)
            assert list((c.path / "tmp").glob("*.tmp")) == []
            artifact.unpack(store, out, key.key)
            assert sorted((c.path / "blobs").rglob("*")) == blobs


def test_cache_004_a_manifest_path_with_a_nul_is_named_for_what_it_is():
    """It was rejected as 'an empty path'."""
    from hazrun.cache.restore import path_problem
    assert path_problem("") == "an empty path"
    assert path_problem("out/a\0b") == "path 'out/a\\x00b' holds a NUL character"
    assert path_problem("out/ok") is None


def test_cache_003_order_round_trips_and_is_left_out_when_empty(root):
    with open_cache(root) as c:
        build_outputs(root)
        key = c.compute_key("a:build", {})
        c.store("a:build", key, c.collect_outputs("a:build"), b"o1\no2\n", b"e1\n", 1.0,
                order=(3, 3, 3))
        assert c.lookup(key).order == (3, 3, 3)
        restored = c.restore("a:build", c.lookup(key))
        assert restored.order == (3, 3, 3)
        restored.close()
        c.store("a:build", key, c.collect_outputs("a:build"), b"o1\n", b"", 1.0)
        assert "order" not in json.loads(entry_file(c, key).read_text())
        assert c.lookup(key).order == ()

"""CACHE-006: streaming hashes, the stat cache and its racy-timestamp rules."""
from __future__ import annotations

import errno
import marshal
import os
import time
import tracemalloc
from pathlib import Path

import blake3
import pytest

from hazrun.cache import InputError, hashing
from hazrun.cache.hashing import STAT_CACHE_MAGIC, StatCache, probe

from test_cache_support import make_workspace, open_cache


@pytest.fixture
def root(tmp_path):
    return make_workspace(tmp_path / "ws")


@pytest.fixture
def reads(monkeypatch):
    """Count the calls that read file content (hash_fd)."""
    calls = []
    real = hashing.hash_fd

    def counting(fd, size_hint=0):
        calls.append(size_hint)
        return real(fd, size_hint)

    monkeypatch.setattr(hashing, "hash_fd", counting)
    return calls


def test_cache_006_hash_matches_blake3_for_any_size(tmp_path):
    for size in (0, 1, hashing.CHUNK - 1, hashing.CHUNK, 3 * hashing.CHUNK + 7,
                 hashing.MULTITHREAD_MIN + 1):
        data = os.urandom(size)
        p = tmp_path / f"f{size}"
        p.write_bytes(data)
        assert hashing.hash_file(str(p)) == (blake3.blake3(data).hexdigest(), size)


def test_cache_006_hashing_streams_in_bounded_memory(tmp_path):
    p = tmp_path / "big"
    with open(p, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    hashing.hash_file(str(p))  # allocate this thread's buffer first
    tracemalloc.start()
    try:
        hashing.hash_file(str(p))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < hashing.BIG_CHUNK + (1 << 20)  # one read buffer, not the file


def test_cache_006_second_key_reads_no_file_content(root, reads):
    with open_cache(root) as c:
        first = c.compute_key("a:build", {})
        n = len(reads)
        assert n == 3  # lock.txt, main.c, util.c
        assert c.compute_key("a:build", {}) == first
        assert len(reads) == n  # same run: stat cache in memory
    with open_cache(root) as c:  # next run: stat cache loaded from .haz/
        assert c.compute_key("a:build", {}).key == first.key
        assert c.stats()["files_hashed"] == 0 and c.stats()["stat_hits"] == 3
    assert len(reads) == n
    assert (root / ".haz" / "statcache.bin").is_file()
    assert not (root / ".haz" / "cache" / "statcache.bin").exists()


def test_cache_006_changed_file_is_hashed_again(root, reads):
    with open_cache(root) as c:
        before = c.compute_key("a:build", {}).key
    (root / "pkg/a/src/main.c").write_text("int main() { return 2; }\n")
    reads.clear()
    with open_cache(root) as c:
        assert c.compute_key("a:build", {}).key != before
    assert len(reads) == 1


def test_cache_006_racy_entry_newer_than_the_stat_cache_is_rehashed(root, reads):
    with open_cache(root) as c:
        c.compute_key("a:build", {})
    # The stat cache's own write is now older than the files' mtime (an hour
    # ago): their entries are racy and must not be trusted.
    two_hours_ago = time.time() - 7200
    os.utime(root / ".haz/statcache.bin", (two_hours_ago, two_hours_ago))
    reads.clear()
    with open_cache(root) as c:
        c.compute_key("a:build", {})
    assert len(reads) == 3


def test_cache_006_recently_modified_file_is_never_trusted(root, reads):
    """Same size, same mtime, new content, within one timestamp tick."""
    f = root / "pkg/a/src/main.c"
    f.write_text("AAAA")
    st = f.stat()
    with open_cache(root) as c:
        k1 = c.compute_key("a:build", {}).key
        f.write_text("BBBB")
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        k2 = c.compute_key("a:build", {}).key
    assert k1 != k2
    with open_cache(root) as c:
        f.write_text("CCCC")
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert c.compute_key("a:build", {}).key not in (k1, k2)


def test_cache_006_files_modified_within_the_racy_margin_are_not_remembered(tmp_path):
    fresh, old = tmp_path / "fresh", tmp_path / "old"
    fresh.write_text("x")
    old.write_text("y")
    os.utime(old, (time.time() - 3600,) * 2)
    sc = StatCache(tmp_path / "sc.json")
    sc.probe("fresh", str(fresh))
    sc.probe("old", str(old))
    assert set(sc._entries) == {"old"}
    sc.probe("fresh", str(fresh))
    assert sc.files_hashed == 3 and sc.hits == 0


def _stat_cache(path):
    """(format, entries) of a stat cache file."""
    data = path.read_bytes()
    assert data.startswith(STAT_CACHE_MAGIC)
    return marshal.loads(data[len(STAT_CACHE_MAGIC):])


def test_cache_006_stat_cache_of_another_format_is_ignored(root, reads):
    with open_cache(root) as c:
        c.compute_key("a:build", {})
    f = root / ".haz/statcache.bin"
    _, entries = _stat_cache(f)
    f.write_bytes(STAT_CACHE_MAGIC + marshal.dumps((999, entries)))
    os.utime(f, (time.time(), time.time()))
    reads.clear()
    with open_cache(root) as c:
        c.compute_key("a:build", {})
    assert len(reads) == 3


def test_cache_006_corrupt_stat_cache_means_rehash_not_failure(root, reads):
    (root / ".haz").mkdir()
    (root / ".haz/statcache.bin").write_bytes(b"\x00garbage{")
    with open_cache(root) as c:
        c.compute_key("a:build", {})
        c.close()
        assert c.take_warnings() == []
    assert len(reads) == 3


def test_cache_006_file_changed_while_hashed_is_hashed_again(tmp_path, monkeypatch):
    p = tmp_path / "f"
    p.write_bytes(b"first version")
    real = hashing.hash_fd
    calls = []

    def writer_interferes(fd, size_hint=0):
        result = real(fd, size_hint)
        if not calls:
            with open(p, "ab") as f:  # another process appends meanwhile
                f.write(b" and more")
        calls.append(1)
        return result

    monkeypatch.setattr(hashing, "hash_fd", writer_interferes)
    state = probe(str(p))
    assert len(calls) == 2
    assert state.digest == blake3.blake3(b"first version and more").hexdigest()
    assert state.size == len(b"first version and more")


def test_cache_006_file_that_keeps_changing_fails_the_key(root, monkeypatch):
    real = hashing.hash_fd
    target = root / "pkg/a/src/main.c"

    def always_interferes(fd, size_hint=0):
        result = real(fd, size_hint)
        with open(target, "ab") as f:
            f.write(b"x")
        return result

    monkeypatch.setattr(hashing, "hash_fd", always_interferes)
    with open_cache(root) as c:
        with pytest.raises(InputError) as e:
            c.compute_key("a:build", {})
    assert str(e.value).startswith("cannot hash input pkg/a/src/main.c: it kept changing")
    assert e.value.label == "a:build" and e.value.path == "pkg/a/src/main.c"


def test_cache_006_unreadable_input_fails_the_key_with_its_path(root, monkeypatch):
    def broken_disk(fd, size_hint=0):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(hashing, "hash_fd", broken_disk)
    with open_cache(root) as c:
        with pytest.raises(InputError) as e:
            c.compute_key("a:build", {})
    assert "Input/output error" in str(e.value) and "\n" not in str(e.value)


def test_cache_006_probe_describes_symlinks_and_skips_others(tmp_path):
    os.symlink("nowhere", tmp_path / "dangling")
    s = probe(str(tmp_path / "dangling"))
    assert s.symlink == "nowhere" and s.digest == blake3.blake3(b"nowhere").hexdigest()
    assert probe(str(tmp_path)) is None               # a directory
    assert probe(str(tmp_path / "missing")) is None
    os.mkfifo(tmp_path / "fifo")
    assert probe(str(tmp_path / "fifo")) is None


def test_cache_006_stat_cache_drops_entries_of_removed_files(root):
    with open_cache(root) as c:
        c.compute_key("a:build", {})
    os.unlink(root / "pkg/a/src/util.c")
    with open_cache(root) as c:
        c.compute_key("a:build", {})
    _, entries = _stat_cache(root / ".haz/statcache.bin")
    assert "pkg/a/src/util.c" not in entries and "pkg/a/src/main.c" in entries


def test_cache_006_stat_cache_is_thread_safe(tmp_path):
    files = []
    for i in range(200):
        p = tmp_path / f"f{i}"
        p.write_bytes(os.urandom(100))
        os.utime(p, (time.time() - 3600,) * 2)
        files.append(p)
    sc = StatCache(tmp_path / "sc.json")
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            states = list(pool.map(lambda p: sc.probe(p.name, str(p)), files))
    assert all(s.digest == blake3.blake3(p.read_bytes()).hexdigest()
               for s, p in zip(states, files))
    assert sc.files_hashed == 200 and sc.hits == 400
    sc.save()
    again = StatCache(tmp_path / "sc.json")
    again._ensure_loaded()
    assert len(again._entries) == 200


def test_cache_006_saving_without_writable_haz_dir_is_a_warning(root):
    (root / ".haz").write_text("a file where .haz/ should be")
    with open_cache(root) as c:
        c.compute_key("a:build", {})
        c.close()
        warnings = c.take_warnings()
    assert warnings and "stat cache" in warnings[0]


def test_cache_006_stat_cache_lives_under_haz_not_in_cache_dir(root, tmp_path):
    with open_cache(root, cache_dir=tmp_path / "shared-cache") as c:
        c.compute_key("a:build", {})
    assert (root / ".haz/statcache.bin").is_file()
    assert not (tmp_path / "shared-cache").exists()  # nothing stored, nothing made
    assert isinstance(Path(root / ".haz/.gitignore").read_text(), str)


def test_cache_006_known_rows_are_the_rows_probe_gives_or_none(tmp_path):
    """The batch path of a no-change run: a row only for a regular file whose
    entry matches its stat, the same row probe and key.file_row make."""
    from hazrun.cache.key import file_row
    old = time.time() - 3600
    for name, text in (("plain", "a"), ("tool", "b"), ("edited", "c"), ("gone", "d")):
        (tmp_path / name).write_text(text)
    os.chmod(tmp_path / "tool", 0o755)
    os.symlink("plain", tmp_path / "link")
    for name in ("plain", "tool", "edited", "gone", "link"):
        os.utime(tmp_path / name, (old, old), follow_symlinks=False)
    sc = StatCache(tmp_path / "sc")
    names = ["edited", "gone", "link", "new", "plain", "tool"]
    root = str(tmp_path) + "/"
    for name in names[:3] + names[4:]:
        sc.probe(name, root + name)
    (tmp_path / "new").write_text("e")
    (tmp_path / "edited").write_text("C")  # same size, a new mtime and ctime
    os.unlink(tmp_path / "gone")
    hits = sc.hits
    rows = sc.known_rows(names, root)
    assert rows == [None, None, None, None,
                    file_row("plain", sc.probe("plain", root + "plain")),
                    file_row("tool", sc.probe("tool", root + "tool"))]
    assert rows[5][1] == "x" and rows[4][1] == "-"
    assert sc.hits == hits + 2 + 2  # two known rows, then the two probes above

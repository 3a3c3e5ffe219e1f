"""CACHE-004: the record of the outputs hazrun itself left in the work tree
(hazrun/cache/placed.py), on real files."""
from __future__ import annotations

import os

import pytest

from hazrun.cache.placed import PLACED, PlacedRecords, lstat_signature, remove_unchanged


def test_cache_004_two_runs_saving_keep_each_others_records(tmp_path):
    """Two runs of one workspace save at the end, one after the other: each
    writes its own labels over the file as it is then, not as it was when
    the run started."""
    haz = tmp_path / ".haz"
    first, second = PlacedRecords(haz), PlacedRecords(haz)
    assert first.key_of("a:gen") is None and second.key_of("b:gen") is None  # both loaded
    first.set("a:gen", "k1", {"a/gen/x": (1, 2, 3, 4)})
    second.set("b:gen", "k2", {"b/gen/y": (5, 6, 7, 8)})
    first.save()
    second.save()
    again = PlacedRecords(haz)
    assert again.key_of("a:gen") == "k1" and again.files("a:gen") == {"a/gen/x": (1, 2, 3, 4)}
    assert again.key_of("b:gen") == "k2" and again.files("b:gen") == {"b/gen/y": (5, 6, 7, 8)}
    # A label whose record is now empty is dropped.
    again.set("a:gen", "k3", {})
    again.save()
    assert PlacedRecords(haz).key_of("a:gen") is None


@pytest.mark.parametrize("content", [b"", b"garbage\n", b"hazrun-placed 1\n\"a\"\t\"k\"\t{bad\n",
                                     b"hazrun-placed 1\nno tabs here\n", b"\xff\xfe"])
def test_cache_004_a_damaged_record_only_leaves_files_in_place(tmp_path, content):
    haz = tmp_path / ".haz"
    haz.mkdir()
    (haz / PLACED).write_bytes(content)
    records = PlacedRecords(haz)
    assert records.files("a") == {}
    records.set("b", None, {"x": (1, 2, 3, 4)})
    records.save()  # written afresh
    assert PlacedRecords(haz).files("b") == {"x": (1, 2, 3, 4)}


def test_cache_004_removes_only_an_unchanged_file_through_real_directories(tmp_path):
    root = tmp_path / "ws"
    (root / "gen").mkdir(parents=True)
    (root / "gen/b").write_text("B\n")
    (root / "gen/c").write_text("C\n")
    sig_b = lstat_signature(str(root), "gen/b")
    sig_c = lstat_signature(str(root), "gen/c")
    (root / "gen/c").write_text("C, edited\n")  # no longer as recorded
    (root / "link").symlink_to("gen")
    removed = remove_unchanged(str(root), [("link/b", sig_b), ("gen/c", sig_c),
                                           ("../ws/gen/b", sig_b), ("gen/missing", sig_b)])
    assert removed == [] and (root / "gen/b").exists() and (root / "gen/c").exists()
    assert remove_unchanged(str(root), [("gen/b", sig_b)]) == ["gen/b"]
    assert not (root / "gen/b").exists() and os.path.isdir(root / "gen")

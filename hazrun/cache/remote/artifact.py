"""REMOTE-003/004: the artifact of one cache entry, and its signature.

An artifact is a gzip'd tar: first the manifest (``manifest.json``, as the
local store writes it), then every blob it names (``blobs/<digest>``, each
once, sorted).  Headers carry no times or owners, so one entry always packs
to the same bytes.  :func:`pack` writes the ustar headers and the gzip
frame itself (with zlib), the bytes tarfile and GzipFile would write for
the same members: at a few small members per artifact, their bookkeeping
cost more than the compression (packing took about 230 us an artifact
through them, 110 us this way: CPU that a cold run's tasks need).
:func:`unpack` reads with tarfile.

:func:`unpack` trusts nothing: the manifest must parse, be for the key that
was asked for and pass the caller's check; every member must be a blob the
manifest names, of the size it says, and hash to its digest while it is
copied into the local store (whose writes are atomic); a blob the local
store already holds, verified there, is not written again.  The manifest is
written last, so a failure leaves at most verified, unreferenced blobs.

A tag (REMOTE-004) is standard base64 of HMAC-SHA256 over four
length-prefixed fields: ``hazrun-artifact-v1``, the key, the team, the
archive's bytes.
"""
from __future__ import annotations

import base64
import gzip
import hmac
import os
import struct
import tarfile
import zlib
from typing import IO, Callable, Iterator, Optional

from ..hashing import CHUNK, new_hasher
from ..model import Manifest
from ..store import (EMPTY_DIGEST, CorruptBlob, CorruptManifest, Store, decode_manifest,
                     encode_manifest)

MANIFEST = "manifest.json"
BLOBS = "blobs/"
MAX_MANIFEST = 64 << 20       # bytes: far more than any real manifest
COMPRESS_LEVEL = 1            # measured: level 6 costs 3x the time for ~10% less
# Blobs go into the archive in pieces this big: one buffer, reused, and a
# compressed piece small enough for malloc to reuse too (a 200 MB output
# packed in 1 MiB pieces grew the peak memory by 10 MB).
COPY_CHUNK = 64 << 10
SIGNATURE_DOMAIN = b"hazrun-artifact-v1"
MAX_SIGNED = (1 << 32) - 1    # a 4-byte length prefix


class Rejected(Exception):
    """Why a downloaded artifact is not used; the message is the reason."""


# ustar, as tarfile writes it for a regular file: mode 0644, owner 0:0 with
# no names, mtime 0; the checksum field blank while it is summed.
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE   # tarfile pads an archive to whole records
_HEAD = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x")
# gzip's header as GzipFile writes it with mtime 0, no name, level 1.
_GZIP_HEAD = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"


def _tar_header(name: str, size: int) -> bytes:
    if size < 8 ** 11:
        size_field = b"%011o\0" % size
    else:  # base-256, as tarfile and GNU tar read it
        size_field = b"\x80" + size.to_bytes(11, "big")
    fields = [name.encode("ascii"), b"0000644\0", b"0000000\0", b"0000000\0", size_field,
              b"00000000000\0", b" " * 8, b"0", b"", b"ustar\0", b"00", b"", b"",
              b"", b"", b""]
    head = _HEAD.pack(*fields)
    fields[6] = b"%06o\0 " % sum(head)
    return _HEAD.pack(*fields)


class _GzipTar:
    """A tar stream of regular files, gzip'd as it is written to ``out``.

    Writes gather in a buffer that is compressed a COPY_CHUNK at a time:
    most artifacts are a few small members, whose dozen pieces (headers,
    data, padding) cost more in calls to zlib and ``out`` than in
    compressing them.
    """

    def __init__(self, out: IO[bytes]):
        self.out = out
        self.z = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.crc = 0
        self.length = 0      # of the tar, compressed or pending
        self.pending = bytearray()
        out.write(_GZIP_HEAD)

    def write(self, data: bytes) -> None:
        self.pending += data
        self.length += len(data)
        if len(self.pending) >= COPY_CHUNK:
            self._compress()

    def _compress(self) -> None:
        self.crc = zlib.crc32(self.pending, self.crc)
        self.out.write(self.z.compress(self.pending))
        self.pending = bytearray()

    def member(self, name: str, size: int) -> None:
        self.write(_tar_header(name, size))

    def pad(self, size: int) -> None:
        """After a member's ``size`` bytes: zeros up to the next block."""
        if size % _BLOCK:
            self.write(bytes(_BLOCK - size % _BLOCK))

    def close(self) -> None:
        """The two zero blocks that end a tar, then zeros to a whole record."""
        end = self.length + 2 * _BLOCK
        self.write(bytes(2 * _BLOCK + (-end) % _RECORD))
        self._compress()
        self.out.write(self.z.flush() + struct.pack("<II", self.crc, self.length & 0xFFFFFFFF))


class Cancelled(Exception):
    """Ctrl-C while packing or unpacking (REMOTE-006): nothing to warn of."""


def _never() -> bool:
    return False


def pack(store: Store, manifest: Manifest, out: IO[bytes],
         cancelled: Callable[[], bool] = _never) -> int:
    """Write the artifact of ``manifest`` to ``out``; returns its size.

    Raises CorruptBlob or OSError (a blob missing or changed locally): the
    entry is then not uploaded.  Raises Cancelled as soon as ``cancelled()``
    says so, between chunks: a big artifact is not packed to the end first.
    """
    tar = _GzipTar(out)
    data = encode_manifest(manifest)
    tar.member(MANIFEST, len(data))
    tar.write(data)
    tar.pad(len(data))
    for digest, size in sorted(manifest.blobs().items()):
        tar.member(BLOBS + digest, size)
        if size == 0 and digest == EMPTY_DIGEST:
            continue  # an empty log, most tasks': nothing to read or verify
        _copy_verified(store, digest, size, tar, cancelled)
        tar.pad(size)
    tar.close()
    out.flush()
    return out.tell()


def _copy_verified(store: Store, digest: str, size: int, tar: _GzipTar,
                   cancelled: Callable[[], bool] = _never) -> None:
    """The blob's bytes into the tar, hashed as they go: a blob that changed
    in the local cache since it was stored is not uploaded."""
    fd = os.open(store.blob_file(digest),
                 os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    h = new_hasher(size)
    buf = memoryview(bytearray(min(size, COPY_CHUNK)))
    left = size
    try:
        while left:
            if cancelled():
                raise Cancelled()
            n = os.readv(fd, [buf[:min(len(buf), left)]])
            if not n:
                break
            chunk = buf[:n]
            h.update(chunk)
            tar.write(chunk)
            left -= n
        extra = os.read(fd, 1)
    finally:
        os.close(fd)
    if left or extra or h.hexdigest() != digest:
        raise CorruptBlob(f"blob {digest[:12]} in the local cache is corrupt")


def unpack(store: Store, f: IO[bytes], key: str,
           check: Optional[Callable[[Manifest], Optional[str]]] = None,
           cancelled: Callable[[], bool] = _never) -> Manifest:
    """Verify the artifact in ``f`` and write it into the local store.

    ``check(manifest)`` returns why the manifest must not be used, or None.
    Raises Rejected (nothing usable was written), OSError (the local store
    cannot be written) or Cancelled (``cancelled()`` said so, between chunks).
    """
    f.seek(0)
    try:
        # The manifest (paths, modes, link targets) has no digest of its own,
        # and tarfile never checks gzip's: a bit flipped in it restored
        # p/out/sub/beep.txt in place of deep.txt.  Checked first, in a pass
        # of its own (tarfile reading through gzip.GzipFile held 9 MB more).
        _check_gzip(f)
        f.seek(0)
        with tarfile.open(fileobj=f, mode="r|gz", tarinfo=_BoundedInfo) as tar:
            manifest = _read_manifest(tar, key, check)
            need = manifest.blobs()
            got = set()
            for member in _members(tar):
                digest = member.name[len(BLOBS):] if member.name.startswith(BLOBS) else ""
                if digest not in need or digest in got or not member.isfile():
                    raise Rejected(f"it holds an unexpected member '{member.name[:80]}'")
                if member.size != need[digest]:
                    raise Rejected(f"blob {digest[:12]} has {member.size} bytes, its "
                                   f"manifest says {need[digest]}")
                got.add(digest)
                if store.has_valid_blob(digest, member.size):
                    continue  # verified in place: no write, no fsync (empty logs ...)
                src = tar.extractfile(member)
                assert src is not None

                def read(src=src) -> bytes:
                    if cancelled():
                        raise Cancelled()
                    return src.read(CHUNK)
                try:
                    store.put_blob(read, digest, member.size)
                except CorruptBlob:
                    raise Rejected(f"blob {digest[:12]} does not match its digest") from None
            missing = sorted(set(need) - got)
            if missing:
                raise Rejected(f"blob {missing[0][:12]} is missing from it")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise Rejected(f"it is not a whole gzip'd tar ({e or type(e).__name__})") from None
    store.put_manifest(manifest)
    return manifest


GZIP_PIECE = 64 << 10


def _check_gzip(f: IO[bytes]) -> None:
    """REMOTE-003: read the gzip stream in ``f`` to its end, its output thrown away:
    zlib checks its trailer (CRC-32 and length) there, which tarfile's own
    reader never does.  One member and nothing after it, as ``pack``
    writes; raises zlib.error or EOFError otherwise."""
    z = zlib.decompressobj(16 + zlib.MAX_WBITS)
    while not z.eof:
        # 64 KiB pieces: buffers of 1 MiB, freed and made again, raised
        # glibc's mmap threshold and the heap with it (10 MB more RSS).
        data = z.unconsumed_tail or f.read(GZIP_PIECE)
        if not data:
            raise EOFError("the gzip stream ends before its end")
        z.decompress(data, GZIP_PIECE)
    if z.unused_data or f.read(1):
        raise zlib.error("bytes after the gzip stream")


class _BoundedInfo(tarfile.TarInfo):
    """A tar header whose extended-header payload (GNU long names, pax) is
    read whole into memory by tarfile, before anything can look at it: a
    hostile artifact claiming gigabytes there took as much memory
    (REMOTE-003).  hazrun's artifacts have none beyond a few KiB."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _EXTENDED and self.size > MAX_EXTENDED_HEADER:
            raise tarfile.HeaderError(f"an extended header of {self.size} bytes")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


_EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
             tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
MAX_EXTENDED_HEADER = 64 << 10


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        member = tar.next()
        if member is None:
            return
        yield member


def _read_manifest(tar: tarfile.TarFile, key: str,
                   check: Optional[Callable[[Manifest], Optional[str]]]) -> Manifest:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile() \
            or first.size > MAX_MANIFEST:
        raise Rejected("it does not start with its manifest")
    src = tar.extractfile(first)
    assert src is not None
    try:
        manifest = decode_manifest(src.read())
    except CorruptManifest as e:
        raise Rejected(f"its manifest is unusable: {e}") from None
    if manifest.key != key:
        raise Rejected(f"it holds the entry of key {manifest.key[:12]}")
    why = check(manifest) if check is not None else None
    if why:
        raise Rejected(why)
    return manifest


# -- REMOTE-004 -----------------------------------------------------------------

def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def sign(secret: bytes, key: str, team: Optional[str], f: IO[bytes], size: int) -> str:
    """The tag of the ``size``-byte archive in ``f`` (read from its start).

    Raises ValueError for an archive too big for the 4-byte length prefix.
    """
    if size > MAX_SIGNED:
        raise ValueError("an artifact of 4 GiB or more cannot be signed")
    mac = hmac.new(secret, digestmod="sha256")
    for part in (SIGNATURE_DOMAIN, key.encode("ascii"), (team or "").encode("utf-8")):
        mac.update(_field(part))
    mac.update(size.to_bytes(4, "big"))
    f.seek(0)
    left = size
    while left:
        chunk = f.read(min(CHUNK, left))
        if not chunk:
            raise ValueError("the archive is shorter than its size")
        mac.update(chunk)
        left -= len(chunk)
    return base64.b64encode(mac.digest()).decode("ascii")


def verify(secret: bytes, key: str, team: Optional[str], f: IO[bytes], size: int,
           tag: Optional[str]) -> None:
    """Raise Rejected unless ``tag`` is the artifact's tag (constant time)."""
    if not tag:
        raise Rejected("it carries no signature tag, and a signature key is set")
    try:
        expected = sign(secret, key, team, f, size)
    except ValueError as e:
        raise Rejected(str(e)) from None
    if not hmac.compare_digest(expected.encode("ascii"),
                               tag.strip().encode("utf-8", "replace")):
        raise Rejected("its signature tag does not match (another signature key, "
                       "or the artifact was altered)")

"""Safe zip extraction: every member lands inside the target folder, and no archive unpacks to
more than it may.

A zip can name members `/etc/x` or `../../x` ("zip-slip"); extracting such a member would write
outside the target. A zip can also declare a member of gigabytes that compresses to kilobytes (a
"zip bomb": 2 GiB of zeros deflate to 2 MB), which fills the disk. The whole archive is checked
before anything is written: a bad name, a declared size or compression ratio beyond the limits,
or more than the disk holds rejects it with the member's name. While extracting, the bytes
actually written are counted against the declared sizes, since a header can lie.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import DataError

CHUNK = 1 << 20
# The ratio of a small member says nothing about danger (a short CSV of repeated values deflates
# 50:1), so the ratio limit applies from this declared size on.
RATIO_FROM_BYTES = 1 << 20
# bzip2 and LZMA members can inflate one read into gigabytes of memory; the datasets use deflate.
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
# General-purpose flag bits that zipfile cannot read without a password or at all (encryption, strong
# encryption, patched data): no dataset zip uses them.
UNREADABLE_FLAGS = 1 << 0 | 1 << 5 | 1 << 6


@dataclass(frozen=True)
class Limits:
    """What one archive may unpack to (the data.max_* params; the defaults are theirs).

    The real archives: the Kaggle HAM10000 zip (5.2 GB) and the Dataverse zips hold 600x450 JPEGs
    of about 250 KB, 2.6 GB extracted; the unified set's images reach 6688x4479 (a 10-20 MB JPEG,
    90 MB as an uncompressed PNG). JPEG and PNG do not compress further: their ratio is about 1.
    """

    max_member_bytes: int = 256 * 2**20  # 2.8x a 6688x4479 RGB image stored raw
    max_archive_bytes: int = 64 * 2**30  # 25x extracted HAM10000; what a data disk can take
    max_compression_ratio: float = 100.0  # images ~1, CSVs ~5-10; zeros deflate ~1000:1


def _safe_name(name: str) -> PurePosixPath | None:
    """The member's relative path, or None when it could escape the target."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (posix.parts and ":" in posix.parts[0]):
        return None
    return posix


def _free_bytes(target: Path) -> int:
    existing = next(p for p in (target, *target.parents) if p.exists())
    return shutil.disk_usage(existing).free


def _gib(n: int) -> str:
    return f"{n:,} bytes ({n / 2**30:.2f} GiB)"


def check(archive: Path, members: list[zipfile.ZipInfo], kept: list[zipfile.ZipInfo], target: Path,
          limits: Limits) -> None:
    """Raise DataError, naming the member and the limit, if the archive must not be extracted."""
    refused = "the archive is refused, nothing was extracted"
    for m in members:
        if _safe_name(m.filename) is None or stat.S_ISLNK(m.external_attr >> 16):
            raise DataError(f"{archive}: unsafe member {m.filename!r} (absolute path, '..' or link) would be "
                            f"written outside the target; {refused}")
    for m in kept:
        if m.flag_bits & UNREADABLE_FLAGS:
            raise DataError(f"{archive}: member {m.filename!r} is encrypted or uses zip features (flags "
                            f"0x{m.flag_bits:04x}) that cannot be read; {refused}. Re-zip it without a password")
        if m.compress_type not in METHODS:
            raise DataError(f"{archive}: member {m.filename!r} is compressed with method {m.compress_type}; only "
                            f"{' and '.join(METHODS.values())} are accepted; {refused}. Re-zip it with plain deflate")
        if m.file_size > limits.max_member_bytes:
            raise DataError(f"{archive}: member {m.filename!r} declares {_gib(m.file_size)} unpacked, more than "
                            f"data.max_member_bytes = {_gib(limits.max_member_bytes)}; {refused}. If the file is "
                            "genuine, raise data.max_member_bytes")
        ratio = m.file_size / max(m.compress_size, 1)
        if m.file_size >= RATIO_FROM_BYTES and ratio > limits.max_compression_ratio:
            raise DataError(f"{archive}: member {m.filename!r} declares {_gib(m.file_size)} unpacked from "
                            f"{m.compress_size:,} bytes, a compression ratio of {ratio:,.0f}, more than "
                            f"data.max_compression_ratio = {limits.max_compression_ratio:g} (images barely "
                            f"compress: this is a zip bomb or not image data); {refused}")
    total = sum(m.file_size for m in kept)
    if total > limits.max_archive_bytes:
        raise DataError(f"{archive}: its {len(kept):,} members to extract declare {_gib(total)} unpacked, more than "
                        f"data.max_archive_bytes = {_gib(limits.max_archive_bytes)}; {refused}. If the archive "
                        "is genuine, raise data.max_archive_bytes")
    free = _free_bytes(target)
    if total > free:
        raise DataError(f"{archive}: its members to extract need {_gib(total)}, but the disk holding {target} has "
                        f"{_gib(free)} free; {refused}. Free some space and rerun")


def _copy_counted(src, out, declared: int, budget: int, archive: Path, name: str) -> int:
    """Copy one member, stopping as soon as it writes more than its header declared or more than the
    archive's remaining budget; return the bytes written."""
    written = 0
    while chunk := src.read(CHUNK):
        written += len(chunk)
        if written > declared or written > budget:
            raise DataError(f"{archive}: member {name!r} unpacks to more than its header declares ({declared:,} "
                            "bytes) or than data.max_archive_bytes allows: the archive is corrupt or hostile; "
                            "refused, and what was extracted of it is removed")
        out.write(chunk)
    return written


def extract(archive: str | Path, target: str | Path, keep: Callable[[str], bool] = lambda name: True,
            limits: Limits = Limits()) -> int:
    """Extract the members for which keep(name) is true into target; return how many files.

    Raises DataError before writing anything if any member is absolute, climbs out with `..`, is a
    symbolic link, or if the members to extract exceed the limits or the free disk space; and while
    extracting, if a member unpacks to more than it declared (the caller removes the target: the
    stages extract into a temporary folder).
    """
    archive, target = Path(archive), Path(target)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            kept = [m for m in members if not m.is_dir() and _safe_name(m.filename) is not None and keep(m.filename)]
            check(archive, members, kept, target, limits)
            root = target.resolve()
            budget = limits.max_archive_bytes
            for m in kept:
                dest = (target / _safe_name(m.filename)).resolve()
                if root not in dest.parents:  # belt and braces: resolve() sees links already on disk
                    raise DataError(f"{archive}: member {m.filename!r} resolves outside {target}; rejected")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(dest, "wb") as out:
                    budget -= _copy_counted(src, out, m.file_size, budget, archive, m.filename)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise DataError(f"{archive} is not a valid zip ({e}); delete it and download it again") from None
    return len(kept)

"""Safe zip extraction: every member must land inside the target folder.

A zip can name members `/etc/x` or `../../x` ("zip-slip"); extracting such a member would write
outside the target. The whole archive is checked before anything is written, and a bad member
rejects it with the member's name.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from .errors import DataError


def _safe_name(name: str) -> PurePosixPath | None:
    """The member's relative path, or None when it could escape the target."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (posix.parts and ":" in posix.parts[0]):
        return None
    return posix


def extract(archive: str | Path, target: str | Path, keep: Callable[[str], bool] = lambda name: True) -> int:
    """Extract the members for which keep(name) is true into target; return how many files.

    Raises DataError, before writing anything, if any member is absolute, climbs out with `..`,
    or is a symbolic link.
    """
    archive, target = Path(archive), Path(target)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for m in members:
                is_link = stat.S_ISLNK(m.external_attr >> 16)
                if _safe_name(m.filename) is None or is_link:
                    raise DataError(f"{archive}: unsafe member {m.filename!r} (absolute path, '..' or link) would be "
                                    "written outside the target; the archive is rejected, nothing was extracted")
            root = target.resolve()
            count = 0
            for m in members:
                if m.is_dir() or not keep(m.filename):
                    continue
                dest = (target / _safe_name(m.filename)).resolve()
                if root not in dest.parents:  # belt and braces: resolve() sees links already on disk
                    raise DataError(f"{archive}: member {m.filename!r} resolves outside {target}; rejected")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                count += 1
    except zipfile.BadZipFile as e:
        raise DataError(f"{archive} is not a valid zip ({e}); delete it and download it again") from None
    return count

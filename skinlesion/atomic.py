"""Atomic outputs: write next to the target, then rename, so a failed or killed stage leaves the
previous output or none, never a half-written file.

Temporary names are `.<target name>.<host>.<pid>.<random>.tmp`, beside the target. A stage killed
with SIGKILL cannot remove its own: the next write of the same target removes those whose process
(on this host) is gone, and never one a live process still writes. `.gitignore` hides the pattern
meanwhile. Outputs get the mode that the umask gives any new file (0755 folders and 0644 files
under umask 022), so other users of a shared machine can read them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


@contextlib.contextmanager
def _parent_folder(path: Path) -> Iterator[None]:
    """Create `path`'s missing parent folders; if the block fails, remove those it created again
    (when still empty), so that a failed stage does not leave an empty data/raw/ behind either."""
    missing = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in missing:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of `path` that a killed process left behind; return them. Only our
    own naming pattern, only from this host, only when that process no longer runs."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    ours = re.compile(rf"\.{re.escape(path.name)}\.{_HOST}\.(\d+)\.[0-9a-f]+\.tmp")
    stale = []
    for entry in path.parent.iterdir():
        match = ours.fullmatch(entry.name)
        if match and not _alive(int(match.group(1))):
            _remove(entry)
            stale.append(entry)
    return stale


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` only on success."""
    path = Path(path)
    with _parent_folder(path), _atomic_path(path) as tmp:
        yield tmp


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    remove_stale_temporaries(path)
    tmp = _temp_name(path)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask decides the mode
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `path` whole."""
    with replaced_together(path) as (tmp,):
        yield tmp


@contextlib.contextmanager
def replaced_together(*paths: str | Path) -> Iterator[tuple[Path, ...]]:
    """Yield one empty temporary folder per target folder. When the block succeeds, they replace
    their targets, all at the end, by renames only (no copy); when the block fails, or a rename
    does, every target stays exactly as it was and the temporary folders are removed."""
    targets = [Path(p) for p in paths]
    with contextlib.ExitStack() as stack:
        for target in targets:
            stack.enter_context(_parent_folder(target))
        temps: list[Path] = []
        try:
            for target in targets:
                remove_stale_temporaries(target)
                temps.append(_temp_name(target))
                temps[-1].mkdir(0o777)  # the umask decides the mode (mkdtemp would make 0700)
            yield tuple(temps)
            _swap_in(list(zip(temps, targets)))
        finally:
            for tmp in temps:
                _remove(tmp)


def _swap_in(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each new folder onto its target, moving the old one aside first; on any failure
    rename everything back, so the targets are the old ones again."""
    done: list[tuple[Path, Path, Path | None]] = []  # (new's temp name, target, where the old one went)
    try:
        for tmp, target in pairs:
            old = None
            if target.exists():
                old = _temp_name(target)
                os.replace(target, old)
            done.append((tmp, target, old))
            os.replace(tmp, target)
    except BaseException:
        for tmp, target, old in reversed(done):
            with contextlib.suppress(OSError):
                if not tmp.exists() and target.exists():
                    os.replace(target, tmp)  # the new one back to its temp name, removed by the caller
                if old is not None:
                    os.replace(old, target)
        raise
    for _, _, old in done:
        if old is not None:
            _remove(old)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | Path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)

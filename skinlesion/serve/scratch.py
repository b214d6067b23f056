"""The app's one private folder on disk, removed when the process ends.

Everything the demo app writes lives here: Gradio's upload cache (GRADIO_TEMP_DIR points into
it), the Grad-CAM overlays and the bundled example images. Uploads are people's medical images,
so none of it may outlive the process:

- a normal exit, Ctrl-C (SIGINT), SIGTERM and SIGHUP remove the folder (atexit; the signals are
  turned into the KeyboardInterrupt that Gradio's server loop already handles by shutting down);
- a process killed outright (SIGKILL, a power cut) cannot clean up, so every start removes the
  folders that such processes left behind.

Which folders are abandoned is decided by a lock, not by a process id: the owner holds an
exclusive flock on the folder's marker file for its whole life, and the kernel drops the lock when
the process dies, however it dies. A process id can be reused by an unrelated process; a lock
cannot be inherited that way. A folder whose lock another process holds, a folder without the
marker (being created right now), a symlink or a folder of another user is never touched.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; folders of killed processes are then left to the OS
    fcntl = None

PREFIX = "skinlesion-scratch-"
MARKER = "owner.lock"  # holds the owner's pid, for a person who wonders whose folder it is

_folder: Path | None = None
_lock_file = None  # kept open: closing it would release the owner lock
_owner_pid: int | None = None
_guard = threading.Lock()


def folder() -> Path:
    """This process's scratch folder, created (mode 0700) on first use."""
    global _folder, _lock_file, _owner_pid
    with _guard:
        if _folder is not None and _owner_pid == os.getpid():
            return _folder
        remove_abandoned()
        path = Path(tempfile.mkdtemp(prefix=PREFIX))
        _lock_file = _hold_marker(path)
        _folder, _owner_pid = path, os.getpid()
        atexit.register(remove)
        return path


def _hold_marker(path: Path):
    """Create the marker already locked: written and locked under a temporary name, then renamed
    into place, so that no other process can ever open an unlocked marker and think us dead."""
    staging = path / f".{MARKER}.staging"
    lock_file = open(staging, "w")  # noqa: SIM115 (kept open for the process's life)
    lock_file.write(f"{os.getpid()}\n")
    lock_file.flush()
    if fcntl is not None:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.replace(staging, path / MARKER)
    return lock_file


def remove() -> None:
    """Delete this process's folder (idempotent). A forked child never deletes its parent's."""
    global _folder, _lock_file
    with _guard:
        if _folder is None or _owner_pid != os.getpid():
            return
        _ignore_stop_signals()  # a second Ctrl-C must not cut the removal short
        shutil.rmtree(_folder, ignore_errors=True)
        if _lock_file is not None:
            _lock_file.close()
        _folder = _lock_file = None


def remove_abandoned(root: str | Path | None = None) -> list[Path]:
    """Delete the scratch folders in `root` (default: the temp dir) whose owner process is gone.
    Returns the folders removed."""
    if fcntl is None:
        return []
    removed = []
    for candidate in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            if candidate.is_symlink() or not candidate.is_dir() or candidate.stat().st_uid != os.getuid():
                continue
            fd = os.open(candidate / MARKER, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # no marker yet (being created), or not ours to read
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # the owner is alive
            os.close(fd)
            continue
        try:  # holding the lock, so that two starting apps do not race on one folder
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
        finally:
            os.close(fd)
    return removed


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _ignore_stop_signals() -> None:
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            with contextlib.suppress(AttributeError, ValueError):
                signal.signal(getattr(signal, name), signal.SIG_IGN)


def exit_cleanly_on_signals() -> None:
    """SIGTERM and SIGHUP end the process as Ctrl-C does: the server shuts down, then atexit
    removes the folder. (Python's default for them kills the process without running atexit.)
    A signal the parent chose to ignore stays ignored (`nohup` ignores SIGHUP, a shell's
    background job SIGINT). Only from the main thread, where Python delivers signals."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)  # SIGHUP: not on Windows
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _interrupt)

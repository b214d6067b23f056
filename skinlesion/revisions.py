"""Git revisions and DVC experiment names, resolved and read the same way by every tool that reads
another run (the app's --rev, compare, spread)."""

from __future__ import annotations

from pathlib import Path

from .errors import RevisionError


def resolve(rev: str, repo: str | Path = ".") -> str:
    """The commit of `rev`: a commit, branch, tag or `dvc exp list` name; else RevisionError."""
    from dvc.exceptions import DvcException
    from dvc.scm import SCM, SCMError, resolve_rev

    try:
        return resolve_rev(SCM(str(repo)), rev)
    except (SCMError, DvcException) as e:
        raise RevisionError(f"cannot resolve revision {rev!r} ({e}); give a commit, branch, tag or experiment "
                            "name (`dvc exp list` shows the experiments)") from None


def read_errors() -> tuple[type[BaseException], ...]:
    """What reading a DVC-tracked file at a revision raises when its data are not to be had: a file
    not there, an output in neither the cache nor a remote, a folder's listing (.dir) not in the
    cache. Imported on call: dvc is slow to import."""
    from dvc.exceptions import DvcException
    from dvc_data.index import DataIndexError

    return (FileNotFoundError, DvcException, DataIndexError)

"""Git revisions and DVC experiment names, resolved and read the same way by every tool that reads
another run (the app's --rev, compare, spread, repro)."""

from __future__ import annotations

from pathlib import Path

from .errors import RevisionError

WHAT_TO_GIVE = "give a commit, branch, tag or experiment name (`dvc exp list` shows the experiments)"

# What git calls the objects that a revision can name besides a commit: `HEAD:params.yaml` names a
# file's content (a blob), `HEAD^{tree}` a folder (a tree). An annotated tag resolves to its commit.
_NOT_A_COMMIT = {"blob": "a file's content", "tree": "a folder"}


def resolve(rev: str, repo: str | Path = ".", *, argument: str = "a revision") -> str:
    """The full sha of the commit that `rev` names: a commit, branch, tag or `dvc exp list` name.

    RevisionError, with one message naming `rev` (or `argument`, the option it came from) and what
    to give instead, for an empty name, a repository that is not git, a name that resolves to
    nothing, and a name that resolves to something other than a commit."""
    from dvc.exceptions import DvcException
    from dvc.scm import SCM, SCMError, resolve_rev

    if not rev.strip():  # git reads "" as HEAD: an empty option would silently mean the checkout
        raise RevisionError(f"{argument} is empty; {WHAT_TO_GIVE}")
    try:
        scm = SCM(str(repo))
        sha = resolve_rev(scm, rev)
    except (SCMError, DvcException) as e:
        raise RevisionError(f"cannot resolve revision {rev!r} ({e}); {WHAT_TO_GIVE}") from None
    found = scm.pygit2.repo.get(sha)
    if found is None:  # a remote-tracking ref whose objects were never fetched
        raise RevisionError(f"revision {rev!r} resolves to {sha[:7]}, which this repository does not hold; "
                            "run `git fetch`, or " + WHAT_TO_GIVE)
    if found.type_str != "commit":
        what = _NOT_A_COMMIT.get(found.type_str, f"a git {found.type_str}")
        raise RevisionError(f"revision {rev!r} names a file or folder, not a commit (it names {what}); "
                            f"{WHAT_TO_GIVE}")
    return sha


def read_text(commit: str, path: str, repo: str | Path = ".") -> str:
    """A file committed to git (not a DVC output) at `commit`, a sha from `resolve`;
    FileNotFoundError when the commit has no such file."""
    from dvc.scm import SCM

    try:
        return SCM(str(repo)).get_fs(commit).read_text(path)
    except IsADirectoryError:
        raise FileNotFoundError(f"{path} is a folder at commit {commit[:7]}, not a file") from None


def read_errors() -> tuple[type[BaseException], ...]:
    """What reading a DVC-tracked file at a revision raises when its data are not to be had: a file
    not there, an output in neither the cache nor a remote, a folder's listing (.dir) not in the
    cache. Imported on call: dvc is slow to import."""
    from dvc.exceptions import DvcException
    from dvc_data.index import DataIndexError

    return (FileNotFoundError, DvcException, DataIndexError)

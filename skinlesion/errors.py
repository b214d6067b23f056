"""The errors a person can fix: each message names the problem and the fix.

The stage scripts print these as one line and exit 2 (cli.py); anything else is a bug and keeps
its traceback. This module imports nothing, so a stage can report any of them without loading
torch or pandas first.
"""

from __future__ import annotations


class ParamsError(ValueError):
    """A bad params.yaml: the message names the key, the value and what is allowed."""


class DataError(ValueError):
    """Bad input data: the message names the problem and the fix."""


class DownloadError(DataError):
    """A download that failed after its retries: the message names the URL and the reason."""


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights that could not be fetched: go online once, or train from scratch."""


class ModelFileError(ValueError):
    """A saved model that must not be used (wrong classes, non-finite weights or temperature)."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss is no longer finite); the message says what to change."""



class ModelNotFoundError(FileNotFoundError):
    """No weights where the app looked; the message says how to get them."""


class UploadError(Exception):
    """An upload the app cannot use; the message is written for the person who uploaded it. Not a
    ValueError, so that images.decode passes it through from the header check it runs."""


class RevisionError(LookupError):
    """A git revision or DVC experiment name that does not resolve to a commit."""

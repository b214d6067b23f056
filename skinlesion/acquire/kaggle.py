"""Downloads through the Kaggle API (the optional `kaggle` package).

Imported lazily: without the package or without credentials this is one unavailable route, not
an error. Credentials are what the package itself reads: `~/.kaggle/kaggle.json` (or
`$KAGGLE_CONFIG_DIR/kaggle.json`), `KAGGLE_USERNAME` and `KAGGLE_KEY`, or an access token
(`KAGGLE_API_TOKEN`, `~/.kaggle/access_token`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError

HAM10000 = "kmader/skin-cancer-mnist-ham10000"
UNIFIED = "cbames/unified-dataset-for-skin-cancer-classification"


def unavailable() -> str | None:
    """Why the Kaggle route cannot run here, or None when it can."""
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    has_credentials = (
        (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"))
        or os.environ.get("KAGGLE_API_TOKEN")
        or (config / "kaggle.json").exists()
        or (config / "access_token").exists()
    )
    if not has_credentials:
        return "no Kaggle credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME and KAGGLE_KEY)"
    try:
        import kaggle  # noqa: F401  (authenticates on import)
    except ImportError:
        return "the kaggle package is not installed (pip install kaggle)"
    except (Exception, SystemExit) as e:  # the package exits or raises on bad credentials
        return f"the kaggle package could not start: {e}"
    return None


def download(dataset: str, dest: Path) -> Path:
    """Download a dataset's zip into dest (the package resumes and skips a complete file)."""
    from kaggle.api.kaggle_api_extended import KaggleApi

    api = KaggleApi()
    try:
        api.authenticate()
        api.dataset_download_files(dataset, path=str(dest), quiet=False, unzip=False)
    except (Exception, SystemExit) as e:
        raise DataError(f"Kaggle download of {dataset} failed: {e}") from None
    zips = sorted(Path(dest).glob(f"{dataset.split('/')[1]}*.zip"))
    if not zips:
        raise DataError(f"Kaggle download of {dataset} left no zip in {dest}")
    return zips[0]

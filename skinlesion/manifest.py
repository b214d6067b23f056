"""The canonical manifest: one row per image, the only thing downstream stages read.

Every source (the demo generator, a Kaggle or Dataverse copy of HAM10000, the unified external
set) ends in this table, so adding a source means writing one adapter in `sources.py`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import atomic
from .classes import CLASSES
from .errors import DataError

# path and mask_path are relative to the repository root (or absolute for copies outside it).
COLUMNS: tuple[str, ...] = (
    "image_id", "path", "lesion_id", "dx", "dx_type", "age", "sex", "localization", "mask_path",
)


def validate(frame: pd.DataFrame, *, what: str, require_all_classes: bool = True) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{what}: manifest lacks column(s) {missing}")
    unknown = sorted(set(frame["dx"]) - set(CLASSES))
    if unknown:
        raise DataError(f"{what}: unknown dx code(s) {unknown}; allowed: {list(CLASSES)}")
    dup = frame["image_id"][frame["image_id"].duplicated()]
    if len(dup):
        raise DataError(f"{what}: {len(dup)} duplicate image id(s), e.g. {list(dup[:5])}")
    if require_all_classes:
        absent = [c for c in CLASSES if c not in set(frame["dx"])]
        if absent:
            raise DataError(f"{what}: no images of class(es) {absent}; every class needs examples to train and score")
    return frame


def write(path: str | Path, frame: pd.DataFrame) -> None:
    atomic.write_csv(path, frame.loc[:, list(COLUMNS)])


def read(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise DataError(f"manifest {path} not found; run `dvc repro download` first")
    frame = pd.read_csv(path, dtype={"image_id": str, "lesion_id": str, "dx": str, "path": str, "mask_path": str},
                        keep_default_na=False, na_values={"age": [""]})
    return frame

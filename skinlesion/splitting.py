"""Lesion-grouped, class-stratified splits.

HAM10000 holds up to six images of one lesion. Splitting by image would put views of the same
lesion on both sides and inflate every score, so all splits are drawn over lesions.
"""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from .classes import CLASSES

TEST = -1  # the `fold` value of the internal test set


def assign_folds(manifest: pd.DataFrame, *, n_folds: int, test_size: float, seed: int,
                 groups: pd.Series | None = None) -> pd.DataFrame:
    """Return the manifest with a `fold` column: TEST for the internal test set, else 0..n_folds-1.

    Every image is kept. The test set is one part of a StratifiedGroupKFold with round(1/test_size)
    parts; the rest is split again into n_folds cross-validation folds. `groups` (one per image,
    default the lesion id) are kept whole: the leakage audit merges lesions with near-identical images.
    """
    groups = (manifest["lesion_id"] if groups is None else groups).to_numpy()
    labels = manifest["dx"].to_numpy()
    fold = pd.Series(TEST, index=manifest.index, dtype=int)

    n_parts = max(2, round(1 / test_size))
    outer = StratifiedGroupKFold(n_splits=n_parts, shuffle=True, random_state=seed)
    cv_idx, _ = next(outer.split(manifest, labels, groups))

    inner = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val_idx) in enumerate(inner.split(cv_idx, labels[cv_idx], groups[cv_idx])):
        fold.iloc[cv_idx[val_idx]] = k
    return manifest.assign(fold=fold.to_numpy())


def split_name(fold: int) -> str:
    return "test" if fold == TEST else f"fold{fold}"


def lesions_shared(frame: pd.DataFrame) -> int:
    """Lesions whose images sit in more than one split: must be 0."""
    return int((frame.groupby("lesion_id")["fold"].nunique() > 1).sum())


def split_report(frame: pd.DataFrame) -> dict:
    names = frame["fold"].map(split_name)
    counts = pd.crosstab(names, frame["dx"]).reindex(columns=list(CLASSES), fill_value=0)
    lesions = frame.groupby(names)["lesion_id"].nunique()
    return {
        "n_images": int(len(frame)),
        "n_lesions": int(frame["lesion_id"].nunique()),
        "lesions_shared_between_splits": lesions_shared(frame),
        "splits": {
            name: {"images": int(counts.loc[name].sum()), "lesions": int(lesions[name]),
                   "per_class": {dx: int(counts.loc[name, dx]) for dx in CLASSES}}
            for name in sorted(counts.index, key=lambda n: (n != "test", n))
        },
    }


def read_splits(path: str = "data/splits/splits.csv") -> pd.DataFrame:
    from .manifest import read

    frame = read(path)
    if "fold" not in frame.columns:
        raise ValueError(f"{path} has no fold column; rerun `dvc repro split`")
    return frame.astype({"fold": int})

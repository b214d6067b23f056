"""The seen and unseen parts of an official test set: what an image-level split leaks, described.

An official split drawn by image (DermaMNIST's) puts views of one lesion in train and in test. With
lesion ids, every test image falls in one of two parts:
- seen: its lesion also has an image in the official train set, the images a model learns from;
- unseen: it does not.
The official val set does not count: it chooses the epoch and the temperature but is never learnt
from. The parts are drawn on the official split as published, before split.exclude_test_lesions
removes anything, so runs with and without the exclusion score the same images in each part and can
be compared pair by pair.

The two parts are different populations (lesions imaged several times are the harder, biopsied
ones; follow-up nevi are single images), so their scores side by side describe the test set; they
do not measure what the leak buys a model. That takes two trainings, with and without the exclusion.

The split stage writes the parts (data/splits/test_parts.csv); evaluate scores each like the whole
test set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from .classes import CLASSES
from .errors import DataError
from .splitting import OFFICIAL_FOLDS, TEST

PATH = Path("data/splits/test_parts.csv")
PARTS = ("seen", "unseen")
COLUMNS = ("image_id", "lesion_id", "part")
DEFINITION = ("seen: a test image whose lesion also has an image in the official train set; unseen: every "
              "other test image. Drawn on the official split before split.exclude_test_lesions.")


def assign(folds: pd.DataFrame) -> pd.DataFrame:
    """(image_id, lesion_id, part) of every test image of an official split (assign_official's folds)."""
    train_lesions = set(folds.loc[folds["fold"] == OFFICIAL_FOLDS["train"], "lesion_id"])
    test = folds[folds["fold"] == TEST]
    part = np.where(test["lesion_id"].isin(train_lesions), "seen", "unseen")
    return pd.DataFrame({"image_id": test["image_id"].to_numpy(), "lesion_id": test["lesion_id"].to_numpy(),
                         "part": part}, columns=list(COLUMNS))


def summary(parts: pd.DataFrame, folds: pd.DataFrame) -> dict:
    """Images, lesions and images per class of each part, for metrics/split.json."""
    dx = parts["image_id"].map(folds.set_index("image_id")["dx"])
    out = {"definition": DEFINITION}
    for name in PARTS:
        mask = (parts["part"] == name).to_numpy()
        out[name] = {"images": int(mask.sum()), "lesions": int(parts.loc[mask, "lesion_id"].nunique()),
                     "per_class": {c: int((dx[mask] == c).sum()) for c in CLASSES}}
    return out


def read(path: str | Path = PATH) -> pd.DataFrame | None:
    """The parts the split stage wrote, or None when it wrote none (no lesion ids, or a grouped split)."""
    path = Path(path)
    if not path.exists():
        return None
    return check(pd.read_csv(path, dtype=str, keep_default_na=False), path)


def check(parts: pd.DataFrame, shown: str | Path) -> pd.DataFrame:
    """`parts` when it is the table the split stage writes; else a DataError naming `shown`."""
    if tuple(parts.columns) != COLUMNS or not parts["part"].isin(PARTS).all():
        raise DataError(f"{shown} is not the split stage's table of test parts ({list(COLUMNS)}, part seen or "
                        "unseen); rerun `dvc repro split`")
    return parts


Score = Callable[[np.ndarray, np.ndarray, np.ndarray, pd.Series], dict]


def score(test: pd.DataFrame, parts: pd.DataFrame, y_true: np.ndarray, probs: np.ndarray, raw: np.ndarray,
          score_set: Score) -> dict:
    """{"definition", "seen": {...}, "unseen": {...}}: each part of the test set scored by score_set
    (y_true, probs, raw probabilities, lesion ids) -> dict, as the whole set is, plus its images
    per class. test: the test set's rows, in the order of y_true, probs and raw."""
    part_of = parts.drop_duplicates("image_id").set_index("image_id")["part"]
    if len(part_of) != len(parts) or set(part_of.index) != set(test["image_id"]):
        raise DataError(f"{PATH} does not cover the test set image for image; rerun `dvc repro split`")
    names = test["image_id"].map(part_of).to_numpy()
    lesion_ids = test["lesion_id"].reset_index(drop=True)
    out = {"definition": DEFINITION}
    for name in PARTS:
        mask = names == name
        counts = {c: int((y_true[mask] == k).sum()) for k, c in enumerate(CLASSES)}
        scored = score_set(y_true[mask], probs[mask], raw[mask], lesion_ids[mask]) if mask.any() else {"n_images": 0}
        out[name] = {**scored, "images_per_class": counts}
    return out

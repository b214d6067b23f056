"""Lesion-grouped, class-stratified splits, or a source's own official split.

HAM10000 holds up to six images of one lesion. Splitting by image would put views of the same
lesion on both sides and inflate every score, so the splits we draw are drawn over lesions.

A source with an official split (DermaMNIST) is kept as published, for scores comparable with
its benchmark: train trains, val is validation fold 0 (the best epoch, the temperature), test is
the internal test set. DermaMNIST's split was drawn by image. Without lesion ids that cannot be
seen, and the split says so; with them (skinlesion/acquire/lesion_ids.py) the lesions it shares
are counted, and exclude_test_lesions removes them from train and val as an experiment.

A source without lesion ids writes each image as its own lesion (`lesion_id` = `image_id`), which
is how has_lesion_ids tells.
"""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from .classes import CLASSES
from .manifest import DataError

TEST = -1  # the `fold` value of the internal test set
TRAIN_ONLY = -2  # the `fold` value of images that always train and never validate (an official train split)
OFFICIAL_FOLDS = {"train": TRAIN_ONLY, "val": 0, "test": TEST}  # official split name -> fold value

IMAGE_LEVEL_NOTE = (
    "This split is the source's own and it is image-level: DermaMNIST carries no lesion ids, and HAM10000 "
    "holds up to six images of one lesion (10,015 images of 7,470 lesions), so views of one lesion can sit in "
    "train and in val or test. A model that has seen one view recognises the others, which flatters every "
    "score here against a lesion-grouped split; compare these numbers with the DermaMNIST benchmark, not "
    "with lesion-grouped HAM10000 results.")
LEAK_NOTE = (
    "This split is the source's own and it was drawn by image: the lesion ids show views of one lesion in "
    "train and in val or test (lesions_shared_between_splits), and a model that has seen one view "
    "recognises the others. The test images are split into a seen part (the lesion has an image in the "
    "official train set) and an unseen part, scored separately in eval.json; those parts differ in their "
    "mix of classes and diagnoses, so what the leak buys is measured by training with "
    "split.exclude_test_lesions true and false and comparing the two on the same test images.")
NO_IDS_TO_EXCLUDE = (
    "split.exclude_test_lesions is true but the manifest has no lesion ids (every image is its own lesion), "
    "so no image can be linked to a test lesion. DermaMNIST gets them from data.dermamnist_ids and "
    "data.ham10000_metadata (or their download, when online): see the download stage's log; or set "
    "split.exclude_test_lesions=false")
NO_IDS_TO_GROUP = (
    "split.scheme is grouped but the manifest has no lesion ids (every image is its own lesion, as DermaMNIST "
    "without its id mapping), so a lesion-grouped split cannot be drawn. Give DermaMNIST its ids with "
    "data.dermamnist_ids and data.ham10000_metadata (or let the download stage fetch them, online; its log "
    "says which it found), or use split.scheme=official (its own train/val/test split, train.folds=[0])")


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


def assign_official(manifest: pd.DataFrame, official: pd.DataFrame) -> pd.DataFrame:
    """The manifest with a `fold` column from the source's own split (image_id, split: train | val |
    test): TRAIN_ONLY, 0 and TEST. Every image must be in exactly one split."""
    if official.empty:
        raise DataError("split.scheme=official but the source wrote no official split "
                        "(data/manifests/official_split.csv is empty); rerun `dvc repro download`")
    unknown = sorted(set(official["split"]) - set(OFFICIAL_FOLDS))
    if unknown:
        raise DataError(f"official split names {unknown}; expected {list(OFFICIAL_FOLDS)}")
    twice = official["image_id"][official["image_id"].duplicated()]
    if len(twice):
        raise DataError(f"{len(twice)} image(s) sit in two official splits, e.g. {list(twice[:5])}")
    split = official.set_index("image_id")["split"]
    missing = sorted(set(manifest["image_id"]) - set(split.index))
    extra = sorted(set(split.index) - set(manifest["image_id"]))
    if missing or extra:
        raise DataError(f"the official split and the manifest disagree: {len(missing)} image(s) without a split "
                        f"(e.g. {missing[:3]}), {len(extra)} split row(s) without an image (e.g. {extra[:3]}); "
                        "rerun `dvc repro download`")
    return manifest.assign(fold=manifest["image_id"].map(split).map(OFFICIAL_FOLDS).astype(int).to_numpy())


def has_lesion_ids(manifest: pd.DataFrame) -> bool:
    """Whether the images carry real lesion ids: a source without them makes each image its own lesion."""
    return bool((manifest["lesion_id"] != manifest["image_id"]).any())


def exclude_test_lesions(folds: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The official split without the train and val images of every lesion that has an image in the
    test set, and how many left ({"train": images, "val": images, "lesions": lesions}). The test
    set is untouched."""
    test_lesions = set(folds.loc[folds["fold"] == TEST, "lesion_id"])
    dropped = (folds["fold"] != TEST) & folds["lesion_id"].isin(test_lesions)
    counts = {name: int((dropped & (folds["fold"] == fold)).sum()) for name, fold in OFFICIAL_FOLDS.items()
              if fold != TEST}
    counts["lesions"] = int(folds.loc[dropped, "lesion_id"].nunique())
    return folds[~dropped].reset_index(drop=True), counts


def split_name(fold: int, official: bool = False) -> str:
    if official:
        return {value: name for name, value in OFFICIAL_FOLDS.items()}[fold]
    return "test" if fold == TEST else f"fold{fold}"


def lesions_shared(frame: pd.DataFrame) -> int:
    """Lesions whose images sit in more than one split: must be 0."""
    return int((frame.groupby("lesion_id")["fold"].nunique() > 1).sum())


def split_report(frame: pd.DataFrame, official: bool = False) -> dict:
    names = frame["fold"].map(lambda fold: split_name(fold, official))
    order = list(OFFICIAL_FOLDS) if official else None
    counts = pd.crosstab(names, frame["dx"]).reindex(columns=list(CLASSES), fill_value=0)
    lesions = frame.groupby(names)["lesion_id"].nunique()
    return {
        "n_images": int(len(frame)),
        "n_lesions": int(frame["lesion_id"].nunique()),
        "lesions_shared_between_splits": lesions_shared(frame),
        "splits": {
            name: {"images": int(counts.loc[name].sum()), "lesions": int(lesions[name]),
                   "per_class": {dx: int(counts.loc[name, dx]) for dx in CLASSES}}
            for name in sorted(counts.index, key=lambda n: order.index(n) if order else (n != "test", n))
        },
    }


def read_splits(path: str = "data/splits/splits.csv") -> pd.DataFrame:
    from .manifest import read

    frame = read(path)
    if "fold" not in frame.columns:
        raise ValueError(f"{path} has no fold column; rerun `dvc repro split`")
    return frame.astype({"fold": int})

"""Stage split: lesion-grouped, class-stratified CV folds plus an internal test set, or the
source's own official split.

    python stages/split.py

split.scheme=grouped keeps together the groups of data/audit/groups.csv (lesions, merged where the
leakage audit found near-identical images); it needs lesion ids (DermaMNIST has them only with its id
mapping, see skinlesion/acquire/lesion_ids.py). split.scheme=official (DermaMNIST) keeps the split of
data/manifests/official_split.csv: train always trains, val is fold 0 (best epoch, temperature),
test is the internal test set. It was drawn by image: without lesion ids the log and
metrics/split.json say so; with them they count the lesions it shares, the test set's seen and
unseen parts go to data/splits/test_parts.csv (skinlesion/seen_lesions.py) for evaluate, and
split.exclude_test_lesions drops from train and val every image of a lesion with a test image.
Output: data/splits/splits.csv (the manifest plus a `fold` column: -1 = test, -2 = official train),
metrics/split.json. A grouped split fails if any lesion sits in two splits.
"""

from pathlib import Path

import pandas as pd

from skinlesion import atomic, cli, manifest, seen_lesions, splitting
from skinlesion.errors import DataError, ParamsError
from skinlesion.params import load_params


def check_enough_lesions(frame: pd.DataFrame, groups: pd.Series, n_folds: int, test_size: float) -> None:
    """Every fold needs lesions of its own, and scikit-learn's stratified split needs at least
    n_folds lesions of the largest class outside the test set; say so before it fails obscurely."""
    per_class = groups.groupby(frame["dx"]).nunique()
    usable = int(per_class.max() * (1 - test_size))  # the largest class's lesions outside the test set, about
    if n_folds > usable:
        raise ParamsError(
            f"split.n_folds is {n_folds}, but the data has only {groups.nunique()} lesions, {per_class.max()} of its "
            f"largest class ({per_class.idxmax()}), about {usable} of them outside the test set: use split.n_folds "
            f"of at most {usable}" + ("" if usable >= 2 else ", which needs more data (at least 2)"))


def official_split(frame: pd.DataFrame, split) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    """The source's own split: (folds, the test set's seen and unseen parts or None, what split.json
    adds: whether lesion ids are known, the note, the parts and what split.exclude_test_lesions dropped)."""
    ids = splitting.has_lesion_ids(frame)
    if split.exclude_test_lesions and not ids:
        raise DataError(splitting.NO_IDS_TO_EXCLUDE)
    official = pd.read_csv("data/manifests/official_split.csv", dtype=str, keep_default_na=False)
    folds = splitting.assign_official(frame, official)
    if not ids:
        return folds, None, {"lesion_ids": False, "note": splitting.IMAGE_LEVEL_NOTE}
    parts = seen_lesions.assign(folds)  # on the split as published: the same parts with or without exclusion
    extra = {"lesion_ids": True, "note": splitting.LEAK_NOTE, "test_parts": seen_lesions.summary(parts, folds)}
    if split.exclude_test_lesions:
        folds, extra["excluded_for_test_lesions"] = splitting.exclude_test_lesions(folds)
    return folds, parts, extra


def grouped_split(frame: pd.DataFrame, split) -> tuple[pd.DataFrame, None, dict]:
    """The lesion-grouped split over the leakage audit's groups: (folds, no parts, nothing to add)."""
    if not splitting.has_lesion_ids(frame):
        raise DataError(splitting.NO_IDS_TO_GROUP)
    groups = pd.read_csv("data/audit/groups.csv", dtype=str, keep_default_na=False).set_index("image_id")["group"]
    groups = frame["image_id"].map(groups)
    check_enough_lesions(frame, groups, split.n_folds, split.test_size)
    folds = splitting.assign_folds(frame, n_folds=split.n_folds, test_size=split.test_size, seed=split.seed,
                                   groups=groups)
    empty = sorted(set(range(split.n_folds)) - set(folds["fold"]))
    if empty:
        raise ParamsError(f"split.n_folds is {split.n_folds}, but fold(s) {empty} received no lesions; "
                          "use fewer folds or more data")
    return folds, None, {}


def main(args) -> None:
    params = load_params(args.params)
    frame = manifest.read("data/manifests/ham10000.csv")
    official = params.split.scheme == "official"
    folds, parts, extra = (official_split if official else grouped_split)(frame, params.split)
    report = {"scheme": params.split.scheme, "unit": "image" if official else "lesion",
              **extra, **splitting.split_report(folds, official=official)}
    if report["lesions_shared_between_splits"] and not official:
        raise DataError(f"{report['lesions_shared_between_splits']} lesion(s) sit in two splits; the split leaks")
    if official:
        print(f"split.scheme=official: the source's own train/val/test split. {extra['note']}")
    if parts is not None:
        print(f"lesions in two official splits: {report['lesions_shared_between_splits']}; test images whose "
              f"lesion has an image in the official train set (seen): {extra['test_parts']['seen']['images']} of "
              f"{len(parts)}, {extra['test_parts']['seen']['lesions']} lesions")
    if "excluded_for_test_lesions" in extra:
        e = extra["excluded_for_test_lesions"]
        print(f"split.exclude_test_lesions: dropped {e['train']} train and {e['val']} val images of {e['lesions']} "
              "lesions that have an image in the test set; the test set is unchanged")
    with atomic.atomic_dir(Path("data/splits")) as out:
        folds.to_csv(out / "splits.csv", index=False)
        if parts is not None:
            parts.to_csv(out / seen_lesions.PATH.name, index=False)
    atomic.write_json("metrics/split.json", report)
    for name, s in report["splits"].items():
        print(f"{name:>6}: {s['images']:5d} images, {s['lesions']:5d} lesions  {s['per_class']}")


if __name__ == "__main__":
    cli.run(main, cli.stage_parser(__doc__))

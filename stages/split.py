"""Stage split: lesion-grouped, class-stratified CV folds plus an internal test set, or the
source's own official split.

    python stages/split.py

split.scheme=grouped keeps together the groups of data/audit/groups.csv (lesions, merged where the
leakage audit found near-identical images). split.scheme=official (DermaMNIST) keeps the split of
data/manifests/official_split.csv: train always trains, val is fold 0 (best epoch, temperature),
test is the internal test set; it is image-level, and the log and metrics/split.json say so.
Output: data/splits/splits.csv (the manifest plus a `fold` column: -1 = test, -2 = official train),
metrics/split.json. Fails if any lesion sits in two splits.
"""

from pathlib import Path

import pandas as pd

from skinlesion import atomic, cli, manifest, splitting
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


def main(args) -> None:
    params = load_params(args.params)
    frame = manifest.read("data/manifests/ham10000.csv")
    official = params.split.scheme == "official"
    if official:
        split = pd.read_csv("data/manifests/official_split.csv", dtype=str, keep_default_na=False)
        folds = splitting.assign_official(frame, split)
    else:
        groups = pd.read_csv("data/audit/groups.csv", dtype=str, keep_default_na=False).set_index("image_id")["group"]
        groups = frame["image_id"].map(groups)
        check_enough_lesions(frame, groups, params.split.n_folds, params.split.test_size)
        folds = splitting.assign_folds(frame, n_folds=params.split.n_folds, test_size=params.split.test_size,
                                       seed=params.split.seed, groups=groups)
        empty = sorted(set(range(params.split.n_folds)) - set(folds["fold"]))
        if empty:
            raise ParamsError(f"split.n_folds is {params.split.n_folds}, but fold(s) {empty} received no lesions; "
                              "use fewer folds or more data")
    report = {"scheme": params.split.scheme, "unit": "image" if official else "lesion",
              **({"note": splitting.IMAGE_LEVEL_NOTE} if official else {}),
              **splitting.split_report(folds, official=official)}
    if report["lesions_shared_between_splits"]:
        raise DataError(f"{report['lesions_shared_between_splits']} lesion(s) sit in two splits; the split leaks")
    if official:
        print(f"split.scheme=official: the source's own train/val/test split. {splitting.IMAGE_LEVEL_NOTE}")
    atomic.write_csv(Path("data/splits/splits.csv"), folds)
    atomic.write_json("metrics/split.json", report)
    for name, s in report["splits"].items():
        print(f"{name:>6}: {s['images']:5d} images, {s['lesions']:5d} lesions  {s['per_class']}")


if __name__ == "__main__":
    cli.run(main, cli.stage_parser(__doc__))

"""Stage split: lesion-grouped, class-stratified CV folds plus an internal test set.

    python stages/split.py

Keeps together the groups of data/audit/groups.csv (lesions, merged where the leakage audit found
near-identical images). Output: data/splits/splits.csv (the manifest plus a `fold` column,
-1 = test), metrics/split.json. Fails if any lesion sits in two splits.
"""

from pathlib import Path

import pandas as pd

from skinlesion import atomic, cli, manifest, splitting
from skinlesion.manifest import DataError
from skinlesion.params import load_params


def main(args) -> None:
    params = load_params(args.params)
    frame = manifest.read("data/manifests/ham10000.csv")
    groups = pd.read_csv("data/audit/groups.csv", dtype=str, keep_default_na=False).set_index("image_id")["group"]
    folds = splitting.assign_folds(frame, n_folds=params.split.n_folds, test_size=params.split.test_size,
                                   seed=params.seed, groups=frame["image_id"].map(groups))
    report = splitting.split_report(folds)
    if report["lesions_shared_between_splits"]:
        raise DataError(f"{report['lesions_shared_between_splits']} lesion(s) sit in two splits; the split leaks")
    atomic.write_csv(Path("data/splits/splits.csv"), folds)
    atomic.write_json("metrics/split.json", report)
    for name, s in report["splits"].items():
        print(f"{name:>6}: {s['images']:5d} images, {s['lesions']:5d} lesions  {s['per_class']}")


if __name__ == "__main__":
    cli.run(main, cli.stage_parser(__doc__))

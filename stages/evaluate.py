"""Stage evaluate: the fold ensemble, with TTA, on the internal test set and the external set.

    python stages/evaluate.py

Output: metrics/eval.json ({"internal": {...}, "external": {...}}), data/predictions/<set>.csv and
<set>_truth.csv in the ISIC 2018 Task 3 format, plots/eval/<set>_confusion.csv.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion import atomic, cli, evaluation, isic, manifest, metrics, model, splitting
from skinlesion.classes import CLASSES
from skinlesion.params import load_params
from skinlesion.device import pick_device


def main(args) -> None:
    params = load_params(args.params)
    device = pick_device("auto")
    ensemble, cards = model.load_ensemble(Path("models"), device)
    img_size = cards[0]["img_size"]
    splits = splitting.read_splits()
    sets = {"internal": splits[splits["fold"] == splitting.TEST],
            "external": manifest.read("data/manifests/external.csv")}

    report = {"tta": params.evaluate.tta, "folds": [c["fold"] for c in cards]}
    with atomic.atomic_dir("data/predictions") as predictions, atomic.atomic_dir("plots/eval") as plots:
        for name, frame in sets.items():
            if frame.empty:
                continue
            probs = evaluation.predict_frame(ensemble, frame, img_size=img_size, tta=params.evaluate.tta,
                                             batch_size=params.evaluate.batch_size, device=device, desc=name)
            y_true = np.array([CLASSES.index(dx) for dx in frame["dx"]])
            report[name] = metrics.classification_report(y_true, probs)
            pred_table, truth_table = isic.tables(frame, probs)
            pred_table.to_csv(predictions / f"{name}.csv", index=False)
            truth_table.to_csv(predictions / f"{name}_truth.csv", index=False)
            pd.DataFrame({"actual": frame["dx"].to_numpy(), "predicted": np.array(CLASSES)[probs.argmax(1)]}
                         ).to_csv(plots / f"{name}_confusion.csv", index=False)
            print(f"{name}: {len(frame)} images, balanced accuracy {report[name]['balanced_accuracy']:.4f}, "
                  f"macro AUC {report[name]['macro_auc']:.4f}")
    atomic.write_json("metrics/eval.json", report)


if __name__ == "__main__":
    cli.run(main, cli.stage_parser(__doc__))

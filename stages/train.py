"""Stage train: one model per CV fold in train.folds; evaluate ensembles them.

    python stages/train.py

Output: models/fold<k>.safetensors + fold<k>.json (the model card), plots/train/fold<k>.csv
(per-epoch curves), metrics/train.json (best validation epoch per fold).
A checkpoint per fold in checkpoints/ (kept by DVC between runs) lets a killed run resume.
"""

from pathlib import Path

import pandas as pd

from skinlesion import atomic, cli, model, splitting
from skinlesion.classes import CLASSES
from skinlesion.params import as_dict, load_params
from skinlesion.training import train_fold

CHECKPOINTS = Path("checkpoints")


def main(args) -> None:
    params = load_params(args.params)
    frame = splitting.read_splits()
    cv = frame[frame["fold"] != splitting.TEST]
    results = {}
    for fold in params.train.folds:
        print(f"fold {fold}: {int((cv['fold'] != fold).sum())} training, {int((cv['fold'] == fold).sum())} "
              f"validation images", flush=True)
        results[fold] = train_fold(cv[cv["fold"] != fold], cv[cv["fold"] == fold], params, fold,
                                   checkpoint_path=CHECKPOINTS / f"fold{fold}.pt")

    with atomic.atomic_dir("models") as models, atomic.atomic_dir("plots/train") as curves:
        for fold, result in results.items():
            card = {
                "architecture": params.model.name,
                "classes": list(CLASSES),
                "img_size": params.data.img_size,
                "fold": fold,
                "data_source": params.data.source,
                "seed": params.seed + fold,
                "params": {"model": as_dict(params.model), "train": as_dict(params.train)},
                "val_metrics": result.best,
            }
            model.save(result.model, card, models, f"fold{fold}")
            pd.DataFrame(result.history).to_csv(curves / f"fold{fold}.csv", index=False)
    atomic.write_json("metrics/train.json", {f"fold{k}": r.best for k, r in results.items()})


if __name__ == "__main__":
    cli.run(main, cli.stage_parser(__doc__))

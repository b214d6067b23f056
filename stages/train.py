"""Stage train: one model per CV fold in train.folds; evaluate ensembles them.

    python stages/train.py

Output: models/fold<k>.safetensors + fold<k>.json (the model card), dvclive/fold<k>/ (the per-epoch
curves, logged live with DVCLive while the fold trains: metrics.json holds the latest epoch,
plots/metrics/*.tsv the curves), metrics/train.json (best validation epoch per fold).
A checkpoint per fold in checkpoints/ lets a killed run resume. It is git-ignored and not a DVC
output (see dvc.yaml): DVC leaves it alone between runs, and a finished fold's checkpoint makes a
rerun with unchanged code, params and data skip to its end.

Several GPUs (DDP): with train.nproc_per_node N > 1 this script starts itself again under torchrun
as N processes on this node. Launched by torchrun directly, it runs as one rank of its world, e.g.
on two nodes (same code, params and data on both; K = 0 on node0, 1 on node1; then, on node0,
`dvc commit train`):

    torchrun --nnodes 2 --node-rank K --nproc_per_node 8 --rdzv-endpoint node0:29500 stages/train.py

Only rank 0 writes models/, dvclive/, metrics/train.json and the checkpoints.
"""

import shutil
import sys
from pathlib import Path

from skinlesion import atomic, calibration, cli, distributed, fold_pool, model, splitting
from skinlesion.cache import ImageCache
from skinlesion.classes import CLASSES
from skinlesion.device import pick_device
from skinlesion.params import as_dict, load_params
from skinlesion.training import train_fold

CHECKPOINTS = Path("checkpoints")
LIVE = Path("dvclive")  # one DVCLive folder per fold (skinlesion/training_log.py)


def main(args) -> None:
    params = load_params(args.params)
    model.check_name(params.model.name)
    if params.train.nproc_per_node > 1 and not distributed.launched_by_torchrun():
        sys.exit(distributed.relaunch_under_torchrun(params.train.nproc_per_node, sys.argv))
    with distributed.process_group(pick_device(params.train.device)):
        train_folds(params)


def train_folds(params) -> None:
    frame = splitting.read_splits()
    cv = frame[frame["fold"] != splitting.TEST]
    images = ImageCache("data/cache/ham10000", params.data.img_size)
    jobs = [(fold, cv[cv["fold"] != fold], cv[cv["fold"] == fold]) for fold in params.train.folds]
    if distributed.is_main():
        # Curves of an earlier run, other folds included, go: a resumed fold replays its own from its checkpoint.
        shutil.rmtree(LIVE, ignore_errors=True)
        for fold, train, val in jobs:
            print(f"fold {fold}: {len(train)} training, {len(val)} validation images", flush=True)
    if fold_pool.usable(params, pick_device(params.train.device), distributed.world_size()):
        processes = min(params.train.parallel_folds, len(jobs))
        print(f"training {len(jobs)} folds on the CPU, {processes} at a time (train.parallel_folds), "
              f"each in a process of {fold_pool.THREADS_PER_FOLD} thread", flush=True)
        results = fold_pool.train_folds_in_parallel(jobs, params, processes=processes,
                                                    checkpoint_dir=CHECKPOINTS, cache=images, live_root=LIVE)
    else:
        results = {fold: train_fold(train, val, params, fold, checkpoint_path=CHECKPOINTS / f"fold{fold}.pt",
                                    cache=images, live_root=LIVE)
                   for fold, train, val in jobs}
    if not distributed.is_main():
        return
    # The temperature of each fold model, fitted on its own out-of-fold validation predictions.
    calibrations = {k: calibration.calibrate_fold(r.val_logits, r.val_labels) for k, r in results.items()}

    split = split_card(params, frame)
    with atomic.atomic_dir("models") as models:
        for fold, result in results.items():
            card = {
                "architecture": params.model.name,
                "classes": list(CLASSES),
                "img_size": params.data.img_size,
                "fold": fold,
                "data_source": params.data.source,
                **split,
                "seed": params.seed + fold,
                "params": {"model": as_dict(params.model), "train": as_dict(params.train)},
                "val_metrics": result.best,
                **calibrations[fold],  # temperature, and the validation ECE before and after it
            }
            model.save(result.model, card, models, f"fold{fold}")
    atomic.write_json("metrics/train.json", {f"fold{k}": {**r.best, **calibrations[k]} for k, r in results.items()})


def split_card(params, frame) -> dict:
    """Which split the folds learnt from, for the app. Only DermaMNIST has a choice (the other sources
    are always split by lesion), so only its cards say it, and the others stay as they were."""
    if params.data.source != "dermamnist":
        return {}
    return {"split": {"scheme": params.split.scheme, "lesion_ids": splitting.has_lesion_ids(frame),
                      "exclude_test_lesions": params.split.exclude_test_lesions}}


if __name__ == "__main__":
    cli.run(main, cli.stage_parser(__doc__))

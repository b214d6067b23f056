"""A fold's training curves, logged live with DVCLive: one DVCLive folder per fold, one step per epoch.

DVCLive writes `<folder>/metrics.json` (the latest epoch, with its step) and one TSV per metric in
`<folder>/plots/metrics/` after every epoch, so `dvc exp show`, `dvc plots show` and DVC's VS Code
extension follow a run while it trains; dvc.yaml declares the folder as an output of the train
stage and the plots over it. DVCLive writes no dvc.yaml of its own (dvc.yaml already declares
these files) and saves no experiment of its own (`dvc exp run` does that); it posts to DVC Studio
only when the user has configured a Studio token.

Every epoch's values come from the fold's checkpointed progress, so a resumed fold first replays
the epochs its checkpoint holds into a fresh folder, then goes on: the finished curve has the same
steps and values as an uninterrupted run's, no step missing and none twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# The curves of each epoch, in this order; the epoch itself is the step.
CURVES = ("train_loss", "val_loss", "val_balanced_accuracy", "lr", "images_per_second")


def fold_folder(root: str | Path, fold: int) -> Path:
    return Path(root) / f"fold{fold}"


class FoldLog:
    """DVCLive for one fold, in `fold_folder(root, fold)`; rows are {"epoch", *CURVES}."""

    def __init__(self, root: str | Path, fold: int):
        from dvclive import Live  # imported here: it imports dvc, which only training needs

        # resume=False: DVCLive empties the folder; replay() then writes what the checkpoint holds.
        self._live = Live(dir=str(fold_folder(root, fold)), resume=False, report=None, save_dvc_exp=False,
                          dvcyaml=None, monitor_system=False)

    def replay(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.log_epoch(row)

    def log_epoch(self, row: dict) -> None:
        self._live.step = int(row["epoch"])
        for name in CURVES:
            self._live.log_metric(name, float(row[name]))
        self._live.next_step()  # writes metrics.json, and tells DVC's VS Code extension a step is done

    def close(self) -> None:
        self._live.end()


class NoLog:
    """What ranks other than 0, and callers that keep no curves, log to."""

    def replay(self, rows: Iterable[dict]) -> None:
        pass

    def log_epoch(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass

"""Every fold's curves are logged live with DVCLive, one folder per fold and one step per epoch, with
the values the fold's history holds; a killed and resumed fold ends with the same curves."""

import json
from pathlib import Path

import pandas as pd
import pytest
from noise_images import noise_frame_in_three_folds, tiny_training_params

from skinlesion import fold_pool, training, training_log


@pytest.fixture
def frame(tmp_path) -> pd.DataFrame:
    return noise_frame_in_three_folds(tmp_path)


def tiny_params(**train):
    return tiny_training_params(**{"epochs": 3, **train})


def split(frame, k):
    return frame[frame["fold"] != k], frame[frame["fold"] == k]


def curves(root: Path, fold: int) -> dict[str, pd.DataFrame]:
    """{curve name: its DVCLive TSV (step, value)} of one fold."""
    folder = training_log.fold_folder(root, fold) / "plots" / "metrics"
    return {path.stem: pd.read_csv(path, sep="\t") for path in sorted(folder.glob("*.tsv"))}


def assert_curves_equal_history(root: Path, fold: int, history: list[dict]) -> None:
    logged = curves(root, fold)
    assert set(logged) == set(training_log.CURVES)
    for name, table in logged.items():
        assert list(table.columns) == ["step", name]
        assert table["step"].tolist() == [row["epoch"] for row in history] == list(range(1, len(history) + 1))
        if name != "images_per_second":  # a timing: only its presence can be compared
            assert table[name].tolist() == [row[name] for row in history], name
    assert (logged["images_per_second"]["images_per_second"] > 0).all()
    latest = json.loads((training_log.fold_folder(root, fold) / "metrics.json").read_text())
    assert latest["step"] == len(history)
    assert {k: latest[k] for k in ("train_loss", "val_loss", "lr")} == {k: history[-1][k] for k in
                                                                        ("train_loss", "val_loss", "lr")}


def test_a_fold_logs_one_dvclive_step_per_epoch_with_its_history_values(frame, tmp_path):
    train, val = split(frame, 0)
    result = training.train_fold(train, val, tiny_params(), 0, live_root=tmp_path / "live")
    assert len(result.history) == 3
    assert_curves_equal_history(tmp_path / "live", 0, result.history)
    assert sorted(p.name for p in (tmp_path / "live").iterdir()) == ["fold0"]
    assert not (tmp_path / "live" / "fold0" / "dvc.yaml").exists()  # dvc.yaml declares these files already


def test_folds_trained_at_once_write_separate_histories(frame, tmp_path):
    jobs = [(k, *split(frame, k)) for k in (0, 1, 2)]
    results = fold_pool.train_folds_in_parallel(jobs, tiny_params(parallel_folds=3), processes=3,
                                                live_root=tmp_path / "live")
    assert sorted(p.name for p in (tmp_path / "live").iterdir()) == ["fold0", "fold1", "fold2"]
    for k, result in results.items():
        assert_curves_equal_history(tmp_path / "live", k, result.history)
    assert curves(tmp_path / "live", 0)["val_loss"]["val_loss"].tolist() != \
        curves(tmp_path / "live", 1)["val_loss"]["val_loss"].tolist()  # three folds, not one written thrice


class Killed(BaseException):
    """Stands for SIGKILL: raised where a kill would stop the process."""


def test_a_killed_and_resumed_fold_has_the_history_of_an_uninterrupted_one(frame, tmp_path, monkeypatch):
    train, val = split(frame, 0)
    params = tiny_params(epochs=4)
    whole = training.train_fold(train, val, params, 0, live_root=tmp_path / "whole")

    logged = training_log.FoldLog.log_epoch

    def killed_after_epoch_two_is_checkpointed(self, row):
        if row["epoch"] == 3:
            raise Killed  # epoch 3 is checkpointed, not yet logged: the worst moment for the curve
        logged(self, row)

    monkeypatch.setattr(training_log.FoldLog, "log_epoch", killed_after_epoch_two_is_checkpointed)
    checkpoint = tmp_path / "fold0.pt"
    with pytest.raises(Killed):
        training.train_fold(train, val, params, 0, checkpoint_path=checkpoint, live_root=tmp_path / "resumed")
    assert curves(tmp_path / "resumed", 0)["val_loss"]["step"].tolist() == [1, 2]
    monkeypatch.setattr(training_log.FoldLog, "log_epoch", logged)
    resumed = training.train_fold(train, val, params, 0, checkpoint_path=checkpoint, live_root=tmp_path / "resumed")

    assert resumed.history == whole.history
    assert_curves_equal_history(tmp_path / "resumed", 0, whole.history)
    for name, table in curves(tmp_path / "whole", 0).items():
        if name != "images_per_second":
            pd.testing.assert_frame_equal(curves(tmp_path / "resumed", 0)[name], table)

"""Folds trained at once in one-thread processes give the weights one-thread training in this
process gives, in fold order, whatever the number of processes; a failing fold stops them all."""

import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch
from noise_images import noise_frame_in_three_folds, tiny_training_params

from skinlesion import fold_pool, training
from skinlesion.errors import DataError, TrainingError


@pytest.fixture
def frame(tmp_path) -> pd.DataFrame:
    return noise_frame_in_three_folds(tmp_path)


def tiny_params(**train):
    return tiny_training_params(**{"epochs": 2, **train})


def jobs(frame):
    return [(k, frame[frame["fold"] != k], frame[frame["fold"] == k]) for k in (0, 1, 2)]


def weights(result: training.FoldResult) -> dict[str, np.ndarray]:
    return {name: t.detach().numpy().copy() for name, t in result.model.state_dict().items()}


def test_parallel_folds_train_the_weights_of_one_thread_in_this_process(frame, tmp_path):
    params = tiny_params(parallel_folds=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = {k: training.train_fold(train, val, params, k) for k, train, val in jobs(frame)}
    finally:
        torch.set_num_threads(threads)
    for processes in (2, 3):
        together = fold_pool.train_folds_in_parallel(jobs(frame), params, processes=processes,
                                                     checkpoint_dir=tmp_path / f"ckpt{processes}")
        assert list(together) == [0, 1, 2]
        for k in (0, 1, 2):
            assert together[k].history == alone[k].history
            np.testing.assert_array_equal(together[k].val_logits, alone[k].val_logits)
            mine, theirs = weights(alone[k]), weights(together[k])
            assert mine.keys() == theirs.keys()
            assert all(np.array_equal(mine[n], theirs[n]) for n in mine)
        assert sorted(p.name for p in (tmp_path / f"ckpt{processes}").iterdir()) == ["fold0.pt", "fold1.pt",
                                                                                     "fold2.pt"]
    # The folds differ from each other: the comparison above is not of three copies of one model.
    assert not np.array_equal(alone[0].val_logits[:3], alone[1].val_logits[:3])


def test_a_failing_fold_raises_its_own_error_and_stops_the_others(frame, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a JPEG")
    failing = frame.copy()
    failing.loc[failing["fold"] == 1, "path"] = str(broken)  # fold 1's validation images, fold 0's training ones
    params = tiny_params(epochs=50)  # the healthy fold would train for a while: it must be stopped, not awaited
    with pytest.raises(DataError, match="broken.jpg"):
        fold_pool.train_folds_in_parallel([(2, frame[frame["fold"] != 2], frame[frame["fold"] == 2]),
                                           (1, failing[failing["fold"] != 1], failing[failing["fold"] == 1])],
                                          params, processes=2)
    assert multiprocessing.active_children() == []


def test_a_killed_fold_process_gives_one_clear_error(frame):
    params = tiny_params(epochs=50)
    outcome = {}

    def train():
        try:
            fold_pool.train_folds_in_parallel(jobs(frame), params, processes=2)
        except TrainingError as e:
            outcome["error"] = str(e)

    trainer = threading.Thread(target=train)
    trainer.start()
    deadline = time.monotonic() + 60
    while len(multiprocessing.active_children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)  # as the kernel's OOM killer would
    trainer.join(timeout=60)
    assert not trainer.is_alive()
    assert outcome["error"].startswith("a fold's training process died (killed, or out of memory")
    assert "lower train.parallel_folds" in outcome["error"]
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("device, world, folds, parallel, expected", [
    ("cpu", 1, [0, 1], 2, True),
    ("cpu", 1, [0, 1], 1, False),   # one after another, as asked
    ("cpu", 1, [0], 2, False),      # one fold: nothing to run at once
    ("cuda", 1, [0, 1], 2, False),  # a GPU trains one model at a time at full speed
    ("cpu", 2, [0, 1], 2, False),   # under DDP the ranks already share the fold
])
def test_parallel_folds_apply_on_one_cpu_process_only(device, world, folds, parallel, expected):
    params = tiny_params(folds=folds, parallel_folds=parallel)
    assert fold_pool.usable(params, torch.device(device), world) is expected

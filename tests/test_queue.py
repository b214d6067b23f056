"""A sweep through DVC's experiment queue, as the README shows it: queue a grid with -S, run it with
`dvc queue start -j 1`, compare with `dvc exp show`."""

import csv
import io
import sys
import time

import pytest
from pipeline_clone import make_clone, run

pytestmark = pytest.mark.slow

SMALLEST = {"data": {"demo_lesions": 40, "demo_external_images": 14}, "split": {"n_folds": 2},
            "train": {"folds": [0]}}


def dvc(*args: str, cwd) -> str:
    return run([sys.executable, "-m", "dvc", *args], cwd).stdout


def wait_for_queue(repo, timeout: float = 400) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = dvc("queue", "status", cwd=repo)
        if "Queued" not in status and "Running" not in status:
            return status
        time.sleep(2)
    dvc("queue", "stop", "--kill", cwd=repo)  # leave no worker behind
    raise AssertionError(f"the queue did not finish within {timeout} s:\n{status}")


def test_queued_sweep_runs_both_experiments_and_exp_show_lists_their_metrics(tmp_path):
    repo = make_clone(tmp_path / "sweep", SMALLEST)
    # Up to train only, to stay short; the second experiment restores the data stages from the run cache.
    dvc("exp", "run", "--queue", "-S", "train.lr=1e-3,3e-3", "train", cwd=repo)
    assert dvc("queue", "status", cwd=repo).count("Queued") == 2
    dvc("queue", "start", "-j", "1", cwd=repo)
    status = wait_for_queue(repo)
    assert status.count("Success") == 2, status

    table = dvc("exp", "show", "--csv", cwd=repo)
    experiments = [row for row in csv.DictReader(io.StringIO(table)) if row["Experiment"]]
    assert sorted(float(row["train.lr"]) for row in experiments) == [1e-3, 3e-3], table
    assert {row["State"] for row in experiments} == {"Success"}
    for row in experiments:  # each has its own metrics/train.json
        assert 0.0 <= float(row["fold0.val_balanced_accuracy"]) <= 1.0 and float(row["fold0.val_loss"]) > 0, table

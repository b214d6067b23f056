"""Interrupted training resumes exactly: kill the train stage mid-run, rerun, compare with a clean run."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = {
    "data": {"demo_lesions": 40, "demo_external_images": 14, "img_size": 32},
    "split": {"n_folds": 2, "test_size": 0.2},
    "train": {"folds": [0], "epochs": 3, "batch_size": 16},
}


def stage(name: str, cwd: Path, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(REPO / "stages" / f"{name}.py"), "--params", "params.yaml"]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


def finish(proc) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A folder with tiny params, demo data and splits: everything the train stage reads."""
    root = tmp_path_factory.mktemp("prepared")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for name in ("download", "audit", "split"):
        finish(stage(name, root))
    finish(stage("preprocess", root))
    return root


def copy_of(prepared: Path, tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(prepared, dest)
    return dest


def test_sigkill_during_epoch_two_then_rerun_gives_identical_weights(prepared, tmp_path):
    clean = copy_of(prepared, tmp_path, "clean")
    finish(stage("train", clean))

    killed = copy_of(prepared, tmp_path, "killed")
    proc = stage("train", killed)
    for line in proc.stdout:  # epoch 1 is done and checkpointed once its summary line appears
        if "epoch 1/3: train_loss" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "models").exists()  # nothing half-written
    assert (killed / "checkpoints" / "fold0.pt").exists()

    out = finish(stage("train", killed))
    assert "resuming from the checkpoint after epoch 1/3" in out
    assert "fold 0 epoch 1/3" not in out  # epoch 1 was not trained again
    assert (killed / "models/fold0.safetensors").read_bytes() == (clean / "models/fold0.safetensors").read_bytes()
    assert (killed / "metrics/train.json").read_text() == (clean / "metrics/train.json").read_text()


def test_truncated_checkpoint_is_detected_and_training_starts_over(prepared, tmp_path):
    work = copy_of(prepared, tmp_path, "truncated")
    finish(stage("train", work))
    reference = (work / "models/fold0.safetensors").read_bytes()
    ckpt = work / "checkpoints" / "fold0.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])

    out = finish(stage("train", work))
    assert "is unreadable" in out and "starting this fold from scratch" in out
    assert "pickle" not in out.lower() and "Traceback" not in out
    assert (work / "models/fold0.safetensors").read_bytes() == reference  # deterministic from scratch


def test_checkpoint_from_other_params_is_ignored(prepared, tmp_path):
    work = copy_of(prepared, tmp_path, "other_params")
    finish(stage("train", work))
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"]["lr"] = 0.001
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    out = finish(stage("train", work))
    assert "made with other code, params or data; ignoring it" in out
    assert "fold 0 epoch 1/3: train_loss" in out


def test_same_seed_gives_identical_data_and_split(prepared, tmp_path):
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(prepared / "params.yaml", again / "params.yaml")
    for name in ("download", "audit", "split"):
        finish(stage(name, again))
    for name in ("data/manifests/ham10000.csv", "data/splits/splits.csv", "metrics/split.json"):
        assert (again / name).read_bytes() == (prepared / name).read_bytes(), name


def test_a_stage_failing_midway_leaves_no_partial_outputs(prepared, tmp_path):
    work = copy_of(prepared, tmp_path, "failing")
    finish(stage("train", work))
    # Truncate the external image cache: evaluate fails after the internal set is already predicted.
    pixels = work / "data/cache/external/pixels.u8"
    pixels.write_bytes(pixels.read_bytes()[:1000])
    proc = stage("evaluate", work)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert "image cache data/cache/external is truncated" in out and "Traceback" not in out
    assert not (work / "metrics/eval.json").exists()
    assert not (work / "data/predictions").exists() and not (work / "plots/eval").exists()
    assert list(work.rglob(".*.tmp")) == []

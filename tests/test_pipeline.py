"""The whole pipeline, `dvc repro` in a temporary clone, on a tiny config."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from skinlesion.classes import CLASSES, ISIC_COLUMNS

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = {
    "data": {"demo_lesions": 70, "demo_external_images": 28, "img_size": 32},
    "split": {"n_folds": 3, "test_size": 0.2},
    "train": {"folds": [0, 1], "epochs": 1, "batch_size": 16},
    "evaluate": {"batch_size": 32},
    "gradcam": {"examples_per_kind": 1},
}


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The working tree's tracked and new files (not its outputs) in a fresh git repository."""
    dest = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if name == "dvc.lock" or name.startswith(("metrics/", "plots/")) or not (REPO / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "tiny"], dest)
    run([sys.executable, "-m", "dvc", "repro"], dest)
    return dest


def test_repro_writes_every_output(clone):
    assert sorted(p.name for p in (clone / "models").iterdir()) == [
        "fold0.json", "fold0.safetensors", "fold1.json", "fold1.safetensors"]
    card = json.loads((clone / "models/fold0.json").read_text())
    assert card["classes"] == list(CLASSES) and card["img_size"] == 32 and card["architecture"] == "efficientnet_b3"
    assert sorted(p.name for p in (clone / "plots/gradcam").iterdir()) == sorted(f"{c}.png" for c in CLASSES)
    curves = pd.read_csv(clone / "plots/train/fold1.csv")
    assert list(curves.columns[:5]) == ["epoch", "train_loss", "val_loss", "val_balanced_accuracy", "lr"]


def test_split_metrics_show_no_shared_lesion(clone):
    split = json.loads((clone / "metrics/split.json").read_text())
    assert split["lesions_shared_between_splits"] == 0
    assert set(split["splits"]) == {"test", "fold0", "fold1", "fold2"}
    assert sum(s["images"] for s in split["splits"].values()) == split["n_images"]


def test_eval_metrics_and_isic_predictions(clone):
    report = json.loads((clone / "metrics/eval.json").read_text())
    assert report["folds"] == [0, 1] and report["tta"] == "flips"
    for name in ("internal", "external"):
        scores = report[name]
        for key in ("balanced_accuracy", "macro_f1", "macro_auc"):
            assert 0.0 <= scores[key] <= 1.0, (name, key)
        assert set(scores["recall"]) == set(CLASSES)
        predictions = pd.read_csv(clone / f"data/predictions/{name}.csv")
        truth = pd.read_csv(clone / f"data/predictions/{name}_truth.csv")
        assert list(predictions.columns) == ["image", *ISIC_COLUMNS] == list(truth.columns)
        assert len(predictions) == len(truth) == scores["n_images"] > 0
        assert predictions[list(ISIC_COLUMNS)].sum(axis=1).to_numpy() == pytest.approx(1.0, abs=1e-4)
        assert (truth[list(ISIC_COLUMNS)].sum(axis=1) == 1).all()
    assert report["external"]["n_images"] == 28


def test_second_repro_runs_nothing(clone):
    out = run([sys.executable, "-m", "dvc", "repro"], clone).stdout
    assert "Running stage" not in out
    status = run([sys.executable, "-m", "dvc", "status"], clone).stdout
    assert "up to date" in status


def test_changing_tta_reruns_evaluate_but_never_train(clone):
    out = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "evaluate.tta=none"], clone).stdout
    assert "Running stage 'evaluate'" in out
    assert "Running stage 'train'" not in out and "Running stage 'download'" not in out
    report = json.loads((clone / "metrics/eval.json").read_text())
    assert report["tta"] == "none"

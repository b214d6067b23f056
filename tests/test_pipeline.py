"""The whole pipeline, `dvc repro` in a temporary clone, on a tiny config."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from pipeline_clone import env, make_clone, run

from skinlesion import metrics
from skinlesion.classes import CLASSES, ISIC_COLUMNS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    dest = make_clone(tmp_path_factory.mktemp("clone"))
    run([sys.executable, "-m", "dvc", "repro"], dest)
    return dest


def test_repro_writes_every_output(clone):
    assert sorted(p.name for p in (clone / "models").iterdir()) == [
        "fold0.json", "fold0.safetensors", "fold1.json", "fold1.safetensors"]
    card = json.loads((clone / "models/fold0.json").read_text())
    assert card["classes"] == list(CLASSES) and card["img_size"] == 32 and card["architecture"] == "efficientnet_b3"
    assert sorted(p.name for p in (clone / "plots/gradcam").iterdir()) == sorted(f"{c}.png" for c in CLASSES)
    for fold in (0, 1):  # DVCLive's live curves, one folder per fold, one step per epoch (the config trains 1)
        for name in ("train_loss", "val_loss", "val_balanced_accuracy", "lr", "images_per_second"):
            curve = pd.read_csv(clone / f"dvclive/fold{fold}/plots/metrics/{name}.tsv", sep="\t")
            assert list(curve.columns) == ["step", name] and curve["step"].tolist() == [1]
        assert json.loads((clone / f"dvclive/fold{fold}/metrics.json").read_text())["step"] == 1


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
        for key in ("balanced_accuracy", "macro_auc"):  # that intervals bracket their estimate: test_bootstrap.py
            assert 0.0 <= scores[f"{key}_ci95"]["low"] <= scores[f"{key}_ci95"]["high"] <= 1.0, (name, key)
        assert set(scores["per_class"]) == set(CLASSES)
        assert all(set(s) == set(metrics.PER_CLASS_KEYS) for s in scores["per_class"].values())
        assert set(scores["macro"]) == set(metrics.PER_CLASS_KEYS)
        assert set(scores["melanoma"]) == {"sensitivity_at_specificity_80", "sensitivity_at_specificity_90"}
        assert set(scores["malignant_vs_benign"]) == {"sensitivity", "specificity", "auc"}
        assert 0.0 <= scores["ece"]["calibrated"] <= 1.0 and 0.0 <= scores["ece"]["uncalibrated"] <= 1.0
        predictions = pd.read_csv(clone / f"data/predictions/{name}.csv")
        truth = pd.read_csv(clone / f"data/predictions/{name}_truth.csv")
        assert list(predictions.columns) == ["image", *ISIC_COLUMNS] == list(truth.columns)
        assert len(predictions) == len(truth) == scores["n_images"] > 0
        assert predictions[list(ISIC_COLUMNS)].sum(axis=1).to_numpy() == pytest.approx(1.0, abs=1e-4)
        assert (truth[list(ISIC_COLUMNS)].sum(axis=1) == 1).all()
    assert report["external"]["n_images"] == 28 == report["external"]["n_lesions"]
    assert report["temperatures"] == [json.loads((clone / f"models/fold{k}.json").read_text())["temperature"]
                                      for k in (0, 1)]


def test_gradcam_metrics_count_the_masks(clone):
    report = json.loads((clone / "metrics/gradcam.json").read_text())
    # every demo image has a mask; at 32 px the last feature map is 1x1, so the CAMs themselves are
    # constant and cam_in_lesion is undefined (None) here: its value is tested in test_explain.py.
    assert report["images_with_masks"] == report["images_scored"] == report["test_images"] > 0
    assert 0.0 < report["mask_area_share"]["mean"] < 1.0
    assert set(report) >= {"cam_in_lesion", "randomisation_rank_correlation"}


def test_plots_show_draws_every_plot_on_one_page(clone):
    out = clone / "plots_html"
    run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(out)], clone)
    page = (out / "index.html").read_text()
    for title in ("confusion", "confusion normalised by true class", "ROC per class", "precision-recall per class",
                  "reliability"):
        for name in ("Internal test set", "External set"):
            assert f'"{name}, {title}' in page, (name, title)
    for title in ("Training loss per fold", "Validation loss per fold", "Validation balanced accuracy per fold",
                  "Learning rate", "Training speed per fold"):
        assert title in page, title
    images = {p.name for p in (out / "static").iterdir()}
    assert {"workspace_plots_eval_reliability.png", "workspace_plots_eval_embedding.png"} <= images
    assert page.count('"title": {"text": "Training loss per fold') == 1  # each curve drawn once


def test_exp_show_lists_the_headline_numbers(clone):
    header = run([sys.executable, "-m", "dvc", "exp", "show", "--csv"], clone).stdout.splitlines()[0].split(",")
    for column in ("internal.balanced_accuracy", "internal.balanced_accuracy_ci95.low",
                   "internal.balanced_accuracy_ci95.high", "internal.macro_auc", "internal.ece.calibrated",
                   "mask_area_share.mean", "images_with_masks"):
        assert column in header, column


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


def live_steps(repo: Path) -> dict[str, int] | None:
    """The latest DVCLive step of each fold in the workspace row of `dvc exp show --json`, as a user
    would read it from a second terminal; None while exp show cannot answer."""
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=repo, env=env(),
                           capture_output=True, text=True, timeout=120)
    if shown.returncode != 0:
        return None
    workspace = next(row for row in json.loads(shown.stdout) if row["rev"] == "workspace")
    files = workspace["data"]["metrics"]
    return {name: files[name]["data"]["step"] for name in ("dvclive/fold0/metrics.json", "dvclive/fold1/metrics.json")
            if "step" in files.get(name, {}).get("data", {})}


def test_exp_show_follows_a_running_experiment_epoch_by_epoch(clone):
    epochs = 6
    run_ = subprocess.Popen([sys.executable, "-m", "dvc", "exp", "run", "-S", f"train.epochs={epochs}"], cwd=clone,
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        deadline = time.monotonic() + 600
        while run_.poll() is None and time.monotonic() < deadline:
            steps = live_steps(clone)
            if steps:
                seen.append(steps)
            time.sleep(0.5)
        out, _ = run_.communicate(timeout=60)
    finally:
        if run_.poll() is None:
            run_.kill()
    assert run_.returncode == 0, out[-3000:]
    assert "Running stage 'train'" in out
    assert any(0 < step < epochs for steps in seen for step in steps.values()), seen  # seen while it trained
    assert live_steps(clone) == {"dvclive/fold0/metrics.json": epochs, "dvclive/fold1/metrics.json": epochs}

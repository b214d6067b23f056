"""Our ISIC 2018 metrics agree with the official scorer (isic-challenge-scoring 5.6.0) on our own CSVs."""

import numpy as np
import pandas as pd
import pytest

from skinlesion import isic, metrics
from skinlesion.classes import CLASSES, ISIC_COLUMNS

# The scorer calls DataFrame.applymap, which pandas 3 removed; DataFrame.map is the same function.
if not hasattr(pd.DataFrame, "applymap"):
    pd.DataFrame.applymap = pd.DataFrame.map
scoring = pytest.importorskip("isic_challenge_scoring.classification")

TOLERANCE = 1e-6
pytestmark = pytest.mark.filterwarnings(  # the scorer's own use of pandas keywords deprecated in pandas 3
    "ignore:The inplace keyword:Warning", "ignore:The 'verify_integrity' keyword:Warning")


def awkward_predictions(seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """300 images with HAM10000-like imbalance (df: 2 images, vasc: 3), informative but imperfect
    probabilities, and every kind of tie the scorer treats specially: argmax ties (undecided),
    probabilities of exactly 0.5, scores shared between images, and rounding to 6 decimals."""
    rng = np.random.default_rng(seed)
    counts = {"akiec": 12, "bcc": 20, "bkl": 35, "df": 2, "mel": 38, "nv": 190, "vasc": 3}
    labels = np.concatenate([np.full(n, CLASSES.index(dx)) for dx, n in counts.items()])
    logits = rng.normal(size=(len(labels), len(CLASSES))) + 2.0 * np.eye(len(CLASSES))[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs[0] = [0.5, 0.5, 0, 0, 0, 0, 0]  # argmax tie at the 0.5 threshold
    probs[1] = [0.3, 0.3, 0.1, 0.1, 0.1, 0.05, 0.05]  # argmax tie below it
    probs[2:40:3] = np.round(probs[2:40:3], 1)  # coarse scores: many ties between images
    probs[50, :] = 0
    probs[50, CLASSES.index("nv")] = 0.5  # exactly 0.5 is not positive
    probs[51] = probs[52]  # identical rows
    frame = pd.DataFrame({"image_id": [f"ISIC_{i:07d}" for i in rng.permutation(len(labels))],
                          "dx": np.array(CLASSES)[labels]})
    return frame, probs


@pytest.mark.parametrize("seed", [0, 1])
def test_every_isic_metric_agrees_with_the_official_scorer(tmp_path, seed):
    frame, probs = awkward_predictions(seed)
    predictions, truth = isic.tables(frame, probs)
    predictions.to_csv(tmp_path / "predictions.csv", index=False)
    truth.to_csv(tmp_path / "truth.csv", index=False)

    official = scoring.ClassificationScore.from_file(tmp_path / "truth.csv", tmp_path / "predictions.csv",
                                                     scoring.ClassificationMetric.BALANCED_ACCURACY)
    image_ids, ours_probs = isic.read_predictions(tmp_path / "predictions.csv")
    truth_ids, y_true = isic.read_truth(tmp_path / "truth.csv")
    assert (image_ids == truth_ids).all()
    ours = metrics.classification_report(y_true, ours_probs)

    # The fixture does exercise the special cases.
    assert (metrics.decisions(ours_probs) == metrics.UNDECIDED).sum() >= 2
    assert (ours_probs == 0.5).any()

    assert ours["balanced_accuracy"] == pytest.approx(official.aggregate["balanced_accuracy"], abs=TOLERANCE)
    for dx in CLASSES:
        for key in metrics.PER_CLASS_KEYS:
            expected = official.per_category.loc[dx.upper(), key]
            assert ours["per_class"][dx][key] == pytest.approx(expected, abs=TOLERANCE), (dx, key)
    for key in metrics.PER_CLASS_KEYS:
        assert ours["macro"][key] == pytest.approx(official.macro_average[key], abs=TOLERANCE), key
    assert ours["macro_auc"] == pytest.approx(official.macro_average["auc"], abs=TOLERANCE)


def test_the_project_csvs_are_what_the_scorer_reads(tmp_path):
    frame, probs = awkward_predictions(2)
    predictions, truth = isic.tables(frame, probs)
    assert list(predictions.columns) == ["image", *ISIC_COLUMNS] == list(truth.columns)
    predictions.to_csv(tmp_path / "p.csv", index=False)
    truth.to_csv(tmp_path / "t.csv", index=False)
    # from_file validates columns, ids, ranges and one-hot truth, and raises ScoreError on any problem.
    scoring.ClassificationScore.from_file(tmp_path / "t.csv", tmp_path / "p.csv",
                                          scoring.ClassificationMetric.AUC)

import numpy as np
import pytest

from skinlesion.classes import CLASSES
from skinlesion.metrics import (
    UNDECIDED,
    balanced_accuracy,
    classification_report,
    decisions,
    malignant_vs_benign,
    partial_auc_above_sensitivity,
    per_class_recall,
    sensitivity_at_specificity,
    threshold_scores,
)


def onehot_probs(pred, n=7, confidence=0.9):
    probs = np.full((len(pred), n), (1 - confidence) / (n - 1))
    probs[np.arange(len(pred)), pred] = confidence
    return probs


def test_balanced_accuracy_is_mean_recall_over_present_classes():
    # class 0: 3 of 4 right; class 1: 1 of 2 right; other classes absent.
    y_true = np.array([0, 0, 0, 0, 1, 1])
    y_pred = np.array([0, 0, 0, 1, 1, 0])
    assert balanced_accuracy(y_true, y_pred) == pytest.approx((0.75 + 0.5) / 2)
    recall = per_class_recall(y_true, y_pred)
    assert recall["akiec"] == 0.75 and recall["bcc"] == 0.5 and recall["vasc"] is None


def test_balanced_accuracy_differs_from_accuracy_under_imbalance():
    # always predicting the majority class: accuracy 0.9, balanced accuracy 0.5.
    y_true = np.array([5] * 9 + [4])
    report = classification_report(y_true, onehot_probs(np.full(10, 5)))
    assert report["accuracy"] == pytest.approx(0.9)
    assert report["balanced_accuracy"] == pytest.approx(0.5)


def test_report_on_a_perfect_classifier():
    y_true = np.arange(7).repeat(3)
    report = classification_report(y_true, onehot_probs(y_true))
    assert report["balanced_accuracy"] == 1.0
    assert report["macro_f1"] == pytest.approx(1.0)
    assert report["macro_auc"] == pytest.approx(1.0)
    assert set(report["per_class"]) == set(CLASSES)
    assert all(v == pytest.approx(1.0) for scores in report["per_class"].values() for v in scores.values())


def test_auc_hand_computed():
    # class 0 scores: positives 0.8, 0.4; negatives 0.6, 0.2 -> 3 of 4 pairs ordered: AUC 0.75.
    y_true = np.array([0, 0, 1, 1])
    probs = np.zeros((4, 7))
    probs[:, 0] = [0.8, 0.4, 0.6, 0.2]
    probs[:, 1] = 1 - probs[:, 0]
    report = classification_report(y_true, probs)
    assert report["per_class"]["akiec"]["auc"] == pytest.approx(0.75)
    assert report["per_class"]["bcc"]["auc"] == pytest.approx(0.75)
    assert report["per_class"]["df"]["auc"] is None
    assert report["macro_auc"] == pytest.approx(0.75)


def test_macro_f1_hand_computed():
    # class 0: tp 1, fp 1, fn 1 -> F1 0.5; class 1: tp 1, fp 1, fn 1 -> F1 0.5.
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 1, 0])
    assert classification_report(y_true, onehot_probs(y_pred))["macro_f1"] == pytest.approx(0.5)


def test_a_tied_maximum_is_undecided_and_counts_as_wrong():
    probs = np.array([[0.4, 0.4, 0.2, 0, 0, 0, 0], [0.6, 0.4, 0, 0, 0, 0, 0]])
    assert decisions(probs).tolist() == [UNDECIDED, 0]
    # class 0 has two images: one undecided, one right -> recall 0.5.
    assert classification_report(np.array([0, 0]), probs)["balanced_accuracy"] == pytest.approx(0.5)


def test_threshold_scores_hand_computed_with_the_scorers_freebies():
    truth = np.array([True, True, False, False, False])
    predicted = np.array([True, False, True, False, False])
    assert threshold_scores(truth, predicted) == pytest.approx(
        {"sensitivity": 0.5, "specificity": 2 / 3, "ppv": 0.5, "npv": 2 / 3, "accuracy": 0.6})
    # never predicted positive: PPV has no denominator and scores 1.0, as the official scorer does.
    assert threshold_scores(truth, np.zeros(5, bool))["ppv"] == 1.0


def test_per_class_threshold_is_probability_above_half_not_argmax():
    # akiec's probability is the argmax in both rows, but only the second exceeds 0.5.
    probs = np.array([[0.45, 0.3, 0.25, 0, 0, 0, 0], [0.55, 0.45, 0, 0, 0, 0, 0]])
    report = classification_report(np.array([0, 0]), probs)
    assert report["per_class"]["akiec"]["sensitivity"] == pytest.approx(0.5)
    assert report["balanced_accuracy"] == 1.0


def test_partial_auc_above_80_percent_sensitivity_hand_computed():
    truth = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], bool)
    # perfect ranking: sensitivity is 1 over the whole false-positive range.
    assert partial_auc_above_sensitivity(truth, np.linspace(1, 0, 10)) == pytest.approx(1.0)
    # reversed ranking: sensitivity reaches 0.8 only at false-positive rate 1, an empty area.
    assert partial_auc_above_sensitivity(truth, np.linspace(0, 1, 10)) == pytest.approx(0.0)
    # ROC (0,0.6) (0.2,0.6), then a tie of 2 positives and 2 negatives: a diagonal to (0.6,1). Sensitivity
    # 0.8 is reached at fpr 0.4; the area from there: 0.2 * (0.8 + 1) / 2 + 0.4 * 1 = 0.58.
    scores = np.array([10, 9, 8, 5, 5, 7, 5, 5, 2, 1])
    assert partial_auc_above_sensitivity(truth, scores) == pytest.approx(0.58)


def test_sensitivity_at_specificity_takes_the_best_attainable_operating_point():
    # 10 negatives at 0..0.9, 4 positives: specificity >= 0.9 allows 1 false positive (threshold 0.85:
    # positives 0.95 and 0.85 -> 0.5); >= 0.8 allows 2 (threshold 0.75: also 0.75 -> 0.75).
    negatives = np.arange(10) / 10
    positives = np.array([0.95, 0.85, 0.75, 0.1])
    truth = np.r_[np.zeros(10, bool), np.ones(4, bool)]
    scores = np.r_[negatives, positives]
    assert sensitivity_at_specificity(truth, scores, 0.9) == pytest.approx(0.5)
    assert sensitivity_at_specificity(truth, scores, 0.8) == pytest.approx(0.75)
    assert sensitivity_at_specificity(truth[:10], scores[:10], 0.9) is None


def test_malignant_vs_benign_sums_the_malignant_probabilities():
    mel, bcc, nv = CLASSES.index("mel"), CLASSES.index("bcc"), CLASSES.index("nv")
    probs = np.zeros((3, 7))
    probs[0, [mel, bcc, nv]] = [0.3, 0.3, 0.4]  # nv is the argmax, yet 0.6 malignant: positive
    probs[1, [mel, nv]] = [0.2, 0.8]
    probs[2, [bcc, nv]] = [0.4, 0.6]  # malignant, missed
    scores = malignant_vs_benign(np.array([mel, nv, bcc]), probs)
    assert scores["sensitivity"] == pytest.approx(0.5) and scores["specificity"] == pytest.approx(1.0)

import numpy as np
import pytest

from skinlesion.classes import CLASSES
from skinlesion.metrics import balanced_accuracy, classification_report, per_class_recall


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
    assert set(report["recall"]) == set(CLASSES)


def test_auc_hand_computed():
    # class 0 scores: positives 0.8, 0.4; negatives 0.6, 0.2 -> 3 of 4 pairs ordered: AUC 0.75.
    y_true = np.array([0, 0, 1, 1])
    probs = np.zeros((4, 7))
    probs[:, 0] = [0.8, 0.4, 0.6, 0.2]
    probs[:, 1] = 1 - probs[:, 0]
    report = classification_report(y_true, probs)
    assert report["auc"]["akiec"] == pytest.approx(0.75)
    assert report["auc"]["bcc"] == pytest.approx(0.75)
    assert report["auc"]["df"] is None
    assert report["macro_auc"] == pytest.approx(0.75)


def test_macro_f1_hand_computed():
    # class 0: tp 1, fp 1, fn 1 -> F1 0.5; class 1: tp 1, fp 1, fn 1 -> F1 0.5.
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 1, 0])
    assert classification_report(y_true, onehot_probs(y_pred))["macro_f1"] == pytest.approx(0.5)

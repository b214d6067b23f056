"""Classification scores as the ISIC 2018 challenge (Task 3) computes them, plus two clinical views.

The conventions are those of the official scorer, isic-challenge-scoring 5.6.0, and
tests/test_isic_scoring.py checks the numbers against it:
- the multiclass decision is the argmax; an image whose highest probability is shared by several
  classes is *undecided* and counts as wrong (balanced accuracy, macro F1);
- the per-class threshold metrics (sensitivity, specificity, PPV, NPV, accuracy) are one-vs-rest
  with p > 0.5 as positive, not the argmax;
- a ratio with an empty denominator scores 1.0 (the scorer's "freebie"), e.g. the PPV of a class
  that is never predicted;
- AUC, partial AUC and average precision need both positives and negatives: None otherwise
  (the scorer stops with an error there), and macro averages skip the Nones.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score, roc_curve

from .classes import CLASSES, MALIGNANT

UNDECIDED = -1  # the decision for an image whose maximum probability is shared by several classes
THRESHOLD = 0.5  # the scorer's per-class decision threshold
PARTIAL_AUC_MIN_SENSITIVITY = 0.8  # ISIC 2018: ROC area above 80% sensitivity
MELANOMA_SPECIFICITIES = (0.8, 0.9)  # operating points a dermatologist would accept for screening
PER_CLASS_KEYS = ("sensitivity", "specificity", "ppv", "npv", "accuracy", "auc", "auc_sens_80", "ap")


def decisions(probs: np.ndarray) -> np.ndarray:
    """The argmax class per row, or UNDECIDED where the maximum is tied (as the official scorer)."""
    probs = np.asarray(probs)
    top = probs.max(axis=1, keepdims=True)
    pred = probs.argmax(axis=1)
    pred[(probs == top).sum(axis=1) > 1] = UNDECIDED
    return pred


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | None]:
    """Recall (sensitivity) per class; None for a class absent from y_true."""
    out: dict[str, float | None] = {}
    for k, dx in enumerate(CLASSES):
        n = int((y_true == k).sum())
        out[dx] = float(((y_pred == k) & (y_true == k)).sum() / n) if n else None
    return out


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in y_true (the ISIC 2018 headline metric)."""
    recalls = [r for r in per_class_recall(y_true, y_pred).values() if r is not None]
    return float(np.mean(recalls))


def _ratio(num: float, den: float) -> float:
    return 1.0 if den == 0 else float(num / den)


def threshold_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Sensitivity, specificity, PPV, NPV and accuracy of boolean decisions against boolean truth."""
    tp = int((truth & predicted).sum())
    tn = int((~truth & ~predicted).sum())
    fp = int((~truth & predicted).sum())
    fn = int((truth & ~predicted).sum())
    return {"sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp), "ppv": _ratio(tp, tp + fp),
            "npv": _ratio(tn, tn + fn), "accuracy": _ratio(tp + tn, tp + tn + fp + fn)}


def partial_auc_above_sensitivity(truth: np.ndarray, scores: np.ndarray,
                                  min_sensitivity: float = PARTIAL_AUC_MIN_SENSITIVITY) -> float:
    """The ROC area over the part of the curve where sensitivity >= min_sensitivity: 1 for a perfect
    ranking, 0 when that sensitivity needs every negative called positive.

    As the ISIC scorer: the full ROC curve, cut where it reaches min_sensitivity (linear interpolation),
    integrated over the false-positive rate (no McClish correction, unlike sklearn's max_fpr)."""
    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    i = int(tpr.searchsorted(min_sensitivity, side="left"))
    fpr_cut = np.interp(min_sensitivity, tpr[i - 1:i + 1], fpr[i - 1:i + 1])
    return float(np.trapezoid(np.r_[min_sensitivity, tpr[i:]], np.r_[fpr_cut, fpr[i:]]))


def sensitivity_at_specificity(truth: np.ndarray, scores: np.ndarray, specificity: float) -> float | None:
    """The highest sensitivity of any threshold whose specificity is at least `specificity` (an
    attainable operating point, no interpolation); None without positives and negatives."""
    if not 0 < truth.sum() < len(truth):
        return None
    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    return float(tpr[fpr <= 1.0 - specificity + 1e-12].max())


def _ranking(score_fn, truth: np.ndarray, scores: np.ndarray) -> float | None:
    return float(score_fn(truth, scores)) if 0 < truth.sum() < len(truth) else None


def per_class_scores(y_true: np.ndarray, probs: np.ndarray) -> dict[str, dict[str, float | None]]:
    """The ISIC 2018 per-class metrics, one-vs-rest, keyed by class then by PER_CLASS_KEYS."""
    out = {}
    for k, dx in enumerate(CLASSES):
        truth, scores = y_true == k, probs[:, k]
        out[dx] = {
            **threshold_scores(truth, scores > THRESHOLD),
            "auc": _ranking(roc_auc_score, truth, scores),
            "auc_sens_80": _ranking(partial_auc_above_sensitivity, truth, scores),
            "ap": _ranking(average_precision_score, truth, scores),
        }
    return out


def macro_average(per_class: dict[str, dict[str, float | None]]) -> dict[str, float | None]:
    """Mean over classes of each per-class metric, skipping classes where it is undefined."""
    out = {}
    for key in PER_CLASS_KEYS:
        values = [scores[key] for scores in per_class.values() if scores[key] is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


def malignant_vs_benign(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float | None]:
    """mel, bcc and akiec against the rest: the summed malignant probability, positive above 0.5."""
    malignant = np.array([dx in MALIGNANT for dx in CLASSES])
    truth, score = malignant[y_true], probs[:, malignant].sum(axis=1)
    scores = threshold_scores(truth, score > THRESHOLD)
    return {"sensitivity": scores["sensitivity"], "specificity": scores["specificity"],
            "auc": _ranking(roc_auc_score, truth, score)}


def classification_report(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Everything evaluate reports about one set's predictions (bootstrap and calibration aside)."""
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=float)
    y_pred = decisions(probs)
    per_class = per_class_scores(y_true, probs)
    macro = macro_average(per_class)
    present = sorted(set(y_true.tolist()))
    mel = CLASSES.index("mel")
    return {
        "n_images": int(len(y_true)),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "accuracy": float((y_true == y_pred).mean()),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "macro_auc": macro["auc"],
        "macro": macro,
        "per_class": per_class,
        "melanoma": {f"sensitivity_at_specificity_{round(s * 100)}":
                     sensitivity_at_specificity(y_true == mel, probs[:, mel], s) for s in MELANOMA_SPECIFICITIES},
        "malignant_vs_benign": malignant_vs_benign(y_true, probs),
    }

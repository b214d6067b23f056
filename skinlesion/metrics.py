"""Classification scores as in the ISIC 2018 challenge, Task 3 (headline: balanced accuracy)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

from .classes import CLASSES


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


def per_class_auc(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float | None]:
    """One-vs-rest ROC AUC per class; None where the class is absent or is the only one present."""
    out: dict[str, float | None] = {}
    for k, dx in enumerate(CLASSES):
        positive = y_true == k
        out[dx] = float(roc_auc_score(positive, probs[:, k])) if 0 < positive.sum() < len(y_true) else None
    return out


def classification_report(y_true: np.ndarray, probs: np.ndarray) -> dict:
    y_true = np.asarray(y_true)
    y_pred = probs.argmax(axis=1)
    aucs = per_class_auc(y_true, probs)
    present = sorted(set(y_true.tolist()))
    return {
        "n_images": int(len(y_true)),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "accuracy": float((y_true == y_pred).mean()),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "macro_auc": float(np.mean([a for a in aucs.values() if a is not None])),
        "recall": per_class_recall(y_true, y_pred),
        "auc": aucs,
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    return confusion_matrix(y_true, y_pred, labels=list(range(len(CLASSES))))

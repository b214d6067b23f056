"""95% confidence intervals by bootstrap resampling of lesions, not images.

Several images of one lesion are not independent evidence: resampling images would treat them as
such and give too narrow an interval. Each resample draws lesions with replacement; every image
of a drawn lesion enters with the lesion's draw count as its weight. The scores are computed for
all resamples at once as weighted sums (a matrix of weights, resamples x images), so 1,000
resamples of a few thousand images take seconds.
"""

from __future__ import annotations

import warnings

import numpy as np

from .classes import CLASSES
from .metrics import decisions

CHUNK = 250  # resamples per block: bounds memory at CHUNK x images weights


def lesion_weights(lesion_ids, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n_images) draw counts: each row resamples the lesions with replacement, and all
    images of one lesion share its count."""
    lesions, image_lesion = np.unique(np.asarray(lesion_ids, dtype=str), return_inverse=True)
    n = len(lesions)
    drawn = rng.integers(0, n, size=(n_resamples, n))
    offsets = (np.arange(n_resamples) * n)[:, None]
    counts = np.bincount((drawn + offsets).ravel(), minlength=n_resamples * n).reshape(n_resamples, n)
    return counts[:, image_lesion].astype(np.float64)


def weighted_balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Balanced accuracy per row of weights (mean recall over the classes with weight)."""
    onehot = np.eye(len(CLASSES))[y_true]
    hits = weights @ (onehot * (y_pred == y_true)[:, None])
    totals = weights @ onehot
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(np.where(totals > 0, hits / totals, np.nan), axis=1)


def weighted_accuracy(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Plain accuracy (the share of right decisions) per row of weights."""
    return (weights @ (y_pred == y_true).astype(np.float64)) / weights.sum(axis=1)


def weighted_auc(truth: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC per row of weights: the weighted Mann-Whitney statistic, ties counting one half
    (what sklearn's roc_auc_score gives with sample_weight); NaN without positives or negatives."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # tie groups
    w = weights[:, order]
    pos = np.add.reduceat(w * truth[order], starts, axis=1)
    neg = np.add.reduceat(w * ~truth[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each tie group
    pairs = (pos * (below + 0.5 * neg)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pairs / (pos.sum(axis=1) * neg.sum(axis=1))


def weighted_macro_auc(y_true: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    aucs = np.stack([weighted_auc(y_true == k, probs[:, k], weights) for k in range(probs.shape[1])], axis=1)
    return np.nanmean(aucs, axis=1)


def confidence_intervals(y_true, probs, lesion_ids, *, n_resamples: int, seed: int,
                         level: float = 0.95) -> dict[str, dict[str, float]]:
    """Percentile intervals for balanced accuracy, accuracy and macro AUC, resampling lesions."""
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=float)
    y_pred = decisions(probs)
    rng = np.random.default_rng(seed)
    bal_acc, acc, macro_auc = [], [], []
    for start in range(0, n_resamples, CHUNK):
        weights = lesion_weights(lesion_ids, min(CHUNK, n_resamples - start), rng)
        bal_acc.append(weighted_balanced_accuracy(y_true, y_pred, weights))
        acc.append(weighted_accuracy(y_true, y_pred, weights))
        with warnings.catch_warnings():  # a resample may lack every image of a rare class: NaN, skipped
            warnings.simplefilter("ignore", RuntimeWarning)
            macro_auc.append(weighted_macro_auc(y_true, probs, weights))
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    out = {}
    for name, values in (("balanced_accuracy", bal_acc), ("accuracy", acc), ("macro_auc", macro_auc)):
        low, high = np.nanpercentile(np.concatenate(values), tails)
        out[name] = {"low": float(low), "high": float(high)}
    return out

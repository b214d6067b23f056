"""95% confidence intervals by bootstrap resampling of lesions, not images.

Several images of one lesion are not independent evidence: resampling images would treat them as
such and give too narrow an interval. Each resample draws lesions with replacement; every image
of a drawn lesion enters with the lesion's draw count as its weight. The scores are computed for
all resamples at once as weighted sums (a matrix of weights, resamples x images), so 1,000
resamples of a few thousand images take seconds.

Two models scored on the same images are compared with a *paired* bootstrap: each resample draws
one set of lesions and scores both models on it, so the lesions that are hard (or easy) for both
cancel out of the difference, and its interval is narrower than two separate intervals suggest.
"""

from __future__ import annotations

import warnings

import numpy as np

from .calibration import ECE_BINS
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


def weighted_ece(y_true: np.ndarray, probs: np.ndarray, weights: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Top-label ECE per row of weights, with calibration.expected_calibration_error's bins
    ((k/bins, (k+1)/bins] of the top probability): the weighted |accuracy - confidence| summed over
    the bins, over the total weight."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    gaps = np.eye(bins)[which] * (correct - confidence)[:, None]  # (images, bins)
    return np.abs(weights @ gaps).sum(axis=1) / weights.sum(axis=1)


def resampled_scores(y_true: np.ndarray, probs: np.ndarray, weights: np.ndarray,
                     with_ece: bool = False) -> dict[str, np.ndarray]:
    """Balanced accuracy and macro AUC (and the top-label ECE) for each row of weights."""
    scores = {"balanced_accuracy": weighted_balanced_accuracy(y_true, decisions(probs), weights)}
    with warnings.catch_warnings():  # a resample may lack every image of a rare class: NaN, skipped
        warnings.simplefilter("ignore", RuntimeWarning)
        scores["macro_auc"] = weighted_macro_auc(y_true, probs, weights)
    if with_ece:
        scores["ece"] = weighted_ece(y_true, probs, weights)
    return scores


def _resamples(lesion_ids, n_resamples: int, seed: int):
    """The lesion weights of all resamples, CHUNK rows at a time, from one seeded generator."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, CHUNK):
        yield lesion_weights(lesion_ids, min(CHUNK, n_resamples - start), rng)


def _percentile_interval(values: list[np.ndarray], level: float) -> dict[str, float]:
    with warnings.catch_warnings():  # all NaN (an AUC on a set of one class): a NaN interval
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(np.concatenate(values), [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return {"low": float(low), "high": float(high)}


def confidence_intervals(y_true, probs, lesion_ids, *, n_resamples: int, seed: int,
                         level: float = 0.95) -> dict[str, dict[str, float]]:
    """Percentile intervals for balanced accuracy, accuracy and macro AUC, resampling lesions."""
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=float)
    y_pred = decisions(probs)
    values: dict[str, list[np.ndarray]] = {"balanced_accuracy": [], "accuracy": [], "macro_auc": []}
    for weights in _resamples(lesion_ids, n_resamples, seed):
        for name, scores in resampled_scores(y_true, probs, weights).items():
            values[name].append(scores)
        values["accuracy"].append(weighted_accuracy(y_true, y_pred, weights))
    return {name: _percentile_interval(v, level) for name, v in values.items()}


def paired_difference_intervals(y_true, probs_a, probs_b, lesion_ids, *, n_resamples: int, seed: int,
                                level: float = 0.95) -> dict[str, dict[str, float]]:
    """Percentile intervals of score(B) - score(A) for balanced accuracy, macro AUC and top-label ECE,
    where A and B are two models' probabilities for the same images (same rows, same truth) and
    every resample of lesions scores both. Identical predictions give exactly 0 in every resample."""
    y_true = np.asarray(y_true)
    probs_a, probs_b = np.asarray(probs_a, dtype=float), np.asarray(probs_b, dtype=float)
    if probs_a.shape != probs_b.shape or len(probs_a) != len(y_true):
        raise ValueError(f"paired scores need one row per image on both sides: {probs_a.shape}, "
                         f"{probs_b.shape}, {len(y_true)} labels")
    differences: dict[str, list[np.ndarray]] = {"balanced_accuracy": [], "macro_auc": [], "ece": []}
    for weights in _resamples(lesion_ids, n_resamples, seed):
        a = resampled_scores(y_true, probs_a, weights, with_ece=True)
        b = resampled_scores(y_true, probs_b, weights, with_ece=True)
        for name in differences:
            differences[name].append(b[name] - a[name])
    return {name: _percentile_interval(v, level) for name, v in differences.items()}

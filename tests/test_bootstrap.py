"""Confidence intervals resample lesions: the images of one lesion always move together."""

import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from skinlesion.bootstrap import (confidence_intervals, lesion_weights, weighted_accuracy, weighted_auc,
                                  weighted_balanced_accuracy)
from skinlesion.metrics import balanced_accuracy, decisions


def noisy_set(n_lesions: int, seed: int, images_per_lesion: int = 1):
    rng = np.random.default_rng(seed)
    y = np.arange(n_lesions) % 7
    logits = rng.normal(size=(n_lesions, 7)) + 1.5 * np.eye(7)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    lesions = np.array([f"L{i:04d}" for i in range(n_lesions)])
    rep = np.repeat(np.arange(n_lesions), images_per_lesion)
    return y[rep], probs[rep], lesions[rep]


def test_images_of_one_lesion_share_their_draw_count():
    lesions = np.array(["a", "b", "a", "c", "b", "a"])
    weights = lesion_weights(lesions, 500, np.random.default_rng(0))
    assert weights.shape == (500, 6)
    assert (weights[:, 0] == weights[:, 2]).all() and (weights[:, 0] == weights[:, 5]).all()
    assert (weights[:, 1] == weights[:, 4]).all()
    # each resample draws 3 lesions: the weights of one image per lesion sum to 3.
    assert (weights[:, [0, 1, 3]].sum(axis=1) == 3).all()
    assert weights[:, 0].mean() == pytest.approx(1.0, abs=0.15)


def test_duplicated_images_of_a_lesion_leave_the_interval_unchanged():
    # Five identical images per lesion carry no more evidence than one: a lesion-level bootstrap
    # gives the same interval; an image-level one would make it about sqrt(5) narrower.
    single = confidence_intervals(*noisy_set(140, 1), n_resamples=400, seed=3)
    fivefold = confidence_intervals(*noisy_set(140, 1, images_per_lesion=5), n_resamples=400, seed=3)
    for metric in ("balanced_accuracy", "macro_auc"):
        assert fivefold[metric]["low"] == pytest.approx(single[metric]["low"], abs=1e-9)
        assert fivefold[metric]["high"] == pytest.approx(single[metric]["high"], abs=1e-9)
    width = single["balanced_accuracy"]["high"] - single["balanced_accuracy"]["low"]
    assert 0.05 < width < 0.4


def test_the_interval_brackets_the_point_estimate():
    y, probs, lesions = noisy_set(300, 2)
    ci = confidence_intervals(y, probs, lesions, n_resamples=500, seed=0)
    point = balanced_accuracy(y, decisions(probs))
    assert ci["balanced_accuracy"]["low"] < point < ci["balanced_accuracy"]["high"]
    accuracy = float((decisions(probs) == y).mean())
    assert ci["accuracy"]["low"] < accuracy < ci["accuracy"]["high"]


def test_weighted_scores_match_sklearn_and_the_point_metrics():
    y, probs, _ = noisy_set(200, 4)
    probs = np.round(probs, 1)  # ties between images
    rng = np.random.default_rng(0)
    weights = rng.integers(0, 3, size=(3, len(y))).astype(float)
    weights[0] = 1.0
    for k in range(7):
        expected = [roc_auc_score(y == k, probs[:, k], sample_weight=w) for w in weights]
        assert weighted_auc(y == k, probs[:, k], weights) == pytest.approx(expected, abs=1e-12)
    assert weighted_balanced_accuracy(y, decisions(probs), weights[:1])[0] == pytest.approx(
        balanced_accuracy(y, decisions(probs)))
    hits = decisions(probs) == y
    assert weighted_accuracy(y, decisions(probs), weights) == pytest.approx(
        [np.average(hits, weights=w) for w in weights], abs=1e-12)


def test_a_thousand_resamples_of_a_large_set_take_seconds():
    y, probs, lesions = noisy_set(3000, 5)
    started = time.perf_counter()
    confidence_intervals(y, probs, lesions, n_resamples=1000, seed=0)
    assert time.perf_counter() - started < 20  # generous: shared CI machines; about 2 s on one core

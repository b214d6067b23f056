"""Calibration: temperature scaling (Guo et al. 2017), top-label ECE and reliability diagrams.

Focal loss and small data make a classifier's probabilities over- or under-confident. One scalar
temperature T, fitted per fold model on its own out-of-fold validation predictions (never on a test
set), rescales the logits to logits / T: each image's argmax under that model stays the same, while
the probabilities come to mean what they say. The ensemble averages the members' scaled probabilities.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

ECE_BINS = 15  # Guo et al. 2017, and most papers since: comparable numbers


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of `labels` under softmax(logits / T).

    Optimised over log T (L-BFGS), which keeps T positive and the problem well scaled."""
    logits_t = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=200, tolerance_grad=1e-10,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(logits_t / log_t.exp(), labels_t)
        loss.backward()
        return loss

    optimizer.step(nll)
    return float(log_t.detach().exp())


def calibrate_fold(val_logits: np.ndarray, val_labels: np.ndarray) -> dict:
    """What a fold's model card records: its temperature and its validation ECE before and after."""
    temperature = fit_temperature(val_logits, val_labels)
    return {"temperature": temperature, "val_ece": {
        "uncalibrated": expected_calibration_error(softmax(val_logits), val_labels),
        "calibrated": expected_calibration_error(softmax(val_logits, temperature), val_labels)}}


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return torch.as_tensor(np.asarray(logits), dtype=torch.float64).div(temperature).softmax(dim=1).numpy()


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """Per confidence bin ((k/bins, (k+1)/bins], top-label): mean confidence, accuracy and images.

    Empty bins are left out."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    table = pd.DataFrame({"bin": which, "confidence": confidence, "accuracy": correct.astype(float)})
    table = table.groupby("bin").agg(confidence=("confidence", "mean"), accuracy=("accuracy", "mean"),
                                     images=("accuracy", "size")).reset_index()
    table.insert(1, "bin_low", table["bin"] / bins)
    table.insert(2, "bin_high", (table["bin"] + 1) / bins)
    return table.drop(columns="bin")


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: the image-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    table = reliability(probs, labels, bins)
    return float((table["images"] * (table["accuracy"] - table["confidence"]).abs()).sum() / table["images"].sum())


@contextlib.contextmanager
def uncalibrated(model: nn.Module) -> Iterator[nn.Module]:
    """The model with every member's temperature set to 1 for the duration: its scores before scaling."""
    members = [m for m in model.modules() if hasattr(m, "temperature")]
    saved = [m.temperature for m in members]
    try:
        for m in members:
            m.temperature = 1.0
        yield model
    finally:
        for m, t in zip(members, saved):
            m.temperature = t

"""Class-weighted sampling, so that rare classes (df, vasc) are seen often enough to learn."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler


def sample_weights(labels: np.ndarray, n_classes: int, power: float = 1.0) -> np.ndarray:
    """Weight each sample by 1/count(class)**power, normalised to sum 1.

    power=1 draws every class equally often; power=0.5 (the default) only softens the imbalance,
    which overfits the few rare examples less.
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    per_class = np.zeros(n_classes)
    present = counts > 0
    per_class[present] = counts[present] ** -power
    weights = per_class[labels]
    return weights / weights.sum()


def weighted_sampler(labels: np.ndarray, n_classes: int, power: float, seed: int) -> WeightedRandomSampler:
    weights = torch.as_tensor(sample_weights(labels, n_classes, power), dtype=torch.double)
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)

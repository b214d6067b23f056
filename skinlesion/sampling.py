"""Class-weighted sampling, so that rare classes (df, vasc) are seen often enough to learn; and,
under DDP, each rank's disjoint share of one epoch sample."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler, WeightedRandomSampler


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


def undo_sampler_prior(probs: np.ndarray, train_counts: np.ndarray, power: float) -> np.ndarray:
    """Probabilities as if the model had been trained on the data's own class frequencies.

    The weighted sampler draws class c with probability proportional to count_c ** (1 - power), not
    count_c, so the model learns that prior: rare classes look more common than they are, which
    buys balanced accuracy and costs plain accuracy on a test set as imbalanced as the data. Bayes'
    rule moves the prior back: p'(c) proportional to p(c) * count_c ** power (Saerens et al. 2002).
    """
    counts = np.asarray(train_counts, dtype=float)
    shift = counts ** power  # a class never trained on stays at 0 (power 0: nothing changes)
    adjusted = np.asarray(probs, dtype=float) * shift
    return adjusted / adjusted.sum(axis=1, keepdims=True)


def weighted_sampler(labels: np.ndarray, n_classes: int, power: float, seed: int) -> WeightedRandomSampler:
    weights = torch.as_tensor(sample_weights(labels, n_classes, power), dtype=torch.double)
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)


class EpochShard(Sampler[int]):
    """One rank's share of an epoch sample that every rank draws identically.

    All ranks seed `base` (e.g. the weighted sampler) alike each epoch, so they draw the very same
    epoch sample, as one process would; rank r then takes positions r, r + world, r + 2 world, ...
    The shares are disjoint and together are the whole sample. The sample is first padded by
    wrapping around to a multiple of `world`, so that every rank takes the same number of steps
    (as torch's DistributedSampler does).
    """

    def __init__(self, base: Sampler[int], rank: int, world: int):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside a world of {world}")
        self.base, self.rank, self.world = base, rank, world

    @property
    def generator(self) -> torch.Generator:
        return self.base.generator

    def __len__(self) -> int:
        return math.ceil(len(self.base) / self.world)

    def __iter__(self) -> Iterator[int]:
        sample = list(self.base)
        padded = len(self) * self.world
        sample += (sample * math.ceil(padded / len(sample)))[: padded - len(sample)]
        return iter(sample[self.rank::self.world])


def sharded_sampler(base: Sampler[int], rank: int, world: int) -> Sampler[int]:
    """`base` itself in a single process (unchanged behaviour), else this rank's EpochShard of it."""
    return base if world == 1 else EpochShard(base, rank, world)

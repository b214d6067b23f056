"""A torch Dataset over manifest rows, read from the decode-once image cache, and its DataLoader settings."""

from __future__ import annotations

import multiprocessing
import random

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, get_worker_info

from .cache import ImageCache
from .classes import CLASSES
from .images import load_many
from .transforms import to_chw_uint8

# Batches each loader worker keeps ready. Two suffice when every worker outpaces its share of the
# model; more only holds more shared memory (17 MB per 64-image batch at 300 px).
PREFETCH_BATCHES = 2


class LesionImages(Dataset):
    """Yields (uint8 CHW image, class index) for the rows of `frame`.

    Images come from `cache` (memory-mapped, nothing decoded) or, without one, are decoded here once
    with the same geometry (shorter side at img_size) and kept in memory. Both give the same pixels.
    """

    def __init__(self, frame: pd.DataFrame, img_size: int, transform, cache: ImageCache | None = None):
        self.frame = frame.reset_index(drop=True)
        self.labels = np.array([CLASSES.index(dx) for dx in self.frame["dx"]], dtype=np.int64)
        self.transform = transform
        if cache is None:
            self.images = load_many(list(self.frame["path"]), img_size)
        else:
            self.images = cache.select(self.frame["image_id"])
        # The epoch's seed, in shared memory: persistent loader workers read it to reseed themselves.
        self._epoch_seed = multiprocessing.RawValue("q", -1)
        self._worker_epoch_seed = -1

    def set_epoch(self, seed: int) -> None:
        """Seed this epoch's augmentations. In this process (no loader workers) the transform is
        reseeded with `seed`; each loader worker reseeds itself from (seed, worker id) at its first
        item of the epoch. So a persistent worker follows the per-epoch seeding too, and a resumed
        run replays an epoch exactly. (Worker w gets batches w, w+W, ... of every epoch: DataLoader
        restarts its round robin at worker 0 each epoch.)"""
        self._epoch_seed.value = seed
        self.transform.set_random_seed(seed)

    def _reseed_worker(self, worker_id: int) -> None:
        seed = self._epoch_seed.value
        if seed < 0 or seed == self._worker_epoch_seed:
            return
        self._worker_epoch_seed = seed
        worker_seed = int(np.random.SeedSequence([seed, worker_id]).generate_state(1)[0])
        np.random.seed(worker_seed)
        random.seed(worker_seed)
        torch.manual_seed(worker_seed)
        self.transform.set_random_seed(worker_seed)

    def __len__(self) -> int:
        return len(self.images)

    def rgb(self, i: int) -> np.ndarray:
        """Image i after the transform, HxWx3 uint8: what the model gets, before the channel layout."""
        return self.transform(image=self.images[i])["image"]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        worker = get_worker_info()
        if worker is not None:
            self._reseed_worker(worker.id)
        return to_chw_uint8(self.rgb(i)), int(self.labels[i])


def loader_options(device: torch.device, workers: int) -> dict:
    """DataLoader keyword arguments: pinned memory for non-blocking copies to a GPU; with workers,
    keep them alive across epochs (no restart cost) and let each prefetch batches."""
    options = dict(num_workers=workers, pin_memory=device.type == "cuda")
    if workers > 0:
        options.update(persistent_workers=True, prefetch_factor=PREFETCH_BATCHES)
    return options

"""A torch Dataset over manifest rows, decoded once into memory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .classes import CLASSES
from .images import load_many
from .transforms import to_chw_uint8


class LesionImages(Dataset):
    """Yields (uint8 CHW image, class index). Every image is decoded once, with its shorter side at
    img_size, and kept in memory: decoding a 600x450 JPEG costs ~10x more than augmenting it."""

    def __init__(self, frame: pd.DataFrame, img_size: int, transform):
        self.frame = frame.reset_index(drop=True)
        self.labels = np.array([CLASSES.index(dx) for dx in self.frame["dx"]], dtype=np.int64)
        self.transform = transform
        self.images = load_many(list(self.frame["path"]), img_size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        rgb = self.transform(image=self.images[i])["image"]
        return to_chw_uint8(rgb), int(self.labels[i])

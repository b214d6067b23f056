"""A tiny manifest of random-noise images, one lesion per image, and a tiny training config: what
training tests feed a model when only the mechanics matter, not what it learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from committed_params import committed_params

from skinlesion.classes import CLASSES


def noise_image_frame(folder: Path, per_class: int) -> pd.DataFrame:
    """per_class 40x40 PNGs of every class (classes cycling), with image_id, path, lesion_id, dx."""
    rng = np.random.default_rng(0)
    rows = []
    for k, dx in enumerate(CLASSES * per_class):
        path = folder / f"{k}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        rows.append({"image_id": f"ISIC_{k:07d}", "path": str(path), "lesion_id": f"HAM_{k:07d}", "dx": dx})
    return pd.DataFrame(rows)


def noise_frame_in_three_folds(folder: Path) -> pd.DataFrame:
    """noise_image_frame with 3 images a class, in folds 0, 1 and 2."""
    frame = noise_image_frame(folder, per_class=3)
    frame["fold"] = frame.index % 3
    return frame


def tiny_training_params(epochs: int, **train):
    """The committed params, shrunk: 3 folds of timm's test_efficientnet (0.1 M parameters, a fast
    stand-in for the B3) at 32 px on the CPU."""
    return committed_params({"data": {"img_size": 32}, "model": {"name": "test_efficientnet"},
                             "train": {"folds": [0, 1, 2], "epochs": epochs, "batch_size": 4, "device": "cpu",
                                       "num_workers": 0, **train}})

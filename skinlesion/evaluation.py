"""Predicting a whole manifest with a fold ensemble and TTA."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .classes import CLASSES
from .cache import ImageCache
from .dataset import LesionImages, loader_options
from .device import autocast_dtype, channels_last, prepare_batch
from .transforms import eval_transform
from .tta import predict_proba


@torch.no_grad()
def predict_frame(model, frame: pd.DataFrame, *, img_size: int, tta: str, batch_size: int,
                  device: torch.device, desc: str = "predict", cache: ImageCache | None = None,
                  workers: int = 0) -> np.ndarray:
    """(N, 7) class probabilities for every row of `frame`, in the row order. Images come from
    `cache` when given (the same pixels as a fresh decode), else are decoded here. The path to the
    model is the training step's: uint8 batches, pinned and copied without blocking, normalised on
    the device, channels_last, bf16 on CUDA, all TTA views in one forward pass."""
    dataset = LesionImages(frame, img_size, eval_transform(img_size), cache)
    loader = DataLoader(dataset, batch_size=batch_size, **loader_options(device, workers))
    model = channels_last(model)
    amp_dtype = autocast_dtype(device)
    out = []
    for images, _ in tqdm(loader, desc=desc, leave=False):
        images = prepare_batch(images, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out.append(predict_proba(model, images, tta).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, len(CLASSES)))

"""Running a model over a manifest: the one loop from images to a model's outputs.

Training's validation, evaluation (ensemble_prediction.py: calibrated and raw probabilities and the
t-SNE features, with TTA) and Grad-CAM's input images all come through here, so they see the same
pixels the same way: the centre crops of `transforms.eval_transform`, uint8 batches pinned and
copied without blocking, normalised on the device (inside the model), channels_last, bf16 autocast
on CUDA. Nothing here knows about TTA or the ensemble, so training does not depend on them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .cache import ImageCache
from .dataset import LesionImages, loader_options
from .device import autocast_dtype, channels_last, prepare_batch
from .transforms import eval_transform


def eval_images(frame: pd.DataFrame, img_size: int, cache: ImageCache | None = None) -> LesionImages:
    """The rows of `frame` as a model sees them outside training: centre crops, in the row order.
    Images come from `cache` when given (the same pixels as a fresh decode), else are decoded here."""
    return LesionImages(frame, img_size, eval_transform(img_size), cache)


def eval_loader(images: LesionImages, batch_size: int, device: torch.device, workers: int = 0) -> DataLoader:
    return DataLoader(images, batch_size=batch_size, **loader_options(device, workers))


@torch.no_grad()
def run(model: nn.Module, loader: DataLoader, device: torch.device, forward: Callable, desc: str | None = None
        ) -> tuple[list, np.ndarray]:
    """`forward(model, batch)` on every batch of `loader`, the model in eval mode; the outputs per
    batch, and the labels. The one loop between a loader and a model outside a training step."""
    model = channels_last(model.eval())
    amp_dtype = autocast_dtype(device)
    outputs, labels = [], []
    for images, y in tqdm(loader, desc=desc, leave=False, disable=desc is None):
        images = prepare_batch(images, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs.append(forward(model, images))
        labels.append(y)
    return outputs, torch.cat(labels).numpy() if labels else np.zeros(0, dtype=np.int64)


def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(N, 7) float32 logits of one model, and the (N,) labels: training's validation pass."""
    logits, labels = run(model, loader, device, lambda m, x: m(x).float().cpu())
    return torch.cat(logits).numpy(), labels

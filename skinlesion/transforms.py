"""Augmentation (albumentations) and normalisation.

Images stay uint8 through the data loader; normalisation to float happens on the training device,
which moves four times fewer bytes to a GPU.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from .params import AugmentParams


def train_transform(img_size: int, aug: AugmentParams, seed: int) -> A.Compose:
    """Albumentations keeps its own random state, so it is seeded here (and per loader worker)."""
    return A.Compose([
        A.RandomResizedCrop(size=(img_size, img_size), scale=(aug.min_scale, 1.0), ratio=(0.75, 1.333)),
        A.HorizontalFlip(p=aug.hflip),
        A.VerticalFlip(p=aug.vflip),
        A.RandomRotate90(p=aug.rotate90),
        A.Affine(rotate=(-aug.rotate, aug.rotate), border_mode=cv2.BORDER_REFLECT_101, p=0.5 if aug.rotate else 0.0),
        A.ColorJitter(brightness=aug.brightness, contrast=aug.contrast, saturation=0.0, hue=aug.hue, p=0.8),
    ], seed=seed)


def eval_transform(img_size: int) -> A.Compose:
    return A.Compose([A.CenterCrop(height=img_size, width=img_size)])


def to_chw_uint8(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def normalize(batch_uint8: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 NCHW in [0, 255] -> float NCHW normalised with the model's mean and std."""
    mean_t = torch.tensor(mean, device=batch_uint8.device).view(1, -1, 1, 1) * 255.0
    std_t = torch.tensor(std, device=batch_uint8.device).view(1, -1, 1, 1) * 255.0
    return (batch_uint8.float() - mean_t) / std_t

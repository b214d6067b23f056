"""The model's input format, augmentation (albumentations) and normalisation.

Images stay uint8 through the data loader; normalisation to float happens on the training device,
which moves four times fewer bytes to a GPU.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from .images import center_crop, resize_short_side
from .params import AugmentParams

# What every path to a model feeds it (training, evaluation, Grad-CAM, the app), stated once, in the
# terms of a MONAI bundle's tensor format (network_data_format.inputs): the model card records it
# (model.save adds the size and the backbone's mean and std), and the functions below make it.
INPUT_FORMAT = {
    "type": "image",
    "format": "magnitude",
    "modality": "dermoscopy",
    "num_channels": 3,
    "channel_def": {"0": "red", "1": "green", "2": "blue"},
    "layout": "NCHW",  # channels_last in memory where it is faster: the same values
    "dtype": "uint8",
    "value_range": [0, 255],
    "is_patch_data": False,
    "resize": "shorter side to img_size, aspect ratio kept (INTER_AREA when shrinking, INTER_LINEAR when "
              "enlarging; a JPEG is first decoded at the smallest libjpeg scale that still covers img_size)",
    "crop": "the centre img_size x img_size square",
    "normalisation": "inside the model: (x / 255 - mean) / std per channel",
}


def resize_and_crop(image: np.ndarray, img_size: int) -> np.ndarray:
    """INPUT_FORMAT's geometry for any HxW(xC) array, an image or a lesion mask: the shorter side
    to img_size, then the centre square. (The decode-once cache stores the resized images, and
    `eval_transform` crops them.)"""
    return center_crop(resize_short_side(image, img_size), img_size)


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
    """INPUT_FORMAT's centre crop, on an image whose shorter side is already img_size."""
    return A.Compose([A.CenterCrop(height=img_size, width=img_size)])


def to_chw_uint8(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 RGB uint8 -> 3xHxW uint8: INPUT_FORMAT's channel layout."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def normalize(batch_uint8: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 NCHW in [0, 255] -> float NCHW normalised with the model's mean and std."""
    mean_t = torch.tensor(mean, device=batch_uint8.device).view(1, -1, 1, 1) * 255.0
    std_t = torch.tensor(std, device=batch_uint8.device).view(1, -1, 1, 1) * 255.0
    return (batch_uint8.float() - mean_t) / std_t

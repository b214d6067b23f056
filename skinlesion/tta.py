"""Test-time augmentation: all views of a batch go through the model in one forward pass."""

from __future__ import annotations

import torch
from torch import nn

TTA_VIEWS = {
    "none": ("original",),
    "flips": ("original", "hflip", "vflip"),
}

_VIEW = {
    "original": lambda x: x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
}


def predict_proba(model: nn.Module, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Class probabilities averaged over the TTA views. `model` returns logits (or log-probs)."""
    views = TTA_VIEWS[tta]
    stacked = torch.cat([_VIEW[v](images) for v in views])
    probs = model(stacked).float().softmax(dim=1)
    return probs.view(len(views), images.shape[0], -1).mean(dim=0)

"""Focal loss (Lin et al. 2017): down-weights easy examples so rare, hard classes count more."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FocalLoss(nn.Module):
    """mean_i  -alpha[y_i] * (1 - p_i)**gamma * log p_i, with p_i the softmax probability of the
    true class. Targets may be class indices or probability vectors (mixup); gamma=0 and no alpha
    is plain cross-entropy."""

    def __init__(self, gamma: float = 2.0, alpha: torch.Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)
        if target.dim() == 1:
            target = F.one_hot(target, logits.shape[1]).float()
        per_class = -target * (1.0 - log_p.exp()).pow(self.gamma) * log_p
        if self.alpha is not None:
            per_class = per_class * self.alpha
        return per_class.sum(dim=1).mean()

"""A models/ folder of fold models with random weights, written exactly as the train stage writes
one: for the app's tests and its latency benchmark, which need the app's own loading path (cards
and safetensors) but no training. Never used by a pipeline stage."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from . import model
from .classes import CLASSES


def write_random_models(folder: Path, architecture: str, img_size: int, folds: Iterable[int] = (0, 1),
                        seed: int = 0, fold_card: Callable[[int], dict] = lambda fold: {}, **card_extra) -> Path:
    """fold<k>.safetensors + fold<k>.json for each fold, each card completed by `card_extra` and by
    `fold_card(k)`. model.create zeroes the head (uniform predictions, zero CAM gradients), so the
    head is drawn at random here."""
    torch.manual_seed(seed)
    for fold in folds:
        net = model.create(architecture, pretrained=False)
        nn.init.normal_(net.backbone.get_classifier().weight, std=0.3)
        card = {"architecture": architecture, "classes": list(CLASSES), "img_size": img_size, "fold": fold,
                "data_source": "random weights", "seed": seed, "params": {}, "val_metrics": {}, **card_extra,
                **fold_card(fold)}
        model.save(net, card, folder, f"fold{fold}")
    return folder

"""The fold ensemble (or any model) over a manifest, with test-time augmentation: what evaluation
needs from one forward pass per view and member.

Every batch comes through prediction.run, the one loop between a loader and a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import tta as tta_views
from .cache import ImageCache
from .classes import CLASSES
from .model import FoldEnsemble, LesionClassifier, mean_softmax_log
from .prediction import eval_images, eval_loader, run
from .transforms import normalize


def predict_frame(model: nn.Module, frame: pd.DataFrame, *, img_size: int, tta: str, batch_size: int,
                  device: torch.device, desc: str | None = None, cache: ImageCache | None = None,
                  workers: int = 0) -> np.ndarray:
    """(N, 7) class probabilities of any model (a fold model or the ensemble) for every row of
    `frame`, in the row order, averaged over the TTA views (`tta.predict_proba`)."""
    loader = eval_loader(eval_images(frame, img_size, cache), batch_size, device, workers)
    probs, _ = run(model, loader, device, lambda m, x: tta_views.predict_proba(m, x, tta).float().cpu(), desc)
    return torch.cat(probs).numpy() if probs else np.zeros((0, len(CLASSES)))


def member_outputs(member: LesionClassifier, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A fold model's logits before temperature scaling, and its penultimate (pooled) features,
    from one forward pass. The model's own forward is backbone(normalize(images)) / temperature;
    timm's forward is forward_head(forward_features(x)), whose head ends in the classifier."""
    backbone = member.backbone
    features = backbone.forward_head(backbone.forward_features(normalize(images, member.mean, member.std)),
                                     pre_logits=True)
    return backbone.get_classifier()(features), features


def ensemble_log_probs(member_logits: Sequence[torch.Tensor], temperatures: Sequence[float]) -> torch.Tensor:
    """FoldEnsemble.forward's arithmetic on logits taken before temperature scaling: the mean of the
    members' softmax(logits / T), returned as its log. With every T at 1: the raw ensemble."""
    return mean_softmax_log([logits / t for logits, t in zip(member_logits, temperatures)])


@dataclass
class EnsemblePredictions:
    probabilities: np.ndarray  # (N, 7) calibrated: each member's temperature applied, as FoldEnsemble does
    uncalibrated: np.ndarray  # (N, 7) the same with every temperature at 1, for the ECE before scaling
    member_logits: np.ndarray  # (N, views, members, 7) float32, before temperature scaling
    features: np.ndarray  # (len(feature_rows), members * F) penultimate features of the unflipped view


def predict_ensemble(ensemble: FoldEnsemble, frame: pd.DataFrame, *, img_size: int, tta: str, batch_size: int,
                     device: torch.device, feature_rows: Sequence[int] = (), desc: str | None = None,
                     cache: ImageCache | None = None, workers: int = 0) -> EnsemblePredictions:
    """Every member over every TTA view of every row of `frame`, once. The probabilities are those of
    `predict_frame(ensemble, ...)` to the bit (the same operations in the same order, on the device,
    under the same autocast), calibrated and raw; the features are those of the rows at positions
    `feature_rows`, in that order."""
    temperatures = [float(m.temperature) for m in ensemble.members]
    ones = [1.0] * len(temperatures)
    wanted = np.zeros(len(frame), dtype=bool)
    wanted[np.asarray(feature_rows, dtype=np.int64)] = True
    seen = 0

    def forward(model: FoldEnsemble, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        nonlocal seen
        n = images.shape[0]
        calibrated, raw, logits = [], [], []
        for k, batch in enumerate(tta_views.view_batches(images, tta)):
            per_member, per_member_features = zip(*(member_outputs(m, batch) for m in model.members))
            calibrated.append(ensemble_log_probs(per_member, temperatures).float().softmax(dim=1))
            raw.append(ensemble_log_probs(per_member, ones).float().softmax(dim=1))
            logits.append(torch.stack(per_member, dim=1).float())  # (rows, members, 7)
            if k == 0:  # the first batch starts with the unflipped view
                keep = torch.from_numpy(wanted[seen:seen + n]).to(batch.device)
                features = torch.cat([f[:n][keep].float() for f in per_member_features], dim=1).cpu()
        seen += n
        views = torch.cat(logits).view(len(tta_views.TTA_VIEWS[tta]), n, *logits[0].shape[1:]).transpose(0, 1)
        return (tta_views.mean_over_views(calibrated, tta, n).float().cpu(),
                tta_views.mean_over_views(raw, tta, n).float().cpu(), views.cpu(), features)

    loader = eval_loader(eval_images(frame, img_size, cache), batch_size, device, workers)
    outputs, _ = run(ensemble, loader, device, forward, desc)
    if not outputs:
        empty = np.zeros((0, len(CLASSES)), dtype=np.float32)
        return EnsemblePredictions(empty, empty, np.zeros((0, len(tta_views.TTA_VIEWS[tta]), len(temperatures),
                                                          len(CLASSES)), dtype=np.float32), np.zeros((0, 0)))
    calibrated, raw, logits, features = (torch.cat(part).numpy() for part in zip(*outputs))
    # The features came in row order; give them in the order of feature_rows.
    order = np.searchsorted(np.flatnonzero(wanted), np.asarray(feature_rows, dtype=np.int64))
    return EnsemblePredictions(calibrated, raw, logits, features[order])

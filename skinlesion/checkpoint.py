"""Resumable training: one checkpoint per fold, written atomically at the end of every epoch.

Training re-seeds all randomness from (seed, epoch) at the start of every epoch, so a checkpoint
needs no RNG state: after a kill, the rerun replays the remaining epochs exactly as the
uninterrupted run would have. Checkpoints are read with `weights_only=True` (tensors and plain
data only), so a checkpoint file cannot run code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import timm
import torch

from . import atomic
from .dataset import LesionImages
from .params import Params, as_dict


def code_version() -> str:
    """The package's source and the versions of torch and timm: a resumed run must run the same
    code as the run it continues, or its weights would match neither the old code nor the new."""
    digest = hashlib.sha256(f"torch {torch.__version__} timm {timm.__version__}".encode())
    package = Path(__file__).parent
    for source in sorted(package.rglob("*.py")):  # subpackages too
        digest.update(source.relative_to(package).as_posix().encode() + source.read_bytes())
    return digest.hexdigest()


def fingerprint(params: Params, fold: int, train: LesionImages, val: LesionImages, world_size: int = 1) -> str:
    """What a checkpoint is valid for: the code, the params that shape training, the number of DDP
    processes (each draws its own share of a batch), and the labels and decoded pixels of every
    image (so regenerated or replaced images invalidate it too)."""
    relevant = {"code": code_version(), "seed": params.seed, "img_size": params.data.img_size, "fold": fold,
                "model": as_dict(params.model), "train": as_dict(params.train),
                "train_images": train.frame["image_id"].tolist(), "val_images": val.frame["image_id"].tolist(),
                "labels": train.labels.tolist() + val.labels.tolist()}
    if world_size > 1:  # absent for one process, whose fingerprint keeps its old form
        relevant["world_size"] = world_size
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode())
    for image in (*train.images, *val.images):
        digest.update(image.tobytes())
    return digest.hexdigest()


def save(path: Path, state: dict) -> None:
    with atomic.atomic_path(path) as tmp:
        torch.save(state, tmp)


def load(path: Path, expected_fingerprint: str) -> dict | None:
    """The checkpoint at `path`, or None (with the reason printed) if it is absent, unreadable or stale."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or corrupt: any of several unpickling and zip errors
        print(f"checkpoint {path} is unreadable ({type(e).__name__}); starting this fold from scratch", flush=True)
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != expected_fingerprint:
        print(f"checkpoint {path} was made with other code, params or data; ignoring it and starting from scratch",
              flush=True)
        return None
    return state

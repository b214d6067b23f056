"""The training loop for one cross-validation fold."""

from __future__ import annotations

import copy
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, RandomSampler, Subset
from tqdm import tqdm

from . import checkpoint, distributed
from . import model as model_lib
from .classes import CLASSES
from .cache import ImageCache
from .dataset import LesionImages, loader_options
from .device import autocast_dtype, channels_last, compile_model, pick_device, prepare_batch
from .losses import FocalLoss
from .metrics import balanced_accuracy
from .errors import ParamsError, TrainingError
from .params import Params
from .sampling import sharded_sampler, weighted_sampler
from .transforms import eval_transform, train_transform


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # numpy's legacy seed is 32-bit; epoch seeds (seed * 10,000 + epoch) can exceed it
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    """Each loader worker gets its own stream, derived from the loader's seeded generator; without
    this, every worker would copy one albumentations state and draw identical augmentations."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    torch.utils.data.get_worker_info().dataset.transform.set_random_seed(seed)


def default_workers(device: torch.device) -> int:
    # On the CPU both cores are busy with the model, and images are already decoded in memory.
    return 0 if device.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) - 1))


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear warmup to 1, then cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def mixup(images: torch.Tensor, targets: torch.Tensor, alpha: float, n_classes: int):
    """Mixup (Zhang et al. 2018) on float images and one-hot targets."""
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(images.shape[0], device=images.device)
    onehot = torch.nn.functional.one_hot(targets, n_classes).float()
    return lam * images + (1 - lam) * images[perm], lam * onehot + (1 - lam) * onehot[perm]


@dataclass
class FoldResult:
    model: model_lib.LesionClassifier  # with the best epoch's weights
    history: list[dict]
    best: dict
    val_logits: np.ndarray  # the best epoch's validation predictions, for the temperature fit
    val_labels: np.ndarray


@torch.no_grad()
def predict(model, loader, device, amp_dtype) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    logits, labels = [], []
    for images, y in loader:
        images = prepare_batch(images, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits.append(model(images).float().cpu())
        labels.append(y)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 10_000 + epoch


def _diverged(params: Params, fold: int, epoch: int, loss: float, step: int | None = None) -> TrainingError:
    """Training on a NaN or infinite loss would only write NaN weights; say what usually causes it."""
    p = params.train
    where = f"fold {fold} epoch {epoch}/{p.epochs}" + (f" step {step}" if step else "")
    alpha = "" if p.focal_alpha is None else f", or train.focal_alpha {list(p.focal_alpha)} (try null)"
    return TrainingError(
        f"{where}: the training loss is {loss}; stopping before this epoch is checkpointed or any model is "
        f"written. Usual causes: train.lr {p.lr} too high (try {p.lr / 10:g}){alpha}, or bad data "
        "(corrupt images or labels)")


def train_fold(train_frame: pd.DataFrame, val_frame: pd.DataFrame, params: Params, fold: int,
               checkpoint_path: Path | None = None, cache: ImageCache | None = None) -> FoldResult:
    """Train one fold; with `checkpoint_path`, save after every epoch and resume from a valid checkpoint.
    Images come from `cache` (the preprocess stage's decode-once cache), else are decoded here."""
    p, img_size = params.train, params.data.img_size
    seed = params.seed + fold
    seed_everything(seed)
    device = distributed.local_device(pick_device(p.device))
    world = distributed.world_size()
    amp_dtype = autocast_dtype(device)
    workers = default_workers(device) if p.num_workers < 0 else p.num_workers

    train_set = LesionImages(train_frame, img_size, train_transform(img_size, p.augment, seed), cache)
    val_set = LesionImages(val_frame, img_size, eval_transform(img_size), cache)
    sampler = weighted_sampler(train_set.labels, len(CLASSES), p.sampler_power, seed) if p.weighted_sampler else None
    if world > 1:  # every rank draws the same epoch sample and trains on its own disjoint share of it
        sampler = sharded_sampler(sampler or RandomSampler(train_set, generator=torch.Generator()),
                                  distributed.rank(), world)
        print(f"fold {fold}: rank {distributed.rank()} of world size {world} trains on {len(sampler)} of the "
              f"{len(sampler.base)} epoch samples, batches of {p.batch_size // world}", flush=True)
    # train.batch_size is the global batch: the same steps and learning-rate schedule on any world size.
    batch_size = p.batch_size // world
    # Workers persist across epochs; train_set.set_epoch reseeds them per epoch, for exact resumes.
    loader_args = dict(**loader_options(device, workers), worker_init_fn=_seed_worker)
    train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, shuffle=sampler is None,
                              drop_last=len(sampler or train_set) > batch_size,
                              generator=torch.Generator().manual_seed(seed), **loader_args)
    # Each rank predicts its share of the validation set; the shares are gathered before scoring.
    val_shard = val_set if world == 1 else Subset(val_set, distributed.shard_indices(len(val_set)))
    val_loader = DataLoader(val_shard, batch_size=p.batch_size * 2, **loader_args)

    model = model_lib.create(params.model.name, pretrained=params.model.pretrained,
                             drop_rate=params.model.drop_rate).to(device)
    model = channels_last(model)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if p.compile:
        compile_model(model)  # in place: the state_dict keys stay those of the plain model
    train_model = model  # what the training steps call: the model, or its DDP wrapper that averages gradients
    if world > 1:
        if p.sync_batchnorm:
            if device.type != "cuda":
                raise ParamsError("train.sync_batchnorm needs CUDA devices (torch's SyncBatchNorm); "
                                  "set it false on the CPU")
            model = timm.layers.convert_sync_batchnorm(model)
        train_model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    alpha = None if p.focal_alpha is None else torch.tensor(p.focal_alpha)
    criterion = FocalLoss(p.focal_gamma, alpha).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay,
                                  fused=device.type == "cuda")
    steps_per_epoch = len(train_loader)
    total = steps_per_epoch * p.epochs
    warmup = int(p.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, total))
    scaler = torch.amp.GradScaler(enabled=amp_dtype == torch.float16)

    history, best, best_state, start = [], {"val_balanced_accuracy": -1.0}, None, 1
    run_fingerprint = checkpoint.fingerprint(params, fold, train_set, val_set, world)
    # Rank 0 reads the checkpoint and hands it to the others: every rank resumes from the same state,
    # also on nodes that cannot see rank 0's disk.
    state = checkpoint.load(checkpoint_path, run_fingerprint) if checkpoint_path and distributed.is_main() else None
    state = distributed.broadcast_object(state)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history, best, best_state, start = state["history"], state["best"], state["best_state"], state["epoch"] + 1
        if distributed.is_main():
            print(f"fold {fold}: resuming from the checkpoint after epoch {state['epoch']}/{p.epochs}", flush=True)

    for epoch in range(start, p.epochs + 1):
        # All randomness of an epoch (sampling order, augmentation, dropout, mixup) follows from
        # (seed, epoch) alone, so a resumed run replays it exactly.
        s = epoch_seed(seed, epoch)
        own = distributed.rank_seed(s)  # s itself in one process; ranks augment and drop out independently
        seed_everything(own)
        train_set.set_epoch(own)
        train_loader.generator.manual_seed(own)
        if sampler is not None:  # seeded alike on every rank: one shared epoch sample
            sampler.generator.manual_seed(s)
        model.train()
        started, seen, loss_sum = time.perf_counter(), 0, 0.0
        bar = tqdm(train_loader, desc=f"fold {fold} epoch {epoch}/{p.epochs}", leave=False,
                   disable=not distributed.is_main())
        for step, (images, targets) in enumerate(bar, start=1):
            images = prepare_batch(images, device)
            targets = targets.to(device, non_blocking=True)
            if p.mixup_alpha > 0:
                images, targets = mixup(images.float(), targets, p.mixup_alpha, len(CLASSES))
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = criterion(train_model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step_loss = loss.item()
            if world == 1 and not math.isfinite(step_loss):  # with DDP, all ranks stop after the epoch (below)
                raise _diverged(params, fold, epoch, step_loss, step)
            seen += images.shape[0]
            loss_sum += step_loss * images.shape[0]
            bar.set_postfix(loss=f"{step_loss:.3f}")
        train_seconds = time.perf_counter() - started
        if world > 1:  # the epoch over all ranks, and one model (rank 0's BatchNorm statistics) to evaluate and keep
            loss_sum, seen = distributed.all_reduce([loss_sum, seen])
            (train_seconds,) = distributed.all_reduce([train_seconds], op="max")
            distributed.broadcast_buffers(model)
        if not math.isfinite(loss_sum):  # before anything of this epoch is saved
            raise _diverged(params, fold, epoch, loss_sum)

        logits, labels = predict(model, val_loader, device, amp_dtype)
        logits, labels = distributed.gather_shards(logits), distributed.gather_shards(labels)
        val_loss = criterion(torch.from_numpy(logits).to(device), torch.from_numpy(labels).to(device)).item()
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / seen,
            "val_loss": val_loss,
            "val_balanced_accuracy": balanced_accuracy(labels, logits.argmax(axis=1)),
            "lr": optimizer.param_groups[0]["lr"],
        }  # no timings: the tracked curves (and checkpoints) must come out byte-identical on a rerun
        history.append(row)
        if row["val_balanced_accuracy"] > best["val_balanced_accuracy"]:
            best = {"epoch": epoch, "val_balanced_accuracy": row["val_balanced_accuracy"], "val_loss": val_loss}
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        if checkpoint_path and distributed.is_main():
            checkpoint.save(checkpoint_path, {
                "fingerprint": run_fingerprint, "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "history": history, "best": best, "best_state": best_state})
        distributed.barrier()
        # Printed once the checkpoint is on disk: a run killed after this line resumes after this epoch.
        if distributed.is_main():
            print(f"fold {fold} epoch {epoch}/{p.epochs}: train_loss {row['train_loss']:.4f}  "
                  f"val_loss {val_loss:.4f}  val_bal_acc {row['val_balanced_accuracy']:.4f}  "
                  f"({seen / train_seconds:.1f} img/s)", flush=True)

    if world > 1 and p.sync_batchnorm:  # the saved model has plain BatchNorm, as everywhere else
        model = model_lib.create(params.model.name, pretrained=False, drop_rate=params.model.drop_rate)
    model.load_state_dict(best_state)
    # Recomputed rather than kept from that epoch, so that a resumed run has them too.
    val_logits, val_labels = predict(model.to(device), val_loader, device, amp_dtype)
    val_logits, val_labels = distributed.gather_shards(val_logits), distributed.gather_shards(val_labels)
    return FoldResult(model=model.cpu().to(memory_format=torch.contiguous_format).eval(), history=history, best=best,
                      val_logits=val_logits, val_labels=val_labels)

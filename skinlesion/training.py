"""Training one cross-validation fold, in timm's shape: `train_one_epoch` (the steps), `validate`
(the one prediction loop of prediction.py, plus the loss), and `train_fold`, which wires seeding,
the loaders, the model, DDP, resuming, the epochs and the checkpoints."""

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
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, RandomSampler, Sampler, Subset
from tqdm import tqdm

from . import checkpoint, distributed
from . import model as model_lib
from .cache import ImageCache
from .classes import CLASSES
from .dataset import LesionImages, loader_options
from .device import autocast_dtype, channels_last, compile_model as compile_in_place, pick_device, prepare_batch
from .losses import FocalLoss
from .metrics import balanced_accuracy
from .errors import ParamsError, TrainingError
from .params import Params
from .prediction import eval_images, predict_logits
from .sampling import sharded_sampler, weighted_sampler
from .training_log import FoldLog, NoLog
from .transforms import train_transform


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


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 10_000 + epoch


@dataclass
class FoldData:
    train_set: LesionImages
    val_set: LesionImages
    train_loader: DataLoader
    val_loader: DataLoader  # this rank's share of the validation set
    sampler: Sampler | None  # the weighted (and, under DDP, sharded) epoch sample; None: plain shuffling


def make_loaders(train_frame: pd.DataFrame, val_frame: pd.DataFrame, params: Params, seed: int, fold: int,
                 device: torch.device, cache: ImageCache | None) -> FoldData:
    """The fold's datasets and loaders; under DDP, this rank's share of the batches and of the validation set."""
    p, img_size, world = params.train, params.data.img_size, distributed.world_size()
    workers = default_workers(device) if p.num_workers < 0 else p.num_workers
    train_set = LesionImages(train_frame, img_size, train_transform(img_size, p.augment, seed), cache)
    val_set = eval_images(val_frame, img_size, cache)
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
    return FoldData(train_set, val_set, train_loader, val_loader, sampler)


def seed_epoch(data: FoldData, seed: int, epoch: int) -> None:
    """All randomness of an epoch (sampling order, augmentation, dropout, mixup) follows from
    (seed, epoch) alone, so a resumed run replays it exactly."""
    s = epoch_seed(seed, epoch)
    own = distributed.rank_seed(s)  # s itself in one process; ranks augment and drop out independently
    seed_everything(own)
    data.train_set.set_epoch(own)
    data.train_loader.generator.manual_seed(own)
    if data.sampler is not None:  # seeded alike on every rank: one shared epoch sample
        data.sampler.generator.manual_seed(s)


def compile_model(model: nn.Module, setting, device: torch.device) -> nn.Module:
    """The one place where the model is compiled: `setting` is train.compile."""
    return compile_in_place(model) if setting else model  # in place: the state_dict keys stay the plain model's


def build_model(params: Params, device: torch.device) -> tuple[model_lib.LesionClassifier, nn.Module]:
    """The fold's model on `device`, and what the training steps call: the model itself, or its DDP
    wrapper that averages gradients over the ranks."""
    p = params.train
    model = model_lib.create(params.model.name, pretrained=params.model.pretrained,
                             drop_rate=params.model.drop_rate).to(device)
    model = channels_last(model)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = compile_model(model, p.compile, device)
    if distributed.world_size() == 1:
        return model, model
    if p.sync_batchnorm:
        if device.type != "cuda":
            raise ParamsError("train.sync_batchnorm needs CUDA devices (torch's SyncBatchNorm); "
                              "set it false on the CPU")
        model = timm.layers.convert_sync_batchnorm(model)
    return model, DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def make_optimiser(model: nn.Module, p, device: torch.device, amp_dtype: torch.dtype | None, steps_per_epoch: int):
    """AdamW, its warmup-cosine schedule (stepped per batch) and the fp16 loss scaler (a no-op otherwise)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay,
                                  fused=device.type == "cuda")
    total, warmup = steps_per_epoch * p.epochs, int(p.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, total))
    return optimizer, scheduler, torch.amp.GradScaler(enabled=amp_dtype == torch.float16)


class NonFiniteLoss(ArithmeticError):
    """A training step's loss is NaN or infinite (train_fold turns it into a TrainingError)."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"step {step}: loss {loss}")
        self.step, self.loss = step, loss


def _diverged(params: Params, fold: int, epoch: int, loss: float, step: int | None = None) -> TrainingError:
    """Training on a NaN or infinite loss would only write NaN weights; say what usually causes it."""
    p = params.train
    where = f"fold {fold} epoch {epoch}/{p.epochs}" + (f" step {step}" if step else "")
    alpha = "" if p.focal_alpha is None else f", or train.focal_alpha {list(p.focal_alpha)} (try null)"
    return TrainingError(
        f"{where}: the training loss is {loss}; stopping before this epoch is checkpointed or any model is "
        f"written. Usual causes: train.lr {p.lr} too high (try {p.lr / 10:g}){alpha}, or bad data "
        "(corrupt images or labels)")


def train_one_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler, scaler: torch.amp.GradScaler, *, device: torch.device, amp_dtype: torch.dtype | None,
                    mixup_alpha: float, desc: str, grad_clip: float = 0.0, progress_bar: bool = True) -> dict:
    """One pass over this rank's training batches: the summed loss, the images seen, the seconds.
    In one process a non-finite loss stops at its step (NonFiniteLoss); under DDP every rank
    finishes the epoch and train_fold stops them together on the summed loss."""
    model.train()
    started, seen, loss_sum = time.perf_counter(), 0, 0.0
    bar = tqdm(loader, desc=desc, leave=False, disable=not (progress_bar and distributed.is_main()))
    for step, (images, targets) in enumerate(bar, start=1):
        images = prepare_batch(images, device)
        targets = targets.to(device, non_blocking=True)
        if mixup_alpha > 0:
            images, targets = mixup(images.float(), targets, mixup_alpha, len(CLASSES))
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)  # clip the true gradients, not fp16's scaled ones (a no-op otherwise)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step_loss = loss.item()
        if distributed.world_size() == 1 and not math.isfinite(step_loss):
            raise NonFiniteLoss(step, step_loss)
        seen += images.shape[0]
        loss_sum += step_loss * images.shape[0]
        bar.set_postfix(loss=f"{step_loss:.3f}")
    return {"loss_sum": loss_sum, "seen": seen, "seconds": time.perf_counter() - started}


def validate(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device
             ) -> tuple[np.ndarray, np.ndarray, float]:
    """Logits and labels of the whole validation set (every rank's share gathered), and the loss."""
    logits, labels = predict_logits(model, loader, device)
    logits, labels = distributed.gather_shards(logits), distributed.gather_shards(labels)
    loss = criterion(torch.from_numpy(logits).to(device), torch.from_numpy(labels).to(device)).item()
    return logits, labels, loss


def train_fold(train_frame: pd.DataFrame, val_frame: pd.DataFrame, params: Params, fold: int,
               checkpoint_path: Path | None = None, cache: ImageCache | None = None,
               progress_bar: bool = True, live_root: Path | None = None) -> FoldResult:
    """Train one fold; with `checkpoint_path`, save after every epoch and resume from a valid checkpoint.
    Images come from `cache` (the preprocess stage's decode-once cache), else are decoded here. With
    `live_root`, rank 0 logs every epoch live with DVCLive in live_root/fold<k> (training_log.py)."""
    p, seed, world = params.train, params.seed + fold, distributed.world_size()
    seed_everything(seed)
    device = distributed.local_device(pick_device(p.device))
    amp_dtype = autocast_dtype(device)
    data = make_loaders(train_frame, val_frame, params, seed, fold, device, cache)
    model, train_model = build_model(params, device)
    alpha = None if p.focal_alpha is None else torch.tensor(p.focal_alpha)
    criterion = FocalLoss(p.focal_gamma, alpha).to(device)
    optimizer, scheduler, scaler = make_optimiser(model, p, device, amp_dtype, len(data.train_loader))
    stateful = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}

    run_fingerprint = checkpoint.fingerprint(params, fold, data.train_set, data.val_set, world)
    progress = resume(checkpoint_path, run_fingerprint, stateful, fold, p.epochs)
    log = FoldLog(live_root, fold) if live_root is not None and distributed.is_main() else NoLog()
    log.replay(logged_rows(progress))
    for epoch in range(progress["epoch"] + 1, p.epochs + 1):
        seed_epoch(data, seed, epoch)
        try:
            trained = train_one_epoch(train_model, data.train_loader, criterion, optimizer, scheduler, scaler,
                                      device=device, amp_dtype=amp_dtype, mixup_alpha=p.mixup_alpha,
                                      desc=f"fold {fold} epoch {epoch}/{p.epochs}", grad_clip=p.grad_clip,
                                      progress_bar=progress_bar)
        except NonFiniteLoss as e:
            raise _diverged(params, fold, epoch, e.loss, e.step) from None
        loss_sum, seen, seconds = trained["loss_sum"], trained["seen"], trained["seconds"]
        if world > 1:  # the epoch over all ranks, and one model (rank 0's BatchNorm statistics) to evaluate and keep
            loss_sum, seen = distributed.all_reduce([loss_sum, seen])
            (seconds,) = distributed.all_reduce([seconds], op="max")
            distributed.broadcast_buffers(model)
        if not math.isfinite(loss_sum):  # before anything of this epoch is saved
            raise _diverged(params, fold, epoch, loss_sum)
        logits, labels, val_loss = validate(model, data.val_loader, criterion, device)
        row = {"epoch": epoch, "train_loss": loss_sum / seen, "val_loss": val_loss,
               "val_balanced_accuracy": balanced_accuracy(labels, logits.argmax(axis=1)),
               "lr": optimizer.param_groups[0]["lr"]}  # no timings: the curves (and checkpoints) must rerun byte-identical
        progress = end_epoch(progress, row, model, images_per_second=seen / seconds)
        if checkpoint_path and distributed.is_main():
            checkpoint.save(checkpoint_path, {"fingerprint": run_fingerprint, **progress,
                                              **{name: obj.state_dict() for name, obj in stateful.items()}})
        distributed.barrier()
        # Printed once the checkpoint is on disk: a run killed after this line resumes after this epoch.
        if distributed.is_main():
            print(f"fold {fold} epoch {epoch}/{p.epochs}: train_loss {row['train_loss']:.4f}  "
                  f"val_loss {val_loss:.4f}  val_bal_acc {row['val_balanced_accuracy']:.4f}  "
                  f"({seen / seconds:.1f} img/s)", flush=True)
        log.log_epoch(logged_rows(progress)[-1])  # after the checkpoint: a resumed run replays what it holds
    log.close()
    return best_epoch_result(model, progress, params, data.val_loader, criterion, device)


def resume(path: Path | None, fingerprint: str, stateful: dict, fold: int, epochs: int) -> dict:
    """The progress so far ({"epoch", "history", "best", "best_state"}): from a valid checkpoint at
    `path`, whose states are loaded into `stateful`'s objects, else from nothing. Rank 0 reads the
    checkpoint and hands it to the others: every rank resumes from the same state, also on nodes
    that cannot see rank 0's disk."""
    state = checkpoint.load(path, fingerprint) if path and distributed.is_main() else None
    state = distributed.broadcast_object(state)
    if state is None:
        return {"epoch": 0, "history": [], "images_per_second": [], "best": {"val_balanced_accuracy": -1.0},
                "best_state": None}
    for name, obj in stateful.items():
        obj.load_state_dict(state[name])
    if distributed.is_main():
        print(f"fold {fold}: resuming from the checkpoint after epoch {state['epoch']}/{epochs}", flush=True)
    return {key: state[key] for key in ("epoch", "history", "images_per_second", "best", "best_state")}


def logged_rows(progress: dict) -> list[dict]:
    """The epochs so far as the live log shows them: the history, with each epoch's speed."""
    return [{**row, "images_per_second": speed} for row, speed in zip(progress["history"], progress["images_per_second"],
                                                                      strict=True)]


def end_epoch(progress: dict, row: dict, model: nn.Module, images_per_second: float) -> dict:
    """The progress after an epoch: its row in the history, its speed (kept apart from the history,
    which reruns identically), and the model's weights if it is the best."""
    best, best_state = progress["best"], progress["best_state"]
    if row["val_balanced_accuracy"] > best["val_balanced_accuracy"]:
        best = {"epoch": row["epoch"], "val_balanced_accuracy": row["val_balanced_accuracy"],
                "val_loss": row["val_loss"]}
        best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
    return {"epoch": row["epoch"], "history": [*progress["history"], row],
            "images_per_second": [*progress["images_per_second"], images_per_second], "best": best,
            "best_state": best_state}


def best_epoch_result(model: nn.Module, progress: dict, params: Params, val_loader: DataLoader,
                      criterion: nn.Module, device: torch.device) -> FoldResult:
    """The model with the best epoch's weights, on the CPU, and its validation logits, recomputed
    rather than kept from that epoch, so that a resumed run has them too."""
    if distributed.world_size() > 1 and params.train.sync_batchnorm:  # the saved model has plain BatchNorm
        model = model_lib.create(params.model.name, pretrained=False, drop_rate=params.model.drop_rate)
    model.load_state_dict(progress["best_state"])
    val_logits, val_labels, _ = validate(model.to(device), val_loader, criterion, device)
    return FoldResult(model=model.cpu().to(memory_format=torch.contiguous_format).eval(), history=progress["history"],
                      best=progress["best"], val_logits=val_logits, val_labels=val_labels)

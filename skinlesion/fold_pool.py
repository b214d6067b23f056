"""Several CV folds trained at once on a CPU, each in its own process with one thread.

Why: at the demo's 48 px a training step is many small convolutions, which a second thread barely
speeds up, while a second process trains a second model at almost full speed. A model-only
training step of B3 (48 px, batch 32) on 2 cores gave 39.7 img/s with two threads against 67.9
img/s for two one-thread processes together with AVX2 kernels, and 63.7 against 83.6 with AVX-512
(benchmarks/fold_parallelism.py, BENCHMARKS.md). One thread per process also fixes the arithmetic: a fold's
weights no longer depend on how many cores the machine has (torch's default thread count).

Every fold is trained exactly as in one process (skinlesion.training.train_fold, with its own
checkpoint, so a killed run resumes per fold); the results come back to the caller in fold order.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pandas as pd
import torch

from .cache import ImageCache
from .errors import TrainingError
from .params import Params
from .training import FoldResult, train_fold

THREADS_PER_FOLD = 1


def _one_thread() -> None:
    torch.set_num_threads(THREADS_PER_FOLD)
    torch.set_num_interop_threads(THREADS_PER_FOLD)


def _train(train_frame: pd.DataFrame, val_frame: pd.DataFrame, params: Params, fold: int,
           checkpoint_path: Path | None, cache: ImageCache | None, live_root: Path | None) -> FoldResult:
    # Several progress bars on one terminal garble each other; the per-epoch lines still print.
    return train_fold(train_frame, val_frame, params, fold, checkpoint_path=checkpoint_path, cache=cache,
                      progress_bar=False, live_root=live_root)


def train_folds_in_parallel(jobs: Iterable[tuple[int, pd.DataFrame, pd.DataFrame]], params: Params, *,
                            processes: int, checkpoint_dir: Path | None = None,
                            cache: ImageCache | None = None, live_root: Path | None = None) -> dict[int, FoldResult]:
    """Train each (fold, train_frame, val_frame) in up to `processes` worker processes of one
    thread; {fold: FoldResult} in the jobs' order. Each fold logs live to its own folder of
    `live_root` (training_log.py), so folds trained at once never write the same file. The first
    fold that fails stops the others and its error is raised here."""
    jobs = list(jobs)
    # spawn, not fork: a forked child would inherit this process's torch thread pools and locks.
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(max_workers=max(1, min(processes, len(jobs))), mp_context=context,
                                   initializer=_one_thread)
    finished = False
    try:
        futures = {executor.submit(_train, train, val, params, fold,
                                   None if checkpoint_dir is None else Path(checkpoint_dir) / f"fold{fold}.pt",
                                   cache, live_root): fold
                   for fold, train, val in jobs}
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            raise failed[0].exception()
        results = {futures[f]: f.result() for f in futures}
        finished = True
        return results
    except BrokenProcessPool:
        raise TrainingError(
            f"a fold's training process died (killed, or out of memory: each of the {processes} processes "
            "holds its own model); lower train.parallel_folds, or set it to 1. Finished epochs are "
            "checkpointed: a rerun resumes") from None
    finally:
        if not finished:  # stop the folds still training after another failed (or on Ctrl-C)
            for child in multiprocessing.active_children():
                child.terminate()
        executor.shutdown(wait=True, cancel_futures=True)


def usable(params: Params, device: torch.device, world_size: int) -> bool:
    """Whether train.parallel_folds applies: more than one fold to train, on the CPU, in one process
    (a GPU trains one model at a time at full speed; DDP already spreads one fold over processes)."""
    return params.train.parallel_folds > 1 and len(params.train.folds) > 1 and device.type == "cpu" \
        and world_size == 1

"""Training throughput: the model alone against the whole pipeline, in one run on one device.

    python benchmarks/train_throughput.py                       # efficientnet_b3, 300 px, batch 64
    python benchmarks/train_throughput.py --compile --json      # with torch.compile; JSON last line

model-only: the training step (forward, focal loss, backward, fused AdamW step) on a synthetic uint8
batch that already sits on the device: the same model, batch size, precision (bf16 autocast on
CUDA) and memory format (channels_last) as training, like timm's benchmark.py. It is the
bound for training speed. end-to-end: the same step fed by the real training DataLoader (the
decode-once cache, the weighted sampler, augmentation in persistent workers, pinned memory,
non-blocking copies), and the loss read back every step as training does. The ratio says how close
the pipeline comes to the bound; the CPU figures say how busy the data loading keeps the machine.
"""

from __future__ import annotations

import time

import common
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from skinlesion import model as model_lib
from skinlesion.classes import CLASSES
from skinlesion.dataset import LesionImages, loader_options
from skinlesion.device import autocast_dtype, channels_last, compile_model, pick_device, prepare_batch
from skinlesion.losses import FocalLoss
from skinlesion.sampling import sample_weights
from skinlesion.training import default_workers, epoch_seed
from skinlesion.transforms import train_transform


def arguments(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--model", default="efficientnet_b3")
    p.add_argument("--img-size", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (cudnn autotuning, compile)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--workers", type=int, default=-1, help="loader workers; -1: what training picks")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (train.compile)")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.img_size, args.batch_size, args.steps, args.warmup = "test_efficientnet", 32, 8, 3, 1
        args.demo_lesions, args.demo_image_size = 8, "64x48"
    return args


class TrainStep:
    """One optimisation step exactly as skinlesion.training runs it."""

    def __init__(self, args, device: torch.device):
        self.device, self.amp_dtype = device, autocast_dtype(device)
        self.model = model_lib.create(args.model, pretrained=False, drop_rate=0.1).to(device)
        self.model = channels_last(self.model)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if args.compile:
            compile_model(self.model)
        self.model.train()
        self.criterion = FocalLoss(2.0).to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.01,
                                           fused=device.type == "cuda")
        self.scaler = torch.amp.GradScaler(enabled=self.amp_dtype == torch.float16)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss = self.criterion(self.model(images), targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss


def model_only(step: TrainStep, args, device: torch.device) -> float:
    shape = (args.batch_size, 3, args.img_size, args.img_size)
    images = prepare_batch(torch.randint(0, 256, shape, dtype=torch.uint8), device)
    targets = torch.randint(0, len(CLASSES), (args.batch_size,), device=device)
    for _ in range(args.warmup):
        step(images, targets)
    common.synchronize(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        step(images, targets)
    common.synchronize(device)
    return args.steps * args.batch_size / (time.perf_counter() - started)


def end_to_end(step: TrainStep, args, device: torch.device, frame, images, workers: int):
    data = LesionImages(frame, args.img_size, train_transform(args.img_size, common.training_augment(), seed=0), images)
    # The training sampler (class-weighted, with replacement), drawing one epoch as long as the whole
    # run: a small demo set then behaves like HAM10000, whose epochs are 150 steps of 64 images, rather
    # than paying the refill of the workers' queues at an epoch boundary every few steps.
    weights = torch.as_tensor(sample_weights(data.labels, len(CLASSES), 0.5), dtype=torch.double)
    sampler = WeightedRandomSampler(weights, (args.warmup + args.steps) * args.batch_size,
                                    generator=torch.Generator().manual_seed(0))
    loader = DataLoader(data, batch_size=args.batch_size, sampler=sampler, drop_last=True,
                        **loader_options(device, workers))
    data.set_epoch(epoch_seed(0, 1))
    stream, done = iter(loader), 0
    for batch in stream:  # warm up, including the workers' start
        _train_on(step, batch, device)
        done += 1
        if done == args.warmup:
            break
    common.synchronize(device)
    with common.CpuMeter() as cpu:
        started, done = time.perf_counter(), 0
        for batch in stream:
            _train_on(step, batch, device)
            done += 1
            if done == args.steps:
                break
        common.synchronize(device)
        seconds = time.perf_counter() - started
    return args.steps * args.batch_size / seconds, cpu.result, len(data)


def _train_on(step: TrainStep, batch, device: torch.device) -> None:
    images, targets = batch
    images = prepare_batch(images, device)
    targets = targets.to(device, non_blocking=True)
    step(images, targets).item()  # training reads the loss back every step


def main(argv=None) -> dict:
    args = arguments(argv)
    device = pick_device(args.device)
    workers = default_workers(device) if args.workers < 0 else args.workers
    torch.manual_seed(0)
    with common.dataset(args, args.img_size) as (frame, images, build_seconds):
        step = TrainStep(args, device)
        bound = model_only(step, args, device)
        e2e, cpu, n_images = end_to_end(step, args, device, frame, images, workers)
    amp = autocast_dtype(device)
    result = {
        "benchmark": "train_throughput", "model": args.model, "img_size": args.img_size,
        "batch_size": args.batch_size, "precision": "fp32" if amp is None else str(amp).removeprefix("torch."),
        "memory_format": "channels_last", "compile": args.compile,
        "workers": workers, "steps": args.steps, "images": n_images,
        "model_only_img_s": round(bound, 2), "end_to_end_img_s": round(e2e, 2), "ratio": round(e2e / bound, 3),
        "cpu_load": cpu, "cache_build_img_s": round(len(frame) / build_seconds, 1), **common.environment(device),
    }
    common.emit(f"train throughput: {args.model} at {args.img_size} px, batch {args.batch_size}", [
        ("device", result["device_name"]), ("precision", result["precision"]),
        ("memory format", result["memory_format"]), ("torch.compile", args.compile),
        ("loader workers", workers), ("model-only img/s", bound), ("end-to-end img/s", e2e),
        ("end-to-end / model-only", e2e / bound), ("CPU cores used (process + workers)", cpu["process_cores"]),
        ("machine busy share", cpu["machine_busy"]), ("load average (1 min)", cpu["loadavg_1min"]),
        ("torch", result["torch"]), ("date", result["date"]),
    ], result, args.json)
    return result


if __name__ == "__main__":
    main()

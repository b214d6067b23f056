"""Inference speed: batch-1 latency with and without TTA, batched throughput, and what TTA costs.

    python benchmarks/inference.py                        # efficientnet_b3 (random weights), 300 px
    python benchmarks/inference.py --models models        # the trained fold ensemble, at its card's size

Batch-1 latency: one uint8 image in host memory to class probabilities in host memory (the copy
to the device, normalisation, channels_last, bf16 on CUDA, the model, softmax, the copy back),
as the app serves one upload; p50 and p95 over --repeats calls. Batched throughput: batches of
--batch-size already on the device, as evaluation runs them; with TTA "flips" the three views of a
batch go through one forward pass, so the TTA cost ratio (time per image with flips / without)
should stay near 3 (target <= 3.1).
"""

from __future__ import annotations

import time
from pathlib import Path

import common
import numpy as np
import torch

from skinlesion import model as model_lib
from skinlesion.device import autocast_dtype, channels_last, pick_device, prepare_batch
from skinlesion.tta import predict_proba


def arguments(argv=None):
    p = common.parser(__doc__, data=False)
    p.add_argument("--model", default="efficientnet_b3")
    p.add_argument("--models", help="a folder of model cards (fold*.json): time that ensemble instead")
    p.add_argument("--img-size", type=int, default=300)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--repeats", type=int, default=50, help="timed batch-1 calls per TTA setting")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=10, help="timed batches per TTA setting")
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.img_size, args.repeats, args.batch_size, args.batches, args.warmup = (
            "test_efficientnet", 32, 5, 4, 2, 1)
    return args


@torch.inference_mode()
def latencies_ms(model, image: torch.Tensor, tta: str, device, repeats: int, warmup: int) -> np.ndarray:
    amp = autocast_dtype(device)
    times = []
    for k in range(warmup + repeats):
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            probs = predict_proba(model, prepare_batch(image, device), tta, one_pass=True).float().cpu()  # the app's path
        if k >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    assert probs.shape == (1, 7)
    return np.array(times)


@torch.inference_mode()
def batched_img_s(model, batch: torch.Tensor, tta: str, device, batches: int, warmup: int) -> float:
    amp = autocast_dtype(device)
    for k in range(warmup + batches):
        if k == warmup:
            common.synchronize(device)
            started = time.perf_counter()
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            predict_proba(model, batch, tta)
    common.synchronize(device)
    return batches * batch.shape[0] / (time.perf_counter() - started)


def load_model(args, device):
    if args.models:
        ensemble, cards = model_lib.load_ensemble(Path(args.models), device)
        args.img_size = cards[0]["img_size"]
        return ensemble, f"{len(cards)}-fold ensemble of {cards[0]['architecture']}"
    torch.manual_seed(0)
    return model_lib.create(args.model, pretrained=False).to(device).eval(), args.model


def main(argv=None) -> dict:
    args = arguments(argv)
    device = pick_device(args.device)
    net, name = load_model(args, device)
    net = channels_last(net)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    size = (3, args.img_size, args.img_size)
    one = torch.randint(0, 256, (1, *size), dtype=torch.uint8)
    batch = prepare_batch(torch.randint(0, 256, (args.batch_size, *size), dtype=torch.uint8), device)
    result = {"benchmark": "inference", "model": name, "img_size": args.img_size, "batch_size": args.batch_size,
              "precision": str(autocast_dtype(device) or "fp32").removeprefix("torch.")}
    rows = [("model", name), ("device", None)]
    with common.CpuMeter() as cpu:
        for tta in ("none", "flips"):
            ms = latencies_ms(net, one, tta, device, args.repeats, args.warmup)
            rate = batched_img_s(net, batch, tta, device, args.batches, args.warmup)
            result[f"latency_ms_p50_{tta}"] = round(float(np.percentile(ms, 50)), 2)
            result[f"latency_ms_p95_{tta}"] = round(float(np.percentile(ms, 95)), 2)
            result[f"batched_img_s_{tta}"] = round(rate, 1)
            rows += [(f"batch-1 latency, tta {tta}: p50 / p95 ms",
                      f"{result[f'latency_ms_p50_{tta}']} / {result[f'latency_ms_p95_{tta}']}"),
                     (f"batched img/s, tta {tta}", rate)]
    result["tta_cost_ratio"] = round(result["batched_img_s_none"] / result["batched_img_s_flips"], 3)
    result.update(cpu_load=cpu.result, **common.environment(device))
    rows[1] = ("device", result["device_name"])
    rows += [("TTA flips cost (time per image, x one view)", result["tta_cost_ratio"]),
             ("precision", result["precision"]), ("load average (1 min)", cpu.result["loadavg_1min"]),
             ("torch", result["torch"]), ("date", result["date"])]
    common.emit(f"inference: {name} at {args.img_size} px", rows, result, args.json)
    return result


if __name__ == "__main__":
    main()

"""Folds at once or threads: the training step of several one-thread processes against one process
with all the threads, on the CPU (what train.parallel_folds chooses between).

    python benchmarks/fold_parallelism.py                     # efficientnet_b3, 48 px, batch 32
    python benchmarks/fold_parallelism.py --processes 2 3 5   # more layouts

model-only training steps (train_throughput.py's step: forward, focal loss, backward, AdamW, in
channels_last) on a synthetic batch, in every layout: one process with --threads threads (default:
torch's default, one per core), one process with one thread, and for each N in --processes, N
processes of one thread running at once. Each process warms up, waits until all are ready, then
times its steps; a layout's throughput is the sum over its processes. The ratio of the best
parallel layout to the threaded one is the speed-up train.parallel_folds buys on this machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import common
import torch

from skinlesion.classes import CLASSES
from skinlesion.device import prepare_batch


def arguments(argv=None):
    p = common.parser(__doc__, data=False)
    p.add_argument("--model", default="efficientnet_b3")
    p.add_argument("--img-size", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--threads", type=int, default=0, help="threads of the one-process layout; 0: torch's default")
    p.add_argument("--processes", type=int, nargs="+", default=[2, 3], help="one-thread processes at once")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # a measuring process
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.img_size, args.batch_size, args.steps, args.warmup = "test_efficientnet", 32, 8, 3, 1
        args.processes = [2]
    return args


def worker(args) -> None:
    """One measuring process: --worker is its thread count. Prints 'ready', waits for a line on
    stdin, times its steps, prints its img/s."""
    # The step of train_throughput.py, imported here so that the parent process never builds a model.
    from train_throughput import TrainStep
    torch.set_num_threads(args.worker)
    torch.manual_seed(0)
    device = torch.device("cpu")
    args.compile = False
    step = TrainStep(args, device)
    shape = (args.batch_size, 3, args.img_size, args.img_size)
    images = prepare_batch(torch.randint(0, 256, shape, dtype=torch.uint8), device)
    targets = torch.randint(0, len(CLASSES), (args.batch_size,))
    for _ in range(args.warmup):
        step(images, targets)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    for _ in range(args.steps):
        step(images, targets)
    print(json.dumps({"img_s": args.steps * args.batch_size / (time.perf_counter() - started)}), flush=True)


def layout(args, processes: int, threads: int) -> dict:
    """`processes` workers of `threads` threads each, timed together: their img/s and the sum."""
    command = [sys.executable, __file__, "--worker", str(threads), "--model", args.model, "--img-size",
               str(args.img_size), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
               "--warmup", str(args.warmup)]
    workers = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for _ in range(processes)]
    try:
        for w in workers:
            if w.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a worker failed before its timed steps (exit {w.wait()})")
        for w in workers:  # all start their timed steps together
            w.stdin.write("go\n")
            w.stdin.flush()
        rates = [json.loads(w.stdout.readline())["img_s"] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
            w.wait()
    return {"processes": processes, "threads_each": threads, "img_s_each": [round(r, 2) for r in rates],
            "img_s_total": round(sum(rates), 2)}


def main(argv=None) -> dict:
    args = arguments(argv)
    if args.worker is not None:
        worker(args)
        return {}
    threads = args.threads or torch.get_num_threads()
    threaded, single = layout(args, 1, threads), layout(args, 1, 1)
    parallel = [layout(args, n, 1) for n in args.processes]
    best = max(parallel, key=lambda r: r["img_s_total"])
    result = {
        "benchmark": "fold_parallelism", "model": args.model, "img_size": args.img_size,
        "batch_size": args.batch_size, "steps": args.steps, "threaded": threaded, "one_thread": single,
        "parallel": parallel, "best_processes": best["processes"],
        "speedup_over_threaded": round(best["img_s_total"] / threaded["img_s_total"], 3),
        **common.environment(torch.device("cpu")),
    }
    rows = [("device", result["cpu_model"]), ("cores", result["cpu_count"]),
            (f"1 process x {threads} threads, img/s", threaded["img_s_total"]),
            ("1 process x 1 thread, img/s", single["img_s_total"])]
    rows += [(f"{r['processes']} processes x 1 thread, img/s (sum)", r["img_s_total"]) for r in parallel]
    rows += [("best parallel / threaded", result["speedup_over_threaded"]),
             ("torch", result["torch"]), ("date", result["date"])]
    common.emit(f"fold parallelism: {args.model} at {args.img_size} px, batch {args.batch_size}", rows,
                result, args.json)
    return result


if __name__ == "__main__":
    main()

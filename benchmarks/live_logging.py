"""What DVCLive's live curves cost a training epoch: the time of one FoldLog.log_epoch (five curves
appended, metrics.json rewritten, the step signalled), against the demo's epoch time.

    python benchmarks/live_logging.py                 # 200 epochs logged
    python benchmarks/live_logging.py --epoch-seconds 25

Also the one-off cost of opening a fold's log (DVCLive finds the DVC repository) and of replaying
a resumed fold's epochs. Run it from the repository root, inside the DVC repository, as the train
stage runs.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import common

from skinlesion import training_log


def arguments(argv=None):
    p = common.parser(__doc__, data=False)
    p.add_argument("--epochs", type=int, default=200, help="epochs logged (timed one by one)")
    p.add_argument("--epoch-seconds", type=float, default=0.0,
                   help="an epoch's training time, to state the overhead as a share of it (0: not stated)")
    args = p.parse_args(argv)
    if args.tiny:
        args.epochs = 5
    return args


def row(epoch: int) -> dict:
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch, "val_balanced_accuracy": 0.5,
            "lr": 1e-3, "images_per_second": 50.0}


def main(argv=None) -> dict:
    args = arguments(argv)
    with tempfile.TemporaryDirectory(prefix="skinlesion-live-", dir=common.REPO) as tmp:
        started = time.perf_counter()
        log = training_log.FoldLog(Path(tmp), 0)
        open_seconds = time.perf_counter() - started
        per_epoch = []
        for epoch in range(1, args.epochs + 1):
            started = time.perf_counter()
            log.log_epoch(row(epoch))
            per_epoch.append(time.perf_counter() - started)
        log.close()
        started = time.perf_counter()
        training_log.FoldLog(Path(tmp), 1).replay(row(e) for e in range(1, args.epochs + 1))
        replay_seconds = time.perf_counter() - started
    median_ms = statistics.median(per_epoch) * 1000
    result = {"benchmark": "live_logging", "epochs": args.epochs, "open_ms": round(open_seconds * 1000, 1),
              "log_epoch_median_ms": round(median_ms, 2),
              "log_epoch_p90_ms": round(sorted(per_epoch)[int(0.9 * (len(per_epoch) - 1))] * 1000, 2),
              "replay_ms_per_epoch": round(replay_seconds * 1000 / args.epochs, 2),
              "share_of_epoch_percent": round(100 * median_ms / 1000 / args.epoch_seconds, 4)
              if args.epoch_seconds else None,
              **common.environment(common.torch.device("cpu"))}
    rows = [("device", result["cpu_model"]), ("epochs logged", args.epochs),
            ("open a fold's log, ms", result["open_ms"]), ("log one epoch, median ms", result["log_epoch_median_ms"]),
            ("log one epoch, p90 ms", result["log_epoch_p90_ms"]),
            ("replay on resume, ms per epoch", result["replay_ms_per_epoch"])]
    if args.epoch_seconds:
        rows.append((f"share of a {args.epoch_seconds:g} s epoch, %", result["share_of_epoch_percent"]))
    rows += [("torch", result["torch"]), ("date", result["date"])]
    common.emit("live logging: DVCLive per epoch", rows, result, args.json)
    return result


if __name__ == "__main__":
    main()

"""Demo app latency: one upload to probabilities, to probabilities plus Grad-CAM, and under load.

    python benchmarks/app_latency.py                 # 2-fold efficientnet_b3 ensemble (random weights), 300 px
    python benchmarks/app_latency.py --folds 1       # one fold model
    python benchmarks/app_latency.py --models models # the trained ensemble, at its card's size

Random weights are enough: latency does not depend on their values, and the model goes through
the app's own loading path (cards and safetensors in a temporary models/ folder). The upload is a
600x450 JPEG (HAM10000's size) rendered by the demo data generator.

- predict: read_upload (decode, resize, crop) + Predictor.predict without CAM, TTA off.
- predict + Grad-CAM: the UI's whole predict function (Handlers.analyse): decode, the one forward
  pass, the CAMs of all seven classes, the overlay image. TTA off, and then on.
- concurrent: the app served on 127.0.0.1; --clients gradio_client clients send --requests
  requests each, all at once, to /predict (the HTTP upload, the queue, the PNG of the overlay).
  Targets on a 2-core CPU at 300 px: predict p50 <= 120 ms, predict + Grad-CAM p50 <= 400 ms,
  8 clients with no error and p95 <= 3 s.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path

import common
import numpy as np
import torch

from skinlesion.acquire.demo_data import render_demo_image
from skinlesion.classes import CLASSES
from skinlesion.random_models import write_random_models
from skinlesion.serve import app, predictor, uploads


def arguments(argv=None):
    p = common.parser(__doc__, data=False)
    p.add_argument("--model", default="efficientnet_b3")
    p.add_argument("--img-size", type=int, default=300)
    p.add_argument("--folds", type=int, default=2, help="fold models in the ensemble (the committed config trains 2)")
    p.add_argument("--models", help="a folder of model cards (fold*.json): time that ensemble instead")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per single-request measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=25, help="requests per client")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.img_size, args.folds, args.repeats, args.warmup, args.clients, args.requests = (
            "test_efficientnet", 32, 2, 3, 1, 2, 3)
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_ms(fn, repeats: int, warmup: int) -> np.ndarray:
    times = []
    for k in range(warmup + repeats):
        started = time.perf_counter()
        fn()
        if k >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    return np.array(times)


def predict(client, image: Path, tta: bool = False) -> dict:
    """One /predict request, as the page sends it; the probabilities by class code."""
    from gradio_client import handle_file

    return client.predict(handle_file(str(image)), tta, app.DEFAULT_OPACITY, api_name="/predict")[4]


def concurrent_ms(url: str, image: Path, clients: int, requests: int) -> tuple[np.ndarray, int, float]:
    """Latency of every request (ms), the number of failed requests, and the wall time (s)."""
    from gradio_client import Client

    pool = [Client(url, verbose=False) for _ in range(clients)]
    latencies, errors, lock = [], [], threading.Lock()
    start = threading.Barrier(clients)

    def one_client(client):
        start.wait()
        for _ in range(requests):
            began = time.perf_counter()
            try:
                probs = predict(client, image)
                assert len(probs) == len(CLASSES)
                with lock:
                    latencies.append((time.perf_counter() - began) * 1000)
            except Exception as e:  # counted and reported, never hidden
                with lock:
                    errors.append(repr(e))

    threads = [threading.Thread(target=one_client, args=(c,)) for c in pool]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    for e in errors[:3]:
        print("error:", e)
    return np.array(latencies), len(errors), wall


def stats(ms: np.ndarray) -> dict:
    if not len(ms):
        return {"p50": None, "p95": None, "n": 0}
    return {"p50": round(float(np.percentile(ms, 50)), 1), "p95": round(float(np.percentile(ms, 95)), 1), "n": len(ms)}


def main(argv=None) -> dict:
    args = arguments(argv)
    with tempfile.TemporaryDirectory(prefix="skinlesion-app-bench-") as tmp:
        tmp = Path(tmp)
        if args.models:
            repo = Path(args.models).resolve().parent
        else:
            repo = tmp / "project"
            write_random_models(repo / "models", args.model, args.img_size, range(args.folds),
                                data_source="random weights (benchmark)")
        served = predictor.load_served_model(repo=repo)
        name = f"{len(served.cards)}-fold ensemble of {served.cards[0]['architecture']}"
        image = tmp / "upload.jpg"
        render_demo_image("mel", seed=0, image_size=(600, 450))[0].save(image, quality=92)
        # The app reads only files its Gradio server received; this upload counts as one.
        handlers = app.Handlers(predictor.Predictor(served), app.ReceivedFiles(tmp, [{str(image)}]))
        upload = {"path": str(image)}
        size = served.img_size

        with common.CpuMeter() as cpu:
            decode = timed_ms(lambda: uploads.read_upload(image, size), args.repeats, args.warmup)
            rgb = uploads.read_upload(image, size).rgb
            model_only = timed_ms(lambda: handlers.predictor.predict(rgb, tta=False, cam=False),
                                  args.repeats, args.warmup)
            predict = timed_ms(lambda: handlers.predictor.predict(uploads.read_upload(image, size).rgb,
                                                                   tta=False, cam=False), args.repeats, args.warmup)
            with_cam = timed_ms(lambda: handlers.analyse(upload, False, app.DEFAULT_OPACITY), args.repeats, args.warmup)
            with_cam_tta = timed_ms(lambda: handlers.analyse(upload, True, app.DEFAULT_OPACITY),
                                    args.repeats, args.warmup)
            demo = app.build_app(served, tmp / "examples")
            app.launch(demo, host="127.0.0.1", port=free_port(), share=False, block=False)
            try:
                loaded, errors, wall = concurrent_ms(demo.local_url, image, args.clients, args.requests)
            finally:
                demo.close()

    result = {"benchmark": "app_latency", "model": name, "img_size": size, "torch_threads": torch.get_num_threads(),
              "decode_ms": stats(decode), "model_only_ms": stats(model_only), "predict_ms": stats(predict),
              "predict_gradcam_ms": stats(with_cam), "predict_gradcam_tta_ms": stats(with_cam_tta),
              "concurrent_ms": stats(loaded), "concurrent_errors": errors, "clients": args.clients,
              "requests_per_client": args.requests,
              "concurrent_requests_per_s": round(len(loaded) / wall, 2) if wall else None,
              "cpu_load": cpu.result, **common.environment(torch.device("cpu"))}
    fmt = lambda s: f"{s['p50']} / {s['p95']}"  # noqa: E731
    rows = [("model", name), ("device", result["device_name"]),
            ("decode + resize + crop, p50 / p95 ms", fmt(result["decode_ms"])),
            ("model only (no CAM), p50 / p95 ms", fmt(result["model_only_ms"])),
            ("predict (decode + model), p50 / p95 ms", fmt(result["predict_ms"])),
            ("predict + Grad-CAM (7 classes) + overlay, p50 / p95 ms", fmt(result["predict_gradcam_ms"])),
            ("  the same with TTA flips, p50 / p95 ms", fmt(result["predict_gradcam_tta_ms"])),
            (f"{args.clients} clients x {args.requests} requests over HTTP, p50 / p95 ms", fmt(result["concurrent_ms"])),
            ("  errors", errors), ("  requests/s", result["concurrent_requests_per_s"]),
            ("load average (1 min)", cpu.result["loadavg_1min"]), ("machine busy share", cpu.result["machine_busy"]),
            ("torch", result["torch"]), ("date", result["date"])]
    common.emit(f"app latency: {name} at {size} px", rows, result, args.json)
    return result


if __name__ == "__main__":
    main()

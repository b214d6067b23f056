"""Loader throughput: augmented images per second per worker, from the image cache and from raw JPEGs.

    python benchmarks/loader_throughput.py                  # 300 px, demo images of 600x450
    python benchmarks/loader_throughput.py --workers 4      # also the whole loader with 4 workers

"Per worker" is one process doing what one DataLoader worker does: read an image, augment it with
the training transform (random resized crop to img_size x img_size, flips, quarter turns, colour
jitter), convert it to a CHW uint8 tensor and collate batches. From the cache, reading is a slice
of a memory map; from raw JPEGs, every image is decoded and resized again (what a loader without
the preprocess stage would do each epoch). Targets: the cache >= 5x raw, and >= 800 img/s per
worker at 300 px.
"""

from __future__ import annotations

import time

import common
import torch
from torch.utils.data import DataLoader, Dataset

from skinlesion.dataset import LesionImages, loader_options
from skinlesion.images import load_rgb
from skinlesion.transforms import to_chw_uint8, train_transform


def arguments(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--img-size", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    p.add_argument("--workers", type=int, default=0, help="also measure the loader with this many workers")
    args = p.parse_args(argv)
    if args.tiny:
        args.img_size, args.batch_size, args.seconds = 32, 8, 0.3
        args.demo_lesions, args.demo_image_size = 12, "64x48"
    return args


class RawJpegImages(Dataset):
    """The same rows and transform, but each image decoded from its JPEG on every read."""

    def __init__(self, frame, img_size: int, transform):
        self.img_size, self.transform = img_size, transform
        self.paths = list(frame["path"])

    def set_epoch(self, seed: int) -> None:
        self.transform.set_random_seed(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        rgb = self.transform(image=load_rgb(self.paths[i], self.img_size))["image"]
        return to_chw_uint8(rgb), 0


def images_per_second(data, batch_size: int, seconds: float, workers: int = 0) -> float:
    """Whole passes over the data until `seconds` have passed; the workers' start is not timed."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0),
                        **loader_options(torch.device("cpu"), workers))
    epoch = 0
    if workers:
        data.set_epoch(epoch)
        next(iter(loader))  # start the workers
    started, n = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        epoch += 1
        data.set_epoch(epoch)
        for images, _ in loader:
            n += images.shape[0]
    return n / (time.perf_counter() - started)


def main(argv=None) -> dict:
    args = arguments(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one worker is one core: keep torch's collate from spreading out
    try:
        return measure(args)
    finally:
        torch.set_num_threads(threads)


def measure(args) -> dict:
    transform = train_transform(args.img_size, common.training_augment(), seed=0)
    with common.dataset(args, args.img_size) as (frame, images, build_seconds):
        cached = LesionImages(frame, args.img_size, transform, images)
        raw = RawJpegImages(frame, args.img_size, transform)
        with common.CpuMeter() as cpu:
            cache_rate = images_per_second(cached, args.batch_size, args.seconds)
            raw_rate = images_per_second(raw, args.batch_size, args.seconds)
        many = images_per_second(cached, args.batch_size, args.seconds, args.workers) if args.workers else None
        sizes = {f"{h}x{w}" for h, w in (images[i].shape[:2] for i in frame["image_id"][:50])}
    result = {
        "benchmark": "loader_throughput", "img_size": args.img_size, "batch_size": args.batch_size,
        "images": len(frame), "cached_image_shapes": sorted(sizes),
        "cache_img_s_per_worker": round(cache_rate, 1), "raw_img_s_per_worker": round(raw_rate, 1),
        "ratio": round(cache_rate / raw_rate, 2), "workers": args.workers,
        "cache_img_s_all_workers": None if many is None else round(many, 1),
        "cache_build_img_s": round(len(frame) / build_seconds, 1), "cpu_load": cpu.result,
        **common.environment(torch.device("cpu")),
    }
    rows = [("images (cached shapes)", f"{len(frame)} ({', '.join(sorted(sizes)[:3])})"),
            ("from the cache, img/s per worker", cache_rate), ("from raw JPEGs, img/s per worker", raw_rate),
            ("cache / raw", cache_rate / raw_rate)]
    if many is not None:
        rows.append((f"from the cache, {args.workers} worker(s) together, img/s", many))
    rows += [("cache build (decode once), img/s", result["cache_build_img_s"]),
             ("load average (1 min)", cpu.result["loadavg_1min"]), ("CPU", result["cpu_model"]),
             ("torch", result["torch"]), ("date", result["date"])]
    common.emit(f"loader throughput: augmented {args.img_size}x{args.img_size} images, batch {args.batch_size}",
                rows, result, args.json)
    return result


if __name__ == "__main__":
    main()

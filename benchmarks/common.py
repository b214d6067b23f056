"""What the benchmarks share: demo data, the environment they ran in, CPU load, and the output.

Every benchmark prints a table for people and, with --json, one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import torch  # noqa: E402

from skinlesion import cache, manifest  # noqa: E402
from skinlesion.acquire import demo_data, sources  # noqa: E402
from skinlesion.params import AugmentParams, load_params  # noqa: E402


def parser(doc: str | None, data: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (what the tests use)")
    if not data:
        return p
    p.add_argument("--manifest", help="a canonical manifest, e.g. data/manifests/ham10000.csv (run from the repository root, where its paths start); default: demo data made in a temporary folder")
    p.add_argument("--demo-lesions", type=int, default=60, help="demo lesions to generate (~1.9 images each)")
    p.add_argument("--demo-image-size", default="600x450", help="demo image size WxH (HAM10000's is 600x450)")
    return p


def training_augment() -> AugmentParams:
    """train.augment of the committed params.yaml: the augmentation that training runs."""
    return load_params(REPO / "params.yaml").train.augment


def image_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


@contextmanager
def dataset(args, img_size: int):
    """(manifest frame, image cache at img_size, cache build seconds): demo data in a temporary
    folder unless --manifest names one."""
    with tempfile.TemporaryDirectory(prefix="skinlesion-bench-") as tmp:
        tmp = Path(tmp)
        if args.manifest:
            frame = manifest.read(args.manifest)
        else:
            demo_data.write_demo_ham10000(tmp / "ham10000", n_lesions=args.demo_lesions, seed=0,
                                          image_size=image_size(args.demo_image_size))
            frame = sources.read_ham10000(tmp / "ham10000")
            frame["path"] = [str(Path(p).resolve()) for p in frame["path"]]
        started = time.perf_counter()
        cache.build(tmp / "cache", frame, img_size)
        build_seconds = time.perf_counter() - started
        yield frame.reset_index(drop=True), cache.ImageCache(tmp / "cache", img_size), build_seconds


def environment(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} torch threads"
    return {
        "device": str(device), "device_name": name, "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class CpuMeter:
    """CPU use over a timed window: cores busy in this process and its loader workers, the whole
    machine's busy share, and the 1-minute load average (other users' work shows up there)."""

    def __enter__(self):
        self.wall = time.perf_counter()
        self.tree = _tree_cpu_seconds()
        self.system = _system_busy_idle()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        tree, system = _tree_cpu_seconds(), _system_busy_idle()
        self.result = {"process_cores": None if tree is None or self.tree is None
                       else round((tree - self.tree) / self.wall, 2),
                       "machine_busy": None, "loadavg_1min": round(os.getloadavg()[0], 2)
                       if hasattr(os, "getloadavg") else None}
        if system and self.system:
            busy, idle = system[0] - self.system[0], system[1] - self.system[1]
            self.result["machine_busy"] = round(busy / max(1e-9, busy + idle), 3)
        return False


def _tree_cpu_seconds() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # a worker that just exited
            pass
    return total


def _system_busy_idle() -> tuple[float, float] | None:
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields[:8]) - idle, idle


def emit(title: str, rows: list[tuple[str, object]], result: dict, as_json: bool) -> None:
    """The table, then (with --json) the result as the very last line."""
    width = max(len(k) for k, _ in rows)
    print(title)
    print("-" * len(title))
    for key, value in rows:
        print(f"{key:<{width}}  {_fmt(value)}")
    sys.stdout.flush()
    if as_json:
        print(json.dumps(result, sort_keys=False), flush=True)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

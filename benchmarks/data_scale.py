"""The data stages at HAM10000 scale: wall time and peak memory of download, audit, split and preprocess.

    python benchmarks/data_scale.py --images 10015                  # the real size (generating takes ~25 min)
    python benchmarks/data_scale.py --images 1000 --json            # a tenth, to see how each stage grows
    python benchmarks/data_scale.py --images 10015 --data-dir DIR   # keep the generated data in DIR for a rerun

Generates demo data in the real formats with the real proportions: a HAM10000 in the Kaggle layout
at 600x450 whose lesions, classes and images per lesion follow the real metadata
(demo_data.ham10000_plan: 10,015 images of 7,470 lesions at full scale), and a unified external
set of 8,283 images per 10,015 (its val split's size) in a mix of sizes: 70% 600x450, 15% 800x600,
15% 1024x768. The real set also holds far larger images (up to 6688x4479), which cost more to
decode than these; generating them would take hours, so the external figures are a lower bound.

Replicas: generating 18,000 distinct images takes about 25 minutes on 2 idle cores (an hour or
more on a busy machine), so `--replicas R` generates 1/R of them and links each file R times under
new image and lesion ids. Every stage still reads, checks, hashes and decodes every file, so their
cost per image is that of distinct images (files come from the page cache more often, though);
the audit then finds each replica as a near-duplicate of the others, which makes its matching and
grouping heavier than on real data, not lighter.

Then it runs each stage script exactly as `dvc repro` would (python stages/<name>.py in a scratch
folder with a params.yaml that points data.ham10000_dir and data.external_dir at the generated
copies, data.img_size 300), each in its own process, restricted to --cores CPUs, and reports
per stage the wall seconds and the peak resident memory of that process (wait4's ru_maxrss).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import common
import torch
import yaml

from skinlesion.acquire import demo_data
from skinlesion.acquire.sources import MASK_FOLDER as MASKS

REPO = Path(__file__).resolve().parents[1]
STAGES = ("download", "audit", "split", "preprocess")
HAM_IMAGES, EXTERNAL_IMAGES = 10015, 8283  # HAM10000; the unified set's val split
EXTERNAL_SIZES = [(600, 450)] * 14 + [(800, 600)] * 3 + [(1024, 768)] * 3  # cycled, image i takes [i % 20]


def arguments(argv=None):
    p = common.parser(__doc__, data=False)
    p.add_argument("--images", type=int, default=HAM_IMAGES, help="HAM10000 images to generate (10015: the real size)")
    p.add_argument("--external-images", type=int, default=None,
                   help=f"external images; default {EXTERNAL_IMAGES} per {HAM_IMAGES} HAM10000 images")
    p.add_argument("--img-size", type=int, default=300, help="data.img_size for preprocess")
    p.add_argument("--cores", type=int, default=2, help="CPUs each stage may run on (sched_setaffinity)")
    p.add_argument("--data-dir", help="where to generate the data, kept and reused by a rerun with the same "
                                      "sizes; default: a temporary folder, deleted afterwards")
    p.add_argument("--replicas", type=int, default=1,
                   help="generate 1/R of the images and hard-link each R times under new ids (lesions, names): "
                        "the stages still read, hash and decode every file; see 'Replicas' above")
    args = p.parse_args(argv)
    if args.replicas < 1:
        p.error("--replicas must be 1 or more")
    args.ham_size, args.external_sizes = (600, 450), EXTERNAL_SIZES
    if args.tiny:
        args.images, args.img_size = 60, 32
        args.ham_size, args.external_sizes = (64, 48), [(64, 48), (64, 48), (96, 72)]
    if args.external_images is None:
        args.external_images = max(7, round(args.images * EXTERNAL_IMAGES / HAM_IMAGES))
    args.images, args.external_images = args.images // args.replicas, args.external_images // args.replicas
    return args


def generate(args, folder: Path) -> float:
    """Both datasets in folder (in parallel, one process each); seconds taken, 0 when reused."""
    recipe = {"images": args.images, "external_images": args.external_images, "ham_size": list(args.ham_size),
              "external_sizes": [list(s) for s in args.external_sizes]}
    done = folder / "generated.json"
    if done.exists() and json.loads(done.read_text()) == recipe:
        return 0.0
    for name in ("ham10000", "unified"):
        shutil.rmtree(folder / name, ignore_errors=True)
    started = time.perf_counter()
    plan = demo_data.ham10000_plan(args.images)
    with ProcessPoolExecutor(2) as pool:  # the generator's own functions: this module may not be importable by name
        jobs = [pool.submit(demo_data.write_demo_ham10000, folder / "ham10000", n_lesions=len(plan), seed=0,
                            image_size=args.ham_size, plan=plan),
                pool.submit(demo_data.write_demo_unified, folder / "unified", n_images=args.external_images, seed=1,
                            image_sizes=args.external_sizes)]
        for job in jobs:
            job.result()
    done.write_text(json.dumps(recipe) + "\n")
    return time.perf_counter() - started


def replicate(base: Path, out: Path, copies: int) -> None:
    """out: base's HAM10000 and unified copies, every image hard-linked `copies` times under new ids."""
    shutil.rmtree(out, ignore_errors=True)
    ham, meta = base / "ham10000", []
    with open(ham / "HAM10000_metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    files = {p.stem: p for p in ham.glob("HAM10000_images_part_*/*.jpg")}
    for r in range(copies):
        for row in rows:
            number, lesion = int(row["image_id"][5:]), int(row["lesion_id"][4:])
            image_id = f"ISIC_{number + 100_000 * r:07d}"
            meta.append({**row, "image_id": image_id, "lesion_id": f"HAM_{lesion + 100_000 * r:07d}"})
            source = files[row["image_id"]]
            _link(source, out / "ham10000" / source.parent.name / f"{image_id}.jpg")
            mask = ham / MASKS / f"{row['image_id']}_segmentation.png"
            _link(mask, out / "ham10000" / MASKS / f"{image_id}_segmentation.png")
    with open(out / "ham10000" / "HAM10000_metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(meta)
    for source in sorted((base / "unified").glob("Unified_dataset*/*/*/*.*")):  # images and masks
        name = source.name.replace("_segmentation", "")
        stem, suffix = name.split(".")
        for r in range(copies):
            renamed = f"{stem}_{r}_segmentation.{suffix}" if "_segmentation" in source.name else f"{stem}_{r}.{suffix}"
            _link(source, out / "unified" / source.relative_to(base / "unified").parent / renamed)


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copyfile(source, target)


def write_params(work: Path, data: Path, img_size: int) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(source="ham10000", ham10000_dir=str(data / "ham10000"), external="unified",
                          external_dir=str(data / "unified"), external_split="val", img_size=img_size)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


# Runs one stage and prints its rusage. A separate small launcher, because a child forked from this
# process (torch loaded) would report this process's memory: Linux keeps the pre-exec peak in ru_maxrss.
LAUNCHER = """
import json, os, resource, subprocess, sys, time
cores, log, cmd = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3:]
os.sched_setaffinity(0, cores)  # inherited by the stage
with open(log, "w") as out:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
print(json.dumps({"exit": os.waitstatus_to_exitcode(status), "seconds": time.perf_counter() - started,
                  "maxrss_kib": usage.ru_maxrss, "cpu_seconds": usage.ru_utime + usage.ru_stime}))
"""


def run_stage(name: str, work: Path, cores: list[int]) -> dict:
    """One stage script in its own process, as DVC runs it; its wall seconds and peak RSS."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    log = work / f"{name}.log"
    launched = subprocess.run([sys.executable, "-c", LAUNCHER, json.dumps(cores), str(log), sys.executable,
                               str(REPO / "stages" / f"{name}.py")], cwd=work, env=env, capture_output=True,
                              text=True, check=True)
    usage = json.loads(launched.stdout.strip().splitlines()[-1])
    if usage["exit"]:
        raise RuntimeError(f"stage {name} failed (exit {usage['exit']}):\n{log.read_text()[-3000:]}")
    return {"seconds": round(usage["seconds"], 2), "peak_rss_mb": round(usage["maxrss_kib"] / 1024, 1),
            "cpu_seconds": round(usage["cpu_seconds"], 1), "log": log.read_text().strip().splitlines()}


def disk_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


def main(argv=None) -> dict:
    args = arguments(argv)
    available = sorted(os.sched_getaffinity(0))
    cores = available[:args.cores]
    with tempfile.TemporaryDirectory(prefix="skinlesion-scale-") as tmp:
        data = Path(args.data_dir).resolve() if args.data_dir else Path(tmp) / "data"
        data.mkdir(parents=True, exist_ok=True)
        generate_seconds = generate(args, data)
        if args.replicas > 1:
            replicate(data, Path(tmp) / "replicated", args.replicas)
            data = Path(tmp) / "replicated"
        work = Path(tmp) / "repo"
        work.mkdir()
        write_params(work, data, args.img_size)
        load_before = os.getloadavg()[0]
        stages = {name: run_stage(name, work, cores) for name in STAGES}
        load_after = os.getloadavg()[0]
        manifests = {name: len(open(work / "data" / "manifests" / f"{name}.csv").readlines()) - 1
                     for name in ("ham10000", "external")}
        leakage = json.loads((work / "metrics" / "leakage.json").read_text())
        sizes = {"raw_mb": {"ham10000": disk_mb(data / "ham10000"), "external": disk_mb(data / "unified")},
                 "cache_mb": {name: disk_mb(work / "data" / "cache" / name) for name in ("ham10000", "external")}}
    device = torch.device("cpu")
    result = {
        "benchmark": "data_scale", "ham10000_images": manifests["ham10000"],
        "external_images": manifests["external"], "replicas": args.replicas, "img_size": args.img_size,
        "cores": len(cores),
        "generate_seconds": round(generate_seconds, 1),
        "stages": {name: {k: v for k, v in s.items() if k != "log"} for name, s in stages.items()},
        "audit": {k: leakage[k] for k in ("removed_by_id", "removed_by_content",
                                          "ham10000_near_duplicate_pairs_with_different_lesion_ids")},
        **sizes, "loadavg_1min": {"before": round(load_before, 2), "after": round(load_after, 2)},
        **common.environment(device),
    }
    rows = [("HAM10000 images", manifests["ham10000"]), ("external images", manifests["external"]),
            ("distinct images", f"1 in {args.replicas}" if args.replicas > 1 else "all"),
            ("preprocess size", f"{args.img_size} px"), ("cores per stage", len(cores)),
            ("generating the data", "reused" if not generate_seconds else f"{generate_seconds:.0f} s")]
    for name, s in stages.items():
        rows.append((f"{name}", f"{s['seconds']:.1f} s wall, {s['cpu_seconds']:.0f} s CPU, "
                                f"peak RSS {s['peak_rss_mb']:.0f} MB"))
    rows += [("raw data on disk", f"{sum(sizes['raw_mb'].values()):,.0f} MB"),
             ("image cache on disk", f"{sum(sizes['cache_mb'].values()):,.0f} MB"),
             ("audit removed / near-duplicate pairs",
              f"{leakage['removed_by_id'] + leakage['removed_by_content']} / "
              f"{leakage['ham10000_near_duplicate_pairs_with_different_lesion_ids']}"),
             ("CPU", result["cpu_model"]), ("load average (1 min) before, after", f"{load_before:.2f}, {load_after:.2f}"),
             ("date", result["date"])]
    common.emit(f"data stages at {manifests['ham10000']} HAM10000 + {manifests['external']} external images",
                rows, result, args.json)
    return result


if __name__ == "__main__":
    main()

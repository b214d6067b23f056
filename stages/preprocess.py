"""Stage preprocess: decode every image once into the image cache that train, evaluate and gradcam read.

    python stages/preprocess.py

Each image of both manifests is decoded, turned upright (EXIF), converted to RGB and resized to a
shorter side of data.img_size (aspect kept), exactly as a fresh decode would be: the cache changes
speed, never results. Output: data/cache/ham10000/ and data/cache/external/ (pixels.u8 and
index.json each; see skinlesion/cache.py).
"""

import time
from pathlib import Path

from skinlesion import cache, cli, manifest
from skinlesion.params import load_params

MANIFESTS = Path("data/manifests")
CACHE = Path("data/cache")


def main(args) -> None:
    params = load_params(args.params)
    img_size = params.data.img_size
    for name in ("ham10000", "external"):
        frame = manifest.read(MANIFESTS / f"{name}.csv")
        started = time.perf_counter()
        cache.build(CACHE / name, frame, img_size)
        seconds = time.perf_counter() - started
        print(f"{name}: {len(frame)} images cached at {img_size} px in {seconds:.1f} s")


if __name__ == "__main__":
    cli.run(main, cli.stage_parser(__doc__))

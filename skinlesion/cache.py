"""The decode-once image cache: every image of a manifest, decoded once, in one flat uint8 file.

Decoding a 600x450 JPEG and resizing it costs about ten times more than augmenting the resized
image, so the preprocess stage decodes each image once, exactly as `images.load_rgb(path, img_size)`
does (EXIF-upright RGB, shorter side at img_size, aspect kept), and training, evaluation and
Grad-CAM read the cached arrays. The pixels are bit-identical to a fresh decode, so results do not
depend on whether the cache is used.

Layout of a cache folder:

- `pixels.u8`: the images' HWC uint8 bytes one after another (each start aligned to 64 bytes), read
  through a read-only memory map, so loader workers share the page cache instead of copying it;
- `index.json`: `{"format", "img_size", "bytes", "images": {image_id: [offset, height, width]}}`.
  Images keep their own aspect ratio, hence an offset and a shape per image.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from . import atomic
from .errors import DataError
from .images import load_rgb

FORMAT = 1
PIXELS = "pixels.u8"
INDEX = "index.json"
ALIGN = 64  # cache-line aligned starts: vector loads in cv2 never straddle two images


def build(folder: str | Path, frame: pd.DataFrame, img_size: int, threads: int | None = None) -> None:
    """Decode every image of `frame` and write the cache folder atomically (all of it or nothing)."""
    threads = threads or min(16, os.cpu_count() or 1)
    ids, paths = list(frame["image_id"]), list(frame["path"])
    entries: dict[str, list[int]] = {}
    with atomic.atomic_dir(folder) as tmp, open(tmp / PIXELS, "wb") as out, \
            ThreadPoolExecutor(max_workers=threads) as pool:
        offset = 0
        chunk = 4 * threads  # decode in bounded chunks: the whole set may not fit in memory
        for start in range(0, len(paths), chunk):
            # libjpeg releases the GIL, so threads decode in parallel
            decoded = pool.map(lambda p: load_rgb(p, img_size), paths[start:start + chunk])
            for image_id, rgb in zip(ids[start:start + chunk], decoded):
                pad = -offset % ALIGN
                out.write(b"\0" * pad)
                offset += pad
                entries[image_id] = [offset, int(rgb.shape[0]), int(rgb.shape[1])]
                out.write(np.ascontiguousarray(rgb).tobytes())
                offset += rgb.nbytes
        out.flush()
        index = {"format": FORMAT, "img_size": img_size, "bytes": offset, "images": entries}
        (tmp / INDEX).write_text(json.dumps(index, separators=(",", ":")) + "\n")
        for name in (PIXELS, INDEX):
            os.chmod(tmp / name, 0o644)


class ImageCache:
    """A read-only view of a cache folder. `cache[image_id]` is an HxWx3 uint8 array (no copy).

    Pickles as its folder path, so a loader worker started with `spawn` re-maps the file instead of
    receiving a copy of the pixels.
    """

    def __init__(self, folder: str | Path, img_size: int):
        self.folder, self.img_size = Path(folder), img_size
        index_path, pixels_path = self.folder / INDEX, self.folder / PIXELS
        if not index_path.exists() or not pixels_path.exists():
            raise DataError(f"image cache {self.folder} not found; run `dvc repro preprocess` first")
        try:
            index = json.loads(index_path.read_text())
            self._entries: dict[str, list[int]] = index["images"]
            cached_size, expected_bytes = index["img_size"], index["bytes"]
        except (ValueError, KeyError, TypeError):
            raise DataError(f"image cache {self.folder} has an unreadable index; "
                            "run `dvc repro preprocess --force` to rebuild it") from None
        if cached_size != img_size:
            raise DataError(f"image cache {self.folder} holds images at {cached_size} px but {img_size} px are "
                            f"needed; run `dvc repro preprocess` with data.img_size {img_size}")
        if pixels_path.stat().st_size != expected_bytes:
            raise DataError(f"image cache {self.folder} is truncated or corrupt ({pixels_path.stat().st_size} of "
                            f"{expected_bytes} bytes); run `dvc repro preprocess --force` to rebuild it")
        self._pixels: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pixels": None}

    def _map(self) -> np.ndarray:
        if self._pixels is None:
            with open(self.folder / PIXELS, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                # mmap cannot map an empty file (a cache of an empty manifest)
                self._pixels = (np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), dtype=np.uint8)
                                if size else np.zeros(0, dtype=np.uint8))
        return self._pixels

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._entries

    def __getitem__(self, image_id: str) -> np.ndarray:
        offset, h, w = self._entries[image_id]
        return self._map()[offset:offset + h * w * 3].reshape(h, w, 3)

    def select(self, image_ids: Iterable[str]) -> CachedImages:
        """The images of `image_ids`, in that order; one clear error if any is not cached."""
        image_ids = list(image_ids)
        missing = [i for i in image_ids if i not in self._entries]
        if missing:
            raise DataError(f"{len(missing)} image(s) are not in the image cache {self.folder}, e.g. "
                            f"{missing[:5]}; run `dvc repro preprocess` to rebuild it from the manifests")
        return CachedImages(self, image_ids)


class CachedImages(Sequence):
    """A list-like view of some cached images (what `LesionImages.images` holds)."""

    def __init__(self, cache: ImageCache, image_ids: list[str]):
        self.cache, self.image_ids = cache, image_ids

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return CachedImages(self.cache, self.image_ids[i])
        return self.cache[self.image_ids[i]]


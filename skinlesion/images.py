"""Reading dermoscopic images: one decode path for training, evaluation, Grad-CAM and the app."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from .errors import DataError


def load_rgb(path: str | Path, short_side: int | None = None) -> np.ndarray:
    """Decode to an RGB uint8 array, upright (EXIF), with the shorter side resized to `short_side`."""
    try:
        with Image.open(path) as im:
            if short_side is not None and im.format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still covers the target:
                # several times faster than a full decode followed by a resize.
                w, h = im.size
                scale = short_side / min(w, h)
                im.draft("RGB", (max(1, round(w * scale)), max(1, round(h * scale))))
            im = ImageOps.exif_transpose(im).convert("RGB")
            rgb = np.asarray(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}; remove or replace the file") from None
    return rgb if short_side is None else resize_short_side(rgb, short_side)


def resize_short_side(rgb: np.ndarray, short_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = short_side / min(h, w)
    if scale == 1.0:
        return rgb
    size = (max(short_side, round(w * scale)), max(short_side, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(rgb, size, interpolation=interpolation)


def load_many(paths: list[str], short_side: int, threads: int = 4) -> list[np.ndarray]:
    """Decode a list of images in parallel (libjpeg releases the GIL)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda p: load_rgb(p, short_side), paths))


def center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return rgb[top:top + size, left:left + size]

"""Reading images: the one decoder for the pipeline's files, the audit's hashes, the download's
bad-image check and the app's uploads, and the geometry that follows it."""

from __future__ import annotations

from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from PIL import Image, ImageOps

from .errors import DataError

T = TypeVar("T")

# What Pillow raises for a file it cannot decode: not an image (UnidentifiedImageError is an
# OSError), a truncated or corrupt stream (OSError, SyntaxError, ValueError, EOFError), or more
# pixels than Image.MAX_IMAGE_PIXELS allows.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)

DraftSize = Callable[[int, int], tuple[int, int]]  # stored (width, height) -> the smallest useful decode


class UnreadableImageError(DataError):
    """An image file that does not decode. `cause` is Pillow's exception, for a caller that words
    the problem for someone else (the app, for the person who uploaded the file)."""

    def __init__(self, path: str | Path, cause: BaseException):
        super().__init__(f"cannot read image {path}: {cause}; remove or replace the file")
        self.path, self.cause = str(path), cause

    def __reduce__(self):  # picklable, so that it crosses from a training process (fold_pool) intact
        return type(self), (self.path, self.cause)


def rgb_array(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"))


def decode(path: str | Path, *, draft: DraftSize | None = None, upright: bool = True,
           convert: Callable[[Image.Image], T] = rgb_array, formats: Collection[str] | None = None,
           inspect: Callable[[Image.Image], None] | None = None) -> T:
    """Open `path`, let libjpeg decode at a reduced size when `draft` gives one, turn it upright by
    its EXIF orientation, and `convert` it; any decode failure is an UnreadableImageError.

    `draft`: libjpeg decodes at 1/2, 1/4 or 1/8 scale when that still covers the size it returns,
    several times faster than a full decode and a resize (other formats decode fully). `formats`
    restricts the formats Pillow tries; `inspect` sees the opened file before any pixel is decoded
    (the header: size, frames, EXIF) and may raise an error of its own, which passes through unless
    it is one of DECODE_ERRORS."""
    try:
        with Image.open(path, formats=formats) as im:
            if inspect is not None:
                inspect(im)
            if draft is not None:
                # "RGB" asks for no colour conversion: libjpeg keeps the file's L, RGB or CMYK.
                im.draft("RGB", draft(*im.size))
            if upright:
                im = ImageOps.exif_transpose(im)
            return convert(im)
    except DECODE_ERRORS as e:
        raise UnreadableImageError(path, e) from None


def draft_for_short_side(short_side: int) -> DraftSize:
    """The draft size whose shorter side is `short_side` (resize_short_side then finishes the job)."""
    def size(w: int, h: int) -> tuple[int, int]:
        scale = short_side / min(w, h)
        return max(1, round(w * scale)), max(1, round(h * scale))
    return size


def load_rgb(path: str | Path, short_side: int | None = None) -> np.ndarray:
    """Decode to an RGB uint8 array, upright (EXIF), with the shorter side resized to `short_side`."""
    if short_side is None:
        return decode(path)
    return resize_short_side(decode(path, draft=draft_for_short_side(short_side)), short_side)


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

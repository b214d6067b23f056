"""Reading images: the one decoder for the pipeline's files, the audit's hashes, the download's
bad-image check and the app's uploads, and the geometry that follows it."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from PIL import Image, ImageOps

from .errors import DataError

T = TypeVar("T")

# The formats the project reads, for the pipeline's files and the app's uploads alike. An allow-list,
# because Pillow also opens formats that run other programs (EPS starts Ghostscript, a PostScript
# interpreter), and a dataset or an upload is a stranger's file. These are what dermoscopic datasets
# and cameras write: JPEG (ISIC, HAM10000, BCN20000, Derm7pt and every camera; it covers the MPO
# files of phone cameras, which Pillow's JPEG opener returns as format "MPO"), PNG (PAD-UFES-20,
# lesion masks, screenshots), TIFF (dermatoscope and microscope exports, 16-bit scans), BMP (PH2)
# and WebP (what a browser saves from a web page). Not GIF: 256 colours are no dermoscopic image,
# and Pillow parses GIF in Python, where a crafted file costs minutes.
FORMATS: tuple[str, ...] = ("JPEG", "PNG", "TIFF", "BMP", "WEBP")

# A camera's JPEG has a few dozen marker segments and a progressive one about ten scans. Each scan
# is a pass of libjpeg over the whole image however few bytes it holds, so a file of repeated scans
# keeps the decoder busy for minutes (libjpeg-turbo documents this, and offers a scan limit in an
# API that Pillow does not use); Pillow parses the segments in Python, one by one. Both are counted
# before either decoder sees the file.
MAX_JPEG_SCANS = 100
MAX_JPEG_SEGMENTS = 1000

# What Pillow raises for a file it cannot decode: not an image (UnidentifiedImageError is an
# OSError), a truncated or corrupt stream (OSError, SyntaxError, ValueError, EOFError), or more
# pixels than Image.MAX_IMAGE_PIXELS allows.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)

DraftSize = Callable[[int, int], tuple[int, int]]  # stored (width, height) -> the smallest useful decode


class FormatNotReadError(Image.UnidentifiedImageError):
    """A file in a format outside FORMATS; `format` is Pillow's name for it, or None."""

    def __init__(self, format: str | None):
        formats = ", ".join(FORMATS)
        super().__init__(f"it is {format}, not one of the image formats the project reads: {formats}" if format
                         else f"it is not an image in one of the formats the project reads: {formats}")
        self.format = format

    def __reduce__(self):
        return type(self), (self.format,)


class CostlyStructureError(ValueError):
    """A JPEG built to keep a decoder busy: more scans or marker segments than any camera writes."""


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
           convert: Callable[[Image.Image], T] = rgb_array,
           inspect: Callable[[Image.Image], None] | None = None) -> T:
    """Open `path` (one of FORMATS), let libjpeg decode at a reduced size when `draft` gives one,
    turn it upright by its EXIF orientation, and `convert` it; any decode failure, any file of
    another format and any JPEG over MAX_JPEG_SCANS or MAX_JPEG_SEGMENTS is an UnreadableImageError.

    `draft`: libjpeg decodes at 1/2, 1/4 or 1/8 scale when that still covers the size it returns,
    several times faster than a full decode and a resize (other formats decode fully). `inspect`
    sees the opened file before any pixel is decoded (the header: size, frames, EXIF) and may raise
    an error of its own, which passes through unless it is one of DECODE_ERRORS."""
    try:
        _check_jpeg_structure(path)
        try:
            im = Image.open(path, formats=FORMATS)
        except Image.UnidentifiedImageError:
            if (other := _other_format(path)) is not None:
                raise FormatNotReadError(other or None) from None
            raise
        with im:
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


def _other_format(path: str | Path) -> str | None:
    """The format outside FORMATS whose signature the file starts with ("" when none does), or None
    when it starts like one of FORMATS (a damaged file of a format the project reads). Only the
    signature tests of Pillow's readers run: no reader is asked to open the file."""
    with open(path, "rb") as f:
        prefix = f.read(16)
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        try:
            if accept is not None and accept(prefix):
                return None if name in FORMATS else name
        except (IndexError, ValueError, TypeError, struct.error):  # a prefix too short for its test
            continue
    return ""


_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # after a scan's data: not a stuffed byte, a restart or fill


def _check_jpeg_structure(path: str | Path) -> None:
    """CostlyStructureError for a JPEG with more than MAX_JPEG_SCANS scans or MAX_JPEG_SEGMENTS marker
    segments in its first image; anything else, damage included, is left to the decoder."""
    with open(path, "rb") as f:
        if f.read(3) != b"\xff\xd8\xff":
            return
        f.seek(0)
        data = f.read()
    pos, segments, scans = 2, 0, 0
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:  # bytes between segments: libjpeg skips to the next 0xFF, and so does this
            pos = data.find(b"\xff", pos)
            if pos < 0:
                return
        marker = data[pos + 1] if pos + 1 < len(data) else 0xD9
        if marker == 0xD9:  # the end of the first image (an MPO's others are never decoded)
            return
        if marker == 0xFF:  # a fill byte before a marker
            pos += 1
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise CostlyStructureError(f"it has more than {MAX_JPEG_SEGMENTS} marker segments, far more than a "
                                       "camera writes: a file made to keep the decoder busy")
        if 0xD0 <= marker <= 0xD8 or marker in (0x00, 0x01):  # no length (0x00: libjpeg skips it as garbage)
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise CostlyStructureError(f"it has more than {MAX_JPEG_SCANS} scans, far more than a camera "
                                           "writes: a file made to keep the decoder busy")
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                return
            pos = found.start()


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

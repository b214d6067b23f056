"""Turning an untrusted uploaded file into the model's input image, or into one clear message.

Training and evaluation read images we generated or downloaded (skinlesion.images). An upload can
be anything: a PDF, half a JPEG, a 16-bit TIFF, a PNG with transparency, a phone photo lying on its
side, a 20-pixel thumbnail or a decompression bomb. Every such case ends here either in the same
RGB crop that evaluation would compute, or in an UploadError whose message says what is wrong and
what to do. The geometry is evaluation's: the shorter side resized to the model's input size
(images.decode with load_rgb's draft size), then the centre crop.

This module is the app's and is not a dependency of any pipeline stage, so changing it never
reruns training.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UploadError
from ..images import UnreadableImageError, center_crop, decode, draft_for_short_side, resize_short_side

# Raster formats a camera, a dermatoscope or an image editor writes. A whitelist, because Pillow
# also opens formats that run external programs (EPS starts Ghostscript). JPEG covers the MPO files
# of phone cameras (Pillow's JPEG opener returns them).
FORMATS: tuple[str, ...] = ("JPEG", "PNG", "TIFF", "BMP", "WEBP", "GIF")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # a 30-megapixel dermoscopic JPEG is ~10 MB
MAX_PIXELS = 50_000_000  # the largest image in the unified external set is 6688x4479 = 30 MP
MIN_SIDE = 32  # below this there is no lesion left to see, whatever the model's input size


@dataclass
class UploadedImage:
    rgb: np.ndarray  # (size, size, 3) uint8: the model's input
    original_size: tuple[int, int]  # (width, height), upright
    notes: list[str] = field(default_factory=list)  # what was done to it that a reader should know


def read_upload(path: str | Path, size: int, *, max_bytes: int = MAX_UPLOAD_BYTES,
                max_pixels: int = MAX_PIXELS) -> UploadedImage:
    """Decode `path` to an upright RGB centre crop of `size` x `size`, or raise UploadError."""
    path = Path(path)
    n_bytes = os.path.getsize(path)
    if n_bytes == 0:
        raise UploadError("The file is empty. Upload a JPEG or PNG photo of the lesion.")
    if n_bytes > max_bytes:
        raise UploadError(f"The file is {n_bytes / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB. "
                          "Upload a smaller export (a JPEG of a few megapixels is plenty).")
    notes: list[str] = []
    header: dict[str, tuple[int, int]] = {}

    def check(im: Image.Image) -> None:
        w, h = im.size
        if w * h > max_pixels:
            raise UploadError(
                f"The image is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels); the limit is "
                f"{max_pixels / 1e6:.0f} megapixels, a guard against decompression bombs. "
                "Downscale it and upload it again.")
        # Only after the size check: reading a PNG's EXIF decodes the pixels. The size as a
        # person sees it: EXIF orientations 5 to 8 are quarter turns.
        header["upright"] = (h, w) if im.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (w, h)
        if getattr(im, "n_frames", 1) > 1:
            notes.append("The file holds several frames; the first one was used.")

    try:
        with warnings.catch_warnings():
            # Pillow only warns between its own limit and twice it; ours is checked above.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # The draft size is evaluation's (images.load_rgb), so a JPEG gives the pixels it saw.
            rgb = decode(path, draft=draft_for_short_side(size), formats=FORMATS, inspect=check,
                         convert=lambda im: _to_rgb_uint8(im, notes))
    except UnreadableImageError as e:
        raise _unreadable(path, e.cause, max_pixels) from None
    original_size = header["upright"]
    if min(original_size) < MIN_SIDE:
        raise UploadError(f"The image is only {original_size[0]}x{original_size[1]} pixels; at least "
                          f"{MIN_SIDE} pixels on the shorter side are needed, and the model works at "
                          f"{size} pixels. Upload the full-resolution photo.")
    if min(original_size) < size:
        notes.append(f"The image is small ({original_size[0]}x{original_size[1]}); it was enlarged to the "
                     f"model's {size} px input, so fine detail is missing and the prediction is less reliable.")
    if max(original_size) > 2 * min(original_size):
        notes.append("The image is very elongated; only its central square was analysed.")
    return UploadedImage(center_crop(resize_short_side(rgb, size), size), original_size, notes)


def _unreadable(path: Path, cause: BaseException, max_pixels: int) -> UploadError:
    """What to tell the person who uploaded a file that does not decode."""
    if isinstance(cause, Image.DecompressionBombError):
        return UploadError(f"The image has too many pixels; the limit is {max_pixels / 1e6:.0f} megapixels, "
                           "a guard against decompression bombs. Downscale it and upload it again.")
    if isinstance(cause, Image.UnidentifiedImageError):
        if _has_image_signature(path):
            return UploadError("The image is corrupt: it starts like an image file but cannot be decoded. "
                               "Upload the complete file again, or export it anew.")
        return UploadError("This file is not an image that can be read. Upload a JPEG, PNG, TIFF, BMP, WebP "
                           "or GIF photo of the lesion (HEIC photos: export them as JPEG first).")
    return UploadError(f"The image is corrupt or truncated ({cause}). Upload the complete file again, "
                       "or export it anew from the camera or viewer.")


def _to_rgb_uint8(im: Image.Image, notes: list[str]) -> np.ndarray:
    """Any Pillow mode -> RGB uint8, decoding (and so detecting truncation) on the way."""
    im.load()
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16-bit (or deeper) grayscale: Pillow's own convert("RGB") clips at 255 (a white image);
        # scale the full range instead.
        values = np.asarray(im, dtype=np.float64)
        top = 65535.0 if values.max() > 255 else 255.0
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        notes.append("16-bit grayscale image: scaled to 8 bits. The model was trained on colour images, "
                     "and colour is diagnostic, so the prediction is less reliable.")
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("L", "1", "LA", "La") or (mode == "P" and _palette_is_gray(im)):
        notes.append("Grayscale image: the model was trained on colour images, and colour is diagnostic, "
                     "so the prediction is less reliable.")
    if "A" in mode or "a" in mode or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append("The image has transparent parts; they were filled with white.")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode == "CMYK":
        notes.append("CMYK image (a print format): converted to RGB; colours may be slightly off.")
    return np.asarray(im.convert("RGB"))


_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"II*\x00", b"MM\x00*", b"BM")


def _has_image_signature(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _palette_is_gray(im: Image.Image) -> bool:
    palette = np.asarray(im.getpalette() or [], dtype=np.int32).reshape(-1, 3)
    return bool(len(palette)) and bool((palette.max(1) == palette.min(1)).all())

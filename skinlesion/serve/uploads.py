"""Turning an untrusted uploaded file into the model's input image, or into one clear message.

Training and evaluation read images we generated or downloaded (skinlesion.images). An upload can
be anything: a PDF, half a JPEG, a 16-bit TIFF, a PNG with transparency, a phone photo lying on its
side, a 20-pixel thumbnail or a decompression bomb. Every such case ends here either in the same
RGB crop that evaluation would compute, or in an UploadError whose message says what is wrong and
what to do. The geometry is evaluation's: the shorter side resized to the model's input size
(images.decode with load_rgb's draft size), then the centre crop. The formats are the pipeline's
(images.FORMATS), and the work is bounded before it is done (bytes, pixels, the first frame only,
a JPEG's scans) and while it is done: the app decodes each upload in a child process under a time
limit (Decoder).

This module is the app's and is not a dependency of any pipeline stage, so changing it never
reruns training.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UploadError
from ..images import (FORMATS, CostlyStructureError, FormatNotReadError, UnreadableImageError, center_crop, decode,
                      draft_for_short_side, resize_short_side)

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # a 30-megapixel dermoscopic JPEG is ~10 MB
MAX_PIXELS = 50_000_000  # the largest image in the unified external set is 6688x4479 = 30 MP
MIN_SIDE = 32  # below this there is no lesion left to see, whatever the model's input size
# Several times what the largest image allowed (MAX_PIXELS) takes to decode on a slow, busy CPU:
# only a damaged or crafted file gets near it.
DECODE_TIME_LIMIT_S = 10.0
FORMAT_NAMES = " or ".join([", ".join(FORMATS[:-1]), FORMATS[-1]]).replace("WEBP", "WebP")
GRAY_NOTE = "the model was trained on colour images, and colour is diagnostic, so the prediction is less reliable."
RESAVE = "Save it again as a JPEG or PNG and upload that."


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
        upright = (h, w) if im.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (w, h)
        if min(upright) < MIN_SIDE:
            raise UploadError(f"The image is only {upright[0]}x{upright[1]} pixels; at least {MIN_SIDE} pixels on "
                              f"the shorter side are needed, and the model works at {size} pixels. Upload the "
                              "full-resolution photo.")
        header["upright"] = upright
        # is_animated looks one frame ahead at most (a TIFF's offset of its next page, an MPO's
        # header); n_frames walks every frame, and for a TIFF that is quadratic in the pages.
        if getattr(im, "is_animated", False):
            notes.append("The file holds several frames; the first one was used.")

    try:
        with warnings.catch_warnings():
            # Pillow only warns between its own limit and twice it; ours is checked above.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # The draft size is evaluation's (images.load_rgb), so a JPEG gives the pixels it saw.
            rgb = decode(path, draft=draft_for_short_side(size), inspect=check,
                         convert=lambda im: _to_rgb_uint8(im, notes))
    except UnreadableImageError as e:
        raise _unreadable(path, e.cause, max_pixels) from None
    original_size = header["upright"]
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
    if isinstance(cause, CostlyStructureError):
        return UploadError(f"The image is a JPEG the app does not read: {cause}. {RESAVE}")
    if isinstance(cause, FormatNotReadError) and cause.format:
        return UploadError(f"This file is {cause.format}, not an image format the app reads. Upload a "
                           f"{FORMAT_NAMES} photo of the lesion (HEIC photos: export them as JPEG first).")
    if isinstance(cause, Image.UnidentifiedImageError):
        if _has_image_signature(path):
            return UploadError("The image is corrupt: it starts like an image file but cannot be decoded. "
                               "Upload the complete file again, or export it anew.")
        return UploadError(f"This file is not an image that can be read. Upload a {FORMAT_NAMES} photo of the "
                           "lesion (HEIC photos: export them as JPEG first).")
    return UploadError(f"The image is corrupt or truncated ({cause}). Upload the complete file again, "
                       "or export it anew from the camera or viewer.")


def _to_rgb_uint8(im: Image.Image, notes: list[str]) -> np.ndarray:
    """Any Pillow mode -> RGB uint8, decoding (and so detecting truncation) on the way."""
    im.load()
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        # Deeper than 8 bits: Pillow's own convert("RGB") clips at 255 (a white image). The scale
        # is the mode's range, never the image's own maximum, so a pixel means the same in any image.
        gray = _deep_gray_to_uint8(np.asarray(im), mode, notes)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("L", "1", "LA", "La") or (mode == "P" and _palette_is_gray(im)):
        notes.append(f"Grayscale image: {GRAY_NOTE}")
    if "A" in mode or "a" in mode or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append("The image has transparent parts; they were filled with white.")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode == "CMYK":
        notes.append("CMYK image (a print format): converted to RGB; colours may be slightly off.")
    return np.asarray(im.convert("RGB"))


def _deep_gray_to_uint8(values: np.ndarray, mode: str, notes: list[str]) -> np.ndarray:
    """One channel of 16-bit (I;16, I;16B...), 32-bit integer (I) or floating-point (F) values to
    0-255, or UploadError for values outside the range the mode is read in.

    I holds 16-bit data in practice (a signed 16-bit TIFF, a 16-bit image an analysis program
    stored wider): no camera or scanner records more than 16 bits a sample, and the type's own range
    (2**31) would turn such an image black. So it is read as 16-bit, and refused beyond 0..65535.
    F is read from 0 (black) to 1 (white), the convention of image-processing programs."""
    if mode == "F":
        if not np.isfinite(values).all():
            raise UploadError("The image holds floating-point values that are not finite numbers (NaN or "
                              f"infinity). {RESAVE}")
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 1:
            raise UploadError(f"The image holds floating-point values from {low:g} to {high:g}; the app reads "
                              f"floating-point images from 0 (black) to 1 (white). {RESAVE}")
        notes.append(f"Floating-point grayscale image (F): read from 0 (black) to 1 (white) and scaled to 8 bits; "
                     f"{GRAY_NOTE}")
        return (values * np.float32(255) + np.float32(0.5)).astype(np.uint8)
    if mode == "I":
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 65535:
            raise UploadError(f"The image holds 32-bit integer values from {low} to {high}; the app reads them as "
                              f"16-bit (0 to 65535), the depth of cameras and scanners. {RESAVE}")
        notes.append(f"32-bit integer grayscale image (I): read as 16-bit (0 to 65535) and scaled to 8 bits; "
                     f"{GRAY_NOTE}")
    else:
        notes.append(f"16-bit grayscale image ({mode}): scaled to 8 bits; {GRAY_NOTE}")
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v / 257): 65535 -> 255


_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"II*\x00", b"MM\x00*", b"BM")


def _has_image_signature(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _palette_is_gray(im: Image.Image) -> bool:
    palette = np.asarray(im.getpalette() or [], dtype=np.int32).reshape(-1, 3)
    return bool(len(palette)) and bool((palette.max(1) == palette.min(1)).all())


class Decoder:
    """read_upload in worker processes, each stopped at a time limit.

    Whatever the checks before decoding, a file can still cost far more than its size suggests:
    Pillow parses some formats' structure in Python, holding the GIL (a PNG of a million chunks, a
    TIFF of a million strips), and a decoder's C call cannot be interrupted. In the app's process
    such a file would slow every other request and could not be stopped; a worker process runs
    beside them and is killed when an upload takes it past `time_limit_s` (a fresh one takes its
    place at once). Workers are kept, one per upload decoded at the same time, so a request pays
    for a message to a process, not for its start."""

    def __init__(self, time_limit_s: float = DECODE_TIME_LIMIT_S):
        self.time_limit_s = time_limit_s
        # spawn: a fresh interpreter, with none of the app's threads (a fork of a process running
        # torch's and OpenCV's thread pools can deadlock) and no server socket in the temp folder.
        self._context = multiprocessing.get_context("spawn")
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()

    def start(self) -> None:
        """Start one worker now, rather than during the first upload."""
        self._idle.put(_Worker(self._context))

    def read(self, path: str | Path, size: int, **limits) -> UploadedImage:
        """read_upload(path, size, **limits) in a worker: its image, its UploadError or its OSError
        (the file went away); UploadError when it runs out of time or dies."""
        worker = self._take()
        try:
            worker.connection.send((str(path), size, limits))
            outcome = worker.connection.recv() if worker.connection.poll(self.time_limit_s) else ("timeout", None)
        except (EOFError, OSError):  # it died: a crash in a decoder, or out of memory
            outcome = ("died", None)
        if outcome[0] in ("timeout", "died"):
            worker.stop()
            threading.Thread(target=self.start, daemon=True).start()  # its successor, for the next upload
        else:
            self._idle.put(worker)
        kind, value = outcome
        if kind == "image":
            return value
        if kind == "refused":
            raise value
        if kind == "timeout":
            raise UploadError(f"The image takes more than {self.time_limit_s:g} s to decode, far longer than any "
                              f"photo should: it is damaged or built to stall the app. {RESAVE}")
        if kind == "died":
            raise UploadError(f"The image could not be decoded: the decoder stopped (exit code "
                              f"{worker.process.exitcode}). {RESAVE}")
        raise RuntimeError(f"reading an upload failed in the decoder process:\n{value}")

    def _take(self) -> _Worker:
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return _Worker(self._context)
            if worker.process.is_alive():
                return worker
            worker.stop()


class _Worker:
    """One decoding process and the connection to it."""

    STARTUP_LIMIT_S = 300  # a script's app: the child imports that script again (multiprocessing's rule)

    def __init__(self, context):
        self.connection, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs,), daemon=True, name="upload-decoder")
        self.process.start()
        theirs.close()
        if not (self.connection.poll(self.STARTUP_LIMIT_S) and self.connection.recv() == "ready"):
            self.stop()
            raise RuntimeError("the upload decoder process did not start")

    def stop(self) -> None:
        self.connection.close()
        self.process.kill()
        self.process.join()


def _serve(connection) -> None:
    """A worker's loop: (path, size, limits) in, an outcome out, until the app closes the pipe."""
    connection.send("ready")
    while True:
        try:
            path, size, limits = connection.recv()
        except EOFError:
            return
        try:
            outcome = ("image", read_upload(path, size, **limits))
        except (UploadError, OSError) as e:
            outcome = ("refused", e)
        except Exception:  # a bug: the app logs its traceback
            outcome = ("failed", traceback.format_exc())
        connection.send(outcome)

"""Finding unreadable, corrupt and truncated images before any stage trusts them.

Every image is fully decoded, because only a decode sees a truncated JPEG (the header parses
fine). JPEGs decode in libjpeg's 1/8-scale draft mode, which still reads every byte of the
stream but skips most of the inverse DCT; threads run in parallel because decoding releases
the GIL.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ..images import UnreadableImageError, decode


def problem(path: str) -> str | None:
    """Why the image cannot be used, or None when it decodes."""
    try:
        decode(path, draft=_one_eighth, upright=False, convert=lambda im: im.load())
    except UnreadableImageError as e:
        return f"{type(e.cause).__name__}: {e.cause}"
    return None


def _one_eighth(w: int, h: int) -> tuple[int, int]:
    return max(1, w // 8), max(1, h // 8)


def bad_images(paths: Sequence[str], threads: int = 4) -> list[tuple[str, str]]:
    """(path, reason) for every image that does not decode."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        reasons = list(pool.map(problem, paths))
    return [(p, r) for p, r in zip(paths, reasons) if r is not None]

"""Finding unreadable, corrupt and truncated images before any stage trusts them.

Every image is fully decoded, because only a decode sees a truncated JPEG (the header parses
fine). JPEGs decode in libjpeg's 1/8-scale draft mode, which still reads every byte of the
stream but skips most of the inverse DCT; threads run in parallel because decoding releases
the GIL.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image


def problem(path: str) -> str | None:
    """Why the image cannot be used, or None when it decodes."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def bad_images(paths: Sequence[str], threads: int = 4) -> list[tuple[str, str]]:
    """(path, reason) for every image that does not decode."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        reasons = list(pool.map(problem, paths))
    return [(p, r) for p, r in zip(paths, reasons) if r is not None]

"""The leakage audit: find external images that are training images, and training images that are
near-duplicates of each other under different lesion ids.

Why a perceptual hash: external sets are often assembled from public archives that include
HAM10000 itself, renamed, resized or re-encoded, so a file-name or byte comparison misses them.
We use the DCT perceptual hash (pHash) of the `imagehash` package (maintained, small, built on
Pillow/NumPy/SciPy, the reference implementation that image-dedup tools build on) at 16x16 =
256 bits: a DCT hash ignores resizing and JPEG re-encoding almost entirely, and the 256-bit
version separates distinct dermoscopic images far better than the 64-bit default. Measured on
68 real HAM10000 images: copies resized 600x450 -> 1024x768 or re-encoded at quality 70 differ
by <= 8 bits, copies cropped by up to 10% by <= 44 bits, distinct images by >= 86 bits.

A global hash is not crop-invariant, so every training image is also hashed after a few small
crops (`CROPS`: symmetric, corner- and side-anchored); an external image matches when it lies
within `max_bits` of any of them. Synthetic or very uniform images can share a hash
neighbourhood without being the same picture, so a hash match is confirmed by the mean colour
difference of 16x16 thumbnails (copies <= 6.2, the demo's distinct lookalike lesions >= 7.0).
Comparisons are vectorised (XOR of uint64 words, `numpy.bitwise_count`, threads over blocks) and
cache-blocked: 16 queries against 16,384 reference crops at a time keep every temporary (2 MiB) in
the CPU cache. The HAM10000 self-comparison (10,015 images against 10,015 x 12 crops, 1.2 billion
hash pairs) costs about 4 CPU seconds; without the blocking, each pass streamed its temporaries
through memory and took 4 times longer. The audit's time goes into hashing the crops instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .images import decode

HASH_SIZE = 16  # 16x16 DCT bits = 256 bits = 4 uint64 words
WORDS = HASH_SIZE * HASH_SIZE // 64
QUERY_BLOCK, REFERENCE_CHUNK = 16, 16384  # uint64 temporaries of 2 MiB: they stay in the CPU cache
THUMB = 16  # side of the RGB thumbnail that confirms a hash match
# (left, top, right, bottom) fractions removed from each side; the first is the image itself.
CROPS: tuple[tuple[float, float, float, float], ...] = (
    (0, 0, 0, 0),
    (0.03, 0.03, 0.03, 0.03), (0.06, 0.06, 0.06, 0.06), (0.09, 0.09, 0.09, 0.09),
    (0.05, 0.05, 0, 0), (0, 0.05, 0.05, 0), (0, 0, 0.05, 0.05), (0.05, 0, 0, 0.05),
    (0.05, 0, 0, 0), (0, 0.05, 0, 0), (0, 0, 0.05, 0), (0, 0, 0, 0.05),
)
ISIC_ID = re.compile(r"ISIC_\d{7}", re.IGNORECASE)


@dataclass
class Signatures:
    """Per image and crop: the pHash as uint64 words (n, k, WORDS) and an RGB thumbnail (n, k, THUMB, THUMB, 3)."""

    hashes: np.ndarray
    thumbs: np.ndarray

    def __len__(self) -> int:
        return len(self.hashes)


def _bits_to_words(h: imagehash.ImageHash) -> np.ndarray:
    return np.packbits(h.hash.reshape(-1)).view(">u8").astype(np.uint64)


def image_signature(path: str | Path, crops=CROPS[:1]) -> tuple[np.ndarray, np.ndarray]:
    """pHash words and thumbnails of the image and of each crop."""
    # libjpeg's scaled decode to at least 256x256: the hash looks at 64x64 anyway.
    im = decode(path, draft=lambda w, h: (256, 256), convert=lambda im: im.convert("RGB"))
    w, h = im.size
    hashes = np.empty((len(crops), WORDS), np.uint64)
    thumbs = np.empty((len(crops), THUMB, THUMB, 3), np.uint8)
    for k, (left, top, right, bottom) in enumerate(crops):
        part = im.crop((round(w * left), round(h * top), w - round(w * right), h - round(h * bottom))) if k else im
        hashes[k] = _bits_to_words(imagehash.phash(part, hash_size=HASH_SIZE))
        thumbs[k] = np.asarray(part.resize((THUMB, THUMB), Image.Resampling.BOX))
    return hashes, thumbs


def signatures(paths: Sequence[str], crops=CROPS[:1], threads: int = 4) -> Signatures:
    """Signatures of many images in parallel (decoding releases the GIL)."""
    if not len(paths):
        return Signatures(np.empty((0, len(crops), WORDS), np.uint64),
                          np.empty((0, len(crops), THUMB, THUMB, 3), np.uint8))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        done = list(pool.map(lambda p: image_signature(p, crops), paths))
    return Signatures(np.stack([h for h, _ in done]), np.stack([t for _, t in done]))


def hash_distances(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Hamming distances of query hashes (b, WORDS) to reference images (m, k, WORDS), the
    smallest over each reference's crops: (b, m)."""
    m, k = references.shape[:2]
    return _min_distances(queries, np.ascontiguousarray(references.reshape(m * k, WORDS).T), k)


def _min_distances(queries: np.ndarray, flat: np.ndarray, crops: int) -> np.ndarray:
    """hash_distances against the reference crops' words laid out as (WORDS, m*k), a row per word
    so that each pass reads one contiguous run."""
    total = np.empty((len(queries), flat.shape[1]), np.uint16)
    for q in range(0, len(queries), QUERY_BLOCK):
        block = queries[q:q + QUERY_BLOCK]
        for r in range(0, flat.shape[1], REFERENCE_CHUNK):
            part = flat[:, r:r + REFERENCE_CHUNK]
            out = total[q:q + QUERY_BLOCK, r:r + REFERENCE_CHUNK]
            np.bitwise_count(block[:, 0, None] ^ part[0][None], out=out, casting="unsafe")  # uint8 -> uint16
            for w in range(1, WORDS):
                out += np.bitwise_count(block[:, w, None] ^ part[w][None])
    return total.reshape(len(queries), -1, crops).min(-1)


def colour_distances(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Mean absolute RGB difference (0-255) between query thumbnails (p, T, T, 3) and the
    closest crop of each paired reference (p, k, T, T, 3): (p,)."""
    diff = np.abs(references.astype(np.int16) - queries[:, None].astype(np.int16))
    return diff.mean(axis=(2, 3, 4)).min(1)


def matches(queries: Signatures, references: Signatures, max_bits: int, max_colour: float,
            block: int = 64, threads: int = 4) -> pd.DataFrame:
    """Every (query, reference) pair whose hashes lie within max_bits AND whose thumbnails within
    max_colour: the hash finds the same picture, the colour check confirms it (distinct lesions
    with a similar layout can share a hash neighbourhood, rarely also their colours)."""
    m, k = references.hashes.shape[:2]
    flat = np.ascontiguousarray(references.hashes.reshape(m * k, WORDS).T)

    def one_block(start: int) -> pd.DataFrame | None:
        d = _min_distances(queries.hashes[start:start + block, 0], flat, k)
        i, j = np.nonzero(d <= max_bits)
        if not len(i):
            return None
        c = colour_distances(queries.thumbs[start + i, 0], references.thumbs[j])
        return pd.DataFrame({"query": start + i, "reference": j, "bits": d[i, j].astype(int), "colour": c})

    with ThreadPoolExecutor(max_workers=threads) as pool:  # NumPy releases the GIL
        found = [f for f in pool.map(one_block, range(0, len(queries), block)) if f is not None]
    frame = pd.concat(found, ignore_index=True) if found else pd.DataFrame(
        {"query": [], "reference": [], "bits": [], "colour": []}).astype({"query": int, "reference": int})
    return frame[frame["colour"] <= max_colour].reset_index(drop=True)


def isic_id(stem: str) -> str | None:
    """The ISIC image id inside a file stem (`ISIC_0024306`, `isic_0024306_downsampled`), if any."""
    m = ISIC_ID.search(stem)
    return m.group(0).upper() if m else None


def audit_external(ham: pd.DataFrame, external: pd.DataFrame, ham_sig: Signatures, external_sig: Signatures,
                   max_bits: int, max_colour: float) -> tuple[pd.DataFrame, dict]:
    """Drop every external image that is a training image by id or by content.

    ham_sig holds every CROPS variant of the training images, external_sig the images alone.
    Returns the kept external rows and the counts, with examples of content matches.
    """
    ham_ids = {i.upper() for i in ham["image_id"]}
    by_id = np.array([(i.upper() in ham_ids) or (isic_id(i) in ham_ids) for i in external["image_id"]], bool)
    found = matches(external_sig, ham_sig, max_bits, max_colour)
    found = found[~by_id[found["query"].to_numpy()]].sort_values(["query", "bits"]).drop_duplicates("query")
    by_content = np.zeros(len(external), bool)
    by_content[found["query"].to_numpy()] = True
    examples = pd.DataFrame({"external": external["image_id"].to_numpy()[found["query"].to_numpy()],
                             "ham10000": ham["image_id"].to_numpy()[found["reference"].to_numpy()],
                             "bits": found["bits"].to_numpy(), "colour": found["colour"].round(2).to_numpy()})
    report = {
        "external_images": int(len(external)),
        "removed_by_id": int(by_id.sum()),
        "removed_by_content": int(by_content.sum()),
        "kept": int((~by_id & ~by_content).sum()),
        "removed_by_content_examples": examples.head(20).to_dict("records"),
    }
    return external.loc[~by_id & ~by_content].reset_index(drop=True), report


def near_duplicates(ham: pd.DataFrame, ham_sig: Signatures, max_bits: int, max_colour: float) -> pd.DataFrame:
    """Pairs of training images that look the same but carry different lesion ids: they would sit
    on both sides of a lesion-grouped split."""
    found = matches(ham_sig, ham_sig, max_bits, max_colour)
    pairs = np.sort(found[["query", "reference"]].to_numpy(dtype=np.int64), axis=1)
    pairs = np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0) if len(pairs) else pairs.reshape(0, 2)
    a, b = ham.iloc[pairs[:, 0]], ham.iloc[pairs[:, 1]]
    frame = pd.DataFrame({"image_a": a["image_id"].to_numpy(), "lesion_a": a["lesion_id"].to_numpy(),
                          "image_b": b["image_id"].to_numpy(), "lesion_b": b["lesion_id"].to_numpy()})
    return frame[frame["lesion_a"] != frame["lesion_b"]].reset_index(drop=True)


def split_groups(ham: pd.DataFrame, duplicates: pd.DataFrame, merge: bool) -> pd.Series:
    """The grouping the split keeps together: the lesion, or (merge) every set of lesions linked
    by near-duplicate images, named after its first lesion id."""
    lesions = ham["lesion_id"].astype(str)
    if not merge or duplicates.empty:
        return lesions.rename("group")
    names = np.array(sorted(set(lesions)))
    index = {name: k for k, name in enumerate(names)}
    a = [index[x] for x in duplicates["lesion_a"]]
    b = [index[x] for x in duplicates["lesion_b"]]
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(names), len(names)))
    _, label = connected_components(graph, directed=False)
    first = pd.Series(names).groupby(label).transform("first").to_numpy()  # names are sorted
    return lesions.map(dict(zip(names, first))).rename("group")

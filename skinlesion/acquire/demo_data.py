"""Synthetic dermoscopy-like demo data, written in the exact on-disk layouts of the real datasets.

Why this exists: the whole pipeline (ingest, lesion-grouped split, training, external validation,
segmentation-aware analyses) must run offline on a laptop and in CI, and the demo data must go
through the *same* adapters as the real data. So the generator writes real formats, not a
simplified one:

* :func:`write_demo_ham10000` -> the Kaggle HAM10000 layout (``HAM10000_metadata.csv`` with the
  7 real columns, ``HAM10000_images_part_1/2``) plus the official lesion segmentation release
  (``HAM10000_segmentations_lesion_tschandl/ISIC_xxxxxxx_segmentation.png``).
* :func:`write_demo_unified` -> the unified external layout
  (``Unified_dataset/<split>/<dx>/*.jpg`` and ``Unified_dataset_masks/<split>/<dx>/*_segmentation.png``).

Design
------
* **Lesions and views.** A *lesion* (patient skin, lesion morphology, the positions of its dots,
  vessels, nests...) is drawn from its own generator; each *view* (photograph) of it from another
  (rotation, zoom, offset, lighting, artifacts). As in HAM10000, about half the lesions have several
  photos, so a split that ignores ``lesion_id`` leaks near-duplicates into the test set.
* **Analytic rendering in lesion coordinates.** Each output pixel is mapped back through the view's
  similarity transform into lesion-local coordinates, where the shape (a radius function of the
  angle), the mask and all textures are defined. Hence the views of one lesion agree exactly, and the
  mask is exact. Textures are value noise: a random grid fixed to the lesion, warped into the view by
  one PIL affine transform (C code; no per-pixel Python), so an image takes a few milliseconds.
* **The class signal lives in the lesion** and follows dermoscopy loosely; it is tabulated in
  :data:`LESION_STYLES` (one dict per class). Dominant cues (palette, size, border irregularity) are
  chosen to survive downsizing to ~64 px, because the demo trains a network from scratch at low
  resolution; fine structures (pigment network, vessels, scales, milia) add realism on top. Ranges
  overlap between classes, and a few lesions per class are blended towards a clinical lookalike
  (:data:`LOOKALIKES`), so the task is learnable but not trivially separable.
* **Artifacts are class-independent** (hairs, ruler marks, ink, gel bubbles, specular highlights, the
  dark circular dermoscope field): they are drawn from the view generator only.
* **Domains** (:data:`DOMAINS`): the unified set differs from the HAM demo in skin tones, illumination
  (colour cast, brightness), magnification and optics (blur, sensor noise, JPEG quality): a controlled
  domain shift for external validation.
* **Determinism.** Every generator is ``numpy.random.default_rng`` seeded from a tuple of integers
  ``(seed, stream, index...)``; iteration orders are fixed tuples; JPEG quality is fixed. Same
  arguments -> byte-identical files, on any CPU: see "CPU-independent maths" below for why the
  per-pixel maths avoids numpy's SIMD-dispatched functions and BLAS.

:func:`render_demo_image` renders a single image and mask (contact sheets, notebooks).
"""

from __future__ import annotations

import bisect
import csv
import functools
import math
import re
import struct
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from multiprocessing import get_context
from pathlib import Path
from statistics import NormalDist

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..classes import CLASSES

# --------------------------------------------------------------------------------------------
# Dataset-level tables
# --------------------------------------------------------------------------------------------

METADATA_COLUMNS: tuple[str, ...] = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")

# Share of *lesions* per class in the HAM demo. The real shares (nv 72%, vasc 1.3%, df 1%) would leave
# ~6 dermatofibromas in a 600-lesion demo; these keep the ordering (nv dominant, df/vasc rare) but
# give every class >= ~35 lesions at n_lesions=600.
HAM_LESION_SHARES: dict[str, float] = {
    "akiec": 0.09, "bcc": 0.10, "bkl": 0.13, "df": 0.075, "mel": 0.13, "nv": 0.40, "vasc": 0.075,
}

# Images per lesion: 1..6 with these probabilities (HAM10000 has ~1.34 images/lesion overall, but
# the demo wants enough multi-view lesions that image-level splitting visibly leaks).
VIEWS_PER_LESION_P: tuple[float, ...] = (0.50, 0.25, 0.13, 0.07, 0.03, 0.02)

# The real metadata table is grouped by diagnosis in this order (rows of one lesion adjacent).
HAM_ROW_ORDER: tuple[str, ...] = ("bkl", "nv", "df", "mel", "vasc", "bcc", "akiec")
FIRST_IMAGE_NUMBER = 24306  # ISIC_0024306 is the first HAM10000 image id

# The real HAM10000 metadata, for demo data at full scale (`ham10000_plan`): per class (images,
# lesions), 10,015 images of 7,470 lesions, and how many lesions have 1..6 images.
HAM10000_IMAGES_LESIONS: dict[str, tuple[int, int]] = {
    "akiec": (327, 228), "bcc": (514, 327), "bkl": (1099, 727), "df": (115, 73),
    "mel": (1113, 614), "nv": (6705, 5403), "vasc": (142, 98),
}
HAM10000_IMAGES_PER_LESION: dict[int, int] = {1: 5514, 2: 1423, 3: 490, 4: 34, 5: 5, 6: 4}

# Image counts of the real unified validation split; the demo keeps the mix but lifts rare classes
# to UNIFIED_MIN_SHARE so per-class recall is measurable with a few hundred images.
UNIFIED_VAL_COUNTS: dict[str, int] = {
    "akiec": 538, "bcc": 1676, "bkl": 482, "df": 71, "mel": 2197, "nv": 3232, "vasc": 87,
}
UNIFIED_MIN_SHARE = 0.05

LOCALIZATIONS: tuple[str, ...] = (
    "abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand",
    "lower extremity", "neck", "scalp", "trunk", "unknown", "upper extremity",
)

# Per-class clinical metadata: age ~ N(mean, sd) rounded to 5 years (as in HAM10000); dx_type and
# body site weights are plausible, not fitted. Sites not listed get a small base weight.
CLINICAL: dict[str, dict] = {
    "akiec": dict(age=(67, 11), dx_type={"histo": 1.0},
                  sites={"face": 6, "upper extremity": 2, "scalp": 1.5, "hand": 1, "back": 1,
                         "lower extremity": 1, "neck": 0.8, "ear": 0.6, "chest": 0.5}),
    "bcc": dict(age=(67, 13), dx_type={"histo": 1.0},
                sites={"face": 4, "back": 3, "trunk": 1.5, "chest": 1.2, "upper extremity": 1,
                       "lower extremity": 1, "neck": 0.8, "scalp": 0.6, "abdomen": 0.6, "ear": 0.4}),
    "bkl": dict(age=(62, 14), dx_type={"histo": 0.55, "consensus": 0.33, "confocal": 0.08, "follow_up": 0.04},
                sites={"face": 3, "back": 3, "trunk": 2, "lower extremity": 2, "upper extremity": 1.5,
                       "chest": 1.2, "abdomen": 1, "neck": 0.5}),
    "df": dict(age=(52, 14), dx_type={"histo": 0.45, "consensus": 0.55},
               sites={"lower extremity": 8, "upper extremity": 2, "trunk": 1, "back": 0.5}),
    "mel": dict(age=(61, 15), dx_type={"histo": 1.0},
                sites={"back": 4, "upper extremity": 2.5, "lower extremity": 2.5, "face": 2, "trunk": 1.5,
                       "chest": 1, "abdomen": 0.8, "scalp": 0.5, "neck": 0.5, "foot": 0.3, "acral": 0.1}),
    "nv": dict(age=(46, 16), dx_type={"follow_up": 0.55, "histo": 0.30, "consensus": 0.15},
               sites={"back": 4, "lower extremity": 3.5, "trunk": 2.5, "abdomen": 2, "upper extremity": 1.8,
                      "chest": 0.8, "foot": 0.6, "face": 0.5, "unknown": 0.5, "neck": 0.3}),
    "vasc": dict(age=(50, 20), dx_type={"histo": 0.45, "consensus": 0.55},
                 sites={"trunk": 2, "lower extremity": 2, "face": 1.5, "back": 1.5, "abdomen": 1,
                        "upper extremity": 1, "hand": 0.5, "genital": 0.3}),
}
_SITE_BASE_WEIGHT = 0.05
_SEX_P = {"male": 0.54, "female": 0.45, "unknown": 0.01}
_AGE_MISSING_P = 0.03

# --------------------------------------------------------------------------------------------
# Lesion appearance: one dict per class (the knobs to tune learnability and realism)
# --------------------------------------------------------------------------------------------
# Units: lengths in image heights at view zoom 1 (radius 0.2 -> 45 px in a 225 px high image);
# colours as 0..255 RGB; (lo, hi) pairs are uniform ranges drawn once per lesion; counts are
# integer ranges; "zone" ranges are in normalised radius (0 centre, 1 border).

_NO_STRUCTURES: dict = dict(
    darkness=(0.92, 1.08),       # multiplies the palette: within-class variation
    colour_jitter=10,            # sd of a per-lesion colour offset, 0..255 units
    mottling=0.06,               # low-frequency brightness variation inside the lesion
    grain=0.06,                  # fine granular pigment texture
    gradient=1.3,                # exponent of the centre->edge colour ramp (higher: flatter centre)
    blotches=(),                 # ((rgb, (coverage lo, hi)), ...): irregular colour regions
    asymmetry=0.0,               # how much blotches pile up on one side
    network=(0.0, 0.0), network_cell=0.018, network_warp=0.35, network_zone=(0.0, 1.0),
    dots=(0, 0), dot_colour=(70, 45, 35), dot_size=(0.005, 0.010), dot_zone=(0.0, 0.9),
    vessels=(0, 0), vessel_colour=(200, 40, 55), vessel_width=(0.004, 0.008),
    nests=(0, 0), nest_colour=(92, 102, 126), nest_size=(0.10, 0.24),
    scale=(0.0, 0.0), scale_colour=(242, 230, 212),
    scar=(0.0, 0.0), scar_colour=(238, 226, 224),
    lacunae=(0, 0), lacuna_colours=(),
    fissures=(0.0, 0.0),
    milia=(0, 0),
)

LESION_STYLES: dict[str, dict] = {
    # Nevus: small/medium, round, regular, uniform tan-brown, regular network fading at the rim.
    "nv": {**_NO_STRUCTURES,
           "radius": (0.19, 0.31), "aspect": (0.75, 1.0), "irregularity": (0.02, 0.06),
           "jaggedness": (0.0, 0.015), "softness": (0.15, 0.3), "opacity": (0.82, 0.95),
           "centre": (140, 70, 44), "edge": (184, 106, 78), "darkness": (0.75, 1.08), "colour_jitter": 12,
           "mottling": 0.07, "grain": 0.08,
           "network": (0.2, 0.35), "network_zone": (0.0, 0.95),
           "dots": (0, 8), "dot_colour": (110, 65, 45), "dot_size": (0.006, 0.012), "dot_zone": (0.0, 0.7)},
    # Melanoma: large, asymmetric, notched border, several colours (dark brown, black, blue-grey veil,
    # red/pink, whitish regression), atypical network, irregular dots at the periphery.
    "mel": {**_NO_STRUCTURES,
            "radius": (0.29, 0.44), "aspect": (0.6, 0.95), "irregularity": (0.08, 0.16),
            "jaggedness": (0.02, 0.05), "softness": (0.06, 0.16), "opacity": (0.88, 0.98),
            "centre": (100, 56, 40), "edge": (156, 96, 70), "darkness": (0.85, 1.1),
            "mottling": 0.15, "grain": 0.08,
            "blotches": (((40, 28, 26), (0.06, 0.28)), ((122, 124, 140), (0.04, 0.25)),
                         ((196, 110, 108), (0.00, 0.18)), ((174, 112, 82), (0.05, 0.25)),
                         ((218, 200, 196), (0.00, 0.06))),
            "asymmetry": 0.8,
            "network": (0.15, 0.3), "network_cell": 0.02, "network_warp": 0.8,
            "dots": (5, 20), "dot_colour": (40, 30, 30), "dot_size": (0.004, 0.014), "dot_zone": (0.35, 1.0)},
    # Seborrhoeic keratosis / benign keratosis: light-to-mid brown, waxy, sharply demarcated
    # ("stuck-on"), fissures and ridges (cerebriform), milia-like cysts, comedo-like openings.
    "bkl": {**_NO_STRUCTURES,
            "radius": (0.28, 0.44), "aspect": (0.65, 0.95), "irregularity": (0.04, 0.10),
            "jaggedness": (0.015, 0.035), "softness": (0.03, 0.08), "opacity": (0.75, 0.9),
            "centre": (194, 146, 118), "edge": (204, 160, 132), "darkness": (0.8, 1.05),
            "mottling": 0.1, "grain": 0.12, "gradient": 2.5,
            "blotches": (((150, 104, 72), (0.10, 0.30)),),
            "fissures": (0.15, 0.28), "milia": (3, 14),
            "dots": (2, 12), "dot_colour": (100, 70, 52), "dot_size": (0.006, 0.012)},
    # Basal cell carcinoma: pink/pearly translucent, ill-defined, blue-grey ovoid nests, red arborizing
    # vessels, sometimes a small crusted ulceration.
    "bcc": {**_NO_STRUCTURES,
            "radius": (0.26, 0.4), "aspect": (0.65, 1.0), "irregularity": (0.05, 0.12),
            "jaggedness": (0.01, 0.03), "softness": (0.25, 0.4), "opacity": (0.78, 0.9),
            "centre": (234, 172, 180), "edge": (238, 188, 194), "mottling": 0.05, "grain": 0.05,
            "blotches": (((120, 52, 45), (0.0, 0.06)),),
            "nests": (3, 8), "nest_colour": (84, 96, 128), "nest_size": (0.12, 0.28), "vessels": (3, 6)},
    # Actinic keratosis / Bowen: red-pink, ill-defined, white-yellow scale, dotted/glomerular vessels.
    "akiec": {**_NO_STRUCTURES,
              "radius": (0.26, 0.42), "aspect": (0.65, 1.0), "irregularity": (0.05, 0.12),
              "jaggedness": (0.02, 0.05), "softness": (0.35, 0.55), "opacity": (0.72, 0.88),
              "centre": (204, 84, 84), "edge": (220, 122, 120), "mottling": 0.1, "grain": 0.08,
              "scale": (0.12, 0.3),
              "dots": (25, 60), "dot_colour": (182, 44, 54), "dot_size": (0.003, 0.007)},
    # Dermatofibroma: small, delicate light-brown network at the periphery, central white scar patch.
    "df": {**_NO_STRUCTURES,
           "radius": (0.16, 0.26), "aspect": (0.75, 1.0), "irregularity": (0.02, 0.06),
           "jaggedness": (0.0, 0.02), "softness": (0.25, 0.4), "opacity": (0.75, 0.9),
           "centre": (150, 96, 74), "edge": (160, 104, 82), "gradient": 1.0,
           "network": (0.25, 0.4), "network_zone": (0.45, 1.05),
           "scar": (0.45, 0.65)},
    # Vascular: red/purple/dark-red lacunae separated by lighter septa, sharply demarcated.
    "vasc": {**_NO_STRUCTURES,
             "radius": (0.14, 0.28), "aspect": (0.7, 1.0), "irregularity": (0.04, 0.1),
             "jaggedness": (0.01, 0.03), "softness": (0.03, 0.08), "opacity": (0.92, 1.0),
             "centre": (190, 60, 88), "edge": (200, 78, 104), "mottling": 0.08,
             "lacunae": (8, 20),
             "lacuna_colours": ((150, 22, 52), (112, 28, 78), (188, 36, 70), (92, 16, 38))},
}


# A few lesions of each class look like another diagnosis, as in the clinic (dysplastic naevus vs early
# melanoma, pigmented actinic keratosis vs BCC...): their appearance is blended part-way towards that
# class. This keeps the demo task from being trivially separable: (lookalike class, probability).
LOOKALIKES: dict[str, tuple[str, float]] = {
    "nv": ("mel", 0.06), "mel": ("nv", 0.06), "bkl": ("mel", 0.05), "bcc": ("akiec", 0.05),
    "akiec": ("bcc", 0.05), "df": ("nv", 0.05), "vasc": ("mel", 0.03),
}
_LOOKALIKE_BLEND = (0.35, 0.65)  # how far towards the other class

@dataclass(frozen=True)
class Domain:
    """Acquisition conditions of one dataset: skin population, illumination and camera."""

    skin_tones: tuple[tuple[int, int, int], ...]  # mixed at random per patient
    skin_darkness: tuple[float, float]             # multiplies the mixed tone
    colour_cast: tuple[float, float, float]        # mean white-balance gains per channel
    cast_jitter: float                             # sd of per-image gains
    brightness: tuple[float, float]
    zoom: tuple[float, float]                      # magnification relative to the HAM demo
    blur: tuple[float, float]                      # Gaussian radius in px for a 225 px high image
    sensor_noise: float                            # sd, 0..1 units
    jpeg_quality: int
    p_vignette: float
    p_hair: float
    p_ruler: float
    p_ink: float
    p_bubbles: float
    p_specular: float
    lookalike_factor: float                        # multiplies LOOKALIKES' probabilities (case mix)


DOMAINS: dict[str, Domain] = {
    "ham": Domain(
        skin_tones=((238, 194, 190), (232, 186, 170), (228, 192, 200), (232, 180, 178)),
        skin_darkness=(0.93, 1.03), colour_cast=(1.0, 1.0, 1.0), cast_jitter=0.015,
        brightness=(0.94, 1.04), zoom=(0.88, 1.15), blur=(0.0, 0.6), sensor_noise=0.0,
        jpeg_quality=92, p_vignette=0.08, p_hair=0.25, p_ruler=0.05, p_ink=0.03,
        p_bubbles=0.1, p_specular=0.2, lookalike_factor=1.0),
    # Other clinics. Acquisition: more pigmented skin, a slightly warm lamp whose white balance
    # varies from image to image (many clinics, not one), dimmer, higher magnification, softer
    # optics, a noisier sensor, stronger JPEG compression. Case mix: a referral population, with
    # five times HAM's share of equivocal lesions (15 to 30% per class; three times, as before, left
    # a domain-shift drop of 0.06 to 0.12 over training seeds, and the demo must show one of at
    # least 0.10 in every run: README "How the demo recipe got here"). An earlier version shifted
    # every image's colour the same way (a cast of (1.05, 1.0, 0.9)), and which rare classes a model
    # still recognised then depended on its training draws: external balanced accuracy 0.65 to 0.94
    # over training seeds and two such casts. Shifts that vary per image average out instead.
    "unified": Domain(
        skin_tones=((228, 182, 166), (218, 168, 146), (232, 190, 180), (204, 154, 130)),
        skin_darkness=(0.9, 1.02), colour_cast=(1.01, 1.0, 0.98), cast_jitter=0.04,
        brightness=(0.88, 1.04), zoom=(0.92, 1.25), blur=(0.4, 1.2), sensor_noise=0.015,
        jpeg_quality=78, p_vignette=0.3, p_hair=0.3, p_ruler=0.06, p_ink=0.04,
        p_bubbles=0.25, p_specular=0.3, lookalike_factor=5.0),
}

# Generator streams: rng([seed, stream, index...]) keeps every random decision independent of
# the others, so e.g. adding a view never changes another lesion's pixels.
_TABLE_STREAM, _LESION_STREAM, _VIEW_STREAM, _UNI_TABLE_STREAM, _UNI_LESION_STREAM, _UNI_VIEW_STREAM = range(6)
_MAX_OFFSET = (0.12, 0.08)  # lesion centre offset in the view, image heights (x, y)
_MIN_ZOOM = 0.85            # no domain zooms out further; sizes the lesion-fixed noise grids
_REFERENCE_SKIN = (232, 190, 180)  # lesion palettes are defined on this skin tone

# --------------------------------------------------------------------------------------------
# Lesion and view parameters
# --------------------------------------------------------------------------------------------


@dataclass
class Lesion:
    """Everything fixed for one lesion (and its patient's skin), in lesion-local coordinates."""

    dx: str
    key: tuple[int, ...]        # seeds the lesion-fixed noise grids
    style: dict
    radius: float
    aspect: float
    harmonics: np.ndarray       # (K, 2) float32: real and imaginary parts of c_k, k = 1..K
    jaggedness: float
    softness: float
    opacity: float
    centre: np.ndarray          # rgb 0..1
    edge: np.ndarray
    blotches: list              # [(rgb, coverage, direction)]
    network: float
    fissures: float
    scale: float
    scar: float
    dots: np.ndarray            # (n, 3): u, v, radius
    milia: np.ndarray           # (n, 3)
    nests: list                 # [polygon (m, 2)]
    vessels: list               # [(polyline (m, 2), width)]
    lacunae: list               # [(u, v, radius, rgb)]
    skin: np.ndarray            # patient skin tone rgb 0..1
    erythema: float


@dataclass
class View:
    """One photograph of a lesion: geometry, light and class-independent artifacts."""

    angle: float
    zoom: float
    offset: tuple[float, float]
    gains: np.ndarray           # per-channel white balance x brightness
    light_gradient: tuple[float, float]
    blur: float
    rng: np.random.Generator    # remaining per-view draws (artifacts, noise)


# --------------------------------------------------------------------------------------------
# CPU-independent maths
# --------------------------------------------------------------------------------------------
# numpy computes +, -, *, /, sqrt, abs, min/max, clip, floor/rint and casts exactly as IEEE 754
# says, so they give the same bits on every CPU. Its transcendental ufuncs do not: power, exp, log
# (float32 and float64), float32 sin/cos and complex abs run kernels that numpy picks at import from
# the CPU's SIMD extensions (AVX-512 / AVX2 / SSE / NEON), and dot, @ and linalg run OpenBLAS
# kernels picked per CPU; they differ in the last bit. One such bit on a float32 pixel value that
# sits on a rounding boundary changes a byte of a JPEG (it did: t ** gradient in the lesion's colour
# ramp changed one pixel of one image between an AVX-512 and an AVX2 machine). So all per-pixel
# maths below uses only the exact operations; cosines and powers are polynomials or tables of them.
# Per-lesion and per-view scalars (float64, Python's math, numpy's random) may differ by an ulp
# between C libraries; they reach the float32 pixel maths through a rounding to float32, which an
# ulp of float64 changes with probability ~2^-29, and the drawn shapes through coordinates.
# Pillow's resampling and drawing have no run-time CPU dispatch on x86-64, and libjpeg-turbo's
# SIMD variants are bit-exact with its C code (the tests check all of this under AVX2 and SSE
# settings). Not checked: arm64, where a compiler may fuse Pillow's float multiply-adds.

_POWER_STEPS = 1024  # a power of two, so t * steps, its floor and the remainder are exact


@functools.lru_cache(maxsize=256)
def _power_table(exponent: float) -> np.ndarray:
    return np.array([(i / _POWER_STEPS) ** exponent for i in range(_POWER_STEPS + 2)], dtype=np.float32)


def _power01(t: np.ndarray, exponent: float) -> np.ndarray:
    """t ** exponent for float32 t in [0, 1]: linear interpolation in a 1024-step table (error < 1e-4)."""
    table = _power_table(float(exponent))
    s = t * np.float32(_POWER_STEPS)
    floor = np.floor(s)
    i = floor.astype(np.intp)
    lo = table[i]
    return lo + (table[i + 1] - lo) * (s - floor)


# Taylor coefficients of sin on [-pi/2, pi/2] up to x^11 (truncation error < 6e-8).
_SIN_COEFFS = tuple(np.float32((-1) ** k / math.factorial(2 * k + 1)) for k in range(6))


def _cos_turns(x: np.ndarray) -> np.ndarray:
    """cos(2 pi x) for float32 x (x in turns), from exact operations only."""
    r = np.abs(x - np.rint(x))                             # [0, 1/2]: cos is even and 1-periodic in x
    s = (r - np.float32(0.25)) * np.float32(2 * math.pi)   # cos(2 pi r) = -sin(s), s in [-pi/2, pi/2]
    s2 = s * s
    acc = np.full_like(s, _SIN_COEFFS[-1])
    for c in reversed(_SIN_COEFFS[:-1]):
        acc = acc * s2 + c
    return -(acc * s)


def _rgb(c) -> np.ndarray:
    return np.asarray(c, dtype=np.float32) / 255.0


def _uniform(rng: np.random.Generator, lo_hi) -> float:
    return float(rng.uniform(*lo_hi))


def _count(rng: np.random.Generator, lo_hi) -> int:
    return int(rng.integers(lo_hi[0], lo_hi[1] + 1))


def _points_in_disc(rng, n: int, radius: float, zone=(0.0, 1.0)) -> np.ndarray:
    """n points uniform (by area) in an annulus of the disc of the given radius."""
    r = np.sqrt(rng.uniform(zone[0] ** 2, min(zone[1], 1.0) ** 2, n)) * radius
    a = rng.uniform(0, 2 * np.pi, n)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _sample_harmonics(rng, irregularity: float, jaggedness: float) -> np.ndarray:
    """Fourier coefficients of r(phi): low orders give asymmetry and lobes, high orders notches."""
    amps = np.concatenate([rng.dirichlet(np.ones(4)) * irregularity, rng.dirichlet(np.ones(8)) * jaggedness])
    phases = rng.uniform(0, 2 * np.pi, amps.size)
    return np.stack([amps * np.cos(phases), amps * np.sin(phases)], axis=1).astype(np.float32)


def _sample_vessel_tree(rng, radius: float, width: float) -> list:
    """Arborizing vessel: a curvy trunk branching twice into thinner, shorter twigs."""
    segments = []
    start = _points_in_disc(rng, 1, radius * 0.6)[0]
    stack = [(start, rng.uniform(0, 2 * np.pi), radius * rng.uniform(0.45, 0.8), width, 0)]
    while stack:
        p, heading, length, w, depth = stack.pop()
        pts = [p]
        for _ in range(6):
            heading += rng.normal(0, 0.35)
            p = p + length / 6 * np.array([np.cos(heading), np.sin(heading)])
            pts.append(p)
        segments.append((np.array(pts), w))
        if depth < 2:
            for sign in (-1, 1):
                stack.append((p, heading + sign * rng.uniform(0.3, 0.9), length * 0.6, w * 0.7, depth + 1))
    return segments


def _sample_nest(rng, radius: float, size) -> np.ndarray:
    """Blue-grey ovoid nest: a slightly bumpy ellipse polygon inside the lesion."""
    c = _points_in_disc(rng, 1, radius * 0.7)[0]
    a = radius * _uniform(rng, size)
    b = a * rng.uniform(0.45, 0.9)
    rot = rng.uniform(0, np.pi)
    t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    bump = 1 + 0.12 * np.sin(3 * t + rng.uniform(0, 2 * np.pi))
    x, y = a * np.cos(t) * bump, b * np.sin(t) * bump
    return np.stack([c[0] + x * np.cos(rot) - y * np.sin(rot), c[1] + x * np.sin(rot) + y * np.cos(rot)], axis=1)


def _sample_skin(rng, domain: Domain) -> np.ndarray:
    tones = np.array([_rgb(t) for t in domain.skin_tones])
    w = rng.dirichlet(np.full(len(tones), 0.6))
    mixed = sum(float(wi) * tone.astype(np.float64) for wi, tone in zip(w, tones))  # not w @ tones: BLAS
    return (mixed * _uniform(rng, domain.skin_darkness)).astype(np.float32)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _mix_styles(own: dict, other: dict, t: float) -> dict:
    """Interpolate numbers and numeric ranges; structured entries (blotch lists...) switch at t = 0.5."""
    def mix(a, b):
        if _is_number(a) and _is_number(b):
            v = a + (b - a) * t
            return round(v) if isinstance(a, int) and isinstance(b, int) else v
        if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and all(map(_is_number, a + b)):
            return tuple(mix(x, y) for x, y in zip(a, b))
        return b if t >= 0.5 else a
    return {k: mix(own[k], other[k]) for k in own}


def _lesion_style(dx: str, rng: np.random.Generator, lookalike_factor: float) -> dict:
    other, p = LOOKALIKES[dx]
    if rng.random() < p * lookalike_factor:
        return _mix_styles(LESION_STYLES[dx], LESION_STYLES[other], _uniform(rng, _LOOKALIKE_BLEND))
    return LESION_STYLES[dx]


def sample_lesion(dx: str, rng: np.random.Generator, key: tuple[int, ...], domain: Domain) -> Lesion:
    """Draw one lesion of class dx; `key` seeds its lesion-fixed noise grids."""
    st = _lesion_style(dx, rng, domain.lookalike_factor)
    radius = _uniform(rng, st["radius"])
    jaggedness = _uniform(rng, st["jaggedness"])
    darkness = _uniform(rng, st["darkness"])
    # Mostly a common offset: per-channel noise would turn browns olive.
    jitter = rng.normal(0, st["colour_jitter"]) + rng.normal(0, 0.3 * st["colour_jitter"], 3)
    centre = np.clip((np.array(st["centre"]) + jitter) * darkness, 0, 255) / 255
    edge = np.clip((np.array(st["edge"]) + jitter) * darkness, 0, 255) / 255
    blotches = [(_rgb(col), _uniform(rng, cov), rng.uniform(0, 2 * np.pi)) for col, cov in st["blotches"]]

    dots = _points_in_disc(rng, _count(rng, st["dots"]), radius, st["dot_zone"])
    dots = np.column_stack([dots, rng.uniform(*st["dot_size"], len(dots))])
    milia = _points_in_disc(rng, _count(rng, st["milia"]), radius * 0.85)
    milia = np.column_stack([milia, rng.uniform(0.005, 0.011, len(milia))])
    nests = [_sample_nest(rng, radius, st["nest_size"]) for _ in range(_count(rng, st["nests"]))]
    vessels = [seg for _ in range(_count(rng, st["vessels"]))
               for seg in _sample_vessel_tree(rng, radius, _uniform(rng, st["vessel_width"]))]
    lacunae = []
    if st["lacunae"][1] and st["lacuna_colours"]:  # a lookalike may keep the count but not the colours
        for u, v in _points_in_disc(rng, _count(rng, st["lacunae"]), radius * 0.75):
            col = st["lacuna_colours"][int(rng.integers(len(st["lacuna_colours"])))]
            lacunae.append((u, v, radius * rng.uniform(0.12, 0.28), _rgb(col)))

    return Lesion(
        dx=dx, key=tuple(int(k) for k in key), style=st, radius=radius, aspect=_uniform(rng, st["aspect"]),
        harmonics=_sample_harmonics(rng, _uniform(rng, st["irregularity"]), jaggedness), jaggedness=jaggedness,
        softness=_uniform(rng, st["softness"]), opacity=_uniform(rng, st["opacity"]),
        centre=centre.astype(np.float32), edge=edge.astype(np.float32), blotches=blotches,
        network=_uniform(rng, st["network"]), fissures=_uniform(rng, st["fissures"]),
        scale=_uniform(rng, st["scale"]), scar=_uniform(rng, st["scar"]),
        dots=dots, milia=milia, nests=nests, vessels=vessels, lacunae=lacunae,
        skin=_sample_skin(rng, domain), erythema=float(rng.uniform(0, 1)),
    )


def sample_view(rng: np.random.Generator, domain: Domain) -> View:
    cast = np.array(domain.colour_cast) * (1 + rng.normal(0, domain.cast_jitter, 3))
    return View(
        angle=float(rng.uniform(0, 2 * np.pi)),
        zoom=_uniform(rng, domain.zoom),
        offset=(float(rng.uniform(-1, 1) * _MAX_OFFSET[0]), float(rng.uniform(-1, 1) * _MAX_OFFSET[1])),
        gains=(cast * _uniform(rng, domain.brightness)).astype(np.float32),
        light_gradient=(float(rng.uniform(0, 0.08)), float(rng.uniform(0, 2 * np.pi))),
        blur=_uniform(rng, domain.blur),
        rng=rng,
    )


# --------------------------------------------------------------------------------------------
# Geometry: view pixels <-> lesion-local coordinates
# --------------------------------------------------------------------------------------------


class Frame:
    """A rectangle of view pixels and the affine map of its pixel centres to lesion-local coordinates."""

    def __init__(self, size: tuple[int, int], to_local: np.ndarray, px_per_unit: float, extent: float):
        self.size = size
        self.to_local = to_local        # 2x3: (x + 0.5, y + 0.5, 1) -> (u, v)
        self.px_per_unit = px_per_unit
        self.extent = extent
        # The inverse by hand (np.linalg.inv runs BLAS kernels that differ by CPU in the last bit).
        (a, b, tx), (c, d, ty) = (tuple(float(x) for x in row) for row in to_local)
        det = a * d - b * c
        ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
        self._to_pixels = np.array([[ia, ib, -(ia * tx + ib * ty)], [ic, id_, -(ic * tx + id_ * ty)]])

    @classmethod
    def for_view(cls, size: tuple[int, int], view: View) -> Frame:
        w, h = size
        c, s = math.cos(view.angle), math.sin(view.angle)
        k = 1.0 / (h * view.zoom)
        ox, oy = -w / (2 * h) - view.offset[0], -0.5 - view.offset[1]
        # (u, v) = R(-angle) ((x, y) / h - centre) / zoom
        to_local = np.array([[c * k, s * k, (c * ox + s * oy) / view.zoom],
                             [-s * k, c * k, (-s * ox + c * oy) / view.zoom]])
        # Half-size of the lesion-local square any view of this image size can see. It depends on
        # the image size only, so the noise grids (hence all textures) are identical across views.
        extent = (0.5 * math.hypot(w / h, 1) + math.hypot(*_MAX_OFFSET)) / _MIN_ZOOM + 0.05
        return cls(size, to_local, h * view.zoom, extent)

    def crop(self, box: tuple[int, int, int, int]) -> Frame:
        x0, y0, x1, y1 = box
        to_local = self.to_local.copy()
        to_local[:, 2] += to_local[:, 0] * x0 + to_local[:, 1] * y0
        return Frame((x1 - x0, y1 - y0), to_local, self.px_per_unit, self.extent)

    @cached_property
    def uv(self) -> tuple[np.ndarray, np.ndarray]:
        w, h = self.size
        a = self.to_local.astype(np.float32)
        px = np.arange(w, dtype=np.float32) + 0.5
        py = np.arange(h, dtype=np.float32)[:, None] + 0.5
        return a[0, 0] * px + a[0, 1] * py + a[0, 2], a[1, 0] * px + a[1, 1] * py + a[1, 2]

    def to_pixels(self, pts: np.ndarray) -> np.ndarray:
        """Lesion-local points (n, 2) -> pixel coordinates (n, 2) of this frame."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        (a, b, tx), (c, d, ty) = self._to_pixels
        u, v = pts[:, 0], pts[:, 1]
        return np.stack([a * u + b * v + (tx - 0.5), c * u + d * v + (ty - 0.5)], axis=1)

    def noise(self, key: tuple[int, ...], cell: float, smooth: bool = True) -> np.ndarray:
        """Value noise fixed to the lesion, roughly N(0, 1) per pixel, with blobs of size `cell`.

        Coarse noise is warped at reduced resolution and upsampled: same field, a fraction of the cost."""
        n = int(math.ceil(2 * self.extent / cell)) + 2
        grid = Image.fromarray(np.random.default_rng(key).random((n, n), dtype=np.float32))
        a = self.to_local / cell
        a[:, 2] += self.extent / cell
        w, h = self.size
        f = max(1, min(8, int(cell * self.px_per_unit / 3))) if smooth else 1
        if f > 1:
            a[:, :2] *= f
            small = grid.transform((-(-w // f), -(-h // f)), Image.Transform.AFFINE, tuple(a.ravel()),
                                   resample=Image.Resampling.BICUBIC)
            out = small.resize((w, h), Image.Resampling.BICUBIC, box=(0, 0, w / f, h / f))
        else:
            resample = Image.Resampling.BICUBIC if smooth else Image.Resampling.BILINEAR
            out = grid.transform((w, h), Image.Transform.AFFINE, tuple(a.ravel()), resample=resample)
        # Interpolated uniform noise has sd ~0.24 (bicubic) / ~0.19 (bilinear) around 0.5.
        return (np.asarray(out) - np.float32(0.5)) * np.float32(4.2 if smooth else 5.2)

    def layer(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        img = Image.new("L", self.size, 0)
        return img, ImageDraw.Draw(img)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) * np.float32(1.0 / (e1 - e0)), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _luminance(rgb: np.ndarray) -> float:
    r, g, b = (float(x) for x in rgb)
    return 0.299 * r + 0.587 * g + 0.114 * b


def _as_float(layer: Image.Image, blur: float = 0.0) -> np.ndarray:
    if blur > 0:
        # A single box pass is enough to anti-alias drawn shapes and ~3x cheaper than a Gaussian.
        layer = layer.filter(ImageFilter.BoxBlur(blur) if blur <= 1 else ImageFilter.GaussianBlur(blur))
    return np.asarray(layer, dtype=np.float32) * np.float32(1.0 / 255.0)


def _blend(img: np.ndarray, colour, weight) -> np.ndarray:
    """img + (colour - img) * weight; colour an rgb triple or an image, weight a scalar or a map."""
    if np.ndim(weight) == 2:
        weight = weight[..., None]
    return img + (colour - img) * weight


def _blend_layer(img: np.ndarray, colour, layer: Image.Image, strength: float, blur: float = 0.0) -> np.ndarray:
    """Blend a drawn layer into img in place, touching only the layer's bounding box (speed)."""
    box = layer.getbbox()
    if box is None:
        return img
    m = int(math.ceil(3 * blur)) + 1
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(box[0] - m, 0), max(box[1] - m, 0), min(box[2] + m, w), min(box[3] + m, h)
    weight = strength * _as_float(layer.crop((x0, y0, x1, y1)), blur)
    if np.ndim(colour) == 3:
        colour = colour[y0:y1, x0:x1]
    img[y0:y1, x0:x1] = _blend(img[y0:y1, x0:x1], colour, weight)
    return img


# --------------------------------------------------------------------------------------------
# Painting: skin, lesion shape, lesion structures
# --------------------------------------------------------------------------------------------


def _paint_skin(fr: Frame, les: Lesion) -> tuple[np.ndarray, np.ndarray]:
    """Skin with mottled tone, patchy erythema, fine grain and the faint whitish skin furrows.

    Returns the skin and its fine grain (reused in the lesion: the surface texture continues)."""
    k = les.key
    low = fr.noise((*k, 1), 0.35)
    red = np.maximum(fr.noise((*k, 2), 0.22), 0)
    grain = fr.noise((*k, 3), 0.011, smooth=False)
    furrows = 1 - _smoothstep(0.0, 0.22, np.abs(fr.noise((*k, 4), 0.07)))
    shade = 1 + 0.025 * low + 0.02 * grain
    f = 0.12 * furrows
    # tone * shade, plus erythema, then lightened along the furrows: one pass per channel.
    a, b, c = shade * (1 - f), (0.03 * les.erythema) * red * (1 - f), 0.97 * f
    skin = np.empty((*a.shape, 3), dtype=np.float32)
    for ch, red_shift in enumerate((0.35, -0.7, -0.45)):
        skin[..., ch] = a * les.skin[ch] + b * np.float32(red_shift) + c
    return skin, grain


def _lesion_box(fr: Frame, les: Lesion) -> tuple[int, int, int, int]:
    """Pixel box that contains the lesion including its soft border (the lesion is painted only there)."""
    amplitude = sum(math.sqrt(float(re) * float(re) + float(im) * float(im)) for re, im in les.harmonics)
    reach = les.radius * (1 + amplitude) * (1 + 4 * les.jaggedness) * (1 + les.softness) + 0.01
    cx, cy = fr.to_pixels(np.zeros((1, 2)))[0]
    r = reach * fr.px_per_unit + 2
    w, h = fr.size
    return (int(np.clip(cx - r, 0, w - 1)), int(np.clip(cy - r, 0, h - 1)),
            int(np.clip(cx + r + 1, 1, w)), int(np.clip(cy + r + 1, 1, h)))


def _shape_field(fr: Frame, les: Lesion) -> np.ndarray:
    """Normalised radius d (0 centre, 1 border) for r(phi) = R (1 + sum_k Re c_k e^{ik phi})."""
    u, v = fr.uv
    x, y = u, v / np.float32(les.aspect)
    rho = np.sqrt(x * x + y * y) + np.float32(1e-6)
    cos1, sin1 = x / rho, y / rho
    cos_k, sin_k = cos1, sin1  # cos(k phi), sin(k phi) by the angle-addition recurrence (real arithmetic)
    r = np.ones_like(rho)
    for re, im in les.harmonics:
        r += re * cos_k - im * sin_k
        cos_k, sin_k = cos_k * cos1 - sin_k * sin1, sin_k * cos1 + cos_k * sin1
    d = rho / (np.float32(les.radius) * np.maximum(r, np.float32(0.3)))
    if les.jaggedness > 0:
        d *= 1 + np.float32(les.jaggedness) * fr.noise((*les.key, 10), les.radius * 0.12)
    return d


def _base_colour(fr: Frame, les: Lesion, d: np.ndarray) -> np.ndarray:
    t = _power01(np.clip(d, np.float32(0), np.float32(1)), les.style["gradient"])
    col = les.centre + (les.edge - les.centre) * t[..., None]
    mottle = 1 + les.style["mottling"] * (fr.noise((*les.key, 11), les.radius * 0.4)
                                          + 0.5 * fr.noise((*les.key, 12), les.radius * 0.15))
    return col * mottle[..., None]


def _paint_blotches(fr: Frame, les: Lesion, col: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Irregular colour regions (melanoma's black, blue-grey, red, regression), piled on one side."""
    u, v = fr.uv
    asym = les.style["asymmetry"]
    inside = 1 - _smoothstep(0.7, 1.0, d)
    for i, (rgb, coverage, direction) in enumerate(les.blotches):
        if coverage <= 0.005:
            continue
        n = fr.noise((*les.key, 20 + i), les.radius * 0.3) + 0.5 * fr.noise((*les.key, 40 + i), les.radius * 0.1)
        side = (u * math.cos(direction) + v * math.sin(direction)) / les.radius
        thr = NormalDist().inv_cdf(1 - coverage) * 1.1
        col = _blend(col, rgb, 0.75 * _smoothstep(thr - 0.7, thr + 0.7, n + asym * side) * inside)
    return col


def _paint_network(fr: Frame, les: Lesion, col: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Pigment network: a warped honeycomb (three cosines at 120 deg) of darker lines, patchy."""
    st = les.style
    cell = st["network_cell"]
    u, v = fr.uv
    warp = st["network_warp"] * cell
    u = u + warp * fr.noise((*les.key, 30), cell * 2.5)
    v = v + warp * fr.noise((*les.key, 31), cell * 2.5)
    a, b = u * np.float32(1 / cell), v * np.float32(1 / cell)  # in cells: cos(2 pi a) = cos(k u)
    h = _cos_turns(a) + _cos_turns(-0.5 * a + 0.866 * b) + _cos_turns(-0.5 * a - 0.866 * b)
    lines = _smoothstep(1.2, -1.0, h)
    z0, z1 = st["network_zone"]
    zone = 1 - _smoothstep(z1 - 0.3, z1, d)
    if z0 > 0:
        zone = zone * _smoothstep(z0 - 0.15, z0 + 0.1, d)
    patchy = np.clip(1 + 0.6 * fr.noise((*les.key, 32), les.radius * 0.4), 0, 1.5)
    return col * (1 - les.network * lines * zone * patchy)[..., None]


def _paint_fissures(fr: Frame, les: Lesion, col: np.ndarray) -> np.ndarray:
    """Cerebriform look: winding dark furrows (zero lines of a noise field) between paler ridges."""
    n = fr.noise((*les.key, 50), les.radius * 0.22)
    furrow = 1 - _smoothstep(0.0, 0.35, np.abs(n))
    return col * (1 - les.fissures * (furrow - 0.25))[..., None]


def _paint_scale(fr: Frame, les: Lesion, col: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Keratin scale: white-yellow flakes, coarse patches broken up by fine noise."""
    n = fr.noise((*les.key, 60), les.radius * 0.12) + 0.6 * fr.noise((*les.key, 61), 0.015, smooth=False)
    thr = NormalDist().inv_cdf(1 - les.scale) * 1.15
    flakes = _smoothstep(thr - 0.3, thr + 0.5, n) * (1 - _smoothstep(0.55, 0.95, d))
    return _blend(col, _rgb(les.style["scale_colour"]), 0.75 * flakes)


def _paint_scar(fr: Frame, les: Lesion, col: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Dermatofibroma's central white scar-like patch with a ragged edge."""
    ds = d * (1 + 0.2 * fr.noise((*les.key, 70), les.radius * 0.25))
    patch = 1 - _smoothstep(les.scar * 0.55, les.scar * 1.2, ds)
    return _blend(col, _rgb(les.style["scar_colour"]), 0.85 * patch)


def _draw_discs(fr: Frame, pts: np.ndarray) -> Image.Image:
    layer, draw = fr.layer()
    for (x, y), r in zip(fr.to_pixels(pts[:, :2]), pts[:, 2] * fr.px_per_unit):
        r = max(r, 0.6)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    return layer


def _paint_dots(fr: Frame, les: Lesion, col: np.ndarray) -> np.ndarray:
    """Dots/globules: pigment, comedo-like openings or dotted vessels, depending on the colour."""
    return _blend_layer(col, _rgb(les.style["dot_colour"]), _draw_discs(fr, les.dots), 0.85, 0.6)


def _paint_milia(fr: Frame, les: Lesion, col: np.ndarray) -> np.ndarray:
    return _blend_layer(col, _rgb((240, 234, 208)), _draw_discs(fr, les.milia), 0.75, 0.8)


def _paint_nests(fr: Frame, les: Lesion, col: np.ndarray) -> np.ndarray:
    layer, draw = fr.layer()
    for poly in les.nests:
        draw.polygon([tuple(p) for p in fr.to_pixels(poly)], fill=255)
    return _blend_layer(col, _rgb(les.style["nest_colour"]), layer, 0.8, 0.012 * fr.px_per_unit)


def _paint_vessels(fr: Frame, les: Lesion, col: np.ndarray) -> np.ndarray:
    layer, draw = fr.layer()
    for pts, width in les.vessels:
        draw.line([tuple(p) for p in fr.to_pixels(pts)], fill=255,
                  width=max(1, round(width * fr.px_per_unit)), joint="curve")
    return _blend_layer(col, _rgb(les.style["vessel_colour"]), layer, 0.85, 0.5)


def _paint_lacunae(fr: Frame, les: Lesion, col: np.ndarray) -> np.ndarray:
    """Round red/purple lobules; the lesion's base colour shows between them as lighter septa."""
    rgb = Image.new("RGB", fr.size)
    alpha, draw_alpha = fr.layer()
    draw_rgb = ImageDraw.Draw(rgb)
    xy = fr.to_pixels(np.array([[u, v] for u, v, _, _ in les.lacunae]))
    for (x, y), (_, _, r, c) in zip(xy, les.lacunae):
        r *= fr.px_per_unit
        box = [x - r, y - r, x + r, y + r]
        draw_rgb.ellipse(box, fill=tuple(int(255 * ch) for ch in c))
        draw_alpha.ellipse(box, fill=255)
    blur = ImageFilter.GaussianBlur(0.006 * fr.px_per_unit)
    w = _as_float(alpha.filter(blur))
    lac = np.asarray(rgb.filter(blur), dtype=np.float32) / 255.0
    lac = lac / np.maximum(w, np.float32(1e-3))[..., None]  # un-premultiply the blurred rims
    return _blend(col, lac, 0.85 * w)


def _paint_lesion(fr_full: Frame, les: Lesion, skin: np.ndarray, grain: np.ndarray):
    """Composite the lesion over the skin (in place); returns the image and the binary lesion mask."""
    x0, y0, x1, y1 = box = _lesion_box(fr_full, les)
    fr = fr_full.crop(box)
    d = _shape_field(fr, les)
    col = _base_colour(fr, les, d)
    if les.blotches:
        col = _paint_blotches(fr, les, col, d)
    if les.network > 0:
        col = _paint_network(fr, les, col, d)
    if les.fissures > 0:
        col = _paint_fissures(fr, les, col)
    if les.scar > 0:
        col = _paint_scar(fr, les, col, d)
    if les.scale > 0:
        col = _paint_scale(fr, les, col, d)
    if les.lacunae:
        col = _paint_lacunae(fr, les, col)
    if les.nests:
        col = _paint_nests(fr, les, col)
    if les.vessels:
        col = _paint_vessels(fr, les, col)
    if len(les.dots):
        col = _paint_dots(fr, les, col)
    if len(les.milia):
        col = _paint_milia(fr, les, col)
    # Pigment on darker skin looks darker; the surface grain continues through the lesion.
    tint = np.sqrt(_luminance(les.skin) / _luminance(_rgb(_REFERENCE_SKIN)))
    col *= tint * (1 + les.style["grain"] * grain[y0:y1, x0:x1])[..., None]
    alpha = (1 - _smoothstep(1 - les.softness, 1 + les.softness, d)) * np.float32(les.opacity)
    skin[y0:y1, x0:x1] = _blend(skin[y0:y1, x0:x1], col, alpha)
    mask = np.zeros(skin.shape[:2], dtype=bool)
    mask[y0:y1, x0:x1] = d < 1.0
    return skin, mask


# --------------------------------------------------------------------------------------------
# Class-independent artifacts (drawn from the view generator only)
# --------------------------------------------------------------------------------------------


def _add_hairs(img: np.ndarray, fr: Frame, rng: np.random.Generator) -> np.ndarray:
    """Dark curved hairs: quadratic Bezier curves crossing the field."""
    w, h = fr.size
    layer, draw = fr.layer()
    t = np.linspace(0, 1, 16)[:, None]
    for _ in range(int(rng.choice([1, 2, 3, 5, 8, 14]))):
        p0 = rng.uniform([-0.1 * w, -0.1 * h], [1.1 * w, 1.1 * h])
        a = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.25, 1.0) * w
        p2 = p0 + length * np.array([np.cos(a), np.sin(a)])
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.15 * length, 2)
        pts = (1 - t) * (1 - t) * p0 + 2 * (1 - t) * t * p1 + t * t * p2
        draw.line([tuple(p) for p in pts], fill=255, width=max(1, round(rng.uniform(0.5, 1.6) * h / 225)),
                  joint="curve")
    return _blend_layer(img, _rgb((38, 28, 24)) * rng.uniform(0.6, 1.6), layer, 0.9, 0.5)


def _add_ruler(img: np.ndarray, fr: Frame, rng: np.random.Generator) -> np.ndarray:
    """Ruler / scale-bar ticks along the top or bottom edge."""
    w, h = fr.size
    layer, draw = fr.layer()
    step = rng.uniform(0.035, 0.05) * h
    base = rng.uniform(0.03, 0.08) * h
    top = rng.random() < 0.5
    for i in range(int(w / step)):
        x = (i + 0.5) * step
        length = base * (2.0 if i % 5 == 0 else 1.0)
        y0, y1 = (0, length) if top else (h - 1 - length, h - 1)
        draw.line([(x, y0), (x, y1)], fill=255, width=max(1, round(h / 225)))
    return _blend_layer(img, _rgb((30, 26, 40)), layer, 0.85, 0.4)


def _add_ink(img: np.ndarray, fr: Frame, rng: np.random.Generator) -> np.ndarray:
    """Purple surgical-marker stroke near the top or bottom edge."""
    w, h = fr.size
    layer, draw = fr.layer()
    cx, cy = rng.uniform(0.1, 0.9) * w, rng.choice([0.05, 0.95]) * h
    r = rng.uniform(0.1, 0.3) * h
    start = rng.uniform(0, 360)
    draw.arc([cx - r, cy - r, cx + r, cy + r], start, start + rng.uniform(40, 160), fill=255,
             width=max(2, round(rng.uniform(3, 7) * h / 225)))
    return _blend_layer(img, _rgb((96, 52, 128)), layer, 0.7, 1.0)


def _add_bubbles(img: np.ndarray, fr: Frame, rng: np.random.Generator) -> np.ndarray:
    """Immersion-gel air bubbles: bright thin rims with a slightly lighter inside."""
    w, h = fr.size
    rim, draw_rim = fr.layer()
    fill, draw_fill = fr.layer()
    for _ in range(int(rng.integers(1, 6))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.015, 0.12) * h
        draw_fill.ellipse([x - r, y - r, x + r, y + r], fill=255)
        draw_rim.ellipse([x - r, y - r, x + r, y + r], outline=255, width=max(1, round(h / 225)))
    img = _blend_layer(img, np.float32(1.0), fill, 0.08)
    return _blend_layer(img, np.float32(1.0), rim, 0.55, 0.5)


def _add_specular(img: np.ndarray, fr: Frame, rng: np.random.Generator) -> np.ndarray:
    """Small specular reflections of the light source."""
    w, h = fr.size
    layer, draw = fr.layer()
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    for _ in range(int(rng.integers(3, 20))):
        x, y = cx + rng.normal(0, 0.12 * h), cy + rng.normal(0, 0.12 * h)
        r = rng.uniform(0.4, 1.6) * h / 225
        draw.ellipse([x - r, y - r * 0.7, x + r, y + r * 0.7], fill=255)
    return _blend_layer(img, np.float32(1.0), layer, 0.9, 0.6)


def _add_vignette(img: np.ndarray, fr: Frame, rng: np.random.Generator) -> np.ndarray:
    """The dark corners of a contact dermoscope's circular field of view."""
    w, h = fr.size
    cx, cy = w / 2 + rng.normal(0, 0.03 * w), h / 2 + rng.normal(0, 0.03 * h)
    radius = 0.5 * math.hypot(w, h) * rng.uniform(0.78, 0.97)
    x = np.arange(w, dtype=np.float32) + 0.5 - np.float32(cx)
    y = np.arange(h, dtype=np.float32)[:, None] + 0.5 - np.float32(cy)
    dark = _smoothstep(radius - 0.04 * h, radius + 0.01 * h, np.sqrt(x * x + y * y))
    return _blend(img, _rgb((22, 16, 18)) * rng.uniform(0.5, 1.5), dark)


_ARTIFACTS = (("p_hair", _add_hairs), ("p_ruler", _add_ruler), ("p_ink", _add_ink),
              ("p_bubbles", _add_bubbles), ("p_specular", _add_specular), ("p_vignette", _add_vignette))

# --------------------------------------------------------------------------------------------
# Illumination and camera
# --------------------------------------------------------------------------------------------


def _apply_lighting(img: np.ndarray, fr: Frame, view: View) -> np.ndarray:
    """Uneven illumination (a linear ramp) times white balance and brightness."""
    strength, direction = view.light_gradient
    w, h = fr.size
    x = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) * np.float32(math.cos(direction) / h)
    y = (np.arange(h, dtype=np.float32)[:, None] + 0.5 - h / 2) * np.float32(math.sin(direction) / h)
    ramp = 1 + np.float32(strength) * (x + y)
    img *= ramp[..., None]
    img *= view.gains
    return img


def _to_image(img: np.ndarray, fr: Frame, view: View, domain: Domain) -> Image.Image:
    """Sensor noise, quantisation and optics blur."""
    if domain.sensor_noise > 0:
        img += view.rng.normal(0, domain.sensor_noise, img.shape).astype(np.float32)
    img *= 255
    img += 0.5
    out = Image.fromarray(np.clip(img, 0, 255, out=img).astype(np.uint8), "RGB")
    radius = view.blur * fr.size[1] / 225
    if radius > 0.25:
        out = out.filter(ImageFilter.GaussianBlur(radius))
    return out


def render_view(lesion: Lesion, view: View, domain: Domain, size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """Render one photograph of a lesion: (RGB image, 'L' mask with values 0/255)."""
    img, mask, fr = _render_scene(lesion, view, domain, size)
    return _to_image(img, fr, view, domain), Image.fromarray(mask.astype(np.uint8) * 255, "L")


def _render_scene(lesion: Lesion, view: View, domain: Domain, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, Frame]:
    """The lit scene as float32 RGB in 0..1 (before the camera's noise, quantisation and blur) and the mask."""
    fr = Frame.for_view(size, view)
    skin, grain = _paint_skin(fr, lesion)
    img, mask = _paint_lesion(fr, lesion, skin, grain)
    rng = view.rng
    # All artifact coin flips first, so one artifact's draws never shift another's decision.
    flags = rng.random(len(_ARTIFACTS)) < np.array([getattr(domain, p) for p, _ in _ARTIFACTS])
    for flag, (_, add) in zip(flags, _ARTIFACTS):
        if flag:
            img = add(img, fr, rng)
    return _apply_lighting(img, fr, view), mask, fr


def render_demo_image(dx: str, *, seed: int, index: int = 0, view_index: int = 0, domain: str = "ham",
                      image_size: tuple[int, int] = (300, 225)) -> tuple[Image.Image, Image.Image]:
    """One demo image and mask (for notebooks, contact sheets and tests); not tied to a dataset table."""
    dom = DOMAINS[domain]
    key = (seed, _LESION_STREAM, index)
    lesion = sample_lesion(dx, np.random.default_rng(key), key, dom)
    view = sample_view(np.random.default_rng([seed, _VIEW_STREAM, index, view_index]), dom)
    return render_view(lesion, view, dom, (int(image_size[0]), int(image_size[1])))


# --------------------------------------------------------------------------------------------
# Dataset tables and writers
# --------------------------------------------------------------------------------------------


def _apportion(shares: dict[str, float], n: int, minimum: int = 1) -> dict[str, int]:
    """Integer counts proportional to shares (largest remainder), each class at least `minimum`."""
    if n < minimum * len(CLASSES):
        raise ValueError(f"need at least {minimum * len(CLASSES)} items for {len(CLASSES)} classes, got {n}")
    total = sum(shares[c] for c in CLASSES)
    exact = {c: shares[c] / total * n for c in CLASSES}
    counts = {c: int(math.floor(exact[c])) for c in CLASSES}
    by_remainder = sorted(CLASSES, key=lambda c: (-(exact[c] - counts[c]), CLASSES.index(c)))
    for c in by_remainder[: n - sum(counts.values())]:
        counts[c] += 1
    for c in CLASSES:
        while counts[c] < minimum:
            donor = max(CLASSES, key=lambda k: (counts[k], -CLASSES.index(k)))
            counts[donor] -= 1
            counts[c] += 1
    return counts


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _clinical_row(dx: str, rng: np.random.Generator) -> dict[str, str]:
    info = CLINICAL[dx]
    age = float(np.clip(round(rng.normal(*info["age"]) / 5) * 5, 0, 85))
    sites = {s: info["sites"].get(s, _SITE_BASE_WEIGHT) for s in LOCALIZATIONS}
    return {"dx_type": _choice(rng, info["dx_type"]), "age": f"{age:.1f}",
            "sex": _choice(rng, _SEX_P), "localization": _choice(rng, sites)}


@dataclass
class _LesionRecord:
    index: int
    lesion_id: str
    dx: str
    clinical: dict
    image_numbers: list


def _largest_remainder(weights: dict, n: int) -> dict:
    """Integer counts summing to n, proportional to weights (largest remainder; zero allowed)."""
    total = sum(weights.values())
    exact = {k: w / total * n for k, w in weights.items()}
    counts = {k: int(math.floor(v)) for k, v in exact.items()}
    for k in sorted(weights, key=lambda k: -(exact[k] - counts[k]))[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def ham10000_plan(n_images: int = 10015) -> list[tuple[str, int]]:
    """(dx, image count) per lesion with the real HAM10000 proportions, scaled to about n_images:
    the lesions per class, the images-per-lesion histogram and (as closely as the histogram
    allows) the images per class. At n_images=10015 it is the real table's counts exactly."""
    scale = n_images / sum(images for images, _ in HAM10000_IMAGES_LESIONS.values())
    n_lesions = max(len(CLASSES), round(scale * sum(les for _, les in HAM10000_IMAGES_LESIONS.values())))
    lesions = _apportion({c: les for c, (_, les) in HAM10000_IMAGES_LESIONS.items()}, n_lesions)
    histogram = _largest_remainder(HAM10000_IMAGES_PER_LESION, n_lesions)
    extra = _largest_remainder({c: img - les for c, (img, les) in HAM10000_IMAGES_LESIONS.items()},
                               sum((k - 1) * h for k, h in histogram.items()))
    views = {c: [] for c in CLASSES}
    # Multi-image lesions, most images first, each to the class with the most extra images still owed.
    for k in sorted(histogram, reverse=True):
        for _ in range(histogram[k] if k > 1 else 0):
            open_ = [c for c in CLASSES if len(views[c]) < lesions[c]]
            c = max(open_, key=lambda c: (extra[c], -CLASSES.index(c)))
            views[c].append(k)
            extra[c] -= k - 1
    return [(c, k) for c in HAM_ROW_ORDER for k in views[c] + [1] * (lesions[c] - len(views[c]))]


def _ham_table(n_lesions: int, seed: int, plan: list[tuple[str, int]] | None = None) -> list[_LesionRecord]:
    rng = np.random.default_rng([seed, _TABLE_STREAM])
    counts = _apportion(HAM_LESION_SHARES, n_lesions)
    dxs = [dx for dx in HAM_ROW_ORDER for _ in range(counts[dx])]
    lesion_numbers = rng.permutation(int(n_lesions * 1.05) + 10)[:n_lesions]
    views = rng.choice(len(VIEWS_PER_LESION_P), size=n_lesions, p=VIEWS_PER_LESION_P) + 1
    if plan is not None:  # the real proportions (ham10000_plan) in place of the demo's
        dxs, views = [dx for dx, _ in plan], np.array([k for _, k in plan])
    if views.max() < 2:  # keep the leakage trap present even in tiny demos
        views[0] = 2
    clinical = [_clinical_row(dx, rng) for dx in dxs]
    missing = rng.random(n_lesions) < _AGE_MISSING_P
    if not missing.any():
        missing[int(rng.integers(n_lesions))] = True
    for row, miss in zip(clinical, missing):
        if miss:
            row["age"] = ""
    image_numbers = FIRST_IMAGE_NUMBER + rng.permutation(int(views.sum()))
    bounds = np.concatenate([[0], np.cumsum(views)])
    return [_LesionRecord(i, f"HAM_{lesion_numbers[i]:07d}", dxs[i], clinical[i],
                          [int(x) for x in image_numbers[bounds[i]:bounds[i + 1]]])
            for i in range(n_lesions)]


# Deflate (RFC 1951) with the fixed Huffman code: the literal/length codes and their bit lengths, and the
# base values and extra bits of the length (257..285) and distance (0..29) symbols.
_LITERAL_CODES = ([(0x30 + i, 8) for i in range(144)] + [(0x190 + i, 9) for i in range(112)]
                  + [(i, 7) for i in range(24)] + [(0xC0 + i, 8) for i in range(8)])
_LENGTH_BASE = (3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
                131, 163, 195, 227, 258)
_LENGTH_EXTRA = (0,) * 8 + (1,) * 4 + (2,) * 4 + (3,) * 4 + (4,) * 4 + (5,) * 4 + (0,)
_DISTANCE_BASE = (1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
                  2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577)
_DISTANCE_EXTRA = (0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13)


class _FixedHuffmanBlock:
    """One final deflate block with the fixed code, written bit by bit (LSB first, codes MSB first)."""

    def __init__(self):
        self._acc, self._n = 0, 0
        self._bits(1, 1)  # BFINAL
        self._bits(1, 2)  # BTYPE 01: fixed Huffman codes

    def _bits(self, value: int, n: int) -> None:
        self._acc |= value << self._n
        self._n += n

    def _code(self, code: int, n: int) -> None:
        self._bits(int(f"{code:0{n}b}"[::-1], 2), n)

    def literal(self, byte: int) -> None:
        self._code(*_LITERAL_CODES[byte])

    def copy(self, distance: int, length: int) -> None:
        """Repeat `length` (>= 3) bytes from `distance` back, in pieces of at most 258."""
        while length:
            piece = min(length, 258) if length - min(length, 258) not in (1, 2) else length - 3
            i = bisect.bisect_right(_LENGTH_BASE, piece) - 1
            self._code(*_LITERAL_CODES[257 + i])
            self._bits(piece - _LENGTH_BASE[i], _LENGTH_EXTRA[i])
            j = bisect.bisect_right(_DISTANCE_BASE, distance) - 1
            self._code(j, 5)
            self._bits(distance - _DISTANCE_BASE[j], _DISTANCE_EXTRA[j])
            length -= piece

    def finish(self) -> bytes:
        self.literal(256)  # end of block
        return self._acc.to_bytes((self._n + 7) // 8, "little")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def mask_png(mask: np.ndarray) -> bytes:
    """A binary mask (h, w) as the bytes of an 8-bit greyscale PNG with values 0/255.

    Why not PIL's PNG writer: Pillow compresses with the operating system's zlib (manylinux wheels do
    not bundle it), and zlib builds differ in their output (zlib-ng, the system zlib of some
    distributions, writes other bytes for every demo mask), though all decode alike. Here the
    scanlines (filter type 0, then the pixels) are coded as runs of one byte, a literal and then a
    deflate match one byte back, in one fixed-Huffman block: fully specified, so the file is the same
    everywhere. A run goes on across rows, so a mask takes a few runs per lesion row (~1-2 KB for
    300 x 225). The checksums (CRC-32, Adler-32) are functions of the data, whichever zlib computes them."""
    rows = np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8)
    h, w = rows.shape
    if h == 0 or w == 0:
        raise ValueError("mask_png: empty mask")
    scanlines = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).ravel()
    edges = (np.flatnonzero(scanlines[1:] != scanlines[:-1]) + 1).tolist()
    block = _FixedHuffmanBlock()
    for start, end in zip([0, *edges], [*edges, scanlines.size]):
        byte, repeats = int(scanlines[start]), end - start - 1
        block.literal(byte)
        if repeats >= 3:
            block.copy(1, repeats)
        else:
            for _ in range(repeats):
                block.literal(byte)
    scanlines = scanlines.tobytes()
    stream = b"\x78\x01" + block.finish() + struct.pack(">I", zlib.adler32(scanlines))
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", stream) + _png_chunk(b"IEND", b""))


def _save_pair(image: Image.Image, mask: Image.Image, image_path: Path, mask_path: Path, quality: int) -> None:
    image.save(image_path, format="JPEG", quality=quality)  # libjpeg-turbo, bundled with Pillow: pinned
    mask_path.write_bytes(mask_png(np.asarray(mask)))


def _in_processes(write_chunk, chunks: list, workers: int) -> list:
    """write_chunk(chunk) for every chunk, in `workers` processes; the results in the chunks' order.
    Every image is drawn from its own keyed generators, so the bytes do not depend on `workers`."""
    if workers <= 1 or len(chunks) <= 1:
        return [write_chunk(chunk) for chunk in chunks]
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=get_context("spawn")) as pool:
        return list(pool.map(write_chunk, chunks))


def _chunks(items: list, workers: int) -> list[list]:
    """Contiguous runs of items, a few per worker (images differ in cost: this evens the load)."""
    n = max(1, min(len(items), 4 * workers if workers > 1 else 1))
    bounds = [round(k * len(items) / n) for k in range(n + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


_HAM_IMAGE_FOLDERS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
_HAM_MASK_FOLDER = "HAM10000_segmentations_lesion_tschandl"


def _write_ham_lesions(records: list[_LesionRecord], *, root: Path, seed: int, size: tuple[int, int],
                       first_part_2: int) -> list[dict]:
    domain = DOMAINS["ham"]
    parts = tuple(root / folder for folder in _HAM_IMAGE_FOLDERS)
    mask_dir = root / _HAM_MASK_FOLDER
    rows = []
    for rec in records:
        key = (seed, _LESION_STREAM, rec.index)
        lesion = sample_lesion(rec.dx, np.random.default_rng(key), key, domain)
        for j, number in enumerate(rec.image_numbers):
            image_id = f"ISIC_{number:07d}"
            view = sample_view(np.random.default_rng([seed, _VIEW_STREAM, rec.index, j]), domain)
            image, mask = render_view(lesion, view, domain, size)
            part = parts[0] if number < first_part_2 else parts[1]
            _save_pair(image, mask, part / f"{image_id}.jpg", mask_dir / f"{image_id}_segmentation.png",
                       domain.jpeg_quality)
            rows.append({"lesion_id": rec.lesion_id, "image_id": image_id, "dx": rec.dx, **rec.clinical})
    return rows


def write_demo_ham10000(root: Path, *, n_lesions: int, seed: int, image_size: tuple[int, int] = (300, 225),
                        plan: list[tuple[str, int]] | None = None, workers: int = 1) -> None:
    """Write a synthetic HAM10000 in the Kaggle layout plus the official lesion segmentations.

    root/HAM10000_metadata.csv, root/HAM10000_images_part_{1,2}/ISIC_xxxxxxx.jpg,
    root/HAM10000_segmentations_lesion_tschandl/ISIC_xxxxxxx_segmentation.png

    plan: (dx, image count) per lesion, e.g. `ham10000_plan()` for the real proportions; its
    length must be n_lesions. Default: the demo's class shares and images per lesion.
    workers: processes that render images; the files are the same bytes for any number.
    """
    if plan is not None and len(plan) != n_lesions:
        raise ValueError(f"plan has {len(plan)} lesions but n_lesions is {n_lesions}")
    root = Path(root)
    size = (int(image_size[0]), int(image_size[1]))
    table = _ham_table(n_lesions, seed, plan)
    n_images = sum(len(r.image_numbers) for r in table)
    for folder in (*_HAM_IMAGE_FOLDERS, _HAM_MASK_FOLDER):
        (root / folder).mkdir(parents=True, exist_ok=True)
    write_chunk = functools.partial(_write_ham_lesions, root=root, seed=seed, size=size,
                                    first_part_2=FIRST_IMAGE_NUMBER + (n_images + 1) // 2)
    rows = [row for chunk in _in_processes(write_chunk, _chunks(table, workers), workers) for row in chunk]

    with open(root / "HAM10000_metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=METADATA_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_demo_unified(root: Path, *, n_images: int, seed: int, image_size: tuple[int, int] = (300, 225),
                       split: str = "val", image_sizes: list[tuple[int, int]] | None = None,
                       workers: int = 1) -> None:
    """Write a synthetic external set in the unified layout (each image its own lesion).

    root/Unified_dataset/<split>/<dx>/UNI_xxxxxx.jpg and
    root/Unified_dataset_masks/<split>/<dx>/UNI_xxxxxx_segmentation.png, under domain shift.
    image_sizes: a mix of (width, height), image i taking image_sizes[i % len(image_sizes)] (the
    real set mixes sizes); default: every image at image_size.
    workers: processes that render images; the files are the same bytes for any number.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", split):
        raise ValueError(f"split must be a plain folder name, got {split!r}")
    root = Path(root)
    size = (int(image_size[0]), int(image_size[1]))
    total = sum(UNIFIED_VAL_COUNTS.values())
    shares = {c: max(UNIFIED_VAL_COUNTS[c] / total, UNIFIED_MIN_SHARE) for c in CLASSES}
    counts = _apportion(shares, n_images)
    rng = np.random.default_rng([seed, _UNI_TABLE_STREAM])
    dxs = [dx for dx in CLASSES for _ in range(counts[dx])]
    numbers = rng.permutation(n_images)
    image_root, mask_root = root / "Unified_dataset" / split, root / "Unified_dataset_masks" / split
    for dx in CLASSES:
        (image_root / dx).mkdir(parents=True, exist_ok=True)
        (mask_root / dx).mkdir(parents=True, exist_ok=True)
    write_chunk = functools.partial(_write_unified_images, image_root=image_root, mask_root=mask_root, seed=seed,
                                    size=size, image_sizes=image_sizes)
    _in_processes(write_chunk, _chunks(list(enumerate(zip(dxs, (int(n) for n in numbers)))), workers), workers)


def _write_unified_images(images: list[tuple[int, tuple[str, int]]], *, image_root: Path, mask_root: Path,
                          seed: int, size: tuple[int, int], image_sizes: list[tuple[int, int]] | None) -> None:
    domain = DOMAINS["unified"]
    for i, (dx, number) in images:
        key = (seed, _UNI_LESION_STREAM, i)
        lesion = sample_lesion(dx, np.random.default_rng(key), key, domain)
        view = sample_view(np.random.default_rng([seed, _UNI_VIEW_STREAM, i]), domain)
        own_size = size if not image_sizes else tuple(int(x) for x in image_sizes[i % len(image_sizes)])
        image, mask = render_view(lesion, view, domain, own_size)
        name = f"UNI_{number:06d}"
        _save_pair(image, mask, image_root / dx / f"{name}.jpg", mask_root / dx / f"{name}_segmentation.png",
                   domain.jpeg_quality)

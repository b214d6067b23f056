"""DermaMNIST (MedMNIST v2, Yang et al., Sci. Data 2023) as a data source: real HAM10000 images,
small enough for a laptop, with the benchmark's official split.

DermaMNIST holds all 10,015 HAM10000 images, resized to 28x28 (MedMNIST+ also publishes 64, 128
and 224 px), in one npz file with MedMNIST's key layout: `<split>_images` (N, S, S, 3) uint8 and
`<split>_labels` (N, 1) integer, for the splits train (7,007), val (1,003) and test (2,005). Labels
0-6 are akiec, bcc, bkl, df, mel, nv, vasc: the order of CLASSES.

The file carries no ISIC image ids and no lesion ids, so each image is its own lesion here
(`lesion_id` = `image_id`), and the official split is image-level: views of one lesion can sit in
train and test. A lesion-grouped split cannot be drawn; the split stage uses the official one.

Routes, tried in order and each stated in the log: (1) a local copy, the npz file itself or a
folder holding `dermamnist.npz` / `dermamnist_<size>.npz`; (2) the `medmnist` package's own
download (imported only here, needs internet; not a requirement of this project). The adapter
writes every image as a lossless PNG (data/raw/ham10000/dermamnist/<split>/<index>.png, image ids
like `dermamnist_test_00042`) and the canonical manifest, so every later stage runs unchanged,
plus the official split (image_id, split) for the split stage.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .. import atomic
from ..classes import CLASSES
from ..manifest import COLUMNS, DataError, validate

Log = Callable[[str], None]

SPLITS = ("train", "val", "test")  # MedMNIST's split names, in its order
SIZES = (28, 64, 128, 224)  # the published image sides (28: MedMNIST v2; the others: MedMNIST+)
OFFICIAL_SIZES = {"train": 7007, "val": 1003, "test": 2005}
SPLIT_COLUMNS = ("image_id", "split")  # the official split file the split stage reads
FOLDER = "dermamnist"  # under the training set's raw folder

HOW_LOCAL = ("set data.dermamnist_path to dermamnist.npz (or dermamnist_64/128/224.npz from MedMNIST+), or to "
             "a folder holding it, with data.dermamnist_size choosing the file; get it from "
             "https://zenodo.org/records/10519652 or with `pip install medmnist` on a machine with internet")
SYNTHETIC_EXTERNAL_NOTE = (
    "note: data.external=demo with DermaMNIST scores a model trained on real thumbnails on the synthetic "
    "external set, another domain at another resolution: its scores are a smoke test of the "
    "pipeline, not a measure of domain shift; data.external=none is the natural pairing")
HOW_MEDMNIST = "pip install medmnist, with internet access to zenodo.org (the file is 19 MB at 28 px)"


def file_name(size: int) -> str:
    """MedMNIST's own file names: dermamnist.npz at 28 px, dermamnist_<size>.npz otherwise."""
    return "dermamnist.npz" if size == 28 else f"dermamnist_{size}.npz"


def image_id(split: str, index: int) -> str:
    return f"dermamnist_{split}_{index:05d}"


def load_npz(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images (N, S, S, 3) uint8, labels (N,) int64)}, after checking every key, shape,
    dtype, count and label; any problem is one DataError naming it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable npz file ({e}); {HOW_LOCAL}") from None
    if not isinstance(arrays, dict) or not arrays:
        raise DataError(f"{path}: an empty npz file; {HOW_LOCAL}")
    expected = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    missing = [k for k in expected if k not in arrays]
    if missing:
        raise DataError(f"{path}: expected MedMNIST's keys {expected}; missing {missing}, found {sorted(arrays)}. "
                        "Is this a DermaMNIST npz file?")
    out, side = {}, None
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        where = f"{path}: {split}_images"
        if images.dtype != np.uint8:
            raise DataError(f"{where} has dtype {images.dtype}; DermaMNIST images are uint8 (0-255)")
        if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
            raise DataError(f"{where} has shape {images.shape}; expected (N, S, S, 3): square RGB images")
        if side is not None and images.shape[1] != side:
            raise DataError(f"{where} holds {images.shape[1]} px images but the other splits {side} px")
        side = images.shape[1]
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{path}: {split}_labels has shape {labels.shape} and dtype {labels.dtype}; "
                            "expected (N, 1) integer class indices")
        if len(labels) != len(images):
            raise DataError(f"{path}: {len(images)} {split} images but {len(labels)} {split} labels")
        bad = np.flatnonzero((labels < 0) | (labels >= len(CLASSES)))
        if len(bad):
            raise DataError(f"{path}: {split}_labels holds {len(bad)} label(s) outside 0-{len(CLASSES) - 1} "
                            f"(e.g. {labels[bad[0]]} at index {bad[0]}); labels are {list(CLASSES)} in that order")
        if not len(images):
            raise DataError(f"{path}: the {split} split is empty")
        out[split] = (images, labels.astype(np.int64))
    return out


def write_pngs(data: dict[str, tuple[np.ndarray, np.ndarray]], out: Path,
               root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every image as a lossless PNG in out/dermamnist/<split>/; the canonical manifest and the
    official split, with paths under root (where out will be renamed to), relative to the working
    directory (the repository root)."""
    rows, split_rows = [], []
    for split, (images, labels) in data.items():
        folder = Path(out) / FOLDER / split
        folder.mkdir(parents=True, exist_ok=True)
        for index, (rgb, label) in enumerate(zip(images, labels)):
            name = f"{index:05d}.png"
            Image.fromarray(rgb, "RGB").save(folder / name, compress_level=1)  # tiny images: speed over size
            iid = image_id(split, index)
            rows.append({"image_id": iid, "path": os.path.relpath(Path(root) / FOLDER / split / name, Path.cwd()),
                         "lesion_id": iid,  # no lesion ids in DermaMNIST: one lesion per image
                         "dx": CLASSES[label], "dx_type": "", "age": float("nan"), "sex": "",
                         "localization": "", "mask_path": ""})
            split_rows.append({"image_id": iid, "split": split})
    manifest = validate(pd.DataFrame(rows, columns=list(COLUMNS)), what="DermaMNIST")
    return manifest, pd.DataFrame(split_rows, columns=list(SPLIT_COLUMNS))


def local_file(path: str, size: int) -> Path:
    """The npz file that data.dermamnist_path names: the file itself, or in a folder the one of
    data.dermamnist_size."""
    given = Path(path)
    if given.is_file():
        return given
    if given.is_dir():
        candidate = given / file_name(size)
        if candidate.is_file():
            return candidate
        present = sorted(p.name for p in given.glob("dermamnist*.npz"))
        raise DataError(f"data.dermamnist_path {given} holds no {file_name(size)} (data.dermamnist_size {size})"
                        + (f"; it holds {present}: set data.dermamnist_size to match" if present else "")
                        + f"; {HOW_LOCAL}")
    raise DataError(f"data.dermamnist_path {given} does not exist; {HOW_LOCAL}")


def download_with_medmnist(size: int, folder: Path) -> Path:
    """The medmnist package's download (it verifies the file's MD5) into folder; the npz path."""
    import medmnist  # optional: only this route needs it

    folder.mkdir(parents=True, exist_ok=True)
    medmnist.DermaMNIST(split="train", download=True, size=size, root=str(folder))
    target = folder / file_name(size)
    if not target.is_file():
        raise DataError(f"medmnist reported success but {target} is not there")
    return target


def find_npz(path: str, size: int, downloads: Path, log: Log = print) -> Path:
    """The DermaMNIST npz by the first route that works, each route stated in the log."""
    if path:
        log(f"DermaMNIST route 1 of 2: the local copy {path}")
        return local_file(path, size)
    log("DermaMNIST route 1 of 2: no local copy (data.dermamnist_path is empty)")
    log(f"DermaMNIST route 2 of 2: the medmnist package's download ({file_name(size)})")
    try:
        return download_with_medmnist(size, downloads / "medmnist")
    except ImportError as e:
        why = f"the medmnist package is not installed ({e})"
    except Exception as e:  # noqa: BLE001 - any network or package failure ends in the routes message below
        why = f"its download failed ({type(e).__name__}: {e})"
    log(f"DermaMNIST route 2 of 2 failed: {why}")
    raise DataError(
        "no DermaMNIST copy could be found or downloaded. The two routes, and how to use each:\n"
        f"  1. a local copy: data.dermamnist_path is empty; {HOW_LOCAL}\n"
        f"  2. the medmnist package: {why}; {HOW_MEDMNIST}")


def read(path: str, size: int, raw: Path, downloads: Path, log: Log = print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest and the official split of DermaMNIST, its PNGs written into raw/ (atomically:
    the whole folder is replaced, or left as it was)."""
    npz = find_npz(path, size, downloads, log)
    data = load_npz(npz)
    side = next(iter(data.values()))[0].shape[1]
    counts = {split: len(labels) for split, (_, labels) in data.items()}
    log(f"DermaMNIST: {npz} holds {side} px images, {counts['train']} / {counts['val']} / {counts['test']} "
        "train / val / test; no lesion ids, so each image is its own lesion and the official split is image-level")
    if counts != OFFICIAL_SIZES:
        log(f"DermaMNIST: note, these split sizes differ from the official release's {OFFICIAL_SIZES}")
    with atomic.atomic_dir(raw) as tmp:
        return write_pngs(data, tmp, raw)


def empty_split() -> pd.DataFrame:
    """The official split of a source that has none."""
    return pd.DataFrame(columns=list(SPLIT_COLUMNS))

"""DermaMNIST (MedMNIST v2, Yang et al., Sci. Data 2023) as a data source: real HAM10000 images,
small enough for a laptop, with the benchmark's official split.

DermaMNIST holds all 10,015 HAM10000 images, resized to 28x28 (MedMNIST+ also publishes 64, 128
and 224 px), in one npz file with MedMNIST's key layout: `<split>_images` (N, S, S, 3) uint8 and
`<split>_labels` (N, 1) integer, for the splits train (7,007), val (1,003) and test (2,005). Labels
0-6 are akiec, bcc, bkl, df, mel, nv, vasc: the order of CLASSES.

The file carries no ISIC image ids and no lesion ids. Abhishek et al. publish the ISIC id of every
image; with it and the HAM10000 metadata (lesion_ids.py) the manifest carries the real image ids
(ISIC_...), lesion ids and metadata, and both split schemes work. Without them each image is its
own lesion here (`lesion_id` = `image_id`, ids like `dermamnist_test_00042`), and only the official
split can be used, image-level: views of one lesion can sit in train and test.

Routes, tried in order and each stated in the log: (1) a local copy, the npz file itself or a
folder holding `dermamnist.npz` / `dermamnist_<size>.npz`; (2) the `medmnist` package's own
download (imported only here, needs internet; not a requirement of this project). The adapter
writes every image as a lossless PNG (data/raw/ham10000/dermamnist/<split>/<index>.png, whatever
the ids) and the canonical manifest, so every later stage runs unchanged,
plus the official split (image_id, split) for the split stage.

An npz file is a zip of .npy arrays, and an .npy header declares its array's shape and dtype: a
hostile or damaged file can declare billions of images in a few bytes. So the zip is checked
within the data.max_* limits (archives.py), then every array's header (shape, dtype, count, image
side, byte size), and only then are the arrays read.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
import tokenize
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .. import atomic
from ..classes import CLASSES
from ..manifest import COLUMNS, DataError, validate
from . import archives, lesion_ids

Log = Callable[[str], None]

SPLITS = ("train", "val", "test")  # MedMNIST's split names, in its order
SIZES = (28, 64, 128, 224)  # the published image sides (28: MedMNIST v2; the others: MedMNIST+)
OFFICIAL_SIZES = {"train": 7007, "val": 1003, "test": 2005}
HAM10000_IMAGES = 10_015  # DermaMNIST is HAM10000, every image once, at any size
# A genuine file holds HAM10000's images and no more. Twice that still reads a modified or extended
# copy, while a header declaring millions is refused before anything is allocated (at 224 px, this
# many images take 3 GB of memory).
MAX_IMAGES = 2 * HAM10000_IMAGES
NPY_HEADER_BYTES = 1 << 16  # read to parse a header: numpy itself refuses one of over 10,000 characters
SPLIT_COLUMNS = ("image_id", "split")  # the official split file the split stage reads
FOLDER = "dermamnist"  # under the training set's raw folder

HOW_LOCAL = ("set data.dermamnist_path to dermamnist.npz (or dermamnist_64/128/224.npz from MedMNIST+), or to "
             "a folder holding it, with data.dermamnist_size choosing the file; get it from "
             "https://zenodo.org/records/10519652 or with `pip install medmnist` on a machine with internet")
SYNTHETIC_EXTERNAL_NOTE = (
    "note: data.external=demo with DermaMNIST scores a model trained on real thumbnails on the synthetic "
    "external set, another domain at another resolution: its scores are a smoke test of the "
    "pipeline, not a measure of domain shift; data.external=none is the natural pairing")
HOW_AGAIN = ("this is not a DermaMNIST file, or a damaged one: download it again from "
             "https://zenodo.org/records/10519652 (or delete data/downloads/medmnist/ for the medmnist route)")
HOW_MEDMNIST = "pip install medmnist, with internet access to zenodo.org (the file is 19 MB at 28 px)"


def file_name(size: int) -> str:
    """MedMNIST's own file names: dermamnist.npz at 28 px, dermamnist_<size>.npz otherwise."""
    return "dermamnist.npz" if size == 28 else f"dermamnist_{size}.npz"


def image_id(split: str, index: int) -> str:
    return f"dermamnist_{split}_{index:05d}"


def npz_limits(limits: archives.Limits) -> archives.Limits:
    """The zip limits for an npz. One of its members is a whole split's array, not one image: the
    per-member limit, sized for one image file, would refuse the real 128 and 224 px files (their
    train_images are 7,007 x 128 x 128 x 3 = 344 MB and 1.05 GB), so it is lifted and the archive's
    total limit bounds each member; the npy headers bound them exactly."""
    return dataclasses.replace(limits, max_member_bytes=sys.maxsize)


def _npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, bytes of data after the header) of one .npy member, from its first bytes only."""
    with zf.open(info) as member:
        head = io.BytesIO(member.read(NPY_HEADER_BYTES))
    try:
        version = np.lib.format.read_magic(head)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(head)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(head)
        else:
            raise ValueError(f"npy format version {version[0]}.{version[1]}, not 1.0 or 2.0")
    except (ValueError, SyntaxError, tokenize.TokenError) as e:  # numpy parses the header as a Python literal
        raise DataError(f"{where} has no readable npy header ({type(e).__name__}: {e}); {HOW_AGAIN}") from None
    return shape, dtype, info.file_size - head.tell()


def _array_bytes(where: str, shape: tuple, dtype: np.dtype, data_bytes: int) -> None:
    """Refuse an array whose data is not the size its header declares (before it is read)."""
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared != data_bytes:
        raise DataError(f"{where}: its header declares {shape} {dtype}, {declared:,} bytes, but it holds "
                        f"{data_bytes:,}; {HOW_AGAIN}")


def _check_headers(path: Path, headers: dict[str, tuple[tuple, np.dtype, int]], size: int) -> None:
    """Every shape, dtype, count, side and byte size, from the headers: one DataError naming the array."""
    side, total = None, 0
    for split in SPLITS:
        shape, dtype, data_bytes = headers[f"{split}_images"]
        lshape, ldtype, ldata_bytes = headers[f"{split}_labels"]
        where = f"{path}: {split}_images"
        if dtype != np.uint8:
            raise DataError(f"{where} has dtype {dtype}; DermaMNIST images are uint8 (0-255)")
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2] or min(shape) < 0:
            raise DataError(f"{where} has shape {shape}; expected (N, S, S, 3): square RGB images")
        n = shape[0]
        total += n
        if total > MAX_IMAGES:
            before = f", {total:,} with the splits before it" if total != n else ""
            raise DataError(f"{where} declares {n:,} images{before}; a DermaMNIST file holds HAM10000's "
                            f"{HAM10000_IMAGES:,}, and at most {MAX_IMAGES:,} are read; {HOW_AGAIN}")
        if side is not None and shape[1] != side:
            raise DataError(f"{where} holds {shape[1]} px images but the other splits {side} px")
        side = shape[1]
        if side not in SIZES:
            raise DataError(f"{where} holds {side}x{side} px images; DermaMNIST's are "
                            f"{', '.join(map(str, SIZES[:-1]))} or {SIZES[-1]} px; {HOW_AGAIN}")
        if side != size:
            raise DataError(f"{where} holds {side} px images but data.dermamnist_size is {size}; set "
                            f"data.dermamnist_size={side}, or point data.dermamnist_path at {file_name(size)}")
        if not (len(lshape) == 1 or (len(lshape) == 2 and lshape[1] == 1)) or not np.issubdtype(ldtype, np.integer):
            raise DataError(f"{path}: {split}_labels has shape {lshape} and dtype {ldtype}; "
                            "expected (N, 1) integer class indices")
        if lshape[0] != n:
            raise DataError(f"{path}: {n} {split} images but {lshape[0]} {split} labels")
        if not n:
            raise DataError(f"{path}: the {split} split is empty")
        _array_bytes(where, shape, dtype, data_bytes)
        _array_bytes(f"{path}: {split}_labels", lshape, ldtype, ldata_bytes)


def _read_arrays(path: Path, size: int, limits: archives.Limits, target: Path) -> dict[str, np.ndarray]:
    """MedMNIST's six arrays, each read only once the zip and every header checked out."""
    expected = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    try:
        with zipfile.ZipFile(path) as zf:
            members = {m.filename.removesuffix(".npy"): m for m in zf.infolist() if not m.is_dir()}
            missing = [k for k in expected if k not in members]
            if missing:
                raise DataError(f"{path}: expected MedMNIST's keys {expected}; missing {missing}, found "
                                f"{sorted(members)}. Is this a DermaMNIST npz file?")
            archives.check(path, zf.infolist(), [members[k] for k in expected], target, npz_limits(limits))
            headers = {k: _npy_header(zf, members[k], f"{path}: {k}") for k in expected}
            _check_headers(path, headers, size)
            arrays = {}
            for k in expected:
                with zf.open(members[k]) as member:
                    arrays[k] = np.lib.format.read_array(member, allow_pickle=False)
            return arrays
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as e:
        raise DataError(f"{path}: not a readable npz file ({e}); {HOW_LOCAL}") from None


def load_npz(path: str | Path, size: int = 28, limits: archives.Limits = archives.Limits(),
             target: Path = Path(".")) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images (N, size, size, 3) uint8, labels (N,) int64)}, after checking the zip within
    limits, then every key, shape, dtype, count and side from the headers, then every label; any
    problem is one DataError naming it. target: where the images will be written (for the free disk
    check)."""
    path = Path(path)
    arrays = _read_arrays(path, size, limits, target)
    out = {}
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"].reshape(-1)
        bad = np.flatnonzero((labels < 0) | (labels >= len(CLASSES)))
        if len(bad):
            raise DataError(f"{path}: {split}_labels holds {len(bad)} label(s) outside 0-{len(CLASSES) - 1} "
                            f"(e.g. {labels[bad[0]]} at index {bad[0]}); labels are {list(CLASSES)} in that order")
        out[split] = (images, labels.astype(np.int64))
    return out


def write_pngs(data: dict[str, tuple[np.ndarray, np.ndarray]], out: Path, root: Path,
               ids: dict[str, pd.DataFrame] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every image as a lossless PNG in out/dermamnist/<split>/; the canonical manifest and the
    official split, with paths under root (where out will be renamed to), relative to the working
    directory (the repository root). ids: the checked metadata rows of every image, in the npz's
    order (lesion_ids.read); without them each image is its own lesion."""
    rows, split_rows = [], []
    for split, (images, labels) in data.items():
        folder = Path(out) / FOLDER / split
        folder.mkdir(parents=True, exist_ok=True)
        meta = ids[split].to_dict("records") if ids else None
        for index, (rgb, label) in enumerate(zip(images, labels)):
            name = f"{index:05d}.png"
            Image.fromarray(rgb, "RGB").save(folder / name, compress_level=1)  # tiny images: speed over size
            iid = image_id(split, index)
            row = {"image_id": iid, "path": os.path.relpath(Path(root) / FOLDER / split / name, Path.cwd()),
                   "lesion_id": iid,  # no lesion ids: one lesion per image
                   "dx": CLASSES[label], "dx_type": "", "age": float("nan"), "sex": "",
                   "localization": "", "mask_path": ""}
            if meta:
                m = meta[index]
                row.update(image_id=m["image_id"], lesion_id=m["lesion_id"], dx_type=m["dx_type"],
                           age=pd.to_numeric(m["age"], errors="coerce"), sex=m["sex"],
                           localization=m["localization"])
            rows.append(row)
            split_rows.append({"image_id": row["image_id"], "split": split})
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


def read(path: str, size: int, raw: Path, downloads: Path, log: Log = print,
         limits: archives.Limits = archives.Limits(),
         ids: lesion_ids.Request | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest and the official split of DermaMNIST, its PNGs written into raw/ (atomically:
    the whole folder is replaced, or left as it was); the npz read within limits (data.max_*).
    ids: where to look for the lesion ids (lesion_ids.find), which are checked against the npz
    before anything is written; None, or none found: each image is its own lesion."""
    npz = find_npz(path, size, downloads, log)
    data = load_npz(npz, size, limits, Path(raw).parent)
    side = next(iter(data.values()))[0].shape[1]
    counts = {split: len(labels) for split, (_, labels) in data.items()}
    found = lesion_ids.find(ids, downloads, counts == OFFICIAL_SIZES, log) if ids else None
    rows = lesion_ids.read(found, {split: labels for split, (_, labels) in data.items()}, log) if found else None
    unit = ("with the ISIC and lesion ids of every image" if rows else
            "no lesion ids, so each image is its own lesion and the official split is image-level")
    log(f"DermaMNIST: {npz} holds {side} px images, {counts['train']} / {counts['val']} / {counts['test']} "
        f"train / val / test; {unit}")
    if counts != OFFICIAL_SIZES:
        log(f"DermaMNIST: note, these split sizes differ from the official release's {OFFICIAL_SIZES}")
    with atomic.atomic_dir(raw) as tmp:
        return write_pngs(data, tmp, raw, rows)


def empty_split() -> pd.DataFrame:
    """The official split of a source that has none."""
    return pd.DataFrame(columns=list(SPLIT_COLUMNS))

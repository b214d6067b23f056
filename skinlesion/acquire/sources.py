"""Adapters from on-disk dataset layouts to the canonical manifest."""

from __future__ import annotations

import filecmp
import io
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..classes import CLASSES
from ..errors import DataError
from ..manifest import COLUMNS, validate

KAGGLE_METADATA = "HAM10000_metadata.csv"
METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
DATAVERSE_EXTRA_COLUMN = "dataset"  # the Dataverse table's 8th column (the image's source collection)
METADATA_SUFFIXES = ("", ".csv", ".tab", ".tsv", ".txt")
IMAGE_FOLDER_PREFIX = "ham10000_images_part_"
MASK_FOLDER = "HAM10000_segmentations_lesion_tschandl"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
METADATA_FALLBACK_ENCODINGS = ("cp1252", "latin-1")  # tried in order when a table is not UTF-8


def _relative(path: Path) -> str:
    return os.path.relpath(path, Path.cwd())


def _images_by_stem(root: Path, folders: list[Path]) -> dict[str, Path]:
    """Key images by file stem: the Kaggle zip holds each image twice, in upper- and lower-case
    folders, byte for byte the same, and the first is kept. Two different files under one id are
    refused: which of them the metadata row describes cannot be told."""
    found: dict[str, Path] = {}
    for folder in sorted(folders):
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            first = found.setdefault(p.stem, p)
            if first != p and not filecmp.cmp(first, p, shallow=False):
                raise DataError(two_files_under_one_id(root, p.stem, str(first), str(p)))
    return found


def two_files_under_one_id(where: Path | str, image_id: str, first: str, second: str) -> str:
    return (f"{where}: image id {image_id} has two different files, {first} and {second}, and one metadata "
            "row; keep the right one and delete the wrong one (the Kaggle copy's lower-case duplicate folders "
            "hold the same bytes and are fine)")


def _folders(root: Path, prefix: str) -> list[Path]:
    """Folders at any depth whose name starts with prefix (case-insensitive): an extracted zip may
    nest `HAM10000_images_part_1/` inside a folder of the same name."""
    return sorted(Path(dirpath) for dirpath, _, _ in os.walk(root) if Path(dirpath).name.lower().startswith(prefix))


def find_metadata(root: Path) -> Path | None:
    """The metadata table: Kaggle's HAM10000_metadata.csv or Dataverse's tab-separated
    HAM10000_metadata(.tab), at the top of root or one folder down."""
    for candidate in sorted(Path(root).glob("*")) + sorted(Path(root).glob("*/*")):
        stem, suffix = candidate.name.lower().rsplit(".", 1) if "." in candidate.name else (candidate.name.lower(), "")
        if candidate.is_file() and stem == "ham10000_metadata" and ("." + suffix if suffix else "") in METADATA_SUFFIXES:
            return candidate
    return None


def _decode(path: Path, log: Callable[[str], None]) -> str:
    """The table's text: UTF-8 (with or without a byte-order mark), else the first of the fallback
    encodings that decodes it, said in the log. The real tables are ASCII; a non-UTF-8 one was
    saved by a spreadsheet, whose Windows default is cp1252 (latin-1 decodes any bytes, so it ends
    the list). A wrong guess can only touch free text: ids and dx codes are ASCII, and checked."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        why = f"byte 0x{data[e.start]:02x} at offset {e.start} is not UTF-8"
    for encoding in METADATA_FALLBACK_ENCODINGS:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        log(f"{path}: read as {encoding} ({why}); save it as UTF-8 to silence this")
        return text
    raise DataError(f"{path}: {why}, and no fallback encoding ({', '.join(METADATA_FALLBACK_ENCODINGS)}) "
                    "decodes it either; save it as UTF-8")


def read_metadata(path: Path, log: Callable[[str], None] = print) -> pd.DataFrame:
    """The HAM10000 metadata, comma- (Kaggle) or tab-separated (Dataverse, with the extra
    `dataset` column, which is dropped). Values may be quoted; ages may be `80` or `80.0`."""
    text = _decode(path, log)
    if not text.strip():
        raise DataError(f"{path} is empty; it should be the HAM10000 metadata table with the header "
                        f"{','.join(METADATA_COLUMNS)}: download it again")
    first = text.split("\n", 1)[0]
    tabs = first.count("\t") > first.count(",")
    try:
        meta = pd.read_csv(io.StringIO(text), sep="\t" if tabs else ",", dtype=str, keep_default_na=False)
    except pd.errors.ParserError as e:
        raise DataError(f"{path} is not a readable {'tab' if tabs else 'comma'}-separated table ({e}); "
                        "download it again") from None
    meta.columns = [c.strip() for c in meta.columns]
    allowed = (*METADATA_COLUMNS, DATAVERSE_EXTRA_COLUMN)
    missing = [c for c in METADATA_COLUMNS if c not in meta.columns]
    extra = [c for c in meta.columns if c not in allowed]
    if missing or extra:
        raise DataError(f"{path}: expected columns {list(METADATA_COLUMNS)} (plus {DATAVERSE_EXTRA_COLUMN!r} in the "
                        f"Dataverse table); missing {missing}, unexpected {extra}")
    return meta.loc[:, list(METADATA_COLUMNS)]


def has_ham10000_layout(root: Path) -> bool:
    """An extracted copy: a metadata table and at least one images folder."""
    return find_metadata(root) is not None and bool(_folders(root, IMAGE_FOLDER_PREFIX))


def read_ham10000(root: Path, mask_root: Path | None = None, log: Callable[[str], None] = print) -> pd.DataFrame:
    """An extracted HAM10000 copy in the Kaggle layout (HAM10000_metadata.csv and
    HAM10000_images_part_{1,2}/ISIC_*.jpg, with or without the lower-case duplicate folders) or the
    Dataverse layout (the tab-separated HAM10000_metadata.tab and the two extracted image zips).
    Lesion masks (HAM10000_segmentations_lesion_tschandl/ISIC_*_segmentation.png) are looked for in
    root and in mask_root, where masks downloaded for a read-only copy are extracted."""
    root = Path(root)
    meta_path = find_metadata(root)
    if meta_path is None:
        raise DataError(f"{root}: no HAM10000_metadata table (.csv from Kaggle, .tab from Dataverse); point "
                        "data.ham10000_dir at the downloaded copy")
    meta = read_metadata(meta_path, log)
    images = _images_by_stem(root, _folders(root, IMAGE_FOLDER_PREFIX))
    no_image = sorted(set(meta["image_id"]) - set(images))
    if no_image:
        raise DataError(f"{root}: {len(no_image)} metadata row(s) have no image, e.g. {no_image[:5]}")
    no_meta = sorted(set(images) - set(meta["image_id"]))
    if no_meta:
        raise DataError(f"{root}: {len(no_meta)} image(s) have no metadata row, e.g. {no_meta[:5]}")

    mask_folders = (_folders(mask_root, MASK_FOLDER.lower()) if mask_root else []) + _folders(root, MASK_FOLDER.lower())
    masks = {p.name: p for folder in mask_folders for p in folder.glob("*_segmentation.png")}  # root's win
    frame = meta.assign(
        path=[_relative(images[i]) for i in meta["image_id"]],
        age=pd.to_numeric(meta["age"], errors="coerce"),
        mask_path=[_relative(masks[f"{i}_segmentation.png"]) if f"{i}_segmentation.png" in masks else ""
                   for i in meta["image_id"]],
    )
    return validate(frame.loc[:, list(COLUMNS)], what=str(meta_path))



def unified_root(root: Path) -> Path | None:
    """The folder that holds Unified_dataset/, at root or one folder down, if any."""
    for candidate in (Path(root), *sorted(Path(root).glob("*"))):
        if (candidate / "Unified_dataset").is_dir():
            return candidate
    return None


def read_unified(root: Path, split: str = "val") -> pd.DataFrame:
    """The unified external set: Unified_dataset/<split>/<dx>/*.{jpg,jpeg,png} (any case). Each
    image is its own lesion."""
    root = unified_root(root) or Path(root)
    base = Path(root) / "Unified_dataset" / split
    if not base.is_dir():
        raise DataError(f"{root}: no Unified_dataset/{split}/ folder; point data.external_dir at the extracted copy")
    masks = Path(root) / "Unified_dataset_masks" / split
    rows = []
    for dx in CLASSES:
        folder = base / dx
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            mask = masks / dx / f"{p.stem}_segmentation.png"
            rows.append({
                "image_id": p.stem, "path": _relative(p), "lesion_id": f"external_{p.stem}", "dx": dx,
                "dx_type": "", "age": float("nan"), "sex": "", "localization": "",
                "mask_path": _relative(mask) if mask.exists() else "",
            })
    unknown = sorted(p.name for p in base.iterdir() if p.is_dir() and p.name not in CLASSES)
    if unknown:
        raise DataError(f"{base}: unknown class folder(s) {unknown}; expected {list(CLASSES)}")
    if not rows:
        raise DataError(f"{base}: no images in any class folder; expected {list(CLASSES)} with .jpg/.jpeg/.png files")
    return validate(pd.DataFrame(rows, columns=list(COLUMNS)), what=str(base), require_all_classes=False)


def relocated_path(path: str, staged: Path, final: Path) -> str:
    """`path` (relative to the working folder, as in a manifest), if under `staged`, as it reads
    once `staged` is renamed to `final`; any other path (a copy read in place, or none) as it is."""
    prefix = os.path.join(_relative(staged), "")
    return os.path.join(_relative(final), path[len(prefix):]) if path.startswith(prefix) else path


def relocated(frame: pd.DataFrame, staged: Path, final: Path) -> pd.DataFrame:
    """The manifest with its paths under `staged` (a folder the download stage filled and checked)
    pointing at `final`, where that folder is renamed once everything checked out."""
    prefix, final_rel = os.path.join(_relative(staged), ""), _relative(final)

    def move(path: str) -> str:
        return os.path.join(final_rel, path[len(prefix):]) if path.startswith(prefix) else path

    return frame.assign(path=frame["path"].map(move), mask_path=frame["mask_path"].map(move))


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame(columns=list(COLUMNS))

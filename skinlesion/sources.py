"""Adapters from on-disk dataset layouts to the canonical manifest."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .classes import CLASSES
from .manifest import COLUMNS, DataError, validate

KAGGLE_METADATA = "HAM10000_metadata.csv"
METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
MASK_FOLDER = "HAM10000_segmentations_lesion_tschandl"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _relative(path: Path) -> str:
    return os.path.relpath(path, Path.cwd())


def _images_by_stem(folders: list[Path]) -> dict[str, Path]:
    """Key images by file stem: the Kaggle zip holds each image twice, in upper- and lower-case folders."""
    found: dict[str, Path] = {}
    for folder in sorted(folders):
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                found.setdefault(p.stem, p)
    return found


def read_kaggle_ham10000(root: Path) -> pd.DataFrame:
    """The Kaggle layout: HAM10000_metadata.csv and HAM10000_images_part_{1,2}/ISIC_*.jpg."""
    root = Path(root)
    meta_path = root / KAGGLE_METADATA
    if not meta_path.exists():
        raise DataError(f"{root}: no {KAGGLE_METADATA}; point data.ham10000_dir at the extracted Kaggle copy")
    meta = pd.read_csv(meta_path, dtype=str, keep_default_na=False)
    missing = [c for c in METADATA_COLUMNS if c not in meta.columns]
    extra = [c for c in meta.columns if c not in METADATA_COLUMNS]
    if missing or extra:
        raise DataError(f"{meta_path}: expected columns {list(METADATA_COLUMNS)}; missing {missing}, unexpected {extra}")

    folders = [p for p in root.iterdir() if p.is_dir() and p.name.lower().startswith("ham10000_images_part_")]
    images = _images_by_stem(folders)
    no_image = sorted(set(meta["image_id"]) - set(images))
    if no_image:
        raise DataError(f"{root}: {len(no_image)} metadata row(s) have no image, e.g. {no_image[:5]}")
    no_meta = sorted(set(images) - set(meta["image_id"]))
    if no_meta:
        raise DataError(f"{root}: {len(no_meta)} image(s) have no metadata row, e.g. {no_meta[:5]}")

    masks = root / MASK_FOLDER
    frame = meta.assign(
        path=[_relative(images[i]) for i in meta["image_id"]],
        age=pd.to_numeric(meta["age"], errors="coerce"),
        mask_path=[_relative(masks / f"{i}_segmentation.png") if (masks / f"{i}_segmentation.png").exists() else ""
                   for i in meta["image_id"]],
    )
    return validate(frame.loc[:, list(COLUMNS)], what=str(meta_path))


def read_unified(root: Path, split: str = "val") -> pd.DataFrame:
    """The unified external set: Unified_dataset/<split>/<dx>/*.{jpg,jpeg,png}. Each image is its own lesion."""
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
    return validate(pd.DataFrame(rows, columns=list(COLUMNS)), what=str(base), require_all_classes=False)


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame(columns=list(COLUMNS))

"""Tests for the synthetic demo data generator (real on-disk layouts, determinism, masks, domain shift)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinlesion.classes import CLASSES
from skinlesion.demo_data import (
    LOCALIZATIONS,
    METADATA_COLUMNS,
    write_demo_ham10000,
    write_demo_unified,
)

SIZE = (120, 90)  # small images keep the suite fast; the layout logic does not depend on size
N_LESIONS = 40


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_metadata(root: Path) -> list[dict[str, str]]:
    with open(root / "HAM10000_metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def ham(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ham")
    write_demo_ham10000(root, n_lesions=N_LESIONS, seed=7, image_size=SIZE)
    return root


@pytest.fixture(scope="module")
def unified(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unified")
    write_demo_unified(root, n_images=35, seed=7, image_size=SIZE)
    return root


def _image_paths(root: Path) -> dict[str, Path]:
    return {p.stem: p for p in root.glob("HAM10000_images_part_*/*.jpg")}


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(ham, tmp_path):
    again = tmp_path / "again"
    write_demo_ham10000(again, n_lesions=N_LESIONS, seed=7, image_size=SIZE)
    first, second = _files(ham), _files(again)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def test_different_seed_gives_different_data(ham, tmp_path):
    other = tmp_path / "other"
    write_demo_ham10000(other, n_lesions=N_LESIONS, seed=8, image_size=SIZE)
    assert (other / "HAM10000_metadata.csv").read_bytes() != (ham / "HAM10000_metadata.csv").read_bytes()
    a, b = _files(ham), _files(other)
    common_jpgs = [k for k in a.keys() & b.keys() if k.endswith(".jpg")]
    assert common_jpgs and all(a[k] != b[k] for k in common_jpgs)


def test_unified_is_deterministic(unified, tmp_path):
    again = tmp_path / "again"
    write_demo_unified(again, n_images=35, seed=7, image_size=SIZE)
    assert _files(unified) == _files(again)
    other = tmp_path / "other"
    write_demo_unified(other, n_images=35, seed=8, image_size=SIZE)
    assert _files(unified) != _files(other)


# --- Kaggle HAM10000 layout -------------------------------------------------------------------


def test_metadata_columns_and_values(ham):
    with open(ham / "HAM10000_metadata.csv", newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header) == METADATA_COLUMNS
    rows = _read_metadata(ham)
    for r in rows:
        assert len(r["lesion_id"]) == 11 and r["lesion_id"].startswith("HAM_") and r["lesion_id"][4:].isdigit()
        assert len(r["image_id"]) == 12 and r["image_id"].startswith("ISIC_") and r["image_id"][5:].isdigit()
        assert r["dx"] in CLASSES
        assert r["dx_type"] in {"histo", "follow_up", "consensus", "confocal"}
        assert r["sex"] in {"male", "female", "unknown"}
        assert r["localization"] in LOCALIZATIONS
    ages = [r["age"] for r in rows]
    present = [a for a in ages if a != ""]
    assert all(a.endswith(".0") and 0 <= float(a) <= 90 for a in present)
    assert 0 < ages.count("") < len(ages) / 4  # a few missing, as in the real table
    numbers = sorted(int(r["image_id"][5:]) for r in rows)
    assert numbers == list(range(24306, 24306 + len(rows)))  # consecutive ids, each once


def test_images_match_metadata_and_parts(ham):
    rows = _read_metadata(ham)
    ids = [r["image_id"] for r in rows]
    part1 = {p.stem for p in (ham / "HAM10000_images_part_1").glob("*.jpg")}
    part2 = {p.stem for p in (ham / "HAM10000_images_part_2").glob("*.jpg")}
    assert not part1 & part2
    assert sorted(part1 | part2) == sorted(ids) and len(set(ids)) == len(ids)
    assert max(part1) < min(part2)  # part 1 holds the first half of the ids
    assert abs(len(part1) - len(part2)) <= 1
    assert {p.name for p in ham.iterdir()} == {
        "HAM10000_metadata.csv", "HAM10000_images_part_1", "HAM10000_images_part_2",
        "HAM10000_segmentations_lesion_tschandl"}
    paths = _image_paths(ham)
    for image_id in ids[:10]:
        with Image.open(paths[image_id]) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == SIZE


def test_lesions_classes_and_views(ham):
    rows = _read_metadata(ham)
    assert {r["dx"] for r in rows} == set(CLASSES)
    by_lesion: dict[str, list[dict]] = {}
    for r in rows:
        by_lesion.setdefault(r["lesion_id"], []).append(r)
    assert len(by_lesion) == N_LESIONS
    sizes = [len(v) for v in by_lesion.values()]
    assert min(sizes) >= 1 and max(sizes) <= 6 and max(sizes) >= 2
    for views in by_lesion.values():
        assert len({(v["dx"], v["age"], v["sex"], v["localization"]) for v in views}) == 1
    # rows of one lesion are adjacent, as in the real table
    order = [r["lesion_id"] for r in rows]
    assert len([i for i in range(1, len(order)) if order[i] != order[i - 1]]) == N_LESIONS - 1


def test_class_balance_at_demo_scale():
    from skinlesion.demo_data import HAM_LESION_SHARES, _apportion

    counts = _apportion(HAM_LESION_SHARES, 600)
    assert sum(counts.values()) == 600
    assert max(counts, key=counts.get) == "nv"
    assert min(counts.values()) >= 35


def test_views_of_a_lesion_are_similar_but_not_identical(ham):
    rows = _read_metadata(ham)
    paths = _image_paths(ham)
    by_lesion: dict[str, list[str]] = {}
    for r in rows:
        by_lesion.setdefault(r["lesion_id"], []).append(r["image_id"])
    a, b = next(v for v in by_lesion.values() if len(v) >= 2)[:2]
    x = np.asarray(Image.open(paths[a]), dtype=np.float32)
    y = np.asarray(Image.open(paths[b]), dtype=np.float32)
    assert np.abs(x - y).mean() > 1.0  # another rotation / offset / lighting
    assert np.abs(x.mean((0, 1)) - y.mean((0, 1))).max() < 25  # same lesion, same skin


# --- masks ------------------------------------------------------------------------------------


def _check_mask(mask_path: Path, image_path: Path) -> None:
    with Image.open(mask_path) as m, Image.open(image_path) as im:
        assert m.format == "PNG" and m.mode == "L" and m.size == im.size
        a = np.asarray(m)
    assert set(np.unique(a)) <= {0, 255}
    assert 0.015 < (a == 255).mean() < 0.85


def test_ham_masks(ham):
    mask_dir = ham / "HAM10000_segmentations_lesion_tschandl"
    paths = _image_paths(ham)
    masks = sorted(mask_dir.iterdir())
    assert {p.name for p in masks} == {f"{i}_segmentation.png" for i in paths}
    for m in masks:
        _check_mask(m, paths[m.name.removesuffix("_segmentation.png")])


def test_mask_covers_the_dark_lesion(ham):
    """The mask marks the lesion: inside is darker than the surrounding skin on average."""
    rows = _read_metadata(ham)
    paths = _image_paths(ham)
    diffs = []
    for r in rows:
        im = np.asarray(Image.open(paths[r["image_id"]]).convert("L"), dtype=np.float32)
        m = np.asarray(Image.open(ham / "HAM10000_segmentations_lesion_tschandl" / f"{r['image_id']}_segmentation.png")) > 0
        diffs.append(im[~m].mean() - im[m].mean())
    assert np.median(diffs) > 10


# --- unified external layout ------------------------------------------------------------------


def test_unified_layout(unified):
    images = unified / "Unified_dataset" / "val"
    masks = unified / "Unified_dataset_masks" / "val"
    assert {p.name for p in unified.iterdir()} == {"Unified_dataset", "Unified_dataset_masks"}
    assert sorted(p.name for p in images.iterdir()) == sorted(CLASSES)
    jpgs = sorted(images.glob("*/*.jpg"))
    assert len(jpgs) == 35 and len({p.name for p in jpgs}) == 35
    for dx in CLASSES:
        assert len(list((images / dx).glob("*.jpg"))) >= 1
    for p in jpgs:
        assert p.stem.startswith("UNI_") and len(p.stem) == 10
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == SIZE
        _check_mask(masks / p.parent.name / f"{p.stem}_segmentation.png", p)
    assert len(list(masks.glob("*/*.png"))) == 35


def test_unified_split_name(tmp_path):
    write_demo_unified(tmp_path, n_images=7, seed=0, image_size=(60, 45), split="test")
    assert len(list((tmp_path / "Unified_dataset" / "test").glob("*/*.jpg"))) == 7
    with pytest.raises(ValueError):
        write_demo_unified(tmp_path / "x", n_images=7, seed=0, split="../escape")


def test_external_domain_differs(ham, unified):
    """Other skin, light and camera: background colour and sharpness shift in distribution."""

    def stats(paths, mask_of):
        bg, sharp = [], []
        for p in paths:
            im = np.asarray(Image.open(p), dtype=np.float32)
            m = np.asarray(Image.open(mask_of(p))) > 0
            bg.append(im[~m].mean(0))
            sharp.append(np.abs(np.diff(im.mean(2), axis=1)).mean())
        return np.array(bg), np.array(sharp)

    ham_bg, ham_sharp = stats(
        sorted(_image_paths(ham).values()),
        lambda p: ham / "HAM10000_segmentations_lesion_tschandl" / f"{p.stem}_segmentation.png")
    uni_bg, uni_sharp = stats(
        sorted((unified / "Unified_dataset" / "val").glob("*/*.jpg")),
        lambda p: unified / "Unified_dataset_masks" / "val" / p.parent.name / f"{p.stem}_segmentation.png")
    # darker skin and a warmer light: less blue relative to red
    assert uni_bg.mean() < ham_bg.mean() - 8
    assert (uni_bg[:, 2] / uni_bg[:, 0]).mean() < (ham_bg[:, 2] / ham_bg[:, 0]).mean() - 0.03
    assert uni_sharp.mean() < ham_sharp.mean()  # softer optics

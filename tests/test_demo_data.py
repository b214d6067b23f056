"""Tests for the synthetic demo data generator (real on-disk layouts, determinism, masks, domain shift)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinlesion.acquire import demo_data
from skinlesion.classes import CLASSES
from skinlesion.acquire.demo_data import (
    _ARTIFACTS,
    DOMAINS,
    LOCALIZATIONS,
    METADATA_COLUMNS,
    _cos_turns,
    _power01,
    _render_scene,
    mask_png,
    sample_lesion,
    sample_view,
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


def test_rendering_in_several_processes_writes_the_same_bytes(ham, unified, tmp_path):
    # the download stage renders in one process per core: the data must not depend on the core count
    write_demo_ham10000(tmp_path / "ham", n_lesions=N_LESIONS, seed=7, image_size=SIZE, workers=3)
    write_demo_unified(tmp_path / "unified", n_images=35, seed=7, image_size=SIZE, workers=2)
    assert _files(tmp_path / "ham") == _files(ham)
    assert _files(tmp_path / "unified") == _files(unified)
    assert len(_files(ham)) == 1 + 2 * len(_read_metadata(ham)) and len(_files(unified)) == 2 * 35


def test_the_work_is_cut_into_contiguous_runs_in_order():
    items = list(range(10))
    assert demo_data._chunks(items, 1) == [items]
    for workers in (2, 3, 16):
        chunks = demo_data._chunks(items, workers)
        assert [x for c in chunks for x in c] == items and all(chunks)
        assert len(chunks) == min(len(items), 4 * workers)


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
    from skinlesion.acquire.demo_data import HAM_LESION_SHARES, _apportion

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


# --- the same bytes on every CPU ----------------------------------------------------------------
# numpy picks SIMD kernels for its transcendental functions when it is imported (AVX-512 / AVX2 /
# SSE here), OpenBLAS picks kernels per CPU, libjpeg-turbo picks its SIMD code per CPU. The demo
# data must not depend on any of them, or dvc.lock changes on another machine.

PINNED_DIGESTS = {
    "files": "03f038a0b6b6dd11b845f587722665b9fcbd5ba85dddaa8888a2123ea4428f65",
    "scenes": "dab6132f5ced29bbaa0078c0b05d77faab5b705cb60490489c45cadef126c9ff",
}


def demo_digests(root: Path) -> dict[str, str]:
    """sha256 of a tiny demo dataset's files, and of the float32 scenes (before quantisation) of every
    class in both domains with every artifact: a float differs long before a byte of a JPEG does."""
    write_demo_ham10000(root / "ham10000", n_lesions=7, seed=3, image_size=SIZE)
    write_demo_unified(root / "external", n_images=7, seed=4, image_size=SIZE)
    files = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            files.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    scenes = hashlib.sha256()
    for name, domain in DOMAINS.items():
        every_artifact = dataclasses.replace(domain, **{p: 1.0 for p, _ in _ARTIFACTS})
        for i, dx in enumerate(CLASSES):
            key = (5, i)
            lesion = sample_lesion(dx, np.random.default_rng(key), key, every_artifact)
            img, mask, _ = _render_scene(lesion, sample_view(np.random.default_rng((6, i)), every_artifact),
                                         every_artifact, SIZE)
            scenes.update(name.encode() + img.tobytes() + mask.tobytes())
    return {"files": files.hexdigest(), "scenes": scenes.hexdigest()}


def test_exact_cosine_and_power_are_accurate():
    x = np.linspace(-80, 80, 400_001, dtype=np.float32)
    assert np.abs(_cos_turns(x) - np.cos(2 * np.pi * x.astype(np.float64))).max() < 1e-6
    t = np.linspace(0, 1, 100_001, dtype=np.float32)
    for exponent in (1.0, 1.3, 2.5, 1.87):
        assert np.abs(_power01(t, exponent) - t.astype(np.float64) ** exponent).max() < 2e-5
    assert _power01(np.float32([0, 1]), 2.5).tolist() == [0.0, 1.0]


def test_mask_png_decodes_to_the_mask():
    import io

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:90, :120]
    masks = [np.zeros((5, 5), bool), np.ones((5, 5), bool), np.ones((1, 1), bool), np.ones((3, 1), bool),
             np.ones((4, 600), bool),            # runs longer than a deflate match (258) within and across rows
             rng.random((30, 300)) > 0.5,         # runs of 1 and 2 bytes (literals only)
             (yy - 40) ** 2 + (xx - 70) ** 2 < 30 ** 2]
    for mask in masks:
        data = mask_png(mask)
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and im.mode == "L" and im.size == mask.shape[::-1]
            assert np.array_equal(np.asarray(im), np.where(mask, 255, 0))
    assert len(mask_png(masks[-1])) < 1000  # a disc: a few runs per row
    with pytest.raises(ValueError):
        mask_png(np.zeros((0, 4), bool))


_CPU_ENV = ("NPY_DISABLE_CPU_FEATURES", "NPY_ENABLE_CPU_FEATURES", "OPENBLAS_CORETYPE",
            "JSIMD_FORCENONE", "JSIMD_FORCESSE2", "JSIMD_FORCEAVX2")


def cpu_settings() -> dict[str, dict[str, str]]:
    """Environments that make this machine's libraries run the code paths of lesser CPUs: numpy limited
    to its lowest SIMD dispatch level (on x86-64: AVX2, as on CPUs without AVX-512), and to its
    baseline (SSE4.2 on x86-64); OpenBLAS and libjpeg-turbo told to use older kernels alike."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    levels = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]  # what numpy dispatches to here
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    settings: dict[str, dict[str, str]] = {"default": {}}
    if len(levels) > 1:
        settings[f"numpy {levels[0]}"] = {"NPY_DISABLE_CPU_FEATURES": " ".join(levels[1:]), "JSIMD_FORCEAVX2": "1",
                                          **({"OPENBLAS_CORETYPE": "Haswell"} if levels[0] == "X86_V3" else {})}
    if levels:
        settings["numpy baseline"] = {"NPY_DISABLE_CPU_FEATURES": " ".join(levels), "JSIMD_FORCENONE": "1",
                                      **({"OPENBLAS_CORETYPE": "Prescott"} if x86 else {})}
    return settings


def _digests_in_subprocess(root: Path, extra_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CPU_ENV}
    repo = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(repo), str(repo / "tests"), env.get("PYTHONPATH", "")])
    code = ("import json, sys; from pathlib import Path; from test_demo_data import demo_digests; "
            "print(json.dumps(demo_digests(Path(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", code, str(root)], env={**env, **extra_env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_demo_data_is_identical_under_every_cpu_setting(tmp_path):
    settings = cpu_settings()
    digests = {name: _digests_in_subprocess(tmp_path / str(i), env) for i, (name, env) in enumerate(settings.items())}
    differing = {name: d for name, d in digests.items() if d != digests["default"]}
    assert not differing, (
        f"the demo data depends on the CPU's SIMD kernels: {differing} != default {digests['default']} "
        f"(settings: {settings}). A per-pixel operation is not exact: use only the operations listed "
        "under 'CPU-independent maths' in skinlesion/acquire/demo_data.py (no power/exp/log/sin/cos ufuncs, dot, @, linalg)")


def test_demo_data_matches_the_pinned_digests(tmp_path):
    digests = demo_digests(tmp_path)
    assert digests == PINNED_DIGESTS, (
        f"the demo data changed: {digests} != pinned {PINNED_DIGESTS}. If you changed the generator on "
        "purpose, paste the new digests into PINNED_DIGESTS and rerun the pipeline so that dvc.lock records "
        "the new data. If you did not, another version of numpy, Pillow or libjpeg-turbo, or this machine's "
        "CPU, changed the bytes: see test_demo_data_is_identical_under_every_cpu_setting, and pin the "
        "packages of requirements.txt")


def test_external_case_mix_has_more_lookalikes():
    """The external clinics see five times HAM's share of equivocal lesions
    (a case-mix shift that every model pays for alike, unlike a colour cast)."""
    from skinlesion.acquire.demo_data import LESION_STYLES, _lesion_style

    def blended_share(domain):
        rng = np.random.default_rng(0)
        dxs = list(CLASSES) * 3000
        return np.mean([_lesion_style(dx, rng, domain.lookalike_factor) is not LESION_STYLES[dx] for dx in dxs])

    ham, uni = blended_share(DOMAINS["ham"]), blended_share(DOMAINS["unified"])
    assert 0.04 < ham < 0.06  # LOOKALIKES: 3 to 6% per class
    assert uni == pytest.approx(5 * ham, rel=0.15)

"""Adapters from real dataset layouts to the canonical manifest, on fixtures made here."""

import zipfile

import numpy as np
import pytest
from PIL import Image

from skinlesion import atomic
from skinlesion.acquire import dataverse, fetch, image_check, routes
from skinlesion.errors import DataError
from skinlesion.manifest import COLUMNS
from skinlesion.acquire.sources import read_ham10000 as read_kaggle_ham10000
from skinlesion.acquire.sources import read_unified

HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
ROWS = ["HAM_0000001,ISIC_0024306,nv,follow_up,45.0,male,back",
        "HAM_0000001,ISIC_0024307,nv,follow_up,45.0,male,back",
        "HAM_0000002,ISIC_0024308,mel,histo,,female,face",
        *[f"HAM_000001{k},ISIC_002431{k},{dx},histo,60.0,female,trunk"
          for k, dx in enumerate(["akiec", "bcc", "bkl", "df", "vasc"])]]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No network here: the optional lesion-mask download fails as it does offline (tests/test_masks.py)."""
    def refuse(*args, **kwargs):
        raise fetch.DownloadError("offline")
    monkeypatch.setattr(dataverse, "download_masks", refuse)


def jpg(path, size=(60, 45)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path)


def kaggle(root, rows=ROWS, header=HEADER, lowercase_copies=True):
    (root / "HAM10000_metadata.csv").write_text(header + "\n".join(rows) + "\n")
    for i, row in enumerate(rows):
        image_id = row.split(",")[1]
        jpg(root / f"HAM10000_images_part_{1 + i % 2}" / f"{image_id}.jpg")
        if lowercase_copies:  # the Kaggle zip holds every image twice
            jpg(root / f"ham10000_images_part_{1 + i % 2}" / f"{image_id}.jpg")
    return root


def test_kaggle_layout_with_duplicate_lowercase_folders_counts_each_image_once(tmp_path):
    frame = read_kaggle_ham10000(kaggle(tmp_path))
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == len(ROWS) == 8
    assert frame["image_id"].tolist()[:3] == ["ISIC_0024306", "ISIC_0024307", "ISIC_0024308"]
    assert frame["lesion_id"].tolist()[:3] == ["HAM_0000001", "HAM_0000001", "HAM_0000002"]
    assert frame["age"].tolist()[:2] == [45.0, 45.0] and np.isnan(frame["age"].iloc[2])
    assert all(p.endswith(".jpg") for p in frame["path"])


def test_missing_metadata_column_is_named(tmp_path):
    rows = [",".join(r.split(",")[:6]) for r in ROWS]
    with pytest.raises(DataError, match=r"missing \['localization'\]"):
        read_kaggle_ham10000(kaggle(tmp_path, rows, "lesion_id,image_id,dx,dx_type,age,sex\n"))


def test_unknown_dx_code_is_named(tmp_path):
    rows = [*ROWS, ROWS[2].replace(",mel,", ",melanoma,").replace("24308", "24399")]
    with pytest.raises(DataError, match=r"unknown dx code\(s\) \['melanoma'\]"):
        read_kaggle_ham10000(kaggle(tmp_path, rows))


def test_a_class_without_images_is_named(tmp_path):
    rows = [r for r in ROWS if ",df," not in r]
    with pytest.raises(DataError, match=r"no images of class\(es\) \['df'\]"):
        read_kaggle_ham10000(kaggle(tmp_path, rows))


def test_metadata_row_without_image_is_named(tmp_path):
    root = kaggle(tmp_path, lowercase_copies=False)
    (root / "HAM10000_images_part_1" / "ISIC_0024306.jpg").unlink()
    with pytest.raises(DataError, match="1 metadata row\\(s\\) have no image, e.g. \\['ISIC_0024306'\\]"):
        read_kaggle_ham10000(root)


def test_image_without_metadata_is_named(tmp_path):
    root = kaggle(tmp_path)
    jpg(root / "HAM10000_images_part_2" / "ISIC_0099999.jpg")
    with pytest.raises(DataError, match="ISIC_0099999"):
        read_kaggle_ham10000(root)


def test_unified_layout_accepts_any_extension_case(tmp_path):
    base = tmp_path / "Unified_dataset" / "val"
    jpg(base / "mel" / "a.JPG")
    jpg(base / "nv" / "b.jpeg")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(base / "nv" / "c.PNG")
    (base / "nv" / "notes.txt").write_text("not an image")
    frame = read_unified(tmp_path)
    assert sorted(frame["image_id"]) == ["a", "b", "c"]
    assert frame.set_index("image_id").loc["a", "dx"] == "mel"
    assert frame["lesion_id"].is_unique  # each external image is its own lesion


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed midway")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("writer", [atomic.atomic_path, atomic.atomic_dir])
def test_a_failed_write_removes_the_folders_it_created_but_no_others(tmp_path, writer):
    (tmp_path / "data" / "kept").mkdir(parents=True)
    with pytest.raises(RuntimeError):
        with writer(tmp_path / "data" / "raw" / "ham10000" / "out"):
            raise RuntimeError("killed midway")
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["kept"]


def test_atomic_dir_keeps_the_previous_output_when_the_writer_fails(tmp_path):
    target = tmp_path / "models"
    with atomic.atomic_dir(target) as tmp:
        (tmp / "fold0.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(target) as tmp:
            (tmp / "fold0.json").write_text("new, half")
            raise RuntimeError("killed midway")
    assert [p.name for p in tmp_path.iterdir()] == ["models"]
    assert (target / "fold0.json").read_text() == "old"


def test_corrupt_or_truncated_jpeg_names_the_file(tmp_path):
    from skinlesion.images import load_rgb

    good = tmp_path / "good.jpg"
    jpg(good, size=(600, 450))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:300])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not a jpeg at all")
    assert load_rgb(good, 64).shape == (64, 85, 3)
    for bad in (truncated, garbage):
        with pytest.raises(DataError, match=f"cannot read image {bad}"):
            load_rgb(bad, 64)


def dataverse_table(rows=ROWS, extra_header="", drop_last_column=False):
    """The Dataverse metadata: tab-separated, strings quoted, an 8th `dataset` column."""
    lines = []
    for r in rows:
        cells = [f'"{c}"' if not c.replace(".", "").isdigit() else c for c in r.split(",")] + ['"vidir_modern"']
        lines.append("\t".join(cells[:-1] if drop_last_column else cells))
    header = "lesion_id\timage_id\tdx\tdx_type\tage\tsex\tlocalization" + ("" if drop_last_column else "\tdataset")
    return header + extra_header + "\n" + "\n".join(lines) + "\n"


def dataverse_copy(root, rows=ROWS, table=None):
    """The Dataverse files as downloaded: two image zips (images at the zip's top level) and the .tab."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "HAM10000_metadata.tab").write_text(table or dataverse_table(rows))
    staging = root.parent / "staging"
    for part in (1, 2):
        with zipfile.ZipFile(root / f"HAM10000_images_part_{part}.zip", "w") as zf:
            for i, row in enumerate(rows):
                if 1 + i % 2 == part:
                    image_id = row.split(",")[1]
                    jpg(staging / f"{image_id}.jpg")
                    zf.write(staging / f"{image_id}.jpg", f"{image_id}.jpg")
    return root


def test_dataverse_zips_and_tab_metadata_are_extracted_and_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logs = []
    frame = routes.ham10000(str(dataverse_copy(tmp_path / "dv")), tmp_path / "raw", tmp_path / "dl", logs.append)
    assert logs[0] == f"HAM10000 route 1 of 3: the zipped local copy in {tmp_path / 'dv'}, extracted into {tmp_path / 'raw'}"
    assert len(logs) == 2 and "cam_in_lesion will be unavailable" in logs[1]  # no masks in this copy, offline
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 8
    assert frame["lesion_id"].tolist()[:3] == ["HAM_0000001", "HAM_0000001", "HAM_0000002"]  # quotes gone
    assert frame["age"].tolist()[:2] == [45.0, 45.0] and np.isnan(frame["age"].iloc[2])
    assert frame["path"].iloc[0] == "raw/HAM10000_images_part_1/ISIC_0024306.jpg"
    # the extracted Dataverse layout reads in place too
    assert read_kaggle_ham10000(tmp_path / "raw").equals(frame)


def test_dataverse_table_with_a_missing_column_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [",".join(r.split(",")[:5] + r.split(",")[6:]) for r in ROWS]  # no sex
    table = dataverse_table(rows).replace("\tsex", "")
    with pytest.raises(DataError, match=r"missing \['sex'\], unexpected \[\]"):
        routes.ham10000(str(dataverse_copy(tmp_path / "dv", table=table)), tmp_path / "raw", tmp_path / "dl", print)


def test_dataverse_table_with_an_unknown_dx_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [r.replace(",df,", ",dermatofibroma,") for r in ROWS]
    with pytest.raises(DataError, match=r"unknown dx code\(s\) \['dermatofibroma'\]"):
        routes.ham10000(str(dataverse_copy(tmp_path / "dv", rows)), tmp_path / "raw", tmp_path / "dl", print)


def test_kaggle_zip_extracts_each_image_once_and_skips_the_pixel_tables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "extracted").mkdir()
    copy = kaggle(tmp_path / "extracted")
    (copy / "hmnist_28_28_RGB.csv").write_text("pixel0000,label\n1,2\n")
    (tmp_path / "zipped").mkdir()
    with zipfile.ZipFile(tmp_path / "zipped" / "skin-cancer-mnist-ham10000.zip", "w") as zf:
        for p in sorted(copy.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(copy).as_posix())
    frame = routes.ham10000(str(tmp_path / "zipped"), tmp_path / "raw", tmp_path / "dl", print)
    assert len(frame) == 8
    extracted = sorted(p.relative_to(tmp_path / "raw").as_posix() for p in (tmp_path / "raw").rglob("*") if p.is_file())
    assert len(extracted) == 9 and "HAM10000_metadata.csv" in extracted  # 8 images, once each, + metadata
    assert not any("hmnist" in p for p in extracted)


def test_a_local_copy_that_is_neither_layout_nor_zip_says_what_to_provide(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither an extracted HAM10000 copy nor its zips; set data.ham10000_dir"):
        routes.ham10000(str(tmp_path / "empty"), tmp_path / "raw", tmp_path / "dl", print)


def unified_copy(root):
    for split, names in {"train": ["t1.jpg"], "val": ["a.JPG", "b.jpeg"], "test": ["c.png"]}.items():
        for name in names:
            jpg(root / "Unified_dataset" / split / "mel" / name)
    return root


def test_unified_zip_extracts_only_the_chosen_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copy = unified_copy(tmp_path / "copy")
    (tmp_path / "zipped").mkdir()
    with zipfile.ZipFile(tmp_path / "zipped" / "unified.zip", "w") as zf:
        for p in sorted(copy.rglob("*.*")):
            zf.write(p, p.relative_to(copy).as_posix())
    frame = routes.unified(str(tmp_path / "zipped"), "test", tmp_path / "raw", tmp_path / "dl", print)
    assert frame["image_id"].tolist() == ["c"]
    assert [p.name for p in (tmp_path / "raw").rglob("*.*")] == ["c.png"]
    assert sorted(routes.unified(str(copy), "val", tmp_path / "raw2", tmp_path / "dl", print)["image_id"]) == ["a", "b"]


def test_unified_without_copy_or_credentials_lists_both_routes(tmp_path, monkeypatch):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataError, match=r"(?s)1\. a local copy.*2\. the Kaggle API.*no Kaggle credentials"):
        routes.unified("", "val", tmp_path / "raw", tmp_path / "dl", print)


def test_image_check_finds_truncated_and_garbage_images(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (450, 600, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])  # header intact, pixels cut
    (tmp_path / "garbage.jpg").write_bytes(b"not a jpeg at all")
    paths = [str(tmp_path / n) for n in ("good.jpg", "half.jpg", "garbage.jpg")]
    bad = image_check.bad_images(paths)
    assert [p for p, _ in bad] == paths[1:]
    assert "truncated" in bad[0][1]

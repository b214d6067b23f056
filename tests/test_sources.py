"""Adapters from real dataset layouts to the canonical manifest, on fixtures made here."""

import numpy as np
import pytest
from PIL import Image

from skinlesion import atomic
from skinlesion.manifest import COLUMNS, DataError
from skinlesion.sources import read_kaggle_ham10000, read_unified

HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
ROWS = ["HAM_0000001,ISIC_0024306,nv,follow_up,45.0,male,back",
        "HAM_0000001,ISIC_0024307,nv,follow_up,45.0,male,back",
        "HAM_0000002,ISIC_0024308,mel,histo,,female,face",
        *[f"HAM_000001{k},ISIC_002431{k},{dx},histo,60.0,female,trunk"
          for k, dx in enumerate(["akiec", "bcc", "bkl", "df", "vasc"])]]


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

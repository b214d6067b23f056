"""Hostile input, round three, the data side: a local copy inside a pipeline output, unbounded
DermaMNIST npz files, and one image id with two different files."""

from __future__ import annotations

import functools
import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_dermamnist import arrays, write_npz
from test_download_safety import copy_at, download_stage, offline, snapshot, temporaries  # noqa: F401 (fixtures)
from test_sources import ROWS, jpg, kaggle, unified_copy

from committed_params import write_params
from stage_runs import exit_code
from skinlesion.acquire import archives, dermamnist, routes
from skinlesion.acquire.sources import read_ham10000
from skinlesion.classes import CLASSES
from skinlesion.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def run_stage(stage, work: Path, capsys) -> tuple[int, str]:
    """Run the download stage as `python stages/download.py` would, in work/ (its params.yaml
    written already); (exit code, stderr)."""
    capsys.readouterr()
    code = exit_code(stage, "download.py", work)
    return code, capsys.readouterr().err


HAM = {"source": "ham10000", "ham10000_dir": "data/local/ham10000", "external": "none"}
DERMAMNIST = {"data": {"source": "dermamnist", "external": "none", "img_size": 28},
              "split": {"scheme": "official"}, "train": {"folds": [0]}}


def with_data(overrides: dict, **data) -> dict:
    return {**overrides, "data": {**overrides.get("data", {}), **data}}


# Finding 1: a local copy inside a pipeline output is refused before any work, and kept


def ham10000_copy(work: Path, where: str) -> None:
    copy_at(work / where)


def external_copy(work: Path, where: str) -> None:
    ham10000_copy(work, "data/local/ham10000")  # the training set, from a safe place
    unified_copy(work / where)


def dermamnist_copy(work: Path, where: str) -> None:
    write_npz(work / where if where.endswith(".npz") else work / where / "dermamnist.npz")


INSIDE = [  # (param, the copy's folder or file, the value given, the output it lies in, how it lies there)
    ("ham10000_dir", "data/raw/ham10000", "data/raw/ham10000", "data/raw/ham10000", "is"),
    ("ham10000_dir", "data/raw/ham10000/mine", "data/raw/ham10000/mine", "data/raw/ham10000", "inside"),
    ("ham10000_dir", "data/raw/ham10000", "data/raw/ham10000/HAM10000_images_part_1/..", "data/raw/ham10000", "is"),
    ("ham10000_dir", "data/raw/ham10000", "ABSOLUTE", "data/raw/ham10000", "is"),
    ("ham10000_dir", "data/raw/ham10000", "LINK", "data/raw/ham10000", "is"),
    ("ham10000_dir", "data/manifests/ham10000", "data/manifests/ham10000", "data/manifests", "inside"),
    ("ham10000_dir", "data/cache/ham10000/copy", "data/cache/ham10000/copy", "data/cache/ham10000", "inside"),
    ("ham10000_dir", "models/ham10000", "models/ham10000", "models", "inside"),
    ("ham10000_dir", "plots/eval/ham10000", "plots/eval/ham10000", "plots/eval", "inside"),
    ("ham10000_dir", "data/raw/ham10000", "data/raw", "data/raw/ham10000", "holds"),
    ("ham10000_dir", "data/raw/ham10000", ".", "data/raw/ham10000", "holds"),
    ("external_dir", "data/raw/external", "data/raw/external", "data/raw/external", "is"),
    ("external_dir", "data/raw/external", "data/raw", "data/raw/ham10000", "holds"),
    ("dermamnist_path", "data/manifests/dermamnist.npz", "data/manifests/dermamnist.npz", "data/manifests", "inside"),
    ("dermamnist_path", "data/raw/ham10000", "data/raw/ham10000", "data/raw/ham10000", "is"),
]


@pytest.mark.parametrize("param, where, given, output, how", INSIDE,
                         ids=[f"{c[0]}={c[2]}" for c in INSIDE])
def test_download_refuses_an_input_inside_its_output(download_stage, tmp_path, capsys, param, where, given, output,
                                                      how):
    work = tmp_path / "work"
    work.mkdir()
    make_copy = {"ham10000_dir": ham10000_copy, "external_dir": external_copy, "dermamnist_path": dermamnist_copy}
    make_copy[param](work, where)
    if given == "ABSOLUTE":
        given = str(work / where)
    elif given == "LINK":  # a link outside the outputs that points into one
        (work / "my-copy").symlink_to(work / where, target_is_directory=True)
        given = "my-copy"
    base = {"external_dir": {"data": {**HAM, "external": "unified"}}, "dermamnist_path": DERMAMNIST}.get(
        param, {"data": HAM})
    write_params(work, with_data(base, **{param: given}))
    before = snapshot(work)
    assert len(before) >= 2  # the copy and params.yaml

    code, err = run_stage(download_stage, work, capsys)

    assert code == 2 and "Traceback" not in err, err
    relation = {"is": f"is {output}, an output of the pipeline",
                "inside": f"lies inside {output}, an output of the pipeline",
                "holds": f"holds {output}, an output of the pipeline"}[how]
    assert err.startswith(f"error: data.{param} {given} ") and relation in err, err
    assert "replaced by what the pipeline writes" in err and "`dvc repro` removes" in err
    assert "data/local/" in err and f"set data.{param} to" in err
    assert snapshot(work) == before  # every file still there, byte for byte
    assert temporaries(work) == [] and not (work / "metrics").exists()


@pytest.mark.parametrize("where", ["data/local/ham10000", "data/downloads/ham10000"])
def test_download_reads_a_copy_outside_the_outputs_and_keeps_it(download_stage, tmp_path, capsys, where):
    work = tmp_path / "work"
    work.mkdir()
    copy_at(work / where)
    before = snapshot(work / where)
    write_params(work, {"data": {**HAM, "ham10000_dir": where}})
    code, err = run_stage(download_stage, work, capsys)
    assert code == 0, err
    assert snapshot(work / where) == before
    table = (work / "data/manifests/ham10000.csv").read_text()
    assert table.count(f"{where}/HAM10000_images_part_") == len(ROWS)


def test_download_reads_a_dermamnist_file_beside_the_outputs(download_stage, tmp_path, capsys):
    """A DermaMNIST folder is not searched below its top level: data/ holding data/raw/ is harmless."""
    work = tmp_path / "work"
    work.mkdir()
    npz = write_npz(work / "data" / "dermamnist.npz")
    before = npz.read_bytes()
    write_params(work, with_data(DERMAMNIST, dermamnist_path="data"))
    code, err = run_stage(download_stage, work, capsys)
    assert code == 0, err
    assert npz.read_bytes() == before and len((work / "data/manifests/ham10000.csv").read_text().splitlines()) == 71


def declared_outputs() -> set[str]:
    """Every path a stage of dvc.yaml writes: its outs, metrics and plots."""
    found = []
    for stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                found.extend([entry] if isinstance(entry, str) else entry)
    assert len(found) == len(set(found))
    return set(found)


def test_the_pipeline_outputs_in_code_are_what_dvc_yaml_declares():
    assert len(routes.PIPELINE_OUTPUTS) == len(set(routes.PIPELINE_OUTPUTS))
    assert set(routes.PIPELINE_OUTPUTS) == declared_outputs()


# Finding 5: DermaMNIST npz files are bounded from their npy headers, before any array is read


def npy_bytes(shape, descr="|u1", data: bytes | None = None, fortran_order=False) -> bytes:
    """An .npy file with the header given (whatever it declares) and data (default: what it declares)."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": fortran_order, "shape": shape})
    if data is None:
        data = bytes(int(np.prod(shape, dtype=object)) * np.dtype(descr).itemsize)
    return out.getvalue() + data


def npz_of(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def valid_members(counts=None, size=28) -> dict[str, bytes]:
    out = io.BytesIO()
    members = {}
    for key, value in arrays(counts or {"train": 35, "val": 14, "test": 21}, size=size).items():
        out.seek(0)
        out.truncate()
        np.lib.format.write_array(out, value)
        members[f"{key}.npy"] = out.getvalue()
    return members


def load(path: Path, size: int = 28, limits: archives.Limits = archives.Limits()):
    return dermamnist.load_npz(path, size, limits)


def test_dermamnist_npz_header_bounds_refuse_a_huge_declared_count_before_allocating(tmp_path):
    members = {**valid_members(), "train_images.npy": npy_bytes((10**9, 28, 28, 3), data=bytes(1024))}
    npz = npz_of(tmp_path / "dermamnist.npz", members)
    with pytest.raises(DataError) as e:
        load(npz)
    message = str(e.value)
    assert message.startswith(f"{npz}: train_images declares 1,000,000,000 images")
    assert "10,015" in message and f"at most {dermamnist.MAX_IMAGES:,}" in message and "download" in message


def test_dermamnist_npz_header_bounds_refuse_more_images_than_any_dermamnist_file_holds(tmp_path):
    counts = {"train": dermamnist.MAX_IMAGES - 20, "val": 14, "test": 21}
    members = {**valid_members(), "train_images.npy": npy_bytes((counts["train"], 28, 28, 3)),
               "train_labels.npy": npy_bytes((counts["train"], 1))}
    npz = npz_of(tmp_path / "dermamnist.npz", members)
    with pytest.raises(DataError, match=rf"test_images declares 21 images, {dermamnist.MAX_IMAGES + 15:,} "
                                        "with the splits before it"):
        load(npz)


def test_dermamnist_npz_header_bounds_refuse_0x0_images(tmp_path):
    npz = write_npz(tmp_path / "dermamnist.npz", train_images=np.zeros((35, 0, 0, 3), np.uint8))
    with pytest.raises(DataError, match=r"train_images holds 0x0 px images; DermaMNIST's are 28, 64, 128 or 224 px"):
        load(npz)


def test_dermamnist_npz_header_bounds_refuse_a_side_that_is_not_data_dermamnist_size(tmp_path):
    npz = write_npz(tmp_path / "copy" / "dermamnist.npz", size=64)
    with pytest.raises(DataError, match=r"train_images holds 64 px images but data.dermamnist_size is 28; "
                                        r"set data.dermamnist_size=64"):
        load(npz, 28)
    assert len(load(npz, 64)["train"][0]) == 35
    unpublished = write_npz(tmp_path / "copy" / "odd.npz", size=32)
    with pytest.raises(DataError, match=r"train_images holds 32x32 px images; DermaMNIST's are 28, 64, 128 or 224"):
        load(unpublished, 28)


def test_dermamnist_npz_header_bounds_refuse_data_shorter_than_its_header(tmp_path):
    members = {**valid_members(), "val_images.npy": npy_bytes((14, 28, 28, 3), data=bytes(100))}
    npz = npz_of(tmp_path / "dermamnist.npz", members)
    with pytest.raises(DataError, match=r"val_images: its header declares \(14, 28, 28, 3\) uint8, 32,928 bytes, "
                                        r"but it holds 100"):
        load(npz)


def test_dermamnist_npz_zip_limits_apply(tmp_path):
    """An npz is a zip: a member that deflates 1000:1 is a bomb, refused before it is inflated."""
    members = valid_members({"train": 2000, "val": 14, "test": 21})
    members["train_images.npy"] = npy_bytes((2000, 28, 28, 3))  # zeros: 4.7 MB in a few KB
    npz = npz_of(tmp_path / "dermamnist.npz", members, zipfile.ZIP_DEFLATED)
    with pytest.raises(DataError, match=r"member 'train_images.npy' declares .* compression ratio of .* more than "
                                        r"data.max_compression_ratio = 100"):
        load(npz)
    with pytest.raises(DataError, match=r"more than data.max_archive_bytes = 10,000 bytes"):
        load(npz_of(tmp_path / "small.npz", valid_members()), limits=archives.Limits(max_archive_bytes=10_000))


def test_dermamnist_npz_limits_come_from_the_stage_params(download_stage, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    write_npz(work / "copy" / "dermamnist_128.npz", size=128)  # 3.4 MB of arrays
    write_params(work, with_data(DERMAMNIST, dermamnist_path="copy", dermamnist_size=128, max_archive_bytes=2**20))
    code, err = run_stage(download_stage, work, capsys)
    assert code == 2 and "more than data.max_archive_bytes = 1,048,576 bytes" in err, err
    assert sorted(p.name for p in work.iterdir()) == ["copy", "params.yaml"]


def test_dermamnist_npz_reads_only_the_arrays_it_needs(tmp_path):
    members = {**valid_members(), "extra.npy": npy_bytes((10**12,), data=b"")}
    data = load(npz_of(tmp_path / "dermamnist.npz", members))
    assert {split: len(labels) for split, (_, labels) in data.items()} == {"train": 35, "val": 14, "test": 21}


def test_dermamnist_npz_an_encrypted_member_is_one_message(tmp_path):
    """zipfile cannot read an encrypted member without a password: refused with the zip checks."""
    npz = npz_of(tmp_path / "dermamnist.npz", valid_members())
    data = bytearray(npz.read_bytes())
    central = data.index(b"PK\x01\x02")  # the first member's central directory entry
    data[central + 8] |= 1  # its general-purpose flags: encrypted
    npz.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"member 'train_images.npy' is encrypted .* Re-zip it without a password"):
        load(npz)


DTYPES = [np.dtype(d) for d in ("|u1", "|i1", "<i8", ">i8", "<u2", "<f4", "|b1", "|O", "<U3", "|S0", "|V0",
                                 "<M8[s]", "(2,)u1")] + [np.dtype([("a", "<i4")])]
SIDES = st.one_of(st.sampled_from([0, 1, 28, 64, 3]), st.integers(-3, 2**40))
COUNTS_ = st.one_of(st.integers(0, 8), st.integers(-3, 2**62))


@functools.cache
def valid_member(name: str) -> bytes:
    return valid_members()[name]


@st.composite
def npy_member(draw, images: bool) -> bytes:
    """A member that is valid but for what was drawn: its shape, dtype, count, data length, header bytes."""
    n = draw(COUNTS_)
    shape = draw(st.one_of(
        st.just((n, 28, 28, 3) if images else (n, 1)),
        st.just((n, 28, 28, 3) if images else (n,)),
        st.tuples(COUNTS_, SIDES, SIDES, st.sampled_from([3, 1, 4, 0])),
        st.lists(st.integers(-2, 40), max_size=5).map(tuple),
    ))
    dtype = draw(st.sampled_from([np.dtype(np.uint8) if images else np.dtype("<i8")] * 6 + DTYPES))
    descr_value = np.lib.format.dtype_to_descr(dtype)
    declared = int(np.prod([max(s, 0) for s in shape], dtype=object)) * dtype.itemsize
    if 0 <= declared <= 200_000 and draw(st.booleans()):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        values = rng.integers(0, len(CLASSES) if not images else 256, declared, dtype=np.uint8)
        data = values.tobytes()
    else:
        data = draw(st.binary(max_size=2048))
    head = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(head, {"descr": descr_value, "fortran_order": draw(st.booleans()),
                                                    "shape": shape})
    except ValueError:  # numpy refuses to write some headers; write the dict by hand
        text = repr({"descr": descr_value, "fortran_order": False, "shape": shape}).encode("latin-1")
        head.write(np.lib.format.magic(1, 0) + len(text).to_bytes(2, "little") + text)
    raw = bytearray(head.getvalue() + data)
    for position, value in draw(st.lists(st.tuples(st.integers(0, 160), st.integers(0, 255)), max_size=3)):
        if position < len(raw):
            raw[position] = value  # a mutated header byte
    return bytes(raw)


@st.composite
def npz_file(draw) -> bytes:
    members = {}
    for split in dermamnist.SPLITS:
        for kind in ("images", "labels"):
            if draw(st.integers(0, 30)) == 0:
                continue  # a missing key
            name = f"{split}_{kind}.npy"
            members[name] = draw(npy_member(kind == "images")) if draw(st.integers(0, 3)) == 0 else valid_member(name)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    raw = bytearray(out.getvalue())
    flips = draw(st.lists(st.tuples(st.integers(0, max(len(raw) - 1, 0)), st.integers(0, 255)), max_size=2))
    for position, value in flips:
        raw[position] = value  # a damaged zip
    return bytes(raw)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(npz_file())
def test_dermamnist_npz_header_property_a_valid_read_or_one_data_error(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "dermamnist.npz"
        path.write_bytes(content)
        try:
            data = load(path)
        except DataError as e:
            assert str(e).startswith(str(path)), e
            return
    assert set(data) == set(dermamnist.SPLITS)
    for images, labels in data.values():
        assert images.dtype == np.uint8 and images.shape[1:] == (28, 28, 3) and 0 < len(images) <= dermamnist.MAX_IMAGES
        assert labels.dtype == np.int64 and labels.shape == (len(images),)
        assert labels.min() >= 0 and labels.max() < len(CLASSES)


def test_the_property_examples_include_valid_reads(tmp_path):
    """The generator is not all noise: the unmutated file reads."""
    data = load(npz_of(tmp_path / "dermamnist.npz", valid_members()))
    assert {split: images.shape for split, (images, _) in data.items()} == {
        "train": (35, 28, 28, 3), "val": (14, 28, 28, 3), "test": (21, 28, 28, 3)}


# Finding 9: one image id in two image folders with different content


def png_of(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((45, 60, 3), value, np.uint8)).save(path)


def test_one_image_id_in_two_folders_with_different_content(download_stage, tmp_path, capsys):
    copy = copy_at(tmp_path / "copy")
    png_of(copy / "HAM10000_images_part_2" / "ISIC_0024306.png", 7)
    with pytest.raises(DataError) as e:
        read_ham10000(copy)
    first, second = (copy / "HAM10000_images_part_1" / "ISIC_0024306.jpg",
                     copy / "HAM10000_images_part_2" / "ISIC_0024306.png")
    assert str(e.value).startswith(f"{copy}: image id ISIC_0024306 has two different files, {first} and {second}")
    assert "delete the wrong one" in str(e.value)

    work = tmp_path / "work"
    work.mkdir()
    write_params(work, {"data": {**HAM, "ham10000_dir": str(copy)}})
    code, err = run_stage(download_stage, work, capsys)
    assert code == 2 and "image id ISIC_0024306 has two different files" in err, err
    assert sorted(p.name for p in work.iterdir()) == ["params.yaml"]


def test_one_image_id_in_two_folders_with_the_same_bytes_is_one_image(tmp_path):
    (tmp_path / "copy").mkdir()
    copy = kaggle(tmp_path / "copy")  # the Kaggle zip's lower-case duplicate folders
    twin = copy / "HAM10000_images_part_2" / "ISIC_0024306.jpeg"
    twin.write_bytes((copy / "HAM10000_images_part_1" / "ISIC_0024306.jpg").read_bytes())
    frame = read_ham10000(copy)
    assert len(frame) == len(ROWS)
    assert frame.set_index("image_id").loc["ISIC_0024306", "path"].endswith("HAM10000_images_part_1/ISIC_0024306.jpg")


def test_one_image_id_in_two_folders_with_different_content_in_a_zip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    jpg(tmp_path / "a.jpg")
    png_of(tmp_path / "b.png", 7)
    copy = copy_at(tmp_path / "extracted")
    (tmp_path / "zipped").mkdir()
    archive = tmp_path / "zipped" / "skin-cancer-mnist-ham10000.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(copy.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(copy).as_posix())
        zf.write(tmp_path / "a.jpg", "ham10000_images_part_1/ISIC_0024307.jpg")  # the same bytes: fine
        zf.write(tmp_path / "b.png", "ham10000_images_part_2/ISIC_0024306.png")  # different
    with pytest.raises(DataError, match=rf"{archive}: image id ISIC_0024306 has two different files, "
                                        r"HAM10000_images_part_1/ISIC_0024306.jpg and "
                                        r"ham10000_images_part_2/ISIC_0024306.png"):
        routes.ham10000(str(tmp_path / "zipped"), tmp_path / "raw", tmp_path / "dl", print)
    assert not (tmp_path / "raw").exists()

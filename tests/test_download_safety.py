"""Hostile input to the download stage, and what every stage's outputs look like on disk: bad
metadata is one message, a failed download keeps the previous outputs, zip bombs are refused
before anything is unpacked, outputs are readable by others, a killed stage's leftovers go away."""

import importlib.util
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_sources import ROWS, jpg, kaggle
from committed_params import committed_params, write_params

from stage_runs import exit_code
from skinlesion import atomic
from skinlesion.acquire import archives, dataverse, fetch, routes
from skinlesion.manifest import DataError

REPO = Path(__file__).parents[1]
ZEROS = 64 * 2**20  # deflates to ~64 KB: a compression ratio of ~1000


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No network: the optional lesion-mask download fails as it does offline."""
    def refuse(*args, **kwargs):
        raise fetch.DownloadError("offline")
    monkeypatch.setattr(dataverse, "download_masks", refuse)


@pytest.fixture(scope="module")
def download_stage():
    spec = importlib.util.spec_from_file_location("download_stage", REPO / "stages" / "download.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage


def run_stage(stage, work: Path, capsys, **data) -> tuple[int, str]:
    """Run the download stage as `python stages/download.py` would, in work/; (exit code, stderr)."""
    write_params(work, {"data": data})
    capsys.readouterr()
    code = exit_code(stage, "download.py", work)
    return code, capsys.readouterr().err


def copy_at(root: Path, rows=ROWS) -> Path:
    """An extracted Kaggle-layout copy (each image once) in root/."""
    root.mkdir(parents=True)
    return kaggle(root, rows, lowercase_copies=False)


def zipped_copy(folder: Path, rows=ROWS, extra: dict[str, bytes] | None = None, truncate: str = "") -> Path:
    """A Kaggle-layout copy of HAM10000, zipped (as the Kaggle download is), in folder/: with extra
    members, and the image `truncate` cut to its first 300 bytes."""
    staging = folder.parent / f"{folder.name}-extracted"
    copy_at(staging, rows)
    for image in staging.rglob(f"{truncate}.jpg") if truncate else ():
        image.write_bytes(image.read_bytes()[:300])
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "skin-cancer-mnist-ham10000.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(staging.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(staging).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    shutil.rmtree(staging)
    return folder


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def temporaries(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(".*.tmp"))


# Finding 5: metadata that is not UTF-8, or empty


def test_latin1_metadata(tmp_path, monkeypatch):
    """A table saved by a spreadsheet in cp1252/latin-1 is read, and the log says so; the real
    tables are ASCII, and only free text can carry such bytes."""
    monkeypatch.chdir(tmp_path)
    rows = [r.replace(",back", ",abdômen") for r in ROWS]
    root = copy_at(tmp_path / "copy", rows)
    (root / "HAM10000_metadata.csv").write_bytes(
        ("lesion_id,image_id,dx,dx_type,age,sex,localization\n" + "\n".join(rows) + "\n").encode("latin-1"))
    logs = []
    frame = routes.ham10000(str(root), tmp_path / "raw", tmp_path / "dl", logs.append)
    assert len(frame) == len(ROWS) and frame["localization"].iloc[0] == "abdômen"
    assert any("read as cp1252 (byte 0xf4 at offset" in line and "is not UTF-8" in line for line in logs)


@pytest.mark.parametrize("content, expected", [
    (b"", "is empty; it should be the HAM10000 metadata table"),
    (b"\n  \n", "is empty; it should be the HAM10000 metadata table"),
    (b'lesion_id,image_id,dx\n"HAM_1,ISIC_1,nv\n', "is not a readable comma-separated table"),
])
def test_empty_metadata_is_one_message(download_stage, tmp_path, capsys, content, expected):
    copy = copy_at(tmp_path / "copy")
    (copy / "HAM10000_metadata.csv").write_bytes(content)
    work = tmp_path / "work"
    work.mkdir()
    code, err = run_stage(download_stage, work, capsys, source="ham10000", ham10000_dir=str(copy), external="none")
    assert code == 2
    assert err.startswith(f"error: {copy / 'HAM10000_metadata.csv'} {expected}") and "Traceback" not in err
    assert not (work / "data").exists()


# Finding 6: a failed download stage keeps the previous outputs


@pytest.mark.parametrize("bad", ["image without a metadata row", "truncated image"])
def test_failed_download_keeps_previous_outputs(download_stage, tmp_path, capsys, bad):
    work = tmp_path / "work"
    work.mkdir()
    good = zipped_copy(tmp_path / "good")
    assert run_stage(download_stage, work, capsys, source="ham10000", ham10000_dir=str(good), external="none")[0] == 0
    before = {name: snapshot(work / name) for name in ("data", "metrics")}
    assert len(before["data"]) == len(ROWS) + 4  # the images, the metadata and the three manifests
    assert b"data/raw/ham10000/HAM10000_images_part_1/ISIC_0024306.jpg" in before["data"]["manifests/ham10000.csv"]

    if bad == "image without a metadata row":
        jpg(tmp_path / "stray.jpg")
        hostile = zipped_copy(tmp_path / "hostile", extra={
            "HAM10000_images_part_2/ISIC_0099999.jpg": (tmp_path / "stray.jpg").read_bytes()})
        expected = "1 image(s) have no metadata row, e.g. ['ISIC_0099999']"
    else:
        hostile = zipped_copy(tmp_path / "hostile", truncate="ISIC_0024306")
        expected = "unreadable image(s):\n  data/raw/ham10000/HAM10000_images_part_1/ISIC_0024306.jpg:"
    code, err = run_stage(download_stage, work, capsys, source="ham10000", ham10000_dir=str(hostile), external="none")
    assert code == 2 and expected in err, err
    assert {name: snapshot(work / name) for name in ("data", "metrics")} == before  # byte-identical
    assert temporaries(work) == []


def test_skipped_images_are_named_by_their_final_path(download_stage, tmp_path, capsys):
    """The checks run in the temporary folder, but nothing names it: the manifests and the metrics
    point where the files are after the swap."""
    work = tmp_path / "work"
    work.mkdir()
    copy = zipped_copy(tmp_path / "copy", truncate="ISIC_0024307")
    code, _ = run_stage(download_stage, work, capsys, source="ham10000", ham10000_dir=str(copy), external="none",
                        bad_images="skip")
    assert code == 0
    metrics = json.loads((work / "metrics/download.json").read_text())
    assert metrics["bad_images"] == ["data/raw/ham10000/HAM10000_images_part_2/ISIC_0024307.jpg"]
    table = (work / "data/manifests/ham10000.csv").read_text()
    assert table.count("data/raw/ham10000/HAM10000_images_part_") == len(ROWS) - 1 and ".tmp" not in table
    assert all((work / line.split(",")[1]).is_file() for line in table.splitlines()[1:])


def test_a_failed_rename_puts_every_output_back(tmp_path, monkeypatch):
    """The swap itself is all or nothing too: when the second folder's rename fails, the first
    one's new version is taken out again."""
    targets = [tmp_path / "raw", tmp_path / "manifests"]
    for t in targets:
        t.mkdir()
        (t / "old.txt").write_text(f"old {t.name}")
    real_replace, failed = os.replace, []

    def failing_replace(src, dst):
        if Path(dst) == targets[1] and not failed:  # the first rename onto the second target
            failed.append(src)
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        with atomic.replaced_together(*targets) as temps:
            for tmp in temps:
                (tmp / "new.txt").write_text("new")
    assert {t.name: snapshot(t) for t in targets} == {"raw": {"old.txt": b"old raw"},
                                                     "manifests": {"old.txt": b"old manifests"}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifests", "raw"]


# Finding 6: zip bombs


def lie_about_size(archive: Path, member: str, declared: int) -> None:
    """Rewrite the member's uncompressed size in its local header and the central directory."""
    data = bytearray(archive.read_bytes())
    name = member.encode()
    local = data.index(b"PK\x03\x04")
    while data[local + 30:local + 30 + len(name)] != name:
        local = data.index(b"PK\x03\x04", local + 4)
    struct.pack_into("<I", data, local + 22, declared)
    central = data.index(b"PK\x01\x02")
    while data[central + 46:central + 46 + len(name)] != name:
        central = data.index(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", data, central + 24, declared)
    archive.write_bytes(bytes(data))


def test_zip_bomb_member_refused_before_extraction(download_stage, tmp_path, capsys):
    bomb = "HAM10000_images_part_1/ISIC_0099999.jpg"
    hostile = zipped_copy(tmp_path / "hostile", extra={bomb: bytes(ZEROS)})
    archive = hostile / "skin-cancer-mnist-ham10000.zip"
    assert archive.stat().st_size < ZEROS // 200
    work = tmp_path / "work"
    work.mkdir()
    base = {"source": "ham10000", "ham10000_dir": str(hostile), "external": "none"}
    cases = [
        ({}, f"member {bomb!r} declares 67,108,864 bytes (0.06 GiB) unpacked from",
         "more than data.max_compression_ratio = 100"),
        ({"max_compression_ratio": 1e6, "max_member_bytes": 16 * 2**20},
         f"member {bomb!r} declares 67,108,864 bytes", "more than data.max_member_bytes = 16,777,216 bytes"),
        ({"max_compression_ratio": 1e6, "max_archive_bytes": 32 * 2**20},
         "members to extract declare", "more than data.max_archive_bytes = 33,554,432 bytes"),
    ]
    for overrides, *expected in cases:
        code, err = run_stage(download_stage, work, capsys, **base, **overrides)
        assert code == 2 and all(e in err for e in expected) and "nothing was extracted" in err, err
        assert sorted(p.name for p in work.iterdir()) == ["params.yaml"]  # not one byte unpacked

    # A header that understates the size passes the checks; the unpacking stops at the declared size.
    lie_about_size(archive, bomb, 1000)
    with pytest.raises(DataError, match="not a valid zip|unpacks to more than its header declares"):
        archives.extract(archive, tmp_path / "out")
    assert max(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file()) <= 2**20
    code, err = run_stage(download_stage, work, capsys, **base)
    assert code == 2 and "Traceback" not in err
    assert sorted(p.name for p in work.iterdir()) == ["params.yaml"]


def test_a_zip_bigger_than_the_free_disk_is_refused(tmp_path, monkeypatch):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("HAM10000_images_part_1/ISIC_0024306.jpg", bytes(4096))
    monkeypatch.setattr(archives.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(DataError, match="need 4,096 bytes .* has 1,000 bytes .* free; the archive is refused"):
        archives.extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_archive_limit_defaults_are_the_committed_params():
    data = committed_params().data
    assert archives.Limits() == archives.Limits(data.max_member_bytes, data.max_archive_bytes,
                                                data.max_compression_ratio)


# Finding 7: output modes, and a killed stage's temporary folders


@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o002, 0o775, 0o664)],
                         ids=["umask 022", "umask 002"])
def test_output_folders_get_umask_mode(tmp_path, umask, folder_mode, file_mode):
    old = os.umask(umask)
    try:
        with atomic.atomic_dir(tmp_path / "data" / "cache" / "ham10000") as tmp:
            (tmp / "index.json").write_text("{}")
        atomic.write_json(tmp_path / "metrics" / "train.json", {})
        archive = tmp_path / "a.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("HAM10000_images_part_1/ISIC_0024306.jpg", b"x")
        with atomic.atomic_dir(tmp_path / "data" / "raw" / "ham10000") as tmp:
            archives.extract(archive, tmp)
    finally:
        os.umask(old)
    for folder in ("data", "data/cache", "data/cache/ham10000", "data/raw/ham10000",
                   "data/raw/ham10000/HAM10000_images_part_1", "metrics"):
        assert (tmp_path / folder).stat().st_mode & 0o777 == folder_mode, folder
    for file in ("data/cache/ham10000/index.json", "metrics/train.json",
                 "data/raw/ham10000/HAM10000_images_part_1/ISIC_0024306.jpg"):
        assert (tmp_path / file).stat().st_mode & 0o777 == file_mode, file


HOLD_A_TEMPORARY = """
import sys, time
from skinlesion import atomic
writer = atomic.atomic_dir("plots/eval")
tmp = writer.__enter__()
(tmp / "internal_confusion.csv").write_text("half")
print(tmp, flush=True)
time.sleep(600)
"""


def hold_a_temporary(work: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_A_TEMPORARY], cwd=work, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    return proc, work / proc.stdout.readline().strip()


def test_killed_stage_temp_folder_is_cleaned(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    killed, leftover = hold_a_temporary(work)
    live, in_use = hold_a_temporary(work)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert leftover.is_dir() and in_use.is_dir() and leftover.name.startswith(".eval.")
        legacy = work / "plots" / ".eval.k3j2_x9a.tmp"  # an older or foreign name: whose, we cannot tell
        legacy.mkdir()
        with atomic.atomic_dir(work / "plots" / "eval") as tmp:  # the next run of the stage
            (tmp / "internal_confusion.csv").write_text("whole")
        assert not leftover.exists()
        assert in_use.is_dir() and legacy.is_dir()  # a live process's, and one not ours, stay
        assert (work / "plots" / "eval" / "internal_confusion.csv").read_text() == "whole"
    finally:
        live.kill()
        live.wait(timeout=30)

    if shutil.which("git") is None:
        return
    shutil.copy(REPO / ".gitignore", work / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    leftover.mkdir()
    (leftover / "x.csv").write_text("half")
    (work / "metrics").mkdir()
    (work / "metrics" / ".eval.json.00000000.1.abcd.tmp").write_text("{")
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=work, check=True,
                            capture_output=True, text=True).stdout
    assert ".tmp" not in status and "plots/eval/internal_confusion.csv" in status


def test_the_stage_replaces_its_outputs_by_renames_only(download_stage, tmp_path, capsys, monkeypatch):
    """The swap moves folders: no file is copied (the inode of an image stays the one extracted)."""
    work = tmp_path / "work"
    work.mkdir()
    inodes = {}
    real_swap = atomic._swap_in

    def recording_swap(pairs):
        for tmp, target in pairs:
            inodes.update({p.relative_to(tmp).as_posix(): p.stat().st_ino for p in tmp.rglob("*.jpg")})
        real_swap(pairs)

    monkeypatch.setattr(atomic, "_swap_in", recording_swap)
    good = zipped_copy(tmp_path / "good")
    assert run_stage(download_stage, work, capsys, source="ham10000", ham10000_dir=str(good), external="none")[0] == 0
    after = {p.relative_to(work / "data/raw/ham10000").as_posix(): p.stat().st_ino
             for p in (work / "data/raw/ham10000").rglob("*.jpg")}
    assert len(after) == len(ROWS) and after == inodes

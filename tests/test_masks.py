"""HAM10000's lesion masks (only cam_in_lesion needs them): downloaded with the Dataverse route,
fetched best effort for a copy without them, never written into the user's copy, never a failure."""

import functools
import importlib.util
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from committed_params import committed_params
from test_fetch import CLASSES, FakeDataverse, dataverse_files, jpeg_bytes, mask_png, masks_zip_bytes

from skinlesion.acquire import dataverse, fetch, routes

MASK_FOLDER = "HAM10000_segmentations_lesion_tschandl"
IMAGE_IDS = [f"ISIC_{24306 + k:07d}" for k in range(len(CLASSES))]


@pytest.fixture
def server():
    fake = FakeDataverse(dataverse_files())
    yield fake
    fake.server.shutdown()


@pytest.fixture
def sleeps(monkeypatch):
    waited = []
    monkeypatch.setattr(fetch.time, "sleep", waited.append)
    return waited


@pytest.fixture
def offline_url():
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{closed.server_port}"
    closed.server_close()  # nothing listens there: like no network
    return url


def kaggle_copy(root: Path) -> Path:
    """An extracted copy in the Kaggle layout, without masks."""
    rows = [f"HAM_{k:07d},{image_id},{dx},histo,50,male,back" for k, (image_id, dx) in enumerate(zip(IMAGE_IDS, CLASSES))]
    root.mkdir(parents=True)
    (root / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx,dx_type,age,sex,localization\n" + "\n".join(rows))
    (root / "HAM10000_images_part_1").mkdir()
    for k, image_id in enumerate(IMAGE_IDS):
        (root / "HAM10000_images_part_1" / f"{image_id}.jpg").write_bytes(jpeg_bytes(k))
    return root


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def assert_masks_served(frame, prefix: str):
    by_id = dict(zip(frame["image_id"], frame["mask_path"]))
    assert sorted(by_id) == IMAGE_IDS
    for k, image_id in enumerate(IMAGE_IDS):
        assert by_id[image_id].startswith(prefix) and by_id[image_id].endswith(f"/{image_id}_segmentation.png")
        assert Path(by_id[image_id]).read_bytes() == mask_png(k)


def test_the_dataverse_route_downloads_verifies_and_extracts_the_masks(server, sleeps, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    server.drop_first.add(dataverse.MASKS_ID)  # resumed like the images
    logs = []
    frame = routes.ham10000("", tmp_path / "raw", tmp_path / "downloads", logs.append, server=server.url)
    assert_masks_served(frame, f"raw/{MASK_FOLDER}/")
    kept = tmp_path / "downloads" / "dataverse" / dataverse.MASKS_NAME
    assert kept.read_bytes() == server.files[dataverse.MASKS_ID][1]
    ranges = [r for p, r, _ in server.requests if p == "/api/access/datafile/3838943"]
    assert len(ranges) == 2 and ranges[0] is None and ranges[1].startswith("bytes=")  # dropped, then resumed
    assert not any("cam_in_lesion will be unavailable" in line for line in logs)


def test_a_copy_without_masks_gets_them_in_raw_and_the_copy_is_not_touched(server, sleeps, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copy = kaggle_copy(tmp_path / "copy")
    before = listing(copy)
    logs = []
    frame = routes.ham10000(str(copy), tmp_path / "raw", tmp_path / "downloads", logs.append, server=server.url)
    assert_masks_served(frame, f"raw/{MASK_FOLDER}/")
    assert frame["path"].str.startswith("copy/").all()  # the images are read in place
    assert listing(copy) == before
    assert logs[-1] == (f"HAM10000 lesion masks: 7 of 7 images have one, from {dataverse.MASKS_NAME} "
                        f"extracted into {tmp_path / 'raw' / MASK_FOLDER}")


def test_offline_a_copy_without_masks_is_read_and_one_line_says_how_to_get_them(
        offline_url, sleeps, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copy = kaggle_copy(tmp_path / "copy")
    logs = []
    frame = routes.ham10000(str(copy), tmp_path / "raw", tmp_path / "downloads", logs.append, server=offline_url)
    assert len(frame) == 7 and (frame["mask_path"] == "").all()
    assert len(logs) == 2 and logs[0].startswith("HAM10000 route 1 of 3: the extracted local copy")
    assert logs[1].startswith(f"HAM10000 lesion masks: not downloaded ({offline_url}/api/files/3838943: ConnectionError")
    assert logs[1].endswith(f"; cam_in_lesion will be unavailable for HAM10000. To get it, download {dataverse.MASKS_NAME} "
                            f"by hand (https://dataverse.harvard.edu/api/access/datafile/3838943) into "
                            "data.ham10000_dir, next to the images")
    assert sleeps == []  # one try, no backoff, for an optional file
    assert not (tmp_path / "downloads").exists() and not (tmp_path / "raw").exists()


def test_a_masks_zip_beside_the_copy_is_used_without_the_network(offline_url, sleeps, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copy = kaggle_copy(tmp_path / "copy")
    (copy / dataverse.MASKS_NAME).write_bytes(masks_zip_bytes(folder=""))  # flat, as someone may re-zip it
    logs = []
    frame = routes.ham10000(str(copy), tmp_path / "raw", tmp_path / "downloads", logs.append, server=offline_url)
    assert_masks_served(frame, f"raw/{MASK_FOLDER}/")
    assert not any("not downloaded" in line for line in logs)


def test_a_zipped_copy_rerun_offline_reuses_the_verified_masks_download(server, sleeps, offline_url, tmp_path,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    copy = tmp_path / "zips"
    copy.mkdir()
    for file_id in (3172585, 3172584, 4338392):
        name, data, _ = server.files[file_id]
        (copy / name).write_bytes(data)
    first = routes.ham10000(str(copy), tmp_path / "raw", tmp_path / "downloads", print, server=server.url)
    assert_masks_served(first, f"raw/{MASK_FOLDER}/")
    again = routes.ham10000(str(copy), tmp_path / "raw", tmp_path / "downloads", print, server=offline_url)
    assert again.equals(first)  # raw was extracted anew; the masks came from data/downloads


def test_an_unsafe_masks_zip_is_refused_and_the_copy_is_still_read(offline_url, sleeps, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copy = kaggle_copy(tmp_path / "copy")
    with zipfile.ZipFile(copy / dataverse.MASKS_NAME, "w") as zf:
        zf.writestr("../ISIC_0024306_segmentation.png", mask_png(0))
    logs = []
    frame = routes.ham10000(str(copy), tmp_path / "raw", tmp_path / "downloads", logs.append, server=offline_url)
    assert (frame["mask_path"] == "").all() and not (tmp_path / "ISIC_0024306_segmentation.png").exists()
    assert "unsafe member" in logs[-1] and "cam_in_lesion will be unavailable" in logs[-1]


def test_the_demo_source_never_asks_the_network(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("download_stage", Path(__file__).parents[1] / "stages" / "download.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)

    def no_network(*args, **kwargs):
        raise AssertionError("the demo source asked the network")

    monkeypatch.setattr(fetch.requests, "get", no_network)
    monkeypatch.setattr(dataverse, "download_masks", no_network)
    small = functools.partial(stage.demo_data.write_demo_ham10000, image_size=(64, 48))  # fast
    monkeypatch.setattr(stage.demo_data, "write_demo_ham10000", small)
    monkeypatch.chdir(tmp_path)
    frame = stage.ham10000_manifest(committed_params({"data": {"demo_lesions": 20, "demo_seed": 0}}).data)
    assert (frame["mask_path"] != "").all()  # the demo brings its own masks

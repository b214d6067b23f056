"""Downloads against a fake Harvard Dataverse on 127.0.0.1: resume, verify, retry, refuse."""

import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import requests
from PIL import Image

from skinlesion.acquire import dataverse, fetch, routes
from skinlesion.errors import DataError

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def jpeg_bytes(seed):
    rng = np.random.default_rng(seed)
    b = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (45, 60, 3), dtype=np.uint8)).save(b, "JPEG")
    return b.getvalue()


def mask_png(seed):
    b = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((45, 60)) > 0.5).astype(np.uint8) * 255).save(b, "PNG")
    return b.getvalue()


def masks_zip_bytes(folder="HAM10000_segmentations_lesion_tschandl/"):
    """The lesion masks zip, one PNG per image, by default inside a folder of the zip's name."""
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as zf:
        for k in range(len(CLASSES)):
            zf.writestr(f"{folder}ISIC_{24306 + k:07d}_segmentation.png", mask_png(k))
        zf.writestr(f"{folder}README.txt", np.random.default_rng(9).bytes(300_000))  # larger than a read
    return b.getvalue()


def dataverse_files():
    """The four Dataverse files, small: two flat image zips, the ingested metadata table, the masks zip."""
    rows = [f'"HAM_{k:07d}"\t"ISIC_{24306 + k:07d}"\t"{dx}"\t"histo"\t{50 + k}\t"male"\t"back"\t"vidir_modern"'
            for k, dx in enumerate(CLASSES)]
    table = ("lesion_id\timage_id\tdx\tdx_type\tage\tsex\tlocalization\tdataset\n" + "\n".join(rows) + "\n").encode()
    parts = {}
    for part in (1, 2):
        b = io.BytesIO()
        with zipfile.ZipFile(b, "w") as zf:
            for k in range(part - 1, len(CLASSES), 2):
                zf.writestr(f"ISIC_{24306 + k:07d}.jpg", jpeg_bytes(k))
            zf.writestr("LICENSE.txt", np.random.default_rng(part).bytes(300_000))  # larger than a read
        parts[part] = b.getvalue()
    return {3172585: ("HAM10000_images_part_1.zip", parts[1], False),
            3172584: ("HAM10000_images_part_2.zip", parts[2], False),
            4338392: ("HAM10000_metadata.tab", table, True),
            3838943: ("HAM10000_segmentations_lesion_tschandl.zip", masks_zip_bytes(), False)}


class FakeDataverse:
    """Serves /api/files/<id> and /api/access/datafile/<id> like Dataverse, with faults on demand."""

    def __init__(self, files):
        self.files = files
        self.drop_first = set()  # ids whose first full download is cut halfway
        self.corrupt = {}  # id -> how many downloads serve flipped bytes (-1: always)
        self.requests = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.requests.append((self.path, self.headers.get("Range"), self.headers.get("User-Agent", "")))
                if "Mozilla/" not in self.headers.get("User-Agent", ""):
                    return self.send_error(403, "Forbidden")
                parts = self.path.split("?")[0].strip("/").split("/")
                file_id = int(parts[-1])
                name, data, tabular = fake.files[file_id]
                if parts[:2] == ["api", "files"]:
                    info = {"id": file_id, "filename": name, "filesize": len(data) + 100,
                            "md5": hashlib.md5(data).hexdigest()}
                    if tabular:  # ingested: the checksum and originalFileSize describe the original
                        info.update(originalFileSize=len(data), originalFileName=name)
                    else:
                        info["filesize"] = len(data)
                    body = json.dumps({"status": "OK", "data": {"label": name, "dataFile": info}}).encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    return self.wfile.write(body)
                if fake.corrupt.get(file_id):
                    fake.corrupt[file_id] -= 1
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if not start and file_id in fake.drop_first:
                    fake.drop_first.discard(file_id)
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # the connection drops halfway
                    return
                self.wfile.write(data[start:])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    fake = FakeDataverse(dataverse_files())
    yield fake
    fake.server.shutdown()


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(fetch.time, "sleep", lambda s: None)


def test_the_server_refuses_the_default_python_agent_and_we_send_a_browser_one(server):
    assert requests.get(f"{server.url}/api/files/3172585").status_code == 403
    info = dataverse.file_info(3172585, server.url)
    assert info.name == "HAM10000_images_part_1.zip" and "Mozilla/" in server.requests[-1][2]


def test_a_dropped_connection_resumes_with_a_range_request(server, tmp_path):
    server.drop_first.add(3172585)
    info = dataverse.file_info(3172585, server.url)
    path = fetch.download(info.url, tmp_path / info.name, size=info.size, md5=info.md5)
    assert path.read_bytes() == server.files[3172585][1]
    ranges = [r for p, r, _ in server.requests if "access" in p]
    assert len(ranges) == 2 and ranges[0] is None
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= info.size // 2  # what had arrived, up to the last whole read
    assert not (tmp_path / (info.name + ".part")).exists()


def test_a_wrong_md5_is_detected_and_downloaded_again(server, tmp_path):
    server.corrupt[3172584] = 1
    info = dataverse.file_info(3172584, server.url)
    path = fetch.download(info.url, tmp_path / info.name, size=info.size, md5=info.md5)
    assert hashlib.md5(path.read_bytes()).hexdigest() == info.md5
    assert sum("access" in p for p, _, _ in server.requests) == 2


def test_a_persistent_wrong_md5_fails_clearly_and_leaves_nothing(server, tmp_path):
    server.corrupt[3172584] = -1
    info = dataverse.file_info(3172584, server.url)
    with pytest.raises(fetch.DownloadError, match=f"failed after 3 attempts .*MD5 .* differs from the expected {info.md5}"):
        fetch.download(info.url, tmp_path / info.name, size=info.size, md5=info.md5, retries=2)
    assert list(tmp_path.iterdir()) == []


def test_the_ingested_metadata_is_fetched_in_its_original_form(server):
    info = dataverse.file_info(4338392, server.url)
    assert info.url.endswith("?format=original") and info.size == len(server.files[4338392][1])


def test_the_dataverse_route_downloads_extracts_and_reads_the_tab_metadata(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    server.drop_first.add(3172585)
    logs = []
    frame = routes.ham10000("", tmp_path / "raw", tmp_path / "downloads", logs.append, server=server.url)
    assert sorted(frame["dx"]) == sorted(CLASSES) and frame["age"].tolist()[:2] == [50.0, 51.0]
    assert all(p.startswith("raw/HAM10000_images_part_") for p in frame["path"])
    assert logs[0] == "HAM10000 route 1 of 3: no local copy (data.ham10000_dir is empty)"
    assert logs[1].startswith("HAM10000 route 2 of 3: Harvard Dataverse")


def test_offline_without_credentials_one_message_lists_the_three_routes(tmp_path, monkeypatch):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{closed.server_port}"
    closed.server_close()  # nothing listens there: like no network
    data = tmp_path / "data"
    with pytest.raises(DataError) as err:
        routes.ham10000("", data / "raw" / "ham10000", data / "downloads", lambda line: None, server=url)
    message = str(err.value)
    assert "1. a local copy" in message and "2. Harvard Dataverse" in message and "3. the Kaggle API" in message
    assert "ConnectionError" in message and "no Kaggle credentials" in message and "pip install kaggle" in message
    assert not data.exists()  # nothing partial

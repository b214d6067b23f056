"""DermaMNIST's lesion ids (skinlesion/acquire/lesion_ids.py): an id mapping plus the HAM10000
metadata give the manifest real ISIC and lesion ids; a mapping for another file, or in another
order, is one message naming the first mismatch; the routes (local, kept, downloaded, none) are
tried in order and logged. Every file here is a small fixture the test writes."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from committed_params import write_params
from test_download_safety import download_stage  # noqa: F401 (the stage's loader, a fixture)

from stage_runs import exit_code
from skinlesion.acquire import dermamnist, fetch, lesion_ids
from skinlesion.classes import CLASSES
from skinlesion.errors import DataError

COUNTS = {"train": 35, "val": 14, "test": 21}  # every class 5, 2 and 3 times (label = index % 7)


def npz_arrays(counts=COUNTS, seed=0) -> dict[str, np.ndarray]:
    """MedMNIST's key layout, 28 px, the label of row i being i % 7."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in counts.items():
        out[f"{split}_images"] = rng.integers(0, 256, size=(n, 28, 28, 3), dtype=np.uint8)
        out[f"{split}_labels"] = (np.arange(n) % len(CLASSES)).reshape(-1, 1).astype(np.uint8)
    return out


# Lesions that span splits, as (split, index) pairs; every other image is a lesion of its own. Each
# pair holds images of one class (equal indices mod 7).
SHARED = (
    *[[("test", k), ("train", k)] for k in range(7)],  # seen: the lesion also has a train image
    *[[("test", 7 + k), ("val", k)] for k in range(3)],  # unseen: its other image is in val only
    [("test", 10), ("train", 10), ("val", 3)],  # seen, with a val image as well
    [("train", 20), ("train", 27)],  # two train images of one lesion
    [("val", 5), ("train", 12)],  # a val image whose lesion trains
)
SEEN_TEST = [*range(7), 10]
EXCLUDED = {"train": [*range(7), 10], "val": [0, 1, 2, 3]}  # the train and val images of test lesions


def lesion_table() -> pd.DataFrame:
    """(split, index, image_id, lesion_id, dx) of every fixture image; ISIC ids shuffled, so the
    mapping's order matters."""
    keys = [(split, i) for split, n in COUNTS.items() for i in range(n)]
    ids = np.random.default_rng(1).permutation(len(keys)) + 24306
    lesion = {key: f"HAM_{n:07d}" for n, key in enumerate(keys)}
    for group in SHARED:
        for key in group:
            lesion[key] = lesion[group[0]]
    return pd.DataFrame({"split": [s for s, _ in keys], "index": [i for _, i in keys],
                         "image_id": [f"ISIC_{k:07d}" for k in ids], "lesion_id": [lesion[k] for k in keys],
                         "dx": [CLASSES[i % 7] for _, i in keys]})


def write_mapping(path: Path, table: pd.DataFrame | None = None) -> Path:
    """dermamnist_split_info.csv as published: split,index,image_id with CRLF line ends."""
    table = lesion_table() if table is None else table
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["split,index,image_id", *(f"{s},{i},{iid}" for s, i, iid in table[["split", "index", "image_id"]].values)]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


def metadata_rows(table: pd.DataFrame | None = None) -> pd.DataFrame:
    table = lesion_table() if table is None else table
    n = np.arange(len(table))
    return pd.DataFrame({"lesion_id": table["lesion_id"], "image_id": table["image_id"], "dx": table["dx"],
                         "dx_type": np.where(n % 2, "histo", "follow_up"),
                         "age": [f"{40 + k % 30}.0" if k % 9 else "" for k in n],
                         "sex": np.where(n % 3, "male", "female"), "localization": "back"})


def write_metadata(path: Path, rows: pd.DataFrame | None = None, dataverse: bool = False) -> Path:
    """Kaggle's comma-separated HAM10000_metadata.csv, or Dataverse's tab-separated table with its
    quoted values and extra `dataset` column."""
    rows = metadata_rows() if rows is None else rows
    path.parent.mkdir(parents=True, exist_ok=True)
    if dataverse:
        rows.assign(dataset="vidir_modern").to_csv(path, sep="\t", index=False, quoting=2)
    else:
        rows.to_csv(path, index=False)
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A scratch repository root (manifest paths are relative to it), with the npz and both id files."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "copy").mkdir()
    np.savez(tmp_path / "copy" / "dermamnist.npz", **npz_arrays())
    write_mapping(tmp_path / "ids" / lesion_ids.MAPPING_NAME)
    write_metadata(tmp_path / "ids" / "HAM10000_metadata.csv")
    return tmp_path


def read(request: lesion_ids.Request | None, lines: list | None = None):
    log = (lines.append if lines is not None else (lambda line: None))
    return dermamnist.read("copy/dermamnist.npz", 28, Path("data/raw/ham10000"), Path("data/downloads"), log,
                           ids=request)


LOCAL = lesion_ids.Request(ids="ids/dermamnist_split_info.csv", metadata="ids/HAM10000_metadata.csv")


# --- a mapping plus metadata gives real ids -------------------------------------------------------------

def test_a_mapping_and_metadata_give_real_image_and_lesion_ids_and_the_metadata(workdir):
    lines = []
    frame, official = read(LOCAL, lines)
    truth = lesion_table()
    meta = metadata_rows().set_index("image_id")
    assert list(frame["image_id"]) == list(truth["image_id"])  # the npz's order: train, val, test
    assert list(frame["lesion_id"]) == list(truth["lesion_id"])
    assert frame["lesion_id"].nunique() == len(truth) - sum(len(g) - 1 for g in SHARED)
    row = frame.iloc[COUNTS["train"] + COUNTS["val"] + 4]  # test index 4
    assert row["image_id"] == truth.iloc[COUNTS["train"] + COUNTS["val"] + 4]["image_id"]
    assert row["dx"] == "mel" and row["path"] == "data/raw/ham10000/dermamnist/test/00004.png"
    assert (row["dx_type"], row["sex"], row["localization"]) == tuple(meta.loc[row["image_id"], ["dx_type", "sex",
                                                                                                "localization"]])
    assert row["age"] == float(meta.loc[row["image_id"], "age"])
    assert frame["age"].isna().sum() == (meta["age"] == "").sum()  # missing ages stay missing
    assert np.array_equal(np.asarray(Image.open(row["path"])), npz_arrays()["test_images"][4])
    assert list(official["image_id"]) == list(frame["image_id"])
    assert official.groupby("split").size().to_dict() == {"test": 21, "train": 35, "val": 14}
    assert any(line.startswith("DermaMNIST lesion ids, route 1 of 3 (local copies)") for line in lines)
    assert any("every npz label matches its image's dx; 70 images of" in line for line in lines)
    assert any("with the ISIC and lesion ids of every image" in line for line in lines)


@pytest.mark.parametrize("metadata", ["dataverse_tab", "folder", "ham10000_dir"])
def test_the_metadata_may_be_the_dataverse_table_or_a_folder_or_the_copy_in_ham10000_dir(workdir, metadata):
    tab = write_metadata(workdir / "dv" / "HAM10000_metadata.tab", dataverse=True)
    request = {"dataverse_tab": lesion_ids.Request(ids="ids", metadata=str(tab)),
               "folder": lesion_ids.Request(ids="ids", metadata="dv"),
               "ham10000_dir": lesion_ids.Request(ids="ids", ham10000_dir="dv")}[metadata]
    frame, _ = read(request)
    assert list(frame["lesion_id"]) == list(lesion_table()["lesion_id"])
    assert set(frame["dx_type"]) == {"histo", "follow_up"}


def test_without_a_request_each_image_stays_its_own_lesion(workdir):
    frame, _ = read(None)
    assert (frame["lesion_id"] == frame["image_id"]).all() and frame["image_id"].iloc[0] == "dermamnist_train_00000"


# --- a wrong file or a wrong order: one message naming the first mismatch, nothing written ------------------

def test_a_label_mismatch_is_one_message_naming_the_first_and_nothing_is_written(workdir):
    table = lesion_table()
    test = table.index[table["split"] == "test"]
    swapped = table.copy()
    swapped.loc[[test[3], test[5]], "image_id"] = table.loc[[test[5], test[3]], "image_id"].to_numpy()  # df <-> nv
    write_mapping(workdir / "ids" / lesion_ids.MAPPING_NAME, swapped)
    with pytest.raises(DataError) as err:
        read(LOCAL)
    message = str(err.value)
    assert (f"the labels disagree, first at test index 3: image {table.loc[test[5], 'image_id']} has the npz label "
            f"3 (df) but the metadata's dx is 'nv' (2 of the 21 test rows disagree)") in message
    assert "another order" in message and "data.dermamnist_ids" in message and "\n" not in message
    assert not (workdir / "data").exists()


def test_row_counts_that_differ_from_the_npz_are_one_message(workdir):
    table = lesion_table()
    write_mapping(workdir / "ids" / lesion_ids.MAPPING_NAME, table.drop(13))  # one train row short
    with pytest.raises(DataError, match=r"the mapping has \{'train': 34, 'val': 14, 'test': 21\} rows per split but "
                                        r"the npz \{'train': 35, 'val': 14, 'test': 21\} images"):
        read(LOCAL)
    assert not (workdir / "data").exists()


def test_an_image_the_metadata_does_not_list_is_named(workdir):
    rows = metadata_rows()
    unknown = lesion_table().query("split == 'val' and index == 6")["image_id"].item()
    write_metadata(workdir / "ids" / "HAM10000_metadata.csv", rows[rows["image_id"] != unknown])
    with pytest.raises(DataError, match=f"val index 6 is image {unknown}, which the metadata does not list"):
        read(LOCAL)


@pytest.mark.parametrize("text, message", [
    ("split,idx,image_id\r\ntrain,0,ISIC_0024306\r\n", r"columns \['split', 'idx', 'image_id'\], expected"),
    ("split,index,image_id\r\ntraining,0,ISIC_0024306\r\n", r"row 2 names the split 'training'"),
    ("split,index,image_id\r\ntrain,x,ISIC_0024306\r\n", r"row 2 has the index 'x'"),
    ("split,index,image_id\r\ntrain,0,ISIC_0024306\r\ntrain,0,ISIC_0024307\r\n", r"2 rows share one split and index"),
    ("split,index,image_id\r\ntrain,0,ISIC_0024306\r\nval,0,ISIC_0024306\r\n", r"2 rows share one image id"),
])
def test_a_mapping_of_the_wrong_form_is_one_message(workdir, text, message):
    (workdir / "ids" / lesion_ids.MAPPING_NAME).write_text(text)
    with pytest.raises(DataError, match=message):
        read(LOCAL)
    assert not (workdir / "data").exists()


def test_a_param_that_names_nothing_is_an_error(workdir):
    with pytest.raises(DataError, match=r"data.dermamnist_ids nowhere.csv does not exist; set data.dermamnist_ids"):
        read(lesion_ids.Request(ids="nowhere.csv", metadata="ids"))
    with pytest.raises(DataError, match=r"data.ham10000_metadata copy is a folder without a HAM10000_metadata table"):
        read(lesion_ids.Request(ids="ids", metadata="copy"))


# --- the download stage ----------------------------------------------------------------------------------

def run_download_stage(stage, work: Path, capsys, **data) -> tuple[int, str]:
    """`python stages/download.py` on the fixture npz with the official split, in work/; (exit code, stderr)."""
    write_params(work, {"data": {"source": "dermamnist", "dermamnist_path": "copy/dermamnist.npz", "external": "none",
                                 "img_size": 28, **data},
                        "split": {"scheme": "official"}, "train": {"folds": [0]}})
    capsys.readouterr()
    code = exit_code(stage, "download.py")
    return code, capsys.readouterr().err


def test_the_download_stage_writes_the_real_ids_into_the_manifests(download_stage, workdir, capsys):
    code, err = run_download_stage(download_stage, workdir, capsys, dermamnist_ids="ids",
                                   ham10000_metadata="ids/HAM10000_metadata.csv")
    assert code == 0, err
    manifest = pd.read_csv(workdir / "data/manifests/ham10000.csv", dtype=str, keep_default_na=False)
    official = pd.read_csv(workdir / "data/manifests/official_split.csv", dtype=str)
    assert list(manifest["image_id"]) == list(lesion_table()["image_id"]) == list(official["image_id"])
    assert list(manifest["lesion_id"]) == list(lesion_table()["lesion_id"])
    download = json.loads((workdir / "metrics/download.json").read_text())["ham10000"]
    assert download["lesion_ids"] is True and download["lesions"] == manifest["lesion_id"].nunique() < 70


def test_in_the_download_stage_a_mismatch_exits_2_with_one_line_and_no_outputs(download_stage, workdir, capsys):
    table = lesion_table()
    reversed_ids = table.groupby("split")["image_id"].transform(lambda ids: ids.to_numpy()[::-1])
    write_mapping(workdir / "ids" / lesion_ids.MAPPING_NAME, table.assign(image_id=reversed_ids))  # another order
    code, err = run_download_stage(download_stage, workdir, capsys, dermamnist_ids="ids", ham10000_metadata="ids")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "the labels disagree, first at train index 0" in err
    assert not (workdir / "data" / "manifests").exists() and not (workdir / "metrics").exists()
    assert not (workdir / "data" / "raw").exists()


def test_the_download_stage_refuses_id_files_inside_an_output(download_stage, workdir, capsys):
    write_mapping(workdir / "data/manifests" / lesion_ids.MAPPING_NAME)
    code, err = run_download_stage(download_stage, workdir, capsys,
                                   dermamnist_ids="data/manifests/dermamnist_split_info.csv",
                                   ham10000_metadata="ids")
    assert code == 2 and "lies inside data/manifests, an output of the pipeline" in err
    assert "data/local/dermamnist_split_info.csv" in err


# --- routes 2 and 3: the public copies, or none ---------------------------------------------------------------

class FakeServers:
    """GitHub's raw file and Harvard Dataverse's metadata API on 127.0.0.1."""

    def __init__(self, mapping: bytes, metadata: bytes):
        self.requests: list[str] = []
        self.mapping, self.metadata = mapping, metadata
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.requests.append(self.path)
                if self.path == "/raw/dermamnist_split_info.csv":
                    return self.reply(fake.mapping)
                if self.path == f"/api/files/{lesion_ids.METADATA_ID}":
                    info = {"filename": "HAM10000_metadata.tab", "filesize": len(fake.metadata) + 99,
                            "originalFileSize": len(fake.metadata), "originalFileName": "HAM10000_metadata.tab",
                            "md5": hashlib.md5(fake.metadata).hexdigest()}
                    return self.reply(json.dumps({"status": "OK", "data": {"dataFile": info}}).encode())
                if self.path == f"/api/access/datafile/{lesion_ids.METADATA_ID}?format=original":
                    return self.reply(fake.metadata)
                self.send_error(404)

            def reply(self, body: bytes):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def remote(self, mapping_md5: str | None = None) -> lesion_ids.Remote:
        return lesion_ids.Remote(mapping_url=f"{self.url}/raw/dermamnist_split_info.csv", mapping_size=len(self.mapping),
                                 mapping_md5=mapping_md5 or hashlib.md5(self.mapping).hexdigest(), dataverse=self.url)


@pytest.fixture
def servers(workdir):
    fake = FakeServers((workdir / "ids" / lesion_ids.MAPPING_NAME).read_bytes(),
                       write_metadata(workdir / "served.tab", dataverse=True).read_bytes())
    yield fake
    fake.server.shutdown()


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(fetch.time, "sleep", lambda s: None)


def test_online_both_files_are_downloaded_verified_kept_and_then_found_locally(workdir, servers):
    lines = []
    found = lesion_ids.find(lesion_ids.Request(remote=servers.remote()), Path("data/downloads"), True, lines.append)
    assert found == lesion_ids.Found(Path("data/downloads/lesion_ids/dermamnist_split_info.csv"),
                                     Path("data/downloads/dataverse/HAM10000_metadata.tab"))
    assert found.mapping.read_bytes() == servers.mapping and found.metadata.read_bytes() == servers.metadata
    assert lines[0].endswith("the id mapping not found, the HAM10000 metadata not found")
    assert lines[1].startswith("DermaMNIST lesion ids, route 2 of 3 (download): the id mapping from GitHub")
    assert "verified by size and MD5" in lines[2]
    asked = len(servers.requests)
    lines.clear()
    again = lesion_ids.find(lesion_ids.Request(remote=servers.remote()), Path("data/downloads"), True, lines.append)
    assert again == found and len(servers.requests) == asked  # kept: no second download
    assert lines == [(f"DermaMNIST lesion ids, route 1 of 3 (local copies): the id mapping {found.mapping}, "
                      f"the HAM10000 metadata {found.metadata}")]
    rows = lesion_ids.read(found, {s: np.arange(n) % 7 for s, n in COUNTS.items()}, log=lambda line: None)
    assert list(pd.concat(rows.values())["lesion_id"]) == list(lesion_table()["lesion_id"])


def test_a_download_that_fails_its_md5_leaves_the_run_image_level_with_one_line_how_to_get_ids(workdir, servers):
    lines = []
    remote = servers.remote(mapping_md5="0" * 32)
    assert lesion_ids.find(lesion_ids.Request(remote=remote), Path("data/downloads"), True, lines.append) is None
    assert lines[-1].startswith("DermaMNIST lesion ids, route 3 of 3: none (the download failed: ")
    assert "MD5" in lines[-1] and "each image is its own lesion" in lines[-1] and "set data.dermamnist_ids" in lines[-1]
    assert not (workdir / "data/downloads/lesion_ids/dermamnist_split_info.csv").exists()  # never an unverified file


def closed_port_remote() -> lesion_ids.Remote:
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{closed.server_port}"
    closed.server_close()  # nothing listens there: like no network
    return lesion_ids.Remote(mapping_url=f"{url}/raw/x.csv", dataverse=url)


def test_offline_with_nothing_given_the_run_goes_on_image_level(workdir):
    lines = []
    assert lesion_ids.find(lesion_ids.Request(remote=closed_port_remote()), Path("data/downloads"), True,
                           lines.append) is None
    assert [line.split(" (")[0] for line in lines] == ["DermaMNIST lesion ids, route 1 of 3",
                                                       "DermaMNIST lesion ids, route 2 of 3",
                                                       "DermaMNIST lesion ids, route 3 of 3: none"]
    assert "ConnectionError" in lines[-1]


def test_offline_a_mapping_given_without_its_metadata_is_an_error(workdir):
    request = lesion_ids.Request(ids="ids", remote=closed_port_remote())
    with pytest.raises(DataError, match=r"lesion ids were asked for .* but the HAM10000 metadata could not be found"):
        lesion_ids.find(request, Path("data/downloads"), True, lambda line: None)


def test_an_npz_of_other_sizes_looks_for_no_public_copy(workdir):
    lines = []
    request = lesion_ids.Request(remote=closed_port_remote())
    frame, _ = read(request, lines)  # the fixture's 35 / 14 / 21 are not the official 7,007 / 1,003 / 2,005
    assert (frame["lesion_id"] == frame["image_id"]).all()
    assert any("none looked for, since this npz's split sizes differ" in line for line in lines)
    assert not any("route 2 of 3" in line for line in lines)

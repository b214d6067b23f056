"""DermaMNIST as a data source: its routes, its checks, its official split, end to end."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from skinlesion import splitting
from skinlesion.acquire import dermamnist
from skinlesion.classes import CLASSES, ISIC_COLUMNS
from skinlesion.manifest import COLUMNS, DataError
from skinlesion.params import ParamsError, load_params

COUNTS = {"train": 35, "val": 14, "test": 21}  # every class 5, 2 and 3 times


def arrays(counts=COUNTS, size=28, seed=0) -> dict[str, np.ndarray]:
    """MedMNIST's key layout: a colour per class plus noise, so a model can learn it in a few steps."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 225, size=(len(CLASSES), 3))
    out = {}
    for split, n in counts.items():
        labels = np.arange(n) % len(CLASSES)
        noise = rng.integers(-30, 30, size=(n, size, size, 3))
        out[f"{split}_images"] = np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        out[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    return out


def write_npz(path: Path, **changes) -> Path:
    data = {**arrays(size=changes.pop("size", 28)), **changes}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: v for k, v in data.items() if v is not None})
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Run in a scratch folder, as the stage runs in the repository root (manifest paths are relative)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def read(path: str, size: int = 28, log=None):
    return dermamnist.read(path, size, Path("data/raw/ham10000"), Path("data/downloads"), log or (lambda m: None))


def without_medmnist(monkeypatch):
    monkeypatch.setitem(sys.modules, "medmnist", None)  # `import medmnist` raises ImportError


# --- routes ---------------------------------------------------------------------------------------

def test_a_local_file_gives_the_manifest_lossless_pngs_and_the_official_split(workdir):
    npz = write_npz(workdir / "copy" / "any-name.npz")
    lines = []
    frame, official = read(str(npz), log=lines.append)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == sum(COUNTS.values())
    assert frame["image_id"].iloc[0] == "dermamnist_train_00000"
    assert (frame["lesion_id"] == frame["image_id"]).all()  # no lesion ids: one lesion per image
    assert official["split"].value_counts().to_dict() == COUNTS
    assert list(official["image_id"]) == list(frame["image_id"])
    source = arrays()
    test = frame[frame["image_id"] == "dermamnist_test_00009"].iloc[0]
    assert test["dx"] == CLASSES[9 % 7] and test["path"] == "data/raw/ham10000/dermamnist/test/00009.png"
    assert np.array_equal(np.asarray(Image.open(test["path"])), source["test_images"][9])  # lossless
    assert any("route 1 of 2: the local copy" in line for line in lines)
    assert any("image-level" in line for line in lines)


def test_a_folder_gives_the_file_of_the_chosen_size(workdir):
    write_npz(workdir / "copy" / "dermamnist.npz")
    write_npz(workdir / "copy" / "dermamnist_64.npz", size=64)
    frame, _ = read(str(workdir / "copy"), size=64)
    assert np.asarray(Image.open(frame["path"].iloc[0])).shape == (64, 64, 3)
    frame, _ = read(str(workdir / "copy"), size=28)
    assert np.asarray(Image.open(frame["path"].iloc[0])).shape == (28, 28, 3)


def test_a_folder_without_the_sized_file_names_what_it_holds(workdir):
    write_npz(workdir / "copy" / "dermamnist.npz")
    with pytest.raises(DataError, match=r"no dermamnist_128\.npz.*\['dermamnist\.npz'\].*dermamnist_size"):
        read(str(workdir / "copy"), size=128)


def test_a_missing_path_is_named(workdir):
    with pytest.raises(DataError, match="nowhere.npz does not exist"):
        read(str(workdir / "nowhere.npz"))


def test_no_copy_and_no_medmnist_lists_both_routes(workdir, monkeypatch):
    without_medmnist(monkeypatch)
    with pytest.raises(DataError) as e:
        read("")
    message = str(e.value)
    assert "two routes" in message and "1. a local copy: data.dermamnist_path is empty" in message
    assert "2. the medmnist package: the medmnist package is not installed" in message
    assert "pip install medmnist" in message


def fake_medmnist(monkeypatch, fetch):
    """A stand-in for the medmnist package whose download runs fetch(root, size)."""
    module = types.ModuleType("medmnist")

    class DermaMNIST:
        def __init__(self, split, download=False, size=28, root="."):
            assert split in dermamnist.SPLITS and download
            fetch(Path(root), size)

    module.DermaMNIST = DermaMNIST
    monkeypatch.setitem(sys.modules, "medmnist", module)


def test_the_medmnist_download_is_the_second_route(workdir, monkeypatch):
    fake_medmnist(monkeypatch, lambda root, size: write_npz(root / dermamnist.file_name(size), size=size))
    frame, official = read("", size=64)
    assert len(frame) == len(official) == sum(COUNTS.values())
    assert (workdir / "data/downloads/medmnist/dermamnist_64.npz").is_file()


def test_a_failed_medmnist_download_is_reported_with_both_routes(workdir, monkeypatch):
    def offline(root, size):
        raise RuntimeError("URLError: no network")

    fake_medmnist(monkeypatch, offline)
    with pytest.raises(DataError, match=r"(?s)1\. a local copy.*2\. the medmnist package: its download failed "
                                        r"\(RuntimeError: URLError: no network\)"):
        read("")


# --- checks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"train_images": None, "x_train": np.zeros((3, 28, 28, 3), np.uint8)},
     r"expected MedMNIST's keys .*missing \['train_images'\].*Is this a DermaMNIST npz"),
    ({"val_labels": np.full((14, 1), 7, np.uint8)},
     r"val_labels holds 14 label\(s\) outside 0-6 \(e\.g\. 7 at index 0\)"),
    ({"test_labels": np.zeros((20, 1), np.uint8)}, r"21 test images but 20 test labels"),
    ({"train_images": np.zeros((35, 28, 28, 3), np.float32)}, r"train_images has dtype float32; .* uint8"),
    ({"train_images": np.zeros((35, 28, 28), np.uint8)},
     r"train_images has shape \(35, 28, 28\); expected \(N, S, S, 3\)"),
    ({"test_images": np.zeros((21, 64, 64, 3), np.uint8)},
     r"test_images holds 64 px images but the other splits 28 px"),
    ({"train_labels": np.zeros((35, 1), np.float32)}, r"train_labels .* dtype float32; expected \(N, 1\) integer"),
])
def test_a_malformed_npz_is_one_clear_error(workdir, changes, message):
    npz = write_npz(workdir / "bad.npz", **changes)
    with pytest.raises(DataError, match=message):
        read(str(npz))
    assert not (workdir / "data/raw/ham10000").exists()  # nothing half-written


def test_a_file_that_is_not_an_npz_is_named(workdir):
    (workdir / "dermamnist.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable npz file"):
        read(str(workdir / "dermamnist.npz"))


def test_a_negative_label_is_out_of_range(workdir):
    labels = (np.arange(35) % 7).reshape(-1, 1).astype(np.int64)
    labels[3] = -1
    with pytest.raises(DataError, match=r"train_labels holds 1 label\(s\) outside 0-6 \(e\.g\. -1 at index 3\)"):
        read(str(write_npz(workdir / "bad.npz", train_labels=labels)))


# --- params -----------------------------------------------------------------------------------------

def params_file(tmp_path, **sections) -> Path:
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    for section, values in sections.items():
        raw[section].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


DERMAMNIST = {"source": "dermamnist", "external": "none", "img_size": 28}


@pytest.mark.parametrize("sections, message", [
    ({"split": {"scheme": "official"}}, r"data.source demo has no official split"),
    ({"data": {"source": "ham10000"}, "split": {"scheme": "official"}, "train": {"folds": [0]}},
     r"data.source ham10000 has no official split"),
    ({"data": DERMAMNIST, "split": {"exclude_test_lesions": True}},
     r"split.exclude_test_lesions is true but split.scheme is grouped"),
    ({"data": DERMAMNIST, "split": {"scheme": "official"}, "train": {"folds": [0, 1]}},
     r"train.folds is \[0, 1\] but split.scheme=official has one fold"),
    ({"data": DERMAMNIST, "split": {"scheme": "official"}, "train": {"folds": [1]}}, r"set train.folds=\[0\]"),
    ({"data": {**DERMAMNIST, "external": "unified"}, "split": {"scheme": "official"}, "train": {"folds": [0]}},
     r"data.external=unified with data.source=dermamnist"),
    ({"data": {**DERMAMNIST, "dermamnist_size": 32}, "split": {"scheme": "official"}, "train": {"folds": [0]}},
     r"data.dermamnist_size is 32; allowed: 28, 64, 128 or 224"),
    ({"split": {"scheme": "random"}}, r"split.scheme is .random.; allowed: grouped or official"),
])
def test_params_refuse_what_a_source_cannot_do(tmp_path, sections, message):
    with pytest.raises(ParamsError, match=message):
        load_params(params_file(tmp_path, **sections))


@pytest.mark.parametrize("external", ["none", "demo"])
def test_params_accept_dermamnist_with_its_official_split(tmp_path, external):
    params = load_params(params_file(tmp_path, data={**DERMAMNIST, "external": external},
                                     split={"scheme": "official"}, train={"folds": [0]}))
    assert params.split.scheme == "official" and params.data.img_size == 28


# --- the official split -------------------------------------------------------------------------------

def test_the_official_split_keeps_the_sources_sizes_and_no_image_in_two_splits(workdir):
    frame, official = read(str(write_npz(workdir / "dermamnist.npz")))
    folds = splitting.assign_official(frame, official)
    assert (folds["fold"].value_counts().to_dict()
            == {splitting.TRAIN_ONLY: 35, 0: 14, splitting.TEST: 21})
    assert folds["image_id"].is_unique and len(folds) == len(frame)
    for name, fold in splitting.OFFICIAL_FOLDS.items():  # each image where the source put it
        assert (folds.loc[folds["fold"] == fold, "image_id"].str.split("_").str[1] == name).all()
    report = splitting.split_report(folds, official=True)
    assert list(report["splits"]) == ["train", "val", "test"]
    assert {k: v["images"] for k, v in report["splits"].items()} == COUNTS
    assert report["splits"]["val"]["per_class"] == {dx: 2 for dx in CLASSES}
    # what the train stage does with fold 0: train on the official train set, validate on val
    cv = folds[folds["fold"] != splitting.TEST]
    assert len(cv[cv["fold"] != 0]) == 35 and len(cv[cv["fold"] == 0]) == 14


def test_the_official_split_refuses_images_in_two_splits_or_none(workdir):
    frame, official = read(str(write_npz(workdir / "dermamnist.npz")))
    twice = pd.concat([official, official.iloc[[0]].assign(split="test")])
    with pytest.raises(DataError, match="1 image\\(s\\) sit in two official splits"):
        splitting.assign_official(frame, twice)
    with pytest.raises(DataError, match="1 image\\(s\\) without a split"):
        splitting.assign_official(frame, official.iloc[1:])
    with pytest.raises(DataError, match="wrote no official split"):
        splitting.assign_official(frame, dermamnist.empty_split())


# --- end to end -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_dvc_repro_on_dermamnist_with_the_official_split(tmp_path):
    from pipeline_clone import make_clone, run

    npz = write_npz(tmp_path / "copy" / "dermamnist.npz")
    (tmp_path / "clone").mkdir()
    clone = make_clone(tmp_path / "clone", {
        "data": {"source": "dermamnist", "dermamnist_path": str(npz), "external": "none", "img_size": 28},
        "split": {"scheme": "official"},
        "train": {"folds": [0], "epochs": 2},
        "evaluate": {"bootstrap_resamples": 200},
    })
    out = run([sys.executable, "-m", "dvc", "repro"], clone).stdout
    assert "DermaMNIST route 1 of 2: the local copy" in out and "image-level" in out
    assert "fold 0: 35 training, 14 validation images" in out  # official train trains, val validates

    split = json.loads((clone / "metrics/split.json").read_text())
    assert split["scheme"] == "official" and split["unit"] == "image" and "flatters" in split["note"]
    assert {name: s["images"] for name, s in split["splits"].items()} == COUNTS

    card = json.loads((clone / "models/fold0.json").read_text())
    assert card["data_source"] == "dermamnist" and card["img_size"] == 28 and "temperature" in card
    assert sorted(p.name for p in (clone / "models").iterdir()) == ["fold0.json", "fold0.safetensors"]
    curves = pd.read_csv(clone / "dvclive/fold0/plots/metrics/train_loss.tsv", sep="\t")
    assert list(curves["step"]) == [1, 2] and np.isfinite(curves["train_loss"]).all()
    train = json.loads((clone / "metrics/train.json").read_text())["fold0"]
    # the best epoch and the temperature come from the official val set (14 images)
    assert train["epoch"] in (1, 2) and train["temperature"] == card["temperature"] > 0

    report = json.loads((clone / "metrics/eval.json").read_text())
    assert "external" not in report and report["folds"] == [0]
    internal = report["internal"]
    assert internal["n_images"] == internal["n_lesions"] == COUNTS["test"]
    predictions = pd.read_csv(clone / "data/predictions/internal.csv")
    truth = pd.read_csv(clone / "data/predictions/internal_truth.csv")
    assert predictions["image"].str.startswith("dermamnist_test_").all()
    accuracy = (predictions[list(ISIC_COLUMNS)].to_numpy().argmax(1) == truth[list(ISIC_COLUMNS)].to_numpy().argmax(1))
    assert internal["accuracy"] == pytest.approx(accuracy.mean())
    assert internal["accuracy_ci95"]["low"] <= internal["accuracy"] <= internal["accuracy_ci95"]["high"]

    gradcam = json.loads((clone / "metrics/gradcam.json").read_text())
    assert gradcam["images_with_masks"] == 0 and gradcam["test_images"] == COUNTS["test"]
    assert sorted(p.name for p in (clone / "plots/gradcam").iterdir()) == sorted(f"{c}.png" for c in CLASSES)

"""The demo app: every kind of bad upload gets one clear message, good ones the same pixels and
probabilities as evaluation, one forward pass per request, weights only from where DVC tracks them."""

import dataclasses
import io
import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from app_fixtures import IMG_SIZE, live_app, make_models
from PIL import Image

from skinlesion import explain, model, tta
from skinlesion.acquire.demo_data import render_demo_image
from skinlesion.classes import CLASSES, display_name
from skinlesion.images import center_crop, load_rgb
from skinlesion.serve import app, predictor, uploads
from skinlesion.transforms import to_chw_uint8

REPO = Path(__file__).resolve().parents[1]
SHOWN = 256  # px of the Grad-CAM image: the 64 px input enlarged 4x


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A project folder with models/ (2 folds) and metrics/eval.json."""
    root = tmp_path_factory.mktemp("project")
    make_models(root / "models")
    (root / "metrics").mkdir()
    (root / "metrics" / "eval.json").write_text(json.dumps({
        "tta": "flips", "internal": {"n_images": 167, "balanced_accuracy": 0.9869, "macro_auc": 0.9982},
        "external": {"n_images": 300, "balanced_accuracy": 0.6593, "macro_auc": 0.9607}}))
    return root


@pytest.fixture(scope="module")
def served(repo):
    return predictor.load_served_model(repo=repo)


@pytest.fixture(scope="module")
def reference(repo):
    """The same weights, loaded apart from the app (whose Predictor freezes its copy)."""
    return model.load_ensemble(repo / "models")[0]


def received_files(tmp_path_factory) -> app.ReceivedFiles:
    """What the app may read, as a live server's Gradio would fill it; `analyse` adds each file."""
    return app.ReceivedFiles(tmp_path_factory.getbasetemp(), [set()])


@pytest.fixture(scope="module")
def handlers(served, tmp_path_factory):
    return app.Handlers(predictor.Predictor(served), received_files(tmp_path_factory),
                        tmp_path_factory.mktemp("overlays"))


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def lesion_jpg(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "lesion.jpg"
    render_demo_image("mel", seed=7)[0].save(path, quality=92)
    return path


def save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def analyse(handlers, path, tta=False):
    """The UI's predict function, given what gradio passes with preprocess=False for a file it
    received (its upload route records the path)."""
    handlers.received.file_sets[0].add(str(path))
    return handlers.analyse({"path": str(path), "orig_name": Path(path).name}, tta, app.DEFAULT_OPACITY)


def png_claiming_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims width x height: what a decompression bomb looks like
    before its pixels are decoded."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length + type of the first chunk
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


# --- bad uploads: one clear message each, through the UI's predict function -------------------

def _text(p): p.write_text("name,age\nalice,41\n")
def _pdf(p): p.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n")
def _empty(p): p.write_bytes(b"")
def _eps(p): p.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n")
def _bomb(p): p.write_bytes(png_claiming_size(10_000, 6_000))  # 60 MP: over our limit, under Pillow's
def _huge_bomb(p): p.write_bytes(png_claiming_size(100_000, 100_000))  # Pillow's own guard fires first
def _tiny(p): save(Image.new("RGB", (12, 9), (180, 120, 90)), p, format="PNG")
def _too_many_bytes(p): p.write_bytes(b"\xff\xd8" + bytes(uploads.MAX_UPLOAD_BYTES))


def _truncated(p, lesion_jpg):
    data = lesion_jpg.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _corrupt(p, lesion_jpg):
    data = bytearray(lesion_jpg.read_bytes())
    data[200:] = bytes(len(data) - 200)  # the header survives, the entropy-coded data does not
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("make, suffix, message", [
    (_text, ".csv", "not an image"),
    (_pdf, ".pdf", "not an image"),
    (_eps, ".eps", "not an image"),  # Pillow could open EPS, but that starts Ghostscript: refused
    (_empty, ".jpg", "file is empty"),
    (_truncated, ".jpg", "corrupt or truncated"),
    (_corrupt, ".jpg", "corrupt: it starts like an image file"),
    (_bomb, ".png", "10000x6000 pixels (60 megapixels); the limit is 50 megapixels"),
    (_huge_bomb, ".png", "decompression bombs"),
    (_tiny, ".png", "only 12x9 pixels"),
    (_too_many_bytes, ".jpg", "the limit is 20 MB"),
])
def test_bad_upload_gets_one_clear_message(handlers, lesion_jpg, tmp_path, make, suffix, message):
    path = tmp_path / f"upload{suffix}"
    make(path, lesion_jpg) if make in (_truncated, _corrupt) else make(path)
    with pytest.raises(gr.Error) as info:
        analyse(handlers, path)
    assert message in info.value.message
    assert str(path) not in info.value.message  # the server's temporary path means nothing to a user
    assert analyse(handlers, lesion_jpg)[0]  # and the next upload works


def test_cleared_upload_clears_the_outputs(handlers):
    assert handlers.analyse(None, False, 0.5) == (None, None, None, "", None, None)


# --- odd but usable uploads: handled correctly ---------------------------------------------------

def test_jpeg_gives_exactly_the_pixels_evaluation_sees(lesion_jpg):
    image = uploads.read_upload(lesion_jpg, IMG_SIZE)
    assert np.array_equal(image.rgb, center_crop(load_rgb(lesion_jpg, IMG_SIZE), IMG_SIZE))
    assert image.original_size == (300, 225) and image.notes == []


def test_exif_rotated_photo_is_turned_upright(tmp_path):
    # Stored landscape (200x100): left red, right blue. EXIF orientation 6: display it turned a
    # quarter clockwise, i.e. portrait 100x200 with red on top.
    stored = np.zeros((100, 200, 3), np.uint8)
    stored[:, :100] = (220, 30, 30)
    stored[:, 100:] = (30, 30, 220)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(Image.fromarray(stored), tmp_path / "phone.jpg", quality=95, exif=exif.tobytes())
    image = uploads.read_upload(path, IMG_SIZE)
    assert image.original_size == (100, 200)
    top, bottom = image.rgb[4, IMG_SIZE // 2].astype(int), image.rgb[-4, IMG_SIZE // 2].astype(int)
    assert top[0] > 180 and top[2] < 80, top
    assert bottom[2] > 180 and bottom[0] < 80, bottom


def test_grayscale_is_used_with_a_warning(handlers, tmp_path):
    path = save(Image.new("L", (120, 90), 77), tmp_path / "gray.png")
    image = uploads.read_upload(path, IMG_SIZE)
    assert (image.rgb == 77).all()
    notes = analyse(handlers, path)[3]
    assert "Grayscale" in notes and "less reliable" in notes


def test_rgba_transparency_becomes_white(tmp_path):
    rgba = np.zeros((80, 80, 4), np.uint8)
    rgba[..., :3] = (10, 200, 10)
    rgba[:, 40:, 3] = 255  # left half fully transparent (over black pixels in RGB)
    image = uploads.read_upload(save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"), IMG_SIZE)
    assert (image.rgb[:, :28] == 255).all()  # not the black that a plain convert("RGB") would give
    assert tuple(image.rgb[:, 36:]).__len__() and (image.rgb[:, 36:] == (10, 200, 10)).all()
    assert any("transparent" in n for n in image.notes)


def test_cmyk_jpeg_gets_its_colours(tmp_path):
    path = save(Image.new("CMYK", (90, 90), (0, 255, 255, 0)), tmp_path / "print.jpg", quality=95)
    image = uploads.read_upload(path, IMG_SIZE)
    r, g, b = image.rgb[IMG_SIZE // 2, IMG_SIZE // 2].astype(int)
    assert r > 230 and g < 30 and b < 30  # pure red, as cyan 0, magenta and yellow full
    assert any("CMYK" in n for n in image.notes)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    path = save(Image.fromarray(np.full((70, 70), 32768, np.uint16)), tmp_path / "g16.png")
    image = uploads.read_upload(path, IMG_SIZE)
    assert (image.rgb == 128).all()  # Pillow's convert("RGB") would give 255: a white image
    assert any("16-bit" in n for n in image.notes)


def test_16_bit_colour_keeps_its_colour(tmp_path):
    import cv2

    bgr16 = np.zeros((70, 70, 3), np.uint16)
    bgr16[..., 2] = 60000  # red, in OpenCV's BGR order
    path = tmp_path / "rgb16.png"
    cv2.imwrite(str(path), bgr16)
    r, g, b = uploads.read_upload(path, IMG_SIZE).rgb[5, 5].astype(int)
    assert r == 60000 >> 8 and g == 0 and b == 0


def test_small_image_is_enlarged_with_a_warning(tmp_path):
    path = save(Image.new("RGB", (40, 48), (150, 90, 60)), tmp_path / "small.png")
    image = uploads.read_upload(path, IMG_SIZE)
    assert image.rgb.shape == (IMG_SIZE, IMG_SIZE, 3)
    assert any("small (40x48)" in n for n in image.notes)


def test_pasted_or_dropped_png_works(handlers, lesion_jpg, tmp_path):
    path = save(Image.open(lesion_jpg), tmp_path / "clipboard.png")
    label, cam, cam_class, notes, probs, state = analyse(handlers, path)
    assert pixels(cam).shape == (SHOWN, SHOWN, 3) and sum(probs.values()) == pytest.approx(1, abs=1e-4)


# --- predictions and Grad-CAM --------------------------------------------------------------------

def test_output_is_the_top_three_full_names_and_the_cam_of_the_top_class(handlers, lesion_jpg):
    label, cam, cam_class, notes, probs, state = analyse(handlers, lesion_jpg)
    assert set(probs) == set(CLASSES) and sum(probs.values()) == pytest.approx(1, abs=1e-5)
    top = max(probs, key=probs.get)
    assert cam_class == display_name(top) and display_name("mel") == "Melanoma (mel)"
    assert label == pytest.approx({display_name(dx): p for dx, p in probs.items()}, abs=1e-5)
    assert pixels(cam).shape == (SHOWN, SHOWN, 3) and Path(cam).suffix == ".png"
    assert state["cams"].shape == (len(CLASSES), IMG_SIZE, IMG_SIZE)


def test_cam_matches_the_grad_cam_package(served, reference, lesion_jpg):
    """One forward pass gives what explain.gradcam (pytorch_grad_cam's GradCAM) computes."""
    rgb = uploads.read_upload(lesion_jpg, IMG_SIZE).rgb
    prediction = predictor.Predictor(served).predict(rgb, tta=False)
    for k in (prediction.top_class, (prediction.top_class + 3) % len(CLASSES)):
        expected = explain.gradcam(reference, to_chw_uint8(rgb)[None], [k])[0]
        np.testing.assert_allclose(prediction.cams[k], expected, atol=1e-4)
        assert prediction.cams[k].max() == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("use_tta", [False, True])
def test_probabilities_are_evaluations(served, reference, lesion_jpg, use_tta):
    rgb = uploads.read_upload(lesion_jpg, IMG_SIZE).rgb
    served_model = predictor.Predictor(served)
    with torch.no_grad():
        expected = tta.predict_proba(reference, to_chw_uint8(rgb)[None], "flips" if use_tta else "none")[0].numpy()
    np.testing.assert_allclose(served_model.predict(rgb, tta=use_tta).probs, expected, atol=1e-6)
    np.testing.assert_allclose(served_model.predict(rgb, tta=use_tta, cam=False).probs, expected, atol=1e-6)


def test_tta_cam_is_the_views_maps_flipped_back_and_averaged(served):
    """Each flipped view's map is flipped back before averaging, so the TTA map lines up with the
    image; computed here view by view without TTA, the long way."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    rgb = np.full((IMG_SIZE, IMG_SIZE, 3), 200, np.uint8)
    rgb[4:28, 6:30] = (60, 30, 20)  # a lesion off-centre, so that a missed flip shows
    served_model = predictor.Predictor(served)
    plain = served_model.predict(rgb, tta=False).cams
    hflip = served_model.predict(np.ascontiguousarray(rgb[:, ::-1]), tta=False).cams[:, :, ::-1]
    vflip = served_model.predict(np.ascontiguousarray(rgb[::-1]), tta=False).cams[:, ::-1, :]
    expected = scale_cam_image((plain + hflip + vflip) / 3)
    np.testing.assert_allclose(served_model.predict(rgb, tta=True).cams, expected, atol=1e-4)


def test_one_forward_pass_per_request_and_none_to_change_the_class_or_opacity(served, lesion_jpg, tmp_path,
                                                                              tmp_path_factory):
    handlers = app.Handlers(predictor.Predictor(served), received_files(tmp_path_factory), tmp_path)
    calls = []
    hook = served.ensemble.register_forward_hook(lambda *a: calls.append(1))
    try:
        for use_tta in (False, True):
            calls.clear()
            *_, state = analyse(handlers, lesion_jpg, tta=use_tta)
            assert len(calls) == 1  # TTA views go through in one batch
        calls.clear()
        first = pixels(handlers.overlay(state, display_name("df"), 0.2))
        second = pixels(handlers.overlay(state, display_name("df"), 0.9))
        assert calls == [] and first.shape == second.shape and not np.array_equal(first, second)
    finally:
        hook.remove()


# --- which weights: tracked ones only, never random ----------------------------------------------

def test_no_weights_exits_with_how_to_get_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        app.main([])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "no trained weights" in err and "dvc repro" in err and "dvc pull" in err and "random" in err



def test_weights_that_must_not_be_served_exit_with_one_message(tmp_path, monkeypatch, capsys):
    """A model file with a NaN weight is refused at load (ModelFileError): the app says so in one
    line and exits 2, without a traceback and without serving anything."""
    from safetensors.torch import load_file, save_file

    make_models(tmp_path / "models")
    weights_path = tmp_path / "models" / "fold1.safetensors"
    weights = load_file(str(weights_path))
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, str(weights_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        app.main([])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "fold1.safetensors" in err and "NaN or infinite" in err and "Traceback" not in err

def test_model_panel_shows_the_model_and_its_headline_metrics(served):
    panel = app.model_panel(served)
    for text in ("efficientnet_b0", "64 px", "2 fold model(s)", "demo", "synthetic",
                 "workspace `models/` (not a git repository)",
                 "Calibrated:** no", "fold 0: 0.500; fold 1: 0.600",
                 "Internal test set** (167 images, TTA flips): balanced accuracy 0.987, macro AUC 0.998",
                 "External set** (300 images, TTA flips): balanced accuracy 0.659"):
        assert text in panel, (text, panel)
    assert "not a medical device" in app.DISCLAIMER


def test_model_panel_says_what_a_dermamnist_model_was_trained_on_and_warns_of_its_resolution(served):
    dermamnist = dataclasses.replace(served, cards=[{**c, "data_source": "dermamnist"} for c in served.cards])
    panel = app.model_panel(dermamnist)
    assert "DermaMNIST (MedMNIST v2): real HAM10000 dermoscopic images, downsampled to 28x28 px" in panel
    assert "learned from 28x28 px images (upsampled to 64 px)" in panel and "mostly gone" in panel
    # A synthetic 64 px demo model is small too; a real 300 px model gets no warning.
    assert "learned from 64x64 px images" in app.model_panel(served)
    assert app.resolution_warning({"data_source": "ham10000"}, 300) is None
    # At DermaMNIST's own size nothing was upsampled, and the card must not say so.
    native = app.resolution_warning({"data_source": "dermamnist"}, 28)
    assert "learned from 28x28 px images. Your photo" in native and "upsampled" not in native


def test_model_panel_says_calibrated_when_the_cards_hold_a_temperature(tmp_path):
    make_models(tmp_path / "models", temperature=1.5)
    panel = app.model_panel(predictor.load_served_model(repo=tmp_path))
    assert "temperature scaling (T = 1.5, 1.5)" in panel
    assert "none recorded" in panel  # no metrics/eval.json here


def test_predictions_use_the_cards_temperature(tmp_path, lesion_jpg):
    """A card's fitted temperature scales the served probabilities (a huge one flattens them)."""
    make_models(tmp_path / "models", temperature=1e4)
    flat = predictor.Predictor(predictor.load_served_model(repo=tmp_path))
    rgb = uploads.read_upload(lesion_jpg, IMG_SIZE).rgb
    np.testing.assert_allclose(flat.predict(rgb, tta=False).probs, np.full(len(CLASSES), 1 / len(CLASSES)),
                               atol=1e-3)


def git(cwd, *args):
    from pipeline_clone import env

    return subprocess.run(["git", *args], cwd=cwd, env=env(), check=True, capture_output=True, text=True)


def dvc(cwd, *args):
    from pipeline_clone import env

    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


def first_weight(served):
    return next(iter(served.ensemble.state_dict().values())).clone()


@pytest.mark.slow
def test_rev_loads_the_weights_of_a_commit_or_an_experiment_through_dvc(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q")
    dvc(root, "init", "-q")
    (root / "README.md").write_text("x\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "no model yet")
    make_models(root / "models", folds=(0,), seed=1)
    dvc(root, "add", "-q", "models")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "model A")
    shutil.rmtree(root / "models")
    make_models(root / "models", folds=(0,), seed=2)
    dvc(root, "add", "-q", "models")
    dvc(root, "exp", "save", "-q", "-n", "model-b")

    workspace = predictor.load_served_model(repo=root)
    at_head = predictor.load_served_model("HEAD", repo=root)
    in_exp = predictor.load_served_model("model-b", repo=root)
    assert not torch.equal(first_weight(at_head), first_weight(workspace))
    assert torch.equal(first_weight(in_exp), first_weight(workspace))
    assert at_head.revision.startswith("HEAD (commit ") and in_exp.revision.startswith("model-b (commit ")

    with pytest.raises(predictor.ModelNotFoundError, match="dvc repro.*dvc pull"):
        predictor.load_served_model("HEAD~1", repo=root)  # a commit without models/
    with pytest.raises(predictor.ModelNotFoundError, match="cannot resolve revision 'no-such-exp'"):
        predictor.load_served_model("no-such-exp", repo=root)
    shutil.rmtree(root / ".dvc" / "cache")
    with pytest.raises(predictor.ModelNotFoundError, match="dvc pull"):
        predictor.load_served_model("HEAD", repo=root)  # tracked, but in no cache and no remote


# --- the live server --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    with live_app(repo / "models", tmp_path_factory.mktemp("examples")) as url:
        yield url


def test_live_server_predicts_an_example_and_survives_bad_input(server, repo, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    assert {"/predict"} == set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    example = app.write_examples(tmp_path)[0]
    label, cam_path, cam_class, notes, probs = client.predict(handle_file(str(example)), True, 0.5,
                                                              api_name="/predict")
    assert len(probs) == 7 and sum(probs.values()) == pytest.approx(1, abs=1e-4)
    assert len(label["confidences"]) == 3 and label["label"] == cam_class
    assert Image.open(cam_path).size == (SHOWN, SHOWN)

    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    with pytest.raises(Exception, match="not an image"):
        client.predict(handle_file(str(not_an_image)), False, 0.5, api_name="/predict")
    too_big = tmp_path / "big.jpg"
    too_big.write_bytes(bytes(uploads.MAX_UPLOAD_BYTES + 1))
    with pytest.raises(Exception):  # refused by gradio's max_file_size before it reaches the model
        client.predict(handle_file(str(too_big)), False, 0.5, api_name="/predict")
    assert client.predict(handle_file(str(example)), False, 0.5, api_name="/predict")[4]  # still up


@pytest.mark.slow
def test_benchmark_tiny_mode_runs():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "app_latency.py"), "--tiny", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("predict_ms", "predict_gradcam_ms", "concurrent_ms"):
        assert report[key]["p50"] > 0 and report[key]["p95"] >= report[key]["p50"]
    assert report["concurrent_errors"] == 0

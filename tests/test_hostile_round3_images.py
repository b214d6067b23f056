"""Hostile input, round three, for the image decoder and the app: PostScript handed to Ghostscript
by the pipeline's decoder, uploads that cost unbounded work (a TIFF of many pages, a JPEG of many
scans, a file that keeps Pillow's parser busy), deep grayscale scaled by its own maximum, and API
arguments that are not what the page sends.

The builders of the hostile files live here; the load test (tests/test_app_load.py) reuses them.
"""

from __future__ import annotations

import io
import json
import struct
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest
import requests
from app_fixtures import IMG_SIZE, live_app, make_models
from PIL import EpsImagePlugin, Image, TiffImagePlugin

from skinlesion import cache, images, leakage
from skinlesion.acquire import image_check
from skinlesion.acquire.demo_data import render_demo_image
from skinlesion.classes import display_name
from skinlesion.errors import DataError
from skinlesion.serve import app, predictor, uploads

EPS_TEXT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n(hello) print quit\n"
REFUSED_EPS = "it is EPS, not one of the image formats the project reads: JPEG, PNG, TIFF, BMP, WEBP"


# --- hostile files ----------------------------------------------------------------------------

def _entry(tag: int, kind: int, count: int, value: int) -> bytes:
    """One 12-byte IFD entry: a LONG (kind 4) or a SHORT (kind 3) value in place."""
    if kind == 4:
        return struct.pack("<HHII", tag, kind, count, value)
    return struct.pack("<HHIHH", tag, kind, count, value, 0)


def many_page_tiff(pages: int) -> bytes:
    """A little-endian TIFF of `pages` 64x64 grayscale pages, 90 bytes each: an IFD of 7 entries
    (ImageWidth, ImageLength, BitsPerSample, Photometric, StripOffsets, RowsPerStrip,
    StripByteCounts) and the offset of the next IFD; every page's one strip is the byte at 8."""
    entries = [(256, 3, 64), (257, 3, 64), (258, 3, 8), (262, 3, 1), (273, 4, 8), (278, 3, 64), (279, 4, 1)]
    ifd_size = 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for page in range(pages):
        out += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            out += _entry(tag, kind, 1, value)
        out += struct.pack("<I", 8 + (page + 1) * ifd_size if page + 1 < pages else 0)
    return bytes(out)


def many_strip_tiff(rows: int, width: int = 32) -> bytes:
    """An uncompressed width x rows grayscale TIFF of one row per strip, every strip the same
    `width` bytes: 8 bytes of file per strip, and Pillow reads each strip in a Python loop."""
    entries = [(256, 4, 1, width), (257, 4, 1, rows), (258, 3, 1, 8), (262, 3, 1, 1), (273, 4, rows, None),
               (278, 3, 1, 1), (279, 4, rows, None)]
    data_at = 8 + 2 + 12 * len(entries) + 4
    offsets_at = data_at + width
    counts_at = offsets_at + 4 * rows
    out = bytearray(b"II*\x00" + struct.pack("<IH", 8, len(entries)))
    for tag, kind, count, value in entries:
        value = {273: offsets_at, 279: counts_at}.get(tag, value)
        out += _entry(tag, kind, count, value)
    out += struct.pack("<I", 0) + bytes(range(width))
    out += struct.pack(f"<{rows}I", *[data_at] * rows) + struct.pack(f"<{rows}I", *[width] * rows)
    return bytes(out)


def many_frame_gif(frames: int) -> bytes:
    """A 64x64 GIF of `frames` 1x1 frames, 15 bytes each."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 64, 64, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame * frames + b";"


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment of a JPEG; a scan's segment includes its coded data."""
    pos, found = 2, []
    while data[pos + 1] != 0xD9:
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
        end = pos + 2 + length
        if marker == 0xDA:
            while not (data[end] == 0xFF and data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7):
                end += 1
        found.append((marker, pos, end))
        pos = end
    return found


def many_scan_jpeg(extra_scans: int, size: tuple[int, int] = (400, 300)) -> bytes:
    """A progressive JPEG with its smallest scan repeated `extra_scans` times: every repeat is a few
    bytes of file and a pass of libjpeg over the whole image."""
    y, x = np.mgrid[0:size[1], 0:size[0]]
    gray = ((x + y) % 256).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([gray, gray[::-1], gray])).save(buffer, "JPEG", quality=50, progressive=True)
    data = buffer.getvalue()
    _, start, end = min((s for s in _jpeg_segments(data) if s[0] == 0xDA), key=lambda s: s[2] - s[1])
    return data[:-2] + data[start:end] * extra_scans + data[-2:]


def many_segment_jpeg(segments: int) -> bytes:
    """A valid 64x64 JPEG after `segments` empty APP5 segments (4 bytes each)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 80, 60)).save(buffer, "JPEG")
    data = buffer.getvalue()
    return data[:2] + b"\xff\xe5\x00\x02" * segments + data[2:]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- finding 3: the pipeline's decoder handed PostScript to Ghostscript -------------------------

@pytest.fixture
def ghostscript_calls(monkeypatch) -> list[str]:
    """Every call into Pillow's EPS reader (its header parser, its Ghostscript runner)."""
    calls: list[str] = []
    original_open = EpsImagePlugin.EpsImageFile._open

    def eps_open(self):
        calls.append("EpsImageFile._open")
        return original_open(self)

    def ghostscript(*args, **kwargs):
        calls.append("Ghostscript")
        raise OSError("Ghostscript must never run")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", eps_open)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    return calls


def test_pipeline_decoder_refuses_postscript_without_starting_ghostscript(tmp_path, ghostscript_calls):
    """A dataset's x.jpg that holds PostScript: the download check, the cache and the audit each
    call it a bad image of the wrong format, and Pillow's EPS reader is never asked to open it."""
    (tmp_path / "Unified_dataset" / "val" / "mel").mkdir(parents=True)
    eps = write(tmp_path / "Unified_dataset" / "val" / "mel" / "x.jpg", EPS_TEXT)

    assert image_check.problem(str(eps)).endswith(REFUSED_EPS)
    assert image_check.bad_images([str(eps)]) == [(str(eps), image_check.problem(str(eps)))]
    with pytest.raises(DataError, match=f"cannot read image .*x.jpg: {REFUSED_EPS}; remove or replace"):
        cache.build(tmp_path / "cache", pd.DataFrame({"image_id": ["ISIC_0000001"], "path": [str(eps)]}), 32, threads=1)
    assert not (tmp_path / "cache").exists()
    with pytest.raises(images.UnreadableImageError, match=REFUSED_EPS):
        leakage.image_signature(eps)
    with pytest.raises(uploads.UploadError, match="This file is EPS, not an image format the app reads"):
        uploads.read_upload(eps, IMG_SIZE)
    assert ghostscript_calls == []


def test_one_list_of_formats_for_every_decode():
    assert uploads.FORMATS is images.FORMATS
    assert images.FORMATS == ("JPEG", "PNG", "TIFF", "BMP", "WEBP")


@pytest.mark.parametrize("fmt, save", [("GIF", {}), ("PCX", {}), ("ICO", {}), ("PPM", {}), ("TGA", {})])
def test_other_formats_are_refused_by_name(tmp_path, fmt, save):
    path = tmp_path / "lesion.png"
    Image.new("RGB", (64, 64), (150, 90, 60)).save(path, format=fmt, **save)
    with pytest.raises(images.UnreadableImageError) as info:
        images.load_rgb(path)
    assert isinstance(info.value.cause, images.FormatNotReadError)
    if fmt != "TGA":  # a TGA file has no signature: Pillow's TGA reader is not asked, so no name
        assert f"it is {fmt}, not one of the image formats the project reads" in str(info.value)
    with pytest.raises(uploads.UploadError, match="not an image") as info:
        uploads.read_upload(path, IMG_SIZE)
    assert "Upload a JPEG, PNG, TIFF, BMP or WebP" in str(info.value)


def test_a_phone_cameras_mpo_is_read_as_its_first_frame(tmp_path):
    path = tmp_path / "phone.jpg"
    first, second = Image.new("RGB", (80, 64), (200, 30, 30)), Image.new("RGB", (80, 64), (30, 30, 200))
    first.save(path, format="MPO", save_all=True, append_images=[second])
    with Image.open(path) as im:
        assert im.format == "MPO" and im.n_frames == 2
    image = uploads.read_upload(path, IMG_SIZE)
    r, g, b = image.rgb[IMG_SIZE // 2, IMG_SIZE // 2].astype(int)
    assert r > 180 and b < 60
    assert "The file holds several frames; the first one was used." in image.notes


# --- finding 2: work per upload, bounded before it is done --------------------------------------

@pytest.fixture
def tiff_pages_visited(monkeypatch) -> list[int]:
    """The page numbers Pillow's TIFF reader seeks to."""
    visited: list[int] = []
    original = TiffImagePlugin.TiffImageFile._seek

    def seek(self, frame):
        visited.append(frame)
        return original(self, frame)

    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "_seek", seek)
    return visited


def test_a_many_page_tiff_upload_is_read_without_walking_its_pages(tmp_path, tiff_pages_visited):
    for pages in (40_000, 220_000):
        path = write(tmp_path / f"pages{pages}.tif", many_page_tiff(pages))
        assert path.stat().st_size < uploads.MAX_UPLOAD_BYTES
        tiff_pages_visited.clear()
        started = time.perf_counter()
        image = uploads.read_upload(path, IMG_SIZE)
        assert time.perf_counter() - started < 1.0
        assert set(tiff_pages_visited) == {0}  # the first page only: never counted, never walked
        assert image.rgb.shape == (IMG_SIZE, IMG_SIZE, 3)
        assert "The file holds several frames; the first one was used." in image.notes


def test_a_gif_of_a_million_frames_is_refused_at_once(tmp_path):
    path = write(tmp_path / "frames.gif", many_frame_gif(1_300_000))
    assert path.stat().st_size < uploads.MAX_UPLOAD_BYTES
    started = time.perf_counter()
    with pytest.raises(uploads.UploadError, match="This file is GIF, not an image format the app reads"):
        uploads.read_upload(path, IMG_SIZE)
    assert time.perf_counter() - started < 1.0


def test_a_jpeg_of_many_scans_is_refused_before_libjpeg_decodes_it(tmp_path):
    ordinary = write(tmp_path / "progressive.jpg", many_scan_jpeg(0))
    assert uploads.read_upload(ordinary, IMG_SIZE).rgb.shape == (IMG_SIZE, IMG_SIZE, 3)
    bomb = write(tmp_path / "scans.jpg", many_scan_jpeg(20_000))
    started = time.perf_counter()
    with pytest.raises(uploads.UploadError, match=f"more than {images.MAX_JPEG_SCANS} scans"):
        uploads.read_upload(bomb, IMG_SIZE)
    with pytest.raises(images.UnreadableImageError, match=f"more than {images.MAX_JPEG_SCANS} scans"):
        images.load_rgb(bomb, 32)
    assert time.perf_counter() - started < 1.0


def test_a_jpeg_of_many_segments_is_refused_before_pillow_parses_them(tmp_path):
    assert uploads.read_upload(write(tmp_path / "few.jpg", many_segment_jpeg(100)), IMG_SIZE).rgb.size
    flood = write(tmp_path / "flood.jpg", many_segment_jpeg(4_000_000))
    started = time.perf_counter()
    with pytest.raises(uploads.UploadError, match=f"more than {images.MAX_JPEG_SEGMENTS} marker segments"):
        uploads.read_upload(flood, IMG_SIZE)
    assert time.perf_counter() - started < 1.0


def test_a_decode_that_runs_past_the_time_limit_is_stopped(tmp_path):
    slow = write(tmp_path / "strips.tif", many_strip_tiff(400_000))
    decoder = uploads.Decoder(time_limit_s=0.5)
    decoder.start()
    started = time.perf_counter()
    with pytest.raises(uploads.UploadError, match="takes more than 0.5 s to decode"):
        decoder.read(slow, IMG_SIZE)
    assert time.perf_counter() - started < 1.5
    lesion = tmp_path / "lesion.jpg"
    render_demo_image("bcc", seed=3, image_size=(120, 90))[0].save(lesion, quality=92)
    assert decoder.read(lesion, IMG_SIZE).rgb.shape == (IMG_SIZE, IMG_SIZE, 3)  # a fresh worker took over


def test_the_decoder_process_gives_what_read_upload_gives(tmp_path):
    lesion = tmp_path / "lesion.jpg"
    render_demo_image("mel", seed=1, image_size=(120, 90))[0].save(lesion, quality=92)
    decoder = uploads.Decoder()
    here, there = uploads.read_upload(lesion, IMG_SIZE), decoder.read(lesion, IMG_SIZE)
    assert np.array_equal(here.rgb, there.rgb) and here.original_size == there.original_size
    assert here.notes == there.notes
    with pytest.raises(uploads.UploadError, match="This file is EPS"):
        decoder.read(write(tmp_path / "x.jpg", EPS_TEXT), IMG_SIZE)
    with pytest.raises(FileNotFoundError):  # the upload left Gradio's cache: the app says "upload it again"
        decoder.read(tmp_path / "gone.jpg", IMG_SIZE)


# --- finding 7: deep grayscale scaled by the mode's range, not by the image's maximum ----------

def _gray(array: np.ndarray, mode: str | None = None) -> Image.Image:
    return Image.fromarray(array) if mode is None else Image.frombytes(mode, array.shape[::-1], array.tobytes())


def _read(tmp_path, image: Image.Image, name: str) -> uploads.UploadedImage:
    path = tmp_path / name
    image.save(path)
    return uploads.read_upload(path, IMG_SIZE)


def _values(brightest: int, dtype) -> np.ndarray:
    values = np.full((IMG_SIZE, IMG_SIZE), 200, dtype)  # the model's size: no resize mixes the pixels
    values[0, 0] = brightest
    return values


def test_16_bit_grayscale_is_scaled_by_its_range_not_its_maximum(tmp_path):
    for brightest in (255, 256, 65535):
        image = _read(tmp_path, _gray(_values(brightest, np.uint16)), "gray16.png")  # mode I;16
        assert image.rgb[5, 5].tolist() == [1, 1, 1]  # 200 / 257, whatever the brightest pixel
    big_endian = _read(tmp_path, _gray((_values(65535, np.uint16) // 2 + 1).astype(">u2"), "I;16B"), "gray16b.tif")
    assert big_endian.rgb[5, 5].tolist() == [0, 0, 0] and big_endian.rgb[0, 0].tolist() == [128] * 3
    assert big_endian.notes[0].startswith("16-bit grayscale image (I;16B): scaled to 8 bits")


def test_32_bit_integer_grayscale_is_read_as_16_bit_or_refused(tmp_path):
    values = _values(65535, np.int32)
    values[1, 1] = 51400  # 200 * 257
    image = _read(tmp_path, _gray(values), "int32.tif")
    assert image.rgb[0, 0].tolist() == [255] * 3 and image.rgb[1, 1].tolist() == [200] * 3
    assert image.rgb[5, 5].tolist() == [1, 1, 1]
    assert image.notes[0].startswith("32-bit integer grayscale image (I): read as 16-bit (0 to 65535)")
    for outside in (65536, -1, 2**31 - 1):
        values[0, 0] = outside
        with pytest.raises(uploads.UploadError, match=f"holds 32-bit integer values from {min(outside, 200)} to "
                                                      f"{max(outside, 51400)}; the app reads them as 16-bit"):
            _read(tmp_path, _gray(values), "int32.tif")


def test_floating_point_grayscale_is_read_from_0_to_1_or_refused(tmp_path):
    values = np.full((IMG_SIZE, IMG_SIZE), 0.5, np.float32)
    values[0, 0], values[1, 1] = 0.0, 1.0
    image = _read(tmp_path, _gray(values), "float.tif")
    assert image.rgb[5, 5].tolist() == [128] * 3  # not black: 0.5 of the way to white
    assert image.rgb[0, 0].tolist() == [0] * 3 and image.rgb[1, 1].tolist() == [255] * 3
    assert image.notes[0].startswith("Floating-point grayscale image (F): read from 0 (black) to 1 (white)")
    assert not any("16-bit" in n for n in image.notes)
    for outside, shown in ((1.5, "from 0 to 1.5"), (-0.25, "from -0.25 to 1"),
                           (np.nan, "that are not finite"), (np.inf, "that are not finite")):
        values[2, 2] = outside
        with pytest.raises(uploads.UploadError, match=f"floating-point values {shown}"):
            _read(tmp_path, _gray(values), "float.tif")
        values[2, 2] = 0.5


# --- also: every API argument validated, with one message ---------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    make_models(root / "models")
    return predictor.load_served_model(repo=root)


@pytest.fixture(scope="module")
def lesion(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "lesion.jpg"
    render_demo_image("mel", seed=7)[0].save(path, quality=92)
    return path


@pytest.fixture(scope="module")
def handlers(served, lesion, tmp_path_factory):
    return app.Handlers(predictor.Predictor(served), app.ReceivedFiles(lesion.parent, [{str(lesion)}]),
                        tmp_path_factory.mktemp("overlays"))


NOT_AN_OPACITY = ["abc", None, [1, 2], {"v": 1}, float("nan"), float("inf"), -0.1, 1.5, True, "0.5"]


@pytest.mark.parametrize("opacity", NOT_AN_OPACITY, ids=repr)
def test_api_opacity_that_is_not_a_number_from_0_to_1_gets_one_message(handlers, lesion, opacity):
    with pytest.raises(gr.Error) as info:
        handlers.analyse({"path": str(lesion)}, False, opacity)
    assert info.value.message.startswith("The Grad-CAM opacity must be a number from 0 to 1; got ")
    state = handlers.analyse({"path": str(lesion)}, False, 0.5)[5]
    with pytest.raises(gr.Error, match="opacity must be a number from 0 to 1"):
        handlers.overlay(state, display_name("mel"), opacity)


@pytest.mark.parametrize("tta", ["yes", None, 1, [True]], ids=repr)
def test_api_tta_that_is_not_true_or_false_gets_one_message(handlers, lesion, tta):
    with pytest.raises(gr.Error) as info:
        handlers.analyse({"path": str(lesion)}, tta, 0.5)
    assert info.value.message.startswith("Test-time augmentation must be true or false; got ")


@pytest.mark.parametrize("name", ["Melanoma", "mel", 3, None, [display_name("mel")]], ids=repr)
def test_api_class_that_is_not_one_of_the_seven_gets_one_message(handlers, lesion, name):
    state = handlers.analyse({"path": str(lesion)}, False, 0.5)[5]
    if name is None:  # the dropdown cleared: nothing to draw
        assert handlers.overlay(state, None, 0.5) is None
        return
    with pytest.raises(gr.Error) as info:
        handlers.overlay(state, name, 0.5)
    assert info.value.message.startswith("The class to explain must be one of the seven names")
    assert handlers.overlay(state, display_name("mel"), 1.0).endswith(".png")
    assert handlers.overlay(state, display_name("mel"), 0).endswith(".png")


@pytest.mark.parametrize("upload", [42, ["a"], {"path": 7}, {"nopath": "x"}, ""], ids=repr)
def test_api_upload_that_is_not_a_received_file_gets_one_message(handlers, upload):
    with pytest.raises(gr.Error) as info:
        handlers.analyse(upload, False, 0.5)
    assert info.value.message == app.NOT_RECEIVED


@pytest.mark.slow
def test_live_api_refuses_bad_arguments_with_one_message(tmp_path):
    lesion = tmp_path / "lesion.png"
    render_demo_image("nv", seed=2)[0].save(lesion)
    with live_app(make_models(tmp_path / "models"), tmp_path / "examples") as url:
        with open(lesion, "rb") as f:
            stored = requests.post(f"{url}gradio_api/upload", files=[("files", ("lesion.png", f, "image/png"))],
                                   timeout=60).json()[0]
        for tta, opacity, message in [(False, "abc", "opacity must be a number"), (False, None, "opacity must be"),
                                      (False, [1, 2], "opacity must be"), (False, float("nan"), "opacity must be"),
                                      ("yes", 0.5, "must be true or false")]:
            body = json.dumps({"data": [{"path": stored}, tta, opacity]})  # NaN written as such: the server parses it
            posted = requests.post(f"{url}gradio_api/call/predict", data=body, timeout=60,
                                   headers={"Content-Type": "application/json"})
            posted.raise_for_status()
            stream = requests.get(f"{url}gradio_api/call/predict/{posted.json()['event_id']}", timeout=120).text
            event, data = [(e.split("\n")[0].removeprefix("event: "), e.split("\n")[1].removeprefix("data: "))
                           for e in stream.strip().split("\n\n") if not e.startswith("event: heartbeat")][-1]
            assert event == "error" and message in json.loads(data)["error"], (opacity, stream[:300])

"""Upload decoding under arbitrary bytes: whatever a client sends, uploads.read_upload returns the
model's input or raises one UploadError, never anything else (a Pillow or NumPy exception would
reach the person as a generic failure, or worse, as a server error).

Hypothesis draws random bytes and real images of every accepted format with mutations at the
places decoders trust most: the header (sizes, modes, chunk lengths), truncation, and a header of
one format over the body of another. 500 examples, about 2 seconds on one CPU core; the
examples that once failed are replayed first from Hypothesis's database, when it is kept.

Two more kinds: multi-frame TIFFs (random frame counts and sizes: the first frame is used, with a
note, or refused when too small), and files of formats outside images.FORMATS, which Pillow could
open (EPS, ICO, PCX, GIF, ...): always one UploadError, and Ghostscript never runs.
"""

import io
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import EpsImagePlugin, Image

from skinlesion.serve import uploads

SIZE = 64
EXAMPLES = 500  # about 2 s on one core; a run of 6000 found no failure either


def _real_images() -> dict[str, bytes]:
    """Small valid files of each accepted format, with the modes that take separate decoder paths."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))
    gray16 = Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16))
    rgba = Image.fromarray(rng.integers(0, 256, (40, 48, 4), dtype=np.uint8), "RGBA")
    images = {}
    for name, image, fmt, kwargs in [
        ("jpeg", rgb, "JPEG", {"quality": 80}),
        ("progressive.jpeg", rgb, "JPEG", {"quality": 80, "progressive": True}),
        ("cmyk.jpeg", rgb.convert("CMYK"), "JPEG", {}),
        ("png", rgb, "PNG", {}),
        ("rgba.png", rgba, "PNG", {}),
        ("16bit.png", gray16, "PNG", {}),
        ("palette.png", rgb.convert("P"), "PNG", {}),
        ("bmp", rgb, "BMP", {}),
        ("tiff", rgb, "TIFF", {"compression": "tiff_lzw"}),
        ("webp", rgb, "WEBP", {"quality": 80}),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **kwargs)
        images[name] = buffer.getvalue()
    return images


REAL = _real_images()


@st.composite
def mutated_image(draw) -> bytes:
    data = bytearray(REAL[draw(st.sampled_from(sorted(REAL)))])
    kind = draw(st.sampled_from(["header bytes", "truncate", "splice", "insert"]))
    if kind == "header bytes":  # sizes, bit depths, chunk lengths, offsets: all in the first bytes
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, min(len(data), 64) - 1))] = draw(st.integers(0, 255))
    elif kind == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "splice":  # the header of one format, the body of another
        other = REAL[draw(st.sampled_from(sorted(REAL)))]
        cut = draw(st.integers(1, 64))
        data = data[:cut] + other[cut:]
    else:
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=32))
    return bytes(data)


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@pytest.fixture(scope="module", autouse=True)
def no_ghostscript():
    """Pillow's EPS reader would start Ghostscript to decode: any call fails the test."""
    def ghostscript(*args, **kwargs):
        raise AssertionError("Ghostscript was started")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
        yield


def test_real_images_decode(folder):
    """The seeds are valid, so the mutations start from files that decode."""
    for name, data in REAL.items():
        path = folder / f"seed.{name}"
        path.write_bytes(data)
        assert uploads.read_upload(path, SIZE).rgb.shape == (SIZE, SIZE, 3), name


@settings(max_examples=EXAMPLES, deadline=2000)
@given(data=st.one_of(st.binary(max_size=4096), mutated_image()))
def test_any_bytes_give_the_model_input_or_one_upload_error(folder, data):
    path = folder / "upload"
    path.write_bytes(data)
    try:
        image = uploads.read_upload(path, SIZE)
    except uploads.UploadError as e:
        message = str(e)
        assert message and "\n" not in message and str(path) not in message
        return
    assert image.rgb.shape == (SIZE, SIZE, 3) and image.rgb.dtype == np.uint8
    assert min(image.original_size) >= uploads.MIN_SIDE


# --- multi-frame images -------------------------------------------------------------------------

@st.composite
def multi_frame_tiff(draw) -> tuple[bytes, tuple[int, int], int]:
    """A TIFF of 1 to 6 frames of random sizes and modes; (bytes, first frame's size, frames)."""
    frames = []
    for k in range(draw(st.integers(1, 6))):
        w, h = draw(st.integers(8, 90)), draw(st.integers(8, 90))
        mode = draw(st.sampled_from(["RGB", "L", "RGBA", "I;16"]))
        pixels = np.random.default_rng(k).integers(0, 256, (h, w, 4), dtype=np.uint8)
        image = Image.fromarray(pixels, "RGBA").convert(mode) if mode != "I;16" else \
            Image.fromarray(pixels[:, :, 0].astype(np.uint16) * 257)
        frames.append(image)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:],
                   compression=draw(st.sampled_from([None, "tiff_lzw", "tiff_adobe_deflate", "packbits"])))
    return buffer.getvalue(), frames[0].size, len(frames)


@settings(max_examples=100, deadline=2000)
@given(drawn=multi_frame_tiff())
def test_multi_frame_tiff_gives_its_first_frame_or_one_upload_error(folder, drawn):
    data, (w, h), frames = drawn
    path = folder / "frames.tif"
    path.write_bytes(data)
    if min(w, h) < uploads.MIN_SIDE:
        with pytest.raises(uploads.UploadError, match=f"only {w}x{h} pixels"):
            uploads.read_upload(path, SIZE)
        return
    image = uploads.read_upload(path, SIZE)
    assert image.rgb.shape == (SIZE, SIZE, 3) and image.original_size == (w, h)
    assert ("The file holds several frames; the first one was used." in image.notes) == (frames > 1)


# --- formats outside the allow-list ---------------------------------------------------------

def _saved(fmt: str, image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@st.composite
def outside_format(draw) -> bytes:
    """A file of a format Pillow reads and the project does not: written by Pillow, or a format's
    header over random bytes, or a multi-frame GIF; its bytes after the signature maybe mutated."""
    w, h = draw(st.integers(32, 80)), draw(st.integers(32, 80))
    rgb = Image.fromarray(np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8))
    kind = draw(st.sampled_from(["EPS", "ICO", "PCX", "PPM", "SGI", "DDS", "IM", "QOI", "TGA", "XBM", "MSP",
                                 "SPIDER", "GIF", "GIF frames", "PSD header", "EPS text", "FITS header"]))
    if kind == "GIF frames":
        frames = [rgb.rotate(10 * k).convert("P") for k in range(draw(st.integers(2, 8)))]
        data = _saved("GIF", frames[0], save_all=True, append_images=frames[1:])
    elif kind == "PSD header":  # Pillow reads PSD but does not write it
        data = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, h, w, 8, 3) + draw(st.binary(max_size=256))
    elif kind == "EPS text":
        data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n" + draw(st.binary(max_size=256))
    elif kind == "FITS header":
        data = b"SIMPLE  =                    T" + draw(st.binary(max_size=256))
    elif kind in ("XBM", "MSP"):
        data = _saved(kind, rgb.convert("1"))
    elif kind == "SPIDER":
        data = _saved(kind, rgb.convert("F"))
    else:
        data = _saved(kind, rgb)
    if draw(st.booleans()) and len(data) > 17:
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(16, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=150, deadline=2000)
@given(data=outside_format())
def test_formats_outside_the_list_always_give_one_upload_error(folder, data):
    path = folder / "lesion.jpg"  # the name does not matter: the bytes do
    path.write_bytes(data)
    with pytest.raises(uploads.UploadError) as info:
        uploads.read_upload(path, SIZE)
    message = str(info.value)
    assert "not an image" in message and "\n" not in message and str(path) not in message


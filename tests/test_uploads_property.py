"""Upload decoding under arbitrary bytes: whatever a client sends, uploads.read_upload returns the
model's input or raises one UploadError, never anything else (a Pillow or NumPy exception would
reach the person as a generic failure, or worse, as a server error).

Hypothesis draws random bytes and real images of every accepted format with mutations at the
places decoders trust most: the header (sizes, modes, chunk lengths), truncation, and a header of
one format over the body of another. 500 examples, about 2 seconds on one CPU core; the
examples that once failed are replayed first from Hypothesis's database, when it is kept.
"""

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

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
        ("gif", rgb.convert("P"), "GIF", {}),
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

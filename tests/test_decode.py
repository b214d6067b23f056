"""The one image decoder (images.decode) and its four callers: the pipeline's load_rgb, the app's
read_upload, the leakage audit's image_signature and the download's bad-image check.

The expected digests were computed by the four separate decoders that images.decode replaced, so
a change of draft size, conversion order or EXIF handling in any caller shows up here. They hold
for the pinned Pillow and NumPy (requirements.txt), like the demo data digests.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from skinlesion import images
from skinlesion.acquire import image_check
from skinlesion.errors import DataError, UploadError
from skinlesion.leakage import CROPS, image_signature
from skinlesion.serve import uploads

SIZE = 64


def _rgb(w: int, h: int, seed: int) -> np.ndarray:
    """Smooth colour gradients plus noise: JPEG's draft scaling and EXIF turns both change such pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h) + 64], axis=-1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def _write(tmp_path, name: str, im: Image.Image, **save) -> str:
    path = tmp_path / name
    im.save(path, **save)
    return str(path)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("decode")
    rgb = Image.fromarray(_rgb(600, 450, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the upright image is 450x600
    truncated = io.BytesIO()
    rgb.save(truncated, format="JPEG", quality=90)
    (d / "truncated.jpg").write_bytes(truncated.getvalue()[: len(truncated.getvalue()) // 2])
    gray16 = Image.fromarray(_rgb(200, 150, 5)[:, :, 0].astype(np.uint16) * 257)  # mode I;16
    return {
        "rgb.jpg": _write(d, "rgb.jpg", rgb, quality=90),
        "exif6.jpg": _write(d, "exif6.jpg", Image.fromarray(_rgb(640, 480, 1)), quality=85, exif=exif),
        "gray.jpg": _write(d, "gray.jpg", Image.fromarray(_rgb(300, 200, 2)).convert("L"), quality=90),
        "cmyk.jpg": _write(d, "cmyk.jpg", Image.fromarray(_rgb(256, 192, 3)).convert("CMYK"), quality=90),
        "rgb.png": _write(d, "rgb.png", Image.fromarray(_rgb(150, 100, 4))),
        "rgba.png": _write(d, "rgba.png", Image.fromarray(np.dstack([_rgb(120, 90, 6),
                                                                        _rgb(120, 90, 7)[:, :, 0]]), "RGBA")),
        "gray16.png": _write(d, "gray16.png", gray16),
        "palette.png": _write(d, "palette.png", Image.fromarray(_rgb(100, 80, 8)).quantize(16)),
        "truncated.jpg": str(d / "truncated.jpg"),
    }


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str((a.shape, a.dtype)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _outputs(path: str) -> dict[str, object]:
    """What each caller makes of one file."""
    out: dict[str, object] = {}
    for name, call in (("load_rgb", lambda: images.load_rgb(path)),
                       ("load_rgb_64", lambda: images.load_rgb(path, SIZE))):
        try:
            out[name] = _digest(call())
        except DataError as e:
            out[name] = str(e).replace(path, "<path>")
    try:
        up = uploads.read_upload(path, SIZE)
        out["upload"] = (_digest(up.rgb), up.original_size, len(up.notes))
    except uploads.UploadError as e:
        out["upload"] = str(e)[:40]
    try:
        out["signature"] = _digest(*image_signature(path, CROPS))
    except DataError as e:
        out["signature"] = str(e).replace(path, "<path>")
    out["problem"] = image_check.problem(path)
    return out


UNREADABLE = "cannot read image <path>: image file is truncated (78 bytes not processed); remove or replace the file"
EXPECTED: dict[str, dict[str, object]] = {
    'cmyk.jpg': {
        'load_rgb': '77164de46c0b9358',
        'load_rgb_64': 'f580c778620a7bff',
        'problem': None,
        'signature': 'd2cca76b607e3ce5',
        'upload': ('2ad3bbf99f41046b', (256, 192), 1),
    },
    'exif6.jpg': {
        'load_rgb': '587d5e2ed6e90e86',
        'load_rgb_64': '07e6c3d5b90712cd',
        'problem': None,
        'signature': '12b93dc0da74b793',
        'upload': ('ec3525f4505474a4', (480, 640), 0),
    },
    'gray.jpg': {
        'load_rgb': 'e5628f968fcb81e6',
        'load_rgb_64': '789ba75ed56b64a2',
        'problem': None,
        'signature': '4592ae65165bb03a',
        'upload': ('5c07734b7acb7ac7', (300, 200), 1),
    },
    'gray16.png': {
        'load_rgb': 'c46a05f08edef7f2',
        'load_rgb_64': 'd346d3f6c8aa1fca',
        'problem': None,
        'signature': '752dac150342360d',
        'upload': ('0776a54c255e6a50', (200, 150), 1),
    },
    'palette.png': {
        'load_rgb': '800e5179fcb3a83b',
        'load_rgb_64': '231507bcfe5a65cc',
        'problem': None,
        'signature': '6c5437725734b5b8',
        'upload': ('3b23b40da72c60cc', (100, 80), 0),
    },
    'rgb.jpg': {
        'load_rgb': '4bccfd4dfcc8e619',
        'load_rgb_64': 'ff10209ada47e144',
        'problem': None,
        'signature': 'cd1431c1ee453269',
        'upload': ('45088c6ccac29112', (600, 450), 0),
    },
    'rgb.png': {
        'load_rgb': '0daa84f8413576a3',
        'load_rgb_64': 'ff2df5bf7b569dd0',
        'problem': None,
        'signature': '50dd700c8a9173eb',
        'upload': ('4c7bd2d3e89584e4', (150, 100), 0),
    },
    'rgba.png': {
        'load_rgb': '7a3e872b8763a094',
        'load_rgb_64': '9b28a593339ab176',
        'problem': None,
        'signature': '7eea2c60177c85c8',
        'upload': ('226750ee0ee962c0', (120, 90), 1),
    },
    'truncated.jpg': {
        'load_rgb': UNREADABLE,
        'load_rgb_64': UNREADABLE,
        'problem': 'OSError: image file is truncated (78 bytes not processed)',
        'signature': UNREADABLE,
        'upload': 'The image is corrupt or truncated (image',
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_caller_decodes_as_before(fixtures, name):
    assert _outputs(fixtures[name]) == EXPECTED[name]


def test_one_error_for_every_undecodable_file(tmp_path):
    """Not an image, an empty file, a truncated one: each is an UnreadableImageError (a DataError)
    naming the file, with Pillow's exception kept for callers that word it for someone else."""
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(images.UnreadableImageError, match="cannot read image .*notes.jpg.*remove or replace") as info:
        images.decode(text)
    assert isinstance(info.value, DataError) and isinstance(info.value.cause, Image.UnidentifiedImageError)
    assert image_check.problem(str(text)) == ("FormatNotReadError: it is not an image in one of the formats the "
                                              "project reads: JPEG, PNG, TIFF, BMP, WEBP")


def test_the_header_check_sees_the_file_first_and_its_error_passes_through(fixtures):
    seen = []

    def refuse(im):
        seen.append((im.size, im.format))
        raise UploadError("too big")

    with pytest.raises(UploadError, match="too big"):
        images.decode(fixtures["rgb.jpg"], inspect=refuse)
    assert seen == [((600, 450), "JPEG")]

"""The decode-once image cache: the same pixels as a fresh decode, read fast, and the same results."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from committed_params import committed_params
from PIL import Image
from torch.utils.data import DataLoader

from skinlesion import cache, ensemble_prediction, model
from skinlesion.dataset import LesionImages, loader_options
from skinlesion.errors import DataError
from skinlesion.images import load_rgb
from skinlesion.transforms import eval_transform, train_transform

IMG_SIZE = 48
AUGMENT = committed_params().train.augment
CLASSES_CYCLE = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def write_jpeg(path, width, height, seed, exif_orientation=None):
    rng = np.random.default_rng(seed)
    # smooth content (a gradient plus a blob), so JPEG errors stay small, like a real photo's
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, rng.integers(0, 255))], -1)
    blob = ((xx - width / 2) ** 2 + (yy - height / 2) ** 2) < (min(width, height) / 4) ** 2
    rgb[blob] = rng.integers(0, 255, 3)
    image = Image.fromarray(rgb.astype(np.uint8))
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    image.save(path, quality=95, exif=exif)
    return rgb.astype(np.uint8)


@pytest.fixture
def frame(tmp_path) -> pd.DataFrame:
    """Seven JPEGs of mixed sizes and aspect ratios, one stored rotated with an EXIF orientation tag."""
    sizes = [(120, 90), (90, 120), (200, 150), (64, 64), (150, 100), (99, 77), (160, 120)]
    rows = []
    for k, (w, h) in enumerate(sizes):
        path = tmp_path / f"img{k}.jpg"
        write_jpeg(path, w, h, seed=k, exif_orientation=6 if k == 2 else None)
        rows.append({"image_id": f"ISIC_{k:07d}", "path": str(path), "dx": CLASSES_CYCLE[k]})
    return pd.DataFrame(rows)


def test_cached_images_equal_a_fresh_decode_exactly(frame, tmp_path):
    cache.build(tmp_path / "cache", frame, IMG_SIZE, threads=2)
    images = cache.ImageCache(tmp_path / "cache", IMG_SIZE)
    assert len(images) == len(frame)
    for _, row in frame.iterrows():
        cached = images[row["image_id"]]
        fresh = load_rgb(row["path"], IMG_SIZE)
        assert cached.dtype == np.uint8 and cached.shape == fresh.shape
        assert min(cached.shape[:2]) == IMG_SIZE
        assert np.array_equal(cached, fresh)
    # the EXIF-rotated 200x150 image is stored upright: portrait, shorter side 48
    assert images["ISIC_0000002"].shape == (64, 48, 3)


def test_cached_image_equals_the_resized_original_within_jpeg_tolerance(tmp_path):
    original = write_jpeg(tmp_path / "a.jpg", 96, 72, seed=1)
    frame = pd.DataFrame({"image_id": ["a"], "path": [str(tmp_path / "a.jpg")], "dx": ["nv"]})
    cache.build(tmp_path / "cache", frame, 36)
    cached = cache.ImageCache(tmp_path / "cache", 36)["a"].astype(float)
    expected = np.asarray(Image.fromarray(original).resize((48, 36), Image.Resampling.BOX)).astype(float)
    assert cached.shape == expected.shape == (36, 48, 3)
    assert np.abs(cached - expected).mean() < 3.0  # JPEG quality 95 plus resampling differences


def test_cache_files_and_index(frame, tmp_path):
    cache.build(tmp_path / "cache", frame, IMG_SIZE)
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files == ["index.json", "pixels.u8"]  # nothing temporary left behind
    images = cache.ImageCache(tmp_path / "cache", IMG_SIZE)
    offsets = [images._entries[i][0] for i in frame["image_id"]]
    assert all(o % cache.ALIGN == 0 for o in offsets) and offsets == sorted(offsets)
    assert not images["ISIC_0000000"].flags.writeable  # a read-only map: no one scribbles on the cache


def test_wrong_size_missing_truncated_and_absent_images_are_clear_errors(frame, tmp_path):
    with pytest.raises(DataError, match="run `dvc repro preprocess` first"):
        cache.ImageCache(tmp_path / "nowhere", IMG_SIZE)
    cache.build(tmp_path / "cache", frame, IMG_SIZE)
    with pytest.raises(DataError, match="holds images at 48 px but 64 px are needed"):
        cache.ImageCache(tmp_path / "cache", 64)
    with pytest.raises(DataError, match=r"not in the image cache .*ISIC_9"):
        cache.ImageCache(tmp_path / "cache", IMG_SIZE).select(["ISIC_0000001", "ISIC_9"])
    pixels = tmp_path / "cache" / cache.PIXELS
    pixels.write_bytes(pixels.read_bytes()[:1000])
    with pytest.raises(DataError, match="truncated or corrupt"):
        cache.ImageCache(tmp_path / "cache", IMG_SIZE)


def test_a_failing_decode_leaves_no_cache(frame, tmp_path):
    (tmp_path / "img3.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot read image .*img3.jpg"):
        cache.build(tmp_path / "cache", frame, IMG_SIZE)
    assert not (tmp_path / "cache").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_empty_manifest_gives_an_empty_cache(tmp_path):
    cache.build(tmp_path / "cache", pd.DataFrame(columns=["image_id", "path", "dx"]), IMG_SIZE)
    assert len(cache.ImageCache(tmp_path / "cache", IMG_SIZE).select([])) == 0


def test_cache_pickles_as_its_path_not_its_pixels(frame, tmp_path):
    cache.build(tmp_path / "cache", frame, IMG_SIZE)
    images = cache.ImageCache(tmp_path / "cache", IMG_SIZE)
    images["ISIC_0000000"]  # maps the file
    blob = pickle.dumps(images)
    assert len(blob) < 2000
    assert np.array_equal(pickle.loads(blob)["ISIC_0000004"], images["ISIC_0000004"])


def test_dataset_yields_the_same_augmented_batches_from_the_cache_and_from_raw_decoding(frame, tmp_path):
    cache.build(tmp_path / "cache", frame, IMG_SIZE)
    images = cache.ImageCache(tmp_path / "cache", IMG_SIZE)
    batches = []
    rotating = committed_params({"train": {"augment": {"rotate": 20}}}).train.augment
    for source in (images, None):
        data = LesionImages(frame, IMG_SIZE, train_transform(IMG_SIZE, rotating, seed=3), source)
        data.set_epoch(11)
        batches.append([x for x, _ in DataLoader(data, batch_size=3)])
    assert all(torch.equal(a, b) for a, b in zip(*batches))
    assert batches[0][0].shape == (3, 3, IMG_SIZE, IMG_SIZE)


def _epoch_batches(data, loader, seed):
    data.set_epoch(seed)
    return [x for x, _ in loader]


def test_persistent_workers_replay_an_epoch_exactly_as_a_fresh_start_does(frame, tmp_path):
    """What exact resumes need: epoch 2 of a running loader equals epoch 2 of a freshly started one."""
    cache.build(tmp_path / "cache", frame, IMG_SIZE)
    images = cache.ImageCache(tmp_path / "cache", IMG_SIZE)

    def loader():
        data = LesionImages(frame, IMG_SIZE, train_transform(IMG_SIZE, AUGMENT, seed=0), images)
        options = loader_options(torch.device("cpu"), workers=2)
        assert options["persistent_workers"] and options["prefetch_factor"] >= 2
        return data, DataLoader(data, batch_size=2, **options)

    data, running = loader()
    epoch1 = _epoch_batches(data, running, 101)
    epoch2 = _epoch_batches(data, running, 102)
    data, fresh = loader()
    resumed2 = _epoch_batches(data, fresh, 102)
    assert all(torch.equal(a, b) for a, b in zip(epoch2, resumed2))
    assert not all(torch.equal(a, b) for a, b in zip(epoch1, epoch2))  # and epochs do differ
    assert loader_options(torch.device("cpu"), workers=0) == {"num_workers": 0, "pin_memory": False}


def test_evaluation_gives_the_same_probabilities_through_the_cache_and_the_raw_path(frame, tmp_path):
    cache.build(tmp_path / "cache", frame, IMG_SIZE)
    torch.manual_seed(0)
    net = model.create("test_efficientnet", pretrained=False).eval()
    torch.nn.init.normal_(net.backbone.get_classifier().weight, std=0.5)  # not the uniform zero-init head
    kwargs = dict(img_size=IMG_SIZE, tta="flips", batch_size=4, device=torch.device("cpu"))
    images = cache.ImageCache(tmp_path / "cache", IMG_SIZE)
    cached = ensemble_prediction.predict_frame(net, frame, cache=images, **kwargs)
    raw = ensemble_prediction.predict_frame(net, frame, **kwargs)
    assert cached.shape == (len(frame), 7)
    assert np.allclose(cached, raw, atol=1e-5, rtol=0)
    assert cached.std(axis=0).max() > 1e-4  # a real check: predictions vary between images

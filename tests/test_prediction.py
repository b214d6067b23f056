"""The one prediction path: evaluation's single pass gives, to the bit, what the separate passes
gave (calibrated probabilities, raw ones, t-SNE features), and every consumer reads one input format."""

import json

import numpy as np
import pandas as pd
import pytest
import safetensors
import timm
import torch
from PIL import Image

from skinlesion import calibration, ensemble_prediction, model, prediction, transforms
from skinlesion.classes import CLASSES
from skinlesion.images import center_crop, load_rgb, resize_short_side
from skinlesion.tta import TTA_VIEWS

IMG_SIZE = 32
DEVICE = torch.device("cpu")


@pytest.fixture(scope="module")
def frame(tmp_path_factory) -> pd.DataFrame:
    """Eleven PNGs of mixed sizes and aspect ratios, with smooth random content."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rows = []
    for k in range(11):
        h, w = int(rng.integers(32, 60)), int(rng.integers(32, 60))
        small = rng.integers(0, 255, (4, 4, 3)).astype(np.uint8)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(folder / f"{k}.png")
        rows.append({"image_id": f"ISIC_{k:07d}", "path": str(folder / f"{k}.png"), "dx": CLASSES[k % 7]})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def ensemble() -> model.FoldEnsemble:
    """Two fold models with random heads (create() zeroes them) and different temperatures."""
    torch.manual_seed(0)
    members = []
    for temperature in (1.7, 0.6):
        net = model.create("test_efficientnet", pretrained=False)
        torch.nn.init.normal_(net.backbone.get_classifier().weight, std=0.5)
        net.temperature = temperature
        members.append(net)
    return model.FoldEnsemble(members).eval()


def old_features(ensemble, frame, batch_size):
    """The t-SNE features as evaluate computed them before the one pass (a separate loop)."""
    loader = torch.utils.data.DataLoader(prediction.eval_images(frame, IMG_SIZE), batch_size=batch_size)
    out = []
    with torch.no_grad():
        for images, _ in loader:
            images = images.contiguous(memory_format=torch.channels_last)
            feats = [m.backbone.forward_head(m.backbone.forward_features(
                transforms.normalize(images, m.mean, m.std)), pre_logits=True).float() for m in ensemble.members]
            out.append(torch.cat(feats, dim=1))
    return torch.cat(out).numpy()


@pytest.mark.parametrize("tta", ["none", "flips"])
def test_one_pass_gives_the_separate_passes_results_bit_for_bit(ensemble, frame, tta):
    kwargs = dict(img_size=IMG_SIZE, tta=tta, batch_size=4, device=DEVICE)
    calibrated = ensemble_prediction.predict_frame(ensemble, frame, **kwargs)
    with calibration.uncalibrated(ensemble):
        raw = ensemble_prediction.predict_frame(ensemble, frame, **kwargs)
    one = ensemble_prediction.predict_ensemble(ensemble, frame, feature_rows=range(len(frame)), **kwargs)
    np.testing.assert_array_equal(one.probabilities, calibrated)
    np.testing.assert_array_equal(one.uncalibrated, raw)
    np.testing.assert_array_equal(one.features, old_features(ensemble, frame, batch_size=4))
    assert not np.allclose(calibrated, raw, atol=1e-3)  # the temperatures do matter here
    views = len(TTA_VIEWS[tta])
    assert one.member_logits.shape == (len(frame), views, 2, len(CLASSES))
    assert one.features.shape[0] == len(frame) and one.features.shape[1] > 0


def test_member_logits_are_the_models_own_before_temperature(ensemble, frame):
    one = ensemble_prediction.predict_ensemble(ensemble, frame, img_size=IMG_SIZE, tta="none", batch_size=4,
                                               device=DEVICE)
    for k, member in enumerate(ensemble.members):
        logits, _ = prediction.predict_logits(member, prediction.eval_loader(
            prediction.eval_images(frame, IMG_SIZE), 4, DEVICE), DEVICE)
        np.testing.assert_allclose(one.member_logits[:, 0, k] / member.temperature, logits, rtol=1e-6, atol=1e-6)


def test_features_come_for_the_chosen_rows_in_their_order(ensemble, frame):
    kwargs = dict(img_size=IMG_SIZE, tta="none", batch_size=4, device=DEVICE)
    every = ensemble_prediction.predict_ensemble(ensemble, frame, feature_rows=range(len(frame)), **kwargs)
    rows = [9, 0, 4, 5]  # across batches, out of order
    chosen = ensemble_prediction.predict_ensemble(ensemble, frame, feature_rows=rows, **kwargs)
    np.testing.assert_array_equal(chosen.features, every.features[rows])
    np.testing.assert_array_equal(chosen.probabilities, every.probabilities)


def test_an_empty_set_gives_empty_arrays(ensemble, frame):
    out = ensemble_prediction.predict_ensemble(ensemble, frame.iloc[:0], img_size=IMG_SIZE, tta="flips",
                                               batch_size=4, device=DEVICE)
    assert out.probabilities.shape == out.uncalibrated.shape == (0, len(CLASSES))


def test_ensemble_arithmetic_is_the_fold_ensembles(ensemble):
    """ensemble_log_probs on logits taken before temperature scaling == FoldEnsemble.forward."""
    images = torch.randint(0, 256, (5, 3, IMG_SIZE, IMG_SIZE), dtype=torch.uint8)
    with torch.no_grad():
        logits = [ensemble_prediction.member_outputs(m, images)[0] for m in ensemble.members]
        combined = ensemble_prediction.ensemble_log_probs(logits, [m.temperature for m in ensemble.members])
        torch.testing.assert_close(combined, ensemble(images), rtol=0, atol=0)


def test_the_dataset_crop_is_the_input_formats_geometry(frame):
    """The decode-once path (shorter side resized, then eval_transform's centre crop) and
    transforms.resize_and_crop (lesion masks, and the geometry the card states) give the same pixels."""
    images = prediction.eval_images(frame, IMG_SIZE)
    for i, path in enumerate(frame["path"]):
        full = load_rgb(path)
        np.testing.assert_array_equal(images.rgb(i), transforms.resize_and_crop(full, IMG_SIZE))
        np.testing.assert_array_equal(images.rgb(i), center_crop(resize_short_side(full, IMG_SIZE), IMG_SIZE))
        assert torch.equal(images[i][0], transforms.to_chw_uint8(images.rgb(i)))


def test_the_card_states_the_input_format_versions_and_intended_use(tmp_path):
    net = model.create("test_efficientnet", pretrained=False)
    model.save(net, {"architecture": "test_efficientnet", "classes": list(CLASSES), "img_size": IMG_SIZE},
               tmp_path, "fold0")
    card = json.loads((tmp_path / "fold0.json").read_text())
    image = card["network_data_format"]["inputs"]["image"]
    assert image["spatial_shape"] == [IMG_SIZE, IMG_SIZE] and image["num_channels"] == 3
    assert image["dtype"] == "uint8" and image["value_range"] == [0, 255] and image["layout"] == "NCHW"
    assert [image["channel_def"][str(k)] for k in range(3)] == ["red", "green", "blue"]
    assert image["mean"] == card["mean"] == list(net.mean) and image["std"] == card["std"] == list(net.std)
    assert card["network_data_format"]["outputs"]["pred"]["channel_def"] == {str(k): c for k, c in enumerate(CLASSES)}
    assert card["pytorch_version"] == torch.__version__
    assert card["required_packages_version"] == {"timm": timm.__version__, "safetensors": safetensors.__version__}
    assert "not a medical device" in card["intended_use"].lower()
    loaded, _ = model.load(tmp_path / "fold0.json")  # the new fields do not disturb loading
    assert loaded.mean == net.mean

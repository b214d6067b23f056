"""Grad-CAM as numbers: cam_in_lesion and the model-randomisation check."""

import numpy as np
import pytest
import torch
from PIL import Image

from skinlesion import model
from skinlesion.explain import cam_in_lesion, cam_metrics, lesion_mask, randomised, rank_correlation
from skinlesion.errors import DataError


def disc(h: int, w: int, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < radius ** 2


def test_cam_equal_to_the_mask_is_all_in_the_lesion():
    mask = disc(64, 64, 20)
    assert cam_in_lesion(mask.astype(np.float32), mask) == pytest.approx(1.0)


def test_uniform_cam_scores_the_mask_area_share():
    mask = disc(64, 64, 20)
    assert cam_in_lesion(np.ones((64, 64), np.float32), mask) == pytest.approx(mask.mean())
    assert 0.2 < mask.mean() < 0.4


def test_cam_outside_the_lesion_scores_zero_and_an_empty_cam_is_undefined():
    mask = disc(64, 64, 20)
    assert cam_in_lesion((~mask).astype(np.float32), mask) == 0.0
    assert np.isnan(cam_in_lesion(np.zeros((64, 64)), mask))


def test_mask_is_resized_and_cropped_like_the_image(tmp_path):
    # A 90x60 image whose mask covers its left third: at img_size 30 the image becomes 45x30 and its
    # centre crop keeps columns 7..36, so the mask keeps columns 7..14 -> 8 of 30 columns.
    mask = np.zeros((60, 90), np.uint8)
    mask[:, :30] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    Image.new("RGB", (90, 60)).save(tmp_path / "i.jpg")
    cropped = lesion_mask(tmp_path / "m.png", tmp_path / "i.jpg", 30)
    assert cropped.shape == (30, 30)
    assert cropped[:, :8].all() and not cropped[:, 8:].any()


def test_mask_with_another_aspect_ratio_is_refused(tmp_path):
    Image.new("L", (60, 60)).save(tmp_path / "m.png")
    Image.new("RGB", (90, 60)).save(tmp_path / "i.jpg")
    with pytest.raises(DataError, match="aspect ratio"):
        lesion_mask(tmp_path / "m.png", tmp_path / "i.jpg", 30)


def test_rank_correlation():
    a = np.random.default_rng(0).random((16, 16))
    assert rank_correlation(a, a ** 3) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert np.isnan(rank_correlation(a, np.zeros_like(a)))


def tiny_ensemble() -> model.FoldEnsemble:
    torch.manual_seed(0)
    member = model.create("resnet10t", pretrained=False)
    torch.nn.init.normal_(member.backbone.get_classifier().weight, std=0.5)  # not the zero head
    return model.FoldEnsemble([member]).eval()


def test_randomised_copy_has_other_weights_and_leaves_the_model_alone():
    ensemble = tiny_ensemble()
    before = {k: v.clone() for k, v in ensemble.state_dict().items()}
    twin = randomised(ensemble, seed=1)
    assert all(torch.equal(v, ensemble.state_dict()[k]) for k, v in before.items())
    weights = [k for k, v in before.items() if v.is_floating_point() and v.dim() > 1]
    assert all(not torch.equal(twin.state_dict()[k], before[k]) for k in weights)


def test_cam_metrics_on_a_small_model():
    ensemble = tiny_ensemble()
    rng = np.random.default_rng(0)
    masks = [disc(128, 128, r) for r in (30, 35, 40, 45, 50)]  # 128 px: a 4x4 last feature map
    rgbs = [np.where(m[..., None], rng.integers(60, 120, 3), rng.integers(180, 240, 3)).astype(np.uint8)
            for m in masks]
    with torch.no_grad():
        predicted = ensemble(torch.stack([torch.from_numpy(r.transpose(2, 0, 1).copy()) for r in rgbs]))
    report = cam_metrics(ensemble, rgbs, masks, predicted.argmax(1).tolist(), batch_size=2, seed=0)
    assert report["mask_area_share"]["mean"] == pytest.approx(np.mean([m.mean() for m in masks]))
    assert report["mask_area_share"]["images"] == 5
    for key in ("cam_in_lesion", "cam_in_lesion_randomised_model"):
        assert report[key]["images"] == 5 and 0.0 <= report[key]["mean"] <= 1.0
    assert -1.0 <= report["randomisation_rank_correlation"]["mean"] <= 1.0

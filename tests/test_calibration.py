"""Temperature scaling and top-label ECE."""

import numpy as np
import pytest
import torch

from skinlesion.calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability,
    softmax,
    uncalibrated,
)


def overconfident(n: int = 3000, seed: int = 0, sharpen: float = 4.0):
    """Logits whose softmax is calibrated (labels are drawn from it), then multiplied by `sharpen`."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, 7))
    probs = softmax(logits)
    labels = (rng.random((n, 1)) > probs.cumsum(axis=1)).sum(axis=1)
    return logits * sharpen, labels


def test_temperature_scaling_lowers_ece_and_keeps_the_argmax():
    logits, labels = overconfident()
    before = softmax(logits)
    temperature = fit_temperature(logits, labels)
    after = softmax(logits, temperature)
    assert temperature == pytest.approx(4.0, rel=0.15)  # it undoes the sharpening
    assert expected_calibration_error(before, labels) > 0.15
    assert expected_calibration_error(after, labels) < 0.03
    assert (after.argmax(axis=1) == before.argmax(axis=1)).all()


def test_ece_hand_computed():
    # two bins: confidence 0.9 in (13/15, 14/15] and 0.5 in (7/15, 8/15], each with 1 of 2 right.
    probs = np.zeros((4, 7))
    probs[:2, 0], probs[:2, 1] = 0.9, 0.1
    probs[2:, 0], probs[2:, 1] = 0.5, 0.45
    labels = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx((2 * 0.4 + 2 * 0.0) / 4)
    table = reliability(probs, labels)
    assert table["images"].tolist() == [2, 2]
    assert table["bin_low"].tolist() == pytest.approx([7 / 15, 13 / 15])
    assert table["accuracy"].tolist() == [0.5, 0.5]


def test_perfectly_calibrated_needs_no_temperature():
    logits, labels = overconfident(n=5000, seed=1, sharpen=1.0)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.1)


class Member(torch.nn.Module):
    def __init__(self, temperature):
        super().__init__()
        self.temperature = temperature

    def forward(self, x):
        return x / self.temperature


def test_uncalibrated_sets_temperature_one_for_the_duration():
    ensemble = torch.nn.ModuleList([Member(2.0), Member(3.0)])
    x = torch.ones(1, 7)
    with uncalibrated(ensemble):
        assert [m(x)[0, 0].item() for m in ensemble] == [1.0, 1.0]
    assert [m.temperature for m in ensemble] == [2.0, 3.0]


def test_a_loaded_model_divides_its_logits_by_the_cards_temperature(tmp_path):
    from skinlesion import model

    torch.manual_seed(0)
    net = model.create("resnet10t", pretrained=False)
    torch.nn.init.normal_(net.backbone.get_classifier().weight)
    card = {"architecture": "resnet10t", "classes": list(model.CLASSES), "img_size": 32}
    model.save(net, {**card, "temperature": 2.5}, tmp_path, "fold0")
    model.save(net, card, tmp_path / "plain", "fold0")  # a card from before calibration: temperature 1
    x = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        raw = model.load(tmp_path / "plain/fold0.json")[0](x)
        scaled = model.load(tmp_path / "fold0.json")[0](x)
        ensemble, _ = model.load_ensemble(tmp_path)
        with uncalibrated(ensemble):
            assert torch.allclose(ensemble(x).exp(), raw.softmax(1), atol=1e-6)
        assert torch.allclose(ensemble(x).exp(), scaled.softmax(1), atol=1e-6)
    assert torch.allclose(scaled, raw / 2.5, atol=1e-5)

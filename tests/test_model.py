import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from skinlesion import model
from skinlesion.classes import CLASSES
from skinlesion.errors import ModelFileError


def test_pretrained_weights_that_cannot_be_fetched_fail_with_a_clear_message(tmp_path):
    # A fresh interpreter, offline and with an empty cache: the hub reads these at import time.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    code = "from skinlesion import model; model.create('efficientnet_b0', pretrained=True)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "PretrainedWeightsError: could not fetch ImageNet weights for 'efficientnet_b0'" in result.stderr
    assert "model.pretrained: false" in result.stderr


def test_save_and_load_round_trip_without_pickle(tmp_path):
    torch.manual_seed(0)
    net = model.create("efficientnet_b0", pretrained=False).eval()
    model.save(net, {"architecture": "efficientnet_b0", "classes": list(CLASSES), "img_size": 32, "fold": 0},
                tmp_path, "fold0")
    card = json.loads((tmp_path / "fold0.json").read_text())
    assert card["weights"] == "fold0.safetensors" and len(card["mean"]) == 3
    assert (tmp_path / "fold0.safetensors").read_bytes()[:8] != b"PK\x03\x04"  # not a torch zip/pickle
    loaded, _ = model.load(tmp_path / "fold0.json")
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(net(x), loaded(x), atol=1e-6)


def test_ensemble_averages_member_probabilities():
    torch.manual_seed(0)
    members = [model.create("efficientnet_b0", pretrained=False).eval() for _ in range(2)]
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        expected = (members[0](x).softmax(1) + members[1](x).softmax(1)) / 2
        assert torch.allclose(model.FoldEnsemble(members)(x).exp(), expected, atol=1e-6)


def _saved_model(folder, temperature=1.0):
    torch.manual_seed(0)
    net = model.create("test_efficientnet", pretrained=False).eval()  # timm's 0.1 M-parameter test model
    model.save(net, {"architecture": "test_efficientnet", "classes": list(CLASSES), "img_size": 32, "fold": 0,
                     "temperature": temperature}, folder, "fold0")
    return folder / "fold0.json"


def test_loading_refuses_non_finite_weights(tmp_path):
    # What a diverged training used to write, and evaluate and the app used to serve as NaN scores.
    card = _saved_model(tmp_path)
    weights = load_file(str(tmp_path / "fold0.safetensors"))
    weights["conv_stem.weight"][0, 0, 0, 0] = float("nan")
    save_file(weights, str(tmp_path / "fold0.safetensors"))
    with pytest.raises(ModelFileError, match=r"fold0\.safetensors: 1 of \d+ tensors hold NaN or infinite values "
                                             r"\(e\.g\. conv_stem\.weight\)"):
        model.load(card)


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), 0.0, -1.0, "1.0"])
def test_loading_refuses_a_non_finite_or_non_positive_temperature(tmp_path, temperature):
    card = _saved_model(tmp_path, temperature)
    with pytest.raises(ModelFileError, match="temperature is .*; it must be a finite positive number"):
        model.load(card)

"""The classifier: a timm backbone with its normalisation, saved as safetensors plus a JSON card.

The card (architecture, classes, image size, normalisation, params, validation metrics) is all
that evaluate, gradcam and the app need to rebuild exactly the trained model. No pickle anywhere.
It also says what a reader of the weights alone would need, in the terms of a MONAI bundle's
metadata.json: the intended use, the library versions, and the input and output tensors
(network_data_format).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import safetensors
import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import atomic
from .classes import CLASSES
from .errors import ModelFileError, ParamsError, PretrainedWeightsError
from .transforms import INPUT_FORMAT, normalize

INTENDED_USE = ("Research and teaching: classifying a dermoscopic image of a single skin lesion into the seven "
                "HAM10000 classes. Not a medical device: not for diagnosing, triaging or reassuring patients.")


class LesionClassifier(nn.Module):
    """uint8 or float images in [0, 255], NCHW -> class logits, divided by the temperature."""

    def __init__(self, backbone: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 temperature: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.mean, self.std = tuple(mean), tuple(std)
        # Fitted after training on the fold's validation logits (calibration.py); 1 while training.
        self.temperature = temperature

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(normalize(images, self.mean, self.std)) / self.temperature

    def cam_layer(self) -> nn.Module:
        """The last convolution, where Grad-CAM looks (conv_head in EfficientNets)."""
        convs = [m for m in self.backbone.modules() if isinstance(m, nn.Conv2d)]
        return convs[-1]


class FoldEnsemble(nn.Module):
    """Averages the (temperature-scaled) probabilities of fold models; returns their log, a valid logit."""

    def __init__(self, members: list[LesionClassifier]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return mean_softmax_log([m(images) for m in self.members])

    def cam_layers(self) -> list[nn.Module]:
        return [m.cam_layer() for m in self.members]


def mean_softmax_log(member_logits) -> torch.Tensor:
    """The ensemble's arithmetic, in one place: the mean of the members' softmax (in float32), as a
    log, floored so that a class no member believes in stays finite."""
    probs = torch.stack([logits.float().softmax(dim=1) for logits in member_logits])
    return probs.mean(dim=0).clamp_min(1e-12).log()


def check_name(name: str) -> None:
    """model.name must be a timm model: a params error, found before any training work."""
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise ParamsError(f"model.name {name!r} is not a timm model; similar names: {close}")


def create(name: str, *, pretrained: bool, drop_rate: float = 0.0) -> LesionClassifier:
    check_name(name)  # else a typo reads as a download failure when pretrained
    try:
        backbone = timm.create_model(name, pretrained=pretrained, num_classes=len(CLASSES), drop_rate=drop_rate)
    except Exception as e:  # hub errors come as many types: offline, HTTP, missing file
        if not pretrained:
            raise
        raise PretrainedWeightsError(
            f"could not fetch ImageNet weights for {name!r} ({type(e).__name__}: {e}). "
            "Connect to the internet once (timm caches the weights under ~/.cache/huggingface), "
            "or set model.pretrained: false to train from scratch (the offline demo does)."
        ) from None
    # Start from uniform predictions: a random head on untrained features gives large logits and a
    # first epoch spent undoing them (focal loss ~4.5 instead of ln 7 * (6/7)^2 ~ 1.4).
    head = backbone.get_classifier()
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    cfg = backbone.pretrained_cfg
    return LesionClassifier(backbone, cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225)))


def save(model: LesionClassifier, card: dict, folder: Path, stem: str) -> None:
    """Write <stem>.safetensors and <stem>.json, each atomically; the card names the weights file."""
    folder = Path(folder)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.backbone.state_dict().items()}
    with atomic.atomic_path(folder / f"{stem}.safetensors") as tmp:
        save_file(weights, str(tmp))
    card = {**card, "weights": f"{stem}.safetensors", "mean": list(model.mean), "std": list(model.std),
            **description(model, card.get("img_size"))}
    atomic.write_json(folder / f"{stem}.json", card)


def description(model: LesionClassifier, img_size: int | None) -> dict:
    """The card's fields for a reader without this code, named as in a MONAI bundle's metadata.json."""
    image = {**INPUT_FORMAT, "spatial_shape": [img_size, img_size], "mean": list(model.mean), "std": list(model.std)}
    pred = {"type": "probabilities", "format": "classes", "num_channels": len(CLASSES), "spatial_shape": [],
            "dtype": "float32", "value_range": [], "is_patch_data": False,
            "channel_def": {str(k): name for k, name in enumerate(CLASSES)},
            "postprocessing": "logits already divided by the card's temperature; softmax gives the probabilities"}
    return {"intended_use": INTENDED_USE, "data_type": "dermoscopic RGB photographs (JPEG or PNG)",
            "pytorch_version": torch.__version__,
            "required_packages_version": {"timm": timm.__version__, "safetensors": safetensors.__version__},
            "network_data_format": {"inputs": {"image": image}, "outputs": {"pred": pred}}}


def load(card_path: Path, device: torch.device | str = "cpu") -> tuple[LesionClassifier, dict]:
    card_path = Path(card_path)
    card = json.loads(card_path.read_text())
    if tuple(card["classes"]) != CLASSES:
        raise ModelFileError(f"{card_path}: model classes {card['classes']} differ from {list(CLASSES)}")
    # A diverged training (NaN loss) or a damaged file would otherwise predict NaN for every image.
    temperature = card.get("temperature", 1.0)
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
        raise ModelFileError(f"{card_path}: temperature is {temperature!r}; it must be a finite positive number. "
                             "The training that wrote it diverged or the file is damaged: retrain (dvc repro train)")
    weights_path = card_path.parent / card["weights"]
    weights = load_file(str(weights_path))
    bad = [k for k, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ModelFileError(f"{weights_path}: {len(bad)} of {len(weights)} tensors hold NaN or infinite values "
                             f"(e.g. {bad[0]}). The training that wrote it diverged or the file is damaged: "
                             "retrain (dvc repro train), with a lower train.lr if the loss diverged")
    backbone = timm.create_model(card["architecture"], pretrained=False, num_classes=len(CLASSES))
    backbone.load_state_dict(weights)
    model = LesionClassifier(backbone, card["mean"], card["std"], temperature).to(device).eval()
    return model, card


def load_ensemble(folder: Path, device: torch.device | str = "cpu") -> tuple[FoldEnsemble, list[dict]]:
    cards = sorted(Path(folder).glob("fold*.json"))
    if not cards:
        raise FileNotFoundError(f"no model cards in {folder}; run `dvc repro train` (or `dvc pull`) first")
    loaded = [load(c, device) for c in cards]
    return FoldEnsemble([m for m, _ in loaded]).to(device).eval(), [c for _, c in loaded]

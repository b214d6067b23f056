"""The classifier: a timm backbone with its normalisation, saved as safetensors plus a JSON card.

The card (architecture, classes, image size, normalisation, params, validation metrics) is all
that evaluate, gradcam and the app need to rebuild exactly the trained model. No pickle anywhere.
It also says what a reader of the weights alone would need, in the terms of a MONAI bundle's
metadata.json: the intended use, the library versions, and the input and output tensors
(network_data_format).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import safetensors
import timm
import torch
from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, StrictStr, ValidationError, field_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import atomic
from .classes import CLASSES
from .errors import ModelFileError, ModelNotFoundError, ParamsError, PretrainedWeightsError
from .params import DataParams, _clip, _show  # params.yaml's schema and its way of quoting values
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


# ---------------------------------------------------------------------------------------------
# Reading a saved model. The card is validated like params.yaml and the weights are checked
# against the architecture it names, so that a damaged or foreign models/ folder is refused at
# load with one ModelFileError naming the file and the fix, never a traceback at load or a
# failure in every later request.

RESTORE = "run `dvc pull` to restore the tracked models, or `dvc repro train` to retrain them"
FIX = f"the file is damaged or was not written by this project's train stage: {RESTORE}"
MAX_CARD_BYTES = 1 << 20  # a card is a few KB
# Wider than any temperature a calibration fit gives, narrow enough that logits / T stay finite in float32.
TEMPERATURES = (1e-6, 1e6)
# The card's img_size is a strict integer in the range params.yaml allows for data.img_size.
_IMG_SIZE = DataParams.model_fields["img_size"].metadata
IMG_SIZES = (next(m.ge for m in _IMG_SIZE if isinstance(m, Ge)), next(m.le for m in _IMG_SIZE if isinstance(m, Le)))
_WEIGHTS_NAME = re.compile(r"[\w.-]+\.safetensors", re.ASCII)  # a file beside the card, nothing else

_Real = Annotated[float, Strict()]  # an int is accepted as a float; a bool, a string, NaN or infinity never
_Mean = Annotated[_Real, Field(ge=0.0, le=1.0)]
_Std = Annotated[_Real, Field(ge=0.01, le=1.0)]  # a tiny std would blow the normalised inputs up


class _CardPart(BaseModel):
    # Extra keys are allowed: the card also carries descriptive fields for people and other tools.
    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)


class _TrainedWith(_CardPart):
    weighted_sampler: StrictBool
    sampler_power: Annotated[_Real, Field(ge=0.0, le=1.0)]


class _CardParams(_CardPart):
    train: _TrainedWith = None  # optional; a default is not validated, so a present null is refused


class _ValMetrics(_CardPart):
    val_balanced_accuracy: Annotated[_Real, Field(ge=0.0, le=1.0)] = None


class ModelCard(_CardPart):
    """The keys that evaluate, gradcam and the app read from a card, with what each may hold."""

    architecture: StrictStr
    classes: tuple[StrictStr, ...]
    img_size: Annotated[int, *_IMG_SIZE]
    weights: StrictStr
    mean: tuple[_Mean, _Mean, _Mean]
    std: tuple[_Std, _Std, _Std]
    temperature: Annotated[_Real, Field(ge=TEMPERATURES[0], le=TEMPERATURES[1])] = 1.0  # absent: not calibrated
    # Optional: written by the train stage, absent from cards made otherwise.
    fold: Annotated[int, Strict(), Field(ge=0)] = None
    data_source: StrictStr = None
    params: _CardParams = None
    val_metrics: _ValMetrics = None

    @field_validator("architecture")
    @classmethod
    def _known(cls, name: str) -> str:
        if not timm.is_model(name):
            raise ValueError("not a timm model")
        return name

    @field_validator("classes")
    @classmethod
    def _ours(cls, classes: tuple[str, ...]) -> tuple[str, ...]:
        if classes != CLASSES:
            raise ValueError("not the project's classes")
        return classes

    @field_validator("weights")
    @classmethod
    def _beside(cls, name: str) -> str:
        if not _WEIGHTS_NAME.fullmatch(name):
            raise ValueError("not a file name")
        return name


# What each key must hold, in the messages: one sentence per key, whatever pydantic found.
_MUST = {
    "architecture": "it must name the timm model the weights belong to (timm.list_models() lists them)",
    "classes": f"it must be the project's classes in their order, {list(CLASSES)}",
    "img_size": f"it must be an integer in [{IMG_SIZES[0]}, {IMG_SIZES[1]}], the range of data.img_size",
    "weights": "it must be the file name of the weights beside the card, such as fold0.safetensors",
    "mean": "it must be three finite numbers in [0, 1], the normalisation mean of the red, green and blue channels",
    "std": "it must be three finite numbers in [0.01, 1], the normalisation std of the red, green and blue channels",
    "temperature": f"it must be a finite positive number, from {TEMPERATURES[0]:g} to {TEMPERATURES[1]:g}",
    "fold": "it must be a non-negative integer",
    "data_source": "it must be a string such as demo, ham10000 or dermamnist",
    "params": "it must be a mapping: the params the model was trained with",
    "params.train": "it must be a mapping: the train params the model was trained with",
    "params.train.weighted_sampler": "it must be true or false",
    "params.train.sampler_power": "it must be a number in [0, 1]",
    "val_metrics": "it must be a mapping of validation scores",
    "val_metrics.val_balanced_accuracy": "it must be a number in [0, 1]",
}


def _problem(error: dict, raw: Any) -> str:
    """pydantic's error as '<key> is <value>; <what it must hold>', the value as the card has it."""
    loc = tuple(error["loc"])
    keys = [part for part in loc if isinstance(part, str)]
    while keys and ".".join(keys) not in _MUST:  # an item of a list, or a key the schema does not name
        keys.pop()
    if not keys:
        return f"holds {_show(raw)}, not a JSON object with the card's keys"
    name = ".".join(keys)
    if error["type"] == "missing" and loc[-1] == keys[-1]:  # a missing key, not a list item too few
        return f"{name} is missing"
    value = raw
    for key in keys:
        value = value[key]
    return f"{name} is {_show(value)}; {_MUST[name]}"


def read_card(card_path: Path, shown: str | None = None) -> tuple[ModelCard, dict]:
    """The validated card and the card as written. `shown` is how messages name the file (default: its path)."""
    card_path = Path(card_path)
    shown = shown or str(card_path)
    try:
        size = card_path.stat().st_size
        if size > MAX_CARD_BYTES:
            raise ModelFileError(f"{shown} is {size:,} bytes, not a model card (a few KB); {FIX}")
        raw = json.loads(card_path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{shown} is missing; {RESTORE}") from None
    except OSError as e:  # a folder, no permission...
        raise ModelFileError(f"{shown} cannot be read ({e.strerror or e}); {FIX}") from None
    except UnicodeDecodeError as e:
        raise ModelFileError(f"{shown} is not a JSON model card (not UTF-8 text, byte {e.start}); {FIX}") from None
    except (ValueError, RecursionError) as e:  # not JSON, nested too deeply, an integer of 5,000 digits
        raise ModelFileError(f"{shown} is not a JSON model card ({_reason(e)}); {FIX}") from None
    try:
        return ModelCard.model_validate(raw), raw
    except ValidationError as e:
        errors = e.errors()
        more = f" (1 of {len(errors)} problems)" if len(errors) > 1 else ""
        raise ModelFileError(f"{shown}: {_problem(errors[0], raw)}{more}; {FIX}") from None


def _read_weights(path: Path, shown: str, card_shown: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise ModelFileError(f"{shown}, the weights named by {card_shown}, is missing; {RESTORE}") from None
    except (SafetensorError, OSError) as e:  # truncated, not safetensors, a folder...
        reason = _reason(e).removeprefix("Error while deserializing header: ")
        raise ModelFileError(f"{shown} is not a readable safetensors file ({reason}); {FIX}") from None


def _misfit(expected: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> str | None:
    """How the weights fail to fit a state dict (names, shapes, dtypes), or None when they fit."""
    missing, extra = sorted(expected.keys() - weights.keys()), sorted(weights.keys() - expected.keys())
    if missing:
        return f"{len(missing)} of the architecture's tensors are not in the file, e.g. {_clip(missing[0], 80)}"
    if extra:
        return f"the file holds {len(extra)} tensors the architecture lacks, e.g. {_show(extra[0])}"
    for name, want in expected.items():
        got = weights[name]
        if got.shape != want.shape:
            return f"{name} is {list(got.shape)} in the file, {list(want.shape)} in the architecture"
        if got.dtype != want.dtype:
            return f"{name} is {got.dtype} in the file, {want.dtype} in the architecture"
    return None


def _check_runs(net: LesionClassifier, img_size: int, architecture: str, shown: str) -> None:
    """One image of the card's size through the model: an architecture that cannot take that size
    (a ViT is built for one) is refused here, not in every request."""
    try:
        with torch.inference_mode():
            out = net(torch.zeros(1, 3, img_size, img_size, dtype=torch.uint8))
    except Exception as e:  # noqa: BLE001 (any layer can refuse a size, each with its own exception type)
        reason = f"{type(e).__name__}: {_reason(e)}"
        raise ModelFileError(f"{shown}: the architecture {architecture} cannot classify the card's "
                             f"{img_size} px images ({reason}); {FIX}") from None
    if out.shape != (1, len(CLASSES)):
        raise ModelFileError(f"{shown}: the architecture {architecture} gives {list(out.shape)} outputs for "
                             f"one image, not {len(CLASSES)} class scores; {FIX}")


def _reason(e: BaseException) -> str:
    """A library's error message on one short line."""
    return _clip(" ".join(str(e).split()), 160)


def _shown(path: Path, folder_name: str | None) -> str:
    return f"{folder_name}/{path.name}" if folder_name else str(path)


def load(card_path: Path, device: torch.device | str = "cpu", *,
         folder_name: str | None = None) -> tuple[LesionClassifier, dict]:
    """The model of one card and the card as written. `folder_name` is how messages name the card's
    folder (default: its path), e.g. HEAD:models for a copy of models/ at a git revision."""
    card_path = Path(card_path)
    return _build(card_path, *read_card(card_path, _shown(card_path, folder_name)), device, folder_name)


def _build(card_path: Path, card: ModelCard, raw: dict, device: torch.device | str,
           folder_name: str | None) -> tuple[LesionClassifier, dict]:
    card_shown = _shown(card_path, folder_name)
    weights_path = card_path.parent / card.weights
    shown = _shown(weights_path, folder_name)
    weights = _read_weights(weights_path, shown, card_shown)
    backbone = timm.create_model(card.architecture, pretrained=False, num_classes=len(CLASSES))
    if problem := _misfit(backbone.state_dict(), weights):
        raise ModelFileError(f"the weights in {shown} do not fit the architecture {card.architecture} named by "
                             f"its card {card_shown} ({problem}); {FIX}")
    # A diverged training (NaN loss) or a damaged file would otherwise predict NaN for every image.
    bad = [k for k, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ModelFileError(f"{shown}: {len(bad)} of {len(weights)} tensors hold NaN or infinite values "
                             f"(e.g. {bad[0]}). The training that wrote it diverged or the file is damaged: "
                             "retrain (dvc repro train), with a lower train.lr if the loss diverged, or "
                             "restore the tracked models (dvc pull)")
    backbone.load_state_dict(weights)
    net = LesionClassifier(backbone, card.mean, card.std, card.temperature).eval()
    _check_runs(net, card.img_size, card.architecture, card_shown)
    return net.to(device), raw


def load_ensemble(folder: Path, device: torch.device | str = "cpu", *,
                  folder_name: str | None = None) -> tuple[FoldEnsemble, list[dict]]:
    """Every fold*.json in `folder`, in name order; the cards must agree with each other."""
    folder = Path(folder)
    shown_folder = folder_name or str(folder)
    paths = sorted(folder.glob("fold*.json"))
    if not paths:
        raise ModelNotFoundError(f"no model cards (fold*.json) in {shown_folder}; {RESTORE}")
    cards = [(path, *read_card(path, _shown(path, folder_name))) for path in paths]
    _check_agreement([(_shown(path, folder_name), card) for path, card, _ in cards], shown_folder)
    loaded = [_build(path, card, raw, device, folder_name) for path, card, raw in cards]
    return FoldEnsemble([m for m, _ in loaded]).to(device).eval(), [raw for _, raw in loaded]


def _check_agreement(cards: list[tuple[str, ModelCard]], shown_folder: str) -> None:
    """The members of one ensemble see one image size, and each fold once."""
    sizes = {card.img_size for _, card in cards}
    if len(sizes) > 1:
        listed = ", ".join(f"{Path(name).name} {card.img_size}" for name, card in cards)
        raise ModelFileError(f"the model cards in {shown_folder} disagree on img_size ({listed}); the folds of "
                             f"one ensemble are trained at one size: {RESTORE}")
    seen: dict[int, str] = {}
    for name, card in cards:
        if card.fold is not None and card.fold in seen:
            raise ModelFileError(f"{seen[card.fold]} and {name} both say fold {card.fold}; {RESTORE}")
        if card.fold is not None:
            seen[card.fold] = name

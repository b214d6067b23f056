"""params.yaml as typed, validated data.

Every stage loads the whole file through `load_params`, so a typo in any key, a wrong type or an
out-of-range value stops the run before any work, with one message naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .classes import CLASSES


class ParamsError(ValueError):
    """A bad params.yaml: the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class DataParams:
    source: str = "demo"  # demo | ham10000 | dermamnist
    ham10000_dir: str = ""  # an already-downloaded copy; empty: download
    dermamnist_path: str = ""  # a DermaMNIST npz, or a folder holding it; empty: the medmnist package downloads it
    dermamnist_size: int = 28  # which DermaMNIST file: 28 (dermamnist.npz) or 64, 128, 224 (dermamnist_<size>.npz)
    external: str = "demo"  # demo | unified | none
    external_dir: str = ""
    img_size: int = 300  # training and inference resolution
    demo_lesions: int = 600  # size of the synthetic HAM10000-like set
    demo_external_images: int = 300  # size of the synthetic external set
    external_split: str = "val"  # which split of the unified set to evaluate on
    bad_images: str = "fail"  # fail: stop and list unreadable images | skip: drop them, count them in metrics
    max_member_bytes: int = 256 * 2**20  # what one zip member may unpack to (skinlesion/archives.py: Limits)
    max_archive_bytes: int = 64 * 2**30  # what one zip may unpack to, in all
    max_compression_ratio: float = 100.0  # unpacked / packed, per member of 1 MiB or more; images are ~1

    def check(self) -> None:
        _one_of("data.source", self.source, ("demo", "ham10000", "dermamnist"))
        _one_of("data.dermamnist_size", self.dermamnist_size, (28, 64, 128, 224))
        _one_of("data.external", self.external, ("demo", "unified", "none"))
        _one_of("data.external_split", self.external_split, ("train", "val", "test"))
        _one_of("data.bad_images", self.bad_images, ("fail", "skip"))
        _at_least("data.img_size", self.img_size, 28)  # 28: DermaMNIST's native size
        _at_least("data.demo_lesions", self.demo_lesions, 20)
        _at_least("data.demo_external_images", self.demo_external_images, 7)
        _between("data.max_member_bytes", self.max_member_bytes, 2**20, 2**40)
        _between("data.max_archive_bytes", self.max_archive_bytes, 2**20, 2**44)
        _between("data.max_compression_ratio", self.max_compression_ratio, 2.0, 1e6)


@dataclass(frozen=True)
class AuditParams:
    max_hash_distance: int = 48  # pHash bits (of 256) within which two images may be the same picture
    max_colour_distance: float = 6.5  # mean RGB difference (0-255) of 16x16 thumbnails that confirms it
    merge_near_duplicates: bool = True  # near-identical images of different lesion ids: one split group

    def check(self) -> None:
        _between("audit.max_hash_distance", self.max_hash_distance, 0, 128)
        _between("audit.max_colour_distance", self.max_colour_distance, 0.0, 255.0)


@dataclass(frozen=True)
class SplitParams:
    scheme: str = "grouped"  # grouped: lesion-grouped test set and CV folds | official: the source's own split
    n_folds: int = 5  # cross-validation folds over the non-test lesions
    test_size: float = 0.15  # share of lesions held out as the internal test set

    def check(self) -> None:
        _one_of("split.scheme", self.scheme, ("grouped", "official"))
        _at_least("split.n_folds", self.n_folds, 2)
        if not 0.0 < self.test_size < 0.5:
            raise ParamsError(f"split.test_size is {self.test_size}; use a share in (0, 0.5), e.g. 0.15")


@dataclass(frozen=True)
class ModelParams:
    name: str = "efficientnet_b3"  # any timm model name
    pretrained: bool = True  # ImageNet initialisation; the offline demo sets false
    drop_rate: float = 0.1

    def check(self) -> None:
        import timm

        if not timm.is_model(self.name):
            close = timm.list_models(f"*{self.name.split('_')[0]}*")[:8]
            raise ParamsError(f"model.name {self.name!r} is not a timm model; similar names: {close}")
        _between("model.drop_rate", self.drop_rate, 0.0, 0.9)


@dataclass(frozen=True)
class AugmentParams:
    hflip: float = 0.5
    vflip: float = 0.5
    rotate90: float = 0.5  # dermoscopy has no canonical orientation; lossless quarter turns
    rotate: float = 0.0  # arbitrary angles up to this many degrees (edges are reflected)
    min_scale: float = 0.75  # RandomResizedCrop's lower area bound
    brightness: float = 0.1  # small: colour is diagnostic in dermoscopy
    contrast: float = 0.1
    hue: float = 0.02

    def check(self) -> None:
        for name in ("hflip", "vflip", "rotate90", "brightness", "contrast", "hue"):
            _between(f"train.augment.{name}", getattr(self, name), 0.0, 1.0)
        _between("train.augment.rotate", self.rotate, 0.0, 180.0)
        _between("train.augment.min_scale", self.min_scale, 0.05, 1.0)


@dataclass(frozen=True)
class TrainParams:
    folds: tuple[int, ...] = (0,)  # the CV folds to train; evaluate ensembles them
    epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0
    focal_gamma: float = 2.0
    focal_alpha: tuple[float, ...] | None = None  # per-class weights in CLASSES order; null: none
    weighted_sampler: bool = True
    sampler_power: float = 0.5  # weight ~ 1/count**power: 1 balances classes fully, 0 is off
    mixup_alpha: float = 0.0  # 0 disables mixup; the reference used 0.4
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = -1  # -1: chosen from the CPU count
    compile: bool = False  # torch.compile the model (slow first steps; off until benchmarked faster)
    nproc_per_node: int = 1  # >1: DDP, the stage relaunches itself under torchrun with this many processes
    sync_batchnorm: bool = False  # BatchNorm statistics over all GPUs' batches (CUDA only; for small per-GPU batches)
    augment: AugmentParams = field(default_factory=AugmentParams)

    def check(self, n_folds: int) -> None:
        if not self.folds:
            raise ParamsError("train.folds is empty; list at least one fold, e.g. [0]")
        for k in self.folds:
            if not 0 <= k < n_folds:
                raise ParamsError(f"train.folds holds {k}; folds run from 0 to split.n_folds-1 = {n_folds - 1}")
        if len(set(self.folds)) != len(self.folds):
            raise ParamsError(f"train.folds {list(self.folds)} repeats a fold")
        _at_least("train.epochs", self.epochs, 1)
        _at_least("train.batch_size", self.batch_size, 2)
        _between("train.lr", self.lr, 1e-7, 1.0)
        _between("train.weight_decay", self.weight_decay, 0.0, 1.0)
        _between("train.warmup_epochs", self.warmup_epochs, 0.0, float(self.epochs))
        _between("train.focal_gamma", self.focal_gamma, 0.0, 10.0)
        if self.focal_alpha is not None:
            if len(self.focal_alpha) != len(CLASSES) or min(self.focal_alpha) < 0:
                raise ParamsError(
                    f"train.focal_alpha is {list(self.focal_alpha)}; give {len(CLASSES)} non-negative "
                    f"weights in the order {list(CLASSES)}, or null"
                )
        _between("train.sampler_power", self.sampler_power, 0.0, 1.0)
        _between("train.mixup_alpha", self.mixup_alpha, 0.0, 10.0)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ParamsError(f"train.device is {self.device!r}; use auto, cpu, cuda or cuda:N")
        _at_least("train.num_workers", self.num_workers, -1)
        _at_least("train.nproc_per_node", self.nproc_per_node, 1)
        if self.batch_size % self.nproc_per_node:
            raise ParamsError(f"train.batch_size {self.batch_size} does not split evenly over train.nproc_per_node "
                              f"{self.nproc_per_node} processes; use a multiple of {self.nproc_per_node}")
        self.augment.check()


@dataclass(frozen=True)
class EvaluateParams:
    tta: str = "flips"  # none | flips (original + hflip + vflip)
    batch_size: int = 64
    bootstrap_resamples: int = 1000  # lesion-level bootstrap resamples for the 95% confidence intervals
    embedding_images: int = 1000  # per set, at most, in the t-SNE map (a class-stratified sample)

    def check(self) -> None:
        from .tta import TTA_VIEWS

        _one_of("evaluate.tta", self.tta, tuple(TTA_VIEWS))
        _at_least("evaluate.batch_size", self.batch_size, 1)
        _at_least("evaluate.bootstrap_resamples", self.bootstrap_resamples, 100)
        _at_least("evaluate.embedding_images", self.embedding_images, 10)


@dataclass(frozen=True)
class GradcamParams:
    examples_per_kind: int = 2  # correct and wrong examples per class
    metric_images: int = 500  # internal test images with masks, at most, for cam_in_lesion and the sanity check
    batch_size: int = 16  # images per Grad-CAM pass (forward and backward)

    def check(self) -> None:
        _at_least("gradcam.examples_per_kind", self.examples_per_kind, 1)
        _at_least("gradcam.metric_images", self.metric_images, 1)
        _at_least("gradcam.batch_size", self.batch_size, 1)


@dataclass(frozen=True)
class Params:
    seed: int = 42
    data: DataParams = field(default_factory=DataParams)
    audit: AuditParams = field(default_factory=AuditParams)
    split: SplitParams = field(default_factory=SplitParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    gradcam: GradcamParams = field(default_factory=GradcamParams)

    def check(self) -> None:
        self.data.check()
        self.audit.check()
        self.split.check()
        self.model.check()
        self.train.check(self.split.n_folds)
        self.evaluate.check()
        self.gradcam.check()
        self.check_source_and_split()

    def check_source_and_split(self) -> None:
        """Which split schemes and external sets each source allows (see README, DermaMNIST)."""
        source, scheme = self.data.source, self.split.scheme
        if scheme == "official" and source != "dermamnist":
            raise ParamsError(f"split.scheme is official but data.source {source} has no official split; "
                              "use split.scheme=grouped (lesion-grouped), or data.source=dermamnist")
        if scheme == "grouped" and source == "dermamnist":
            raise ParamsError("split.scheme is grouped but DermaMNIST has no lesion ids, so a lesion-grouped split "
                              "is impossible; use split.scheme=official (its own train/val/test split)")
        if scheme == "official" and self.train.folds != (0,):
            raise ParamsError(f"train.folds is {list(self.train.folds)} but split.scheme=official has one fold: "
                              "train on the official train set, validate on its val set; set train.folds=[0]")
        if source == "dermamnist" and self.data.external == "unified":
            raise ParamsError("data.external=unified with data.source=dermamnist: the unified set contains HAM10000 "
                              "images, and DermaMNIST has no ISIC ids to remove them by (nor a resolution the "
                              "content audit is calibrated for), so the external scores could be leaked; "
                              "use data.external=none (or demo, a synthetic smoke test)")


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found; run the stage from the repository root")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML: {e}") from None
    params = _build(Params, raw, prefix="")
    params.check()
    return params


def as_dict(obj) -> dict:
    """Plain data for model cards and logs."""
    return dataclasses.asdict(obj)


def _build(cls, raw, prefix: str):
    if not isinstance(raw, dict):
        raise ParamsError(f"{prefix.rstrip('.') or 'params.yaml'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ParamsError(f"unknown key {prefix}{unknown[0]}; allowed keys here: {sorted(fields)}")
    values = {name: _coerce(hints[name], raw[name], prefix + name) for name in fields if name in raw}
    return cls(**values)


def _coerce(hint, value, key: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, prefix=key + ".")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads 3e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint in (int, bool, str) and type(value) is hint:
        return value
    raise ParamsError(f"{key} must be {hint.__name__}, got {value!r}")


def _one_of(key: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ParamsError(f"{key} is {value!r}; allowed: {', '.join(map(str, allowed))}")


def _at_least(key: str, value, low) -> None:
    if value < low:
        raise ParamsError(f"{key} is {value}; it must be at least {low}")


def _between(key: str, value, low, high) -> None:
    if not low <= value <= high:
        raise ParamsError(f"{key} is {value}; it must lie in [{low}, {high}]")

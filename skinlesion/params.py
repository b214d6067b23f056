"""params.yaml as typed, validated data.

params.yaml is the only source of values: this schema declares types, ranges and choices, and no
defaults, so a missing key is an error rather than a silent fallback to a second set of values.
Every stage loads the whole file through `load_params`, so a typo in any key, a wrong type or an
out-of-range value stops the run before any work, with one message naming the key, the value and
what is allowed. No input, however hostile (wrong types, NaN, huge numbers, YAML alias bombs,
deep nesting, a file that is not text), ends in anything but a `ParamsError` with such a message.

`model.name` is checked against timm where a model is built (`model.check_name`), not here: timm
imports torch, which the stages that never build a model (download, audit, split) do without.
"""

from __future__ import annotations

import io
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, Strict, StrictBool, StrictStr, ValidationError,
                      field_validator, model_validator)
from pydantic_core import PydanticCustomError

from .classes import CLASSES
from .errors import ParamsError

__all__ = ["Params", "DataParams", "AuditParams", "SplitParams", "ModelParams", "AugmentParams", "TrainParams",
           "EvaluateParams", "GradcamParams", "ParamsError", "load_params", "parse_params", "as_dict"]

# Limits on the file itself. The committed params.yaml is ~4 KB, ~150 YAML nodes, 4 levels deep;
# these are far above that and far below what could exhaust memory or Python's recursion limit.
MAX_FILE_BYTES = 1 << 20
MAX_NODES = 10_000  # after expanding YAML aliases, which a billion-laughs file multiplies
MAX_DEPTH = 20

# YAML 1.1 (PyYAML) reads a float without a dot, such as 3e-4, as a string; accept exactly that.
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _yaml11_float(value: Any) -> Any:
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        return float(value)
    return value


# Strict types: no silent "3" -> 3 or true -> 1. A float accepts an int (1 -> 1.0), never a bool,
# never NaN or infinity (model_config's allow_inf_nan=False).
Int = Annotated[int, Strict()]
Real = Annotated[float, Strict(), BeforeValidator(_yaml11_float)]
Bool = StrictBool
Str = StrictStr
Probability = Annotated[Real, Field(ge=0.0, le=1.0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _error(message: str) -> PydanticCustomError:
    """A message that already names the key (dotted path), the value and what is allowed."""
    return PydanticCustomError("params", "{message}", {"message": message})


class DataParams(_Section):
    source: Literal["demo", "ham10000", "dermamnist"]
    ham10000_dir: Str  # an already-downloaded copy; empty: download
    external: Literal["demo", "unified", "none"]
    external_dir: Str
    # Up to 1024 px: the image cache holds every image at this size (HAM10000's 10,015 images are
    # 3 GB of RGB at 300 px, 35 GB at 1024), and the images themselves are 600x450.
    img_size: Annotated[Int, Field(ge=28, le=1024)]  # from 28: DermaMNIST's native size
    demo_lesions: Annotated[Int, Field(ge=20)]
    demo_external_images: Annotated[Int, Field(ge=7)]
    # The demo dataset's own seed. A real dataset does not change with the experiment's seed, so
    # neither does the demo's: `seed` varies the training draws only (`split.seed` the split).
    demo_seed: Annotated[Int, Field(ge=0, le=2**32 - 2)]  # the external set uses demo_seed + 1
    external_split: Literal["train", "val", "test"]
    bad_images: Literal["fail", "skip"]
    dermamnist_path: Str  # a DermaMNIST npz, or a folder holding it; empty: the medmnist package downloads it
    dermamnist_size: Literal[28, 64, 128, 224]  # which file: dermamnist.npz (28) or dermamnist_<size>.npz
    # DermaMNIST's lesion ids (skinlesion/acquire/lesion_ids.py): the ISIC id of every image (Abhishek
    # et al.'s dermamnist_split_info.csv, or a folder holding it) and the HAM10000 metadata table that
    # gives each id its lesion (Kaggle's .csv or Dataverse's .tab, or a folder holding it). Empty: the
    # copy in data.ham10000_dir (the metadata), a kept download, then the public copies when online.
    # data.dermamnist_ids=none: no ids, whatever the network (image-level, as before ids existed).
    dermamnist_ids: Str
    ham10000_metadata: Str
    # What one zip may unpack to (skinlesion/acquire/archives.py, Limits): per member, in all, and the ratio
    # unpacked/packed of members of 1 MiB or more (JPEGs are ~1, CSVs ~10, a zip bomb's zeros ~1000).
    max_member_bytes: Annotated[Int, Field(ge=2**20, le=2**40)]
    max_archive_bytes: Annotated[Int, Field(ge=2**20, le=2**44)]
    max_compression_ratio: Annotated[Real, Field(ge=2.0, le=1e6)]


class AuditParams(_Section):
    max_hash_distance: Annotated[Int, Field(ge=0, le=128)]  # pHash bits (of 256)
    max_colour_distance: Annotated[Real, Field(ge=0.0, le=255.0)]  # mean RGB difference of 16x16 thumbnails
    merge_near_duplicates: Bool


class SplitParams(_Section):
    # At most 20: more folds than that only shrink each validation fold below usefulness. The split
    # stage also checks it against the number of lesions, which only the data knows.
    n_folds: Annotated[Int, Field(ge=2, le=20)]
    # The test set is one of round(1/test_size) stratified parts: from 0.05, at most 20 of them.
    test_size: Annotated[Real, Field(ge=0.05, lt=0.5)]
    # grouped: lesion-grouped test set and CV folds; official: the source's own split (DermaMNIST)
    scheme: Literal["grouped", "official"]
    # The split's own seed. A study's split is fixed while its training recipe varies, so `seed`
    # redraws the training only; vary this one to measure how much the split itself moves a score.
    seed: Annotated[Int, Field(ge=0, le=2**32 - 1)]
    # official only: drop from the official train and val sets every image of a lesion that also has
    # an image in the test set, which stays as published (the leak, removed as an experiment). Needs
    # lesion ids, which only the data says it has: the split stage checks that.
    exclude_test_lesions: Bool


class ModelParams(_Section):
    name: Str  # a timm model name, checked where a model is built (model.check_name)
    pretrained: Bool
    drop_rate: Annotated[Real, Field(ge=0.0, le=0.9)]


class AugmentParams(_Section):
    hflip: Probability
    vflip: Probability
    rotate90: Probability
    rotate: Annotated[Real, Field(ge=0.0, le=180.0)]  # degrees
    min_scale: Annotated[Real, Field(ge=0.05, le=1.0)]  # RandomResizedCrop's lower area bound
    brightness: Probability
    contrast: Probability
    hue: Probability


class TrainParams(_Section):
    folds: tuple[Annotated[Int, Field(ge=0)], ...]
    epochs: Annotated[Int, Field(ge=1)]
    batch_size: Annotated[Int, Field(ge=2)]
    lr: Annotated[Real, Field(ge=1e-7, le=1.0)]
    weight_decay: Annotated[Real, Field(ge=0.0, le=1.0)]
    warmup_epochs: Annotated[Real, Field(ge=0.0)]
    grad_clip: Annotated[Real, Field(ge=0.0)]  # max global gradient norm; 0: no clipping
    focal_gamma: Annotated[Real, Field(ge=0.0, le=10.0)]
    focal_alpha: tuple[Real, ...] | None  # per-class weights in CLASSES order; null: none
    weighted_sampler: Bool
    sampler_power: Annotated[Real, Field(ge=0.0, le=1.0)]
    mixup_alpha: Annotated[Real, Field(ge=0.0, le=10.0)]
    device: Str
    num_workers: Annotated[Int, Field(ge=-1)]  # -1: chosen from the CPU count
    compile: Bool
    nproc_per_node: Annotated[Int, Field(ge=1)]
    sync_batchnorm: Bool
    parallel_folds: Annotated[Int, Field(ge=1, le=64)]  # folds trained at once on a CPU (skinlesion/fold_pool.py)
    augment: AugmentParams

    @field_validator("folds")
    @classmethod
    def _folds(cls, folds: tuple[int, ...]) -> tuple[int, ...]:
        if not folds:
            raise _error("train.folds is empty; list at least one fold, e.g. [0]")
        if len(set(folds)) != len(folds):
            raise _error(f"train.folds {list(folds)} repeats a fold")
        return folds

    @field_validator("focal_alpha")
    @classmethod
    def _focal_alpha(cls, alpha: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if alpha is not None and (len(alpha) != len(CLASSES) or min(alpha) < 0):
            raise _error(f"train.focal_alpha is {_show(list(alpha))}; give {len(CLASSES)} non-negative "
                         f"weights in the order {list(CLASSES)}, or null")
        return alpha

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            raise _error(f"train.device is {_show(device)}; use auto, cpu, cuda or cuda:N")
        return device

    @model_validator(mode="after")
    def _consistent(self) -> TrainParams:
        if self.warmup_epochs > self.epochs:
            raise _error(f"train.warmup_epochs is {self.warmup_epochs}; it must lie in [0, train.epochs = {self.epochs}]")
        if self.batch_size % self.nproc_per_node:
            raise _error(f"train.batch_size {self.batch_size} does not split evenly over train.nproc_per_node "
                         f"{self.nproc_per_node} processes; use a multiple of {self.nproc_per_node}")
        return self


class EvaluateParams(_Section):
    tta: Literal["none", "flips"]  # the keys of tta.TTA_VIEWS (a test keeps them equal)
    batch_size: Annotated[Int, Field(ge=1)]
    bootstrap_resamples: Annotated[Int, Field(ge=100)]
    embedding_images: Annotated[Int, Field(ge=10)]


class GradcamParams(_Section):
    examples_per_kind: Annotated[Int, Field(ge=1)]
    metric_images: Annotated[Int, Field(ge=1)]
    batch_size: Annotated[Int, Field(ge=1)]


class Params(_Section):
    seed: Annotated[Int, Field(ge=0, le=2**32 - 1)]  # numpy's and scikit-learn's seeds are 32-bit
    data: DataParams
    audit: AuditParams
    split: SplitParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams
    gradcam: GradcamParams

    @model_validator(mode="after")
    def _folds_exist(self) -> Params:
        for k in self.train.folds:
            if k >= self.split.n_folds:
                raise _error(f"train.folds holds {k}; folds run from 0 to split.n_folds-1 = {self.split.n_folds - 1}")
        return self

    @model_validator(mode="after")
    def _source_and_split_agree(self) -> Params:
        """Which split schemes and external sets each source allows (README, DermaMNIST)."""
        source, scheme = self.data.source, self.split.scheme
        if scheme == "official" and source != "dermamnist":
            raise _error(f"split.scheme is official but data.source {source} has no official split; "
                         "use split.scheme=grouped (lesion-grouped), or data.source=dermamnist")
        if self.split.exclude_test_lesions and scheme != "official":
            raise _error(f"split.exclude_test_lesions is true but split.scheme is {scheme}: a lesion-grouped split "
                         "already keeps every lesion on one side; set split.exclude_test_lesions=false, or use "
                         "split.scheme=official (data.source=dermamnist)")
        if scheme == "official" and self.train.folds != (0,):
            raise _error(f"train.folds is {list(self.train.folds)} but split.scheme=official has one fold: "
                         "train on the official train set, validate on its val set; set train.folds=[0]")
        if source == "dermamnist" and self.data.external == "unified":
            raise _error("data.external=unified with data.source=dermamnist: the unified set contains HAM10000 "
                         "images, and DermaMNIST has no ISIC ids to remove them by (nor a resolution the "
                         "content audit is calibrated for), so the external scores could be leaked; "
                         "use data.external=none (or demo, a synthetic smoke test)")
        return self


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    return parse_params(_read_yaml(path), where=path.name)


def parse_params(raw: Any, where: str = "params.yaml") -> Params:
    """Validate already-loaded YAML data (`where` names it in messages)."""
    if raw is None:
        raise ParamsError(f"{where} is empty; copy the committed params.yaml, which sets every key")
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        errors = e.errors()
        more = f" (1 of {len(errors)} problems)" if len(errors) > 1 else ""
        raise ParamsError(_describe(errors[0], where) + more) from None
    except RecursionError:  # unreachable through load_params, whose loader bounds the depth
        raise ParamsError(f"{where} is nested too deeply") from None


def as_dict(obj: BaseModel) -> dict:
    """Plain data for model cards and logs (tuples stay tuples; json writes them as lists)."""
    return obj.model_dump()


# ---------------------------------------------------------------------------------------------
# Reading the file: bounded in size, nesting and alias expansion, so that no file can exhaust
# memory or the stack before validation even starts.


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that counts nodes as if every alias were expanded, and the depth."""

    def __init__(self, stream):
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0
        self._anchor_nodes: dict[str, int] = {}

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            if anchor in self.anchors and anchor not in self._anchor_nodes:
                raise ParamsError(f"the alias *{_clip(anchor, 40)} refers to a value that contains it; "
                                  "write the value out instead")
            self._count(self._anchor_nodes.get(anchor, 1))  # an undefined alias: PyYAML's own error follows
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ParamsError(f"nested more than {MAX_DEPTH} levels deep (params.yaml needs 4)")
        start = self._nodes
        self._count(1)
        anchor = self.peek_event().anchor
        node = super().compose_node(parent, index)
        if anchor is not None:
            self._anchor_nodes[anchor] = self._nodes - start
        self._depth -= 1
        return node

    def _count(self, n: int) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            raise ParamsError(f"more than {MAX_NODES:,} values once its YAML aliases (*name) are expanded "
                              "(params.yaml needs about 150); write the values out")

    def construct_document(self, node):
        self._refuse_duplicate_keys(node, "", set())
        return super().construct_document(node)

    def _refuse_duplicate_keys(self, node, path: str, seen: set[int]) -> None:
        """PyYAML keeps the last of two equal keys in one mapping without a word (DVC refuses the
        file): refuse them, naming the dotted key and both lines. Keys compare as constructed values,
        as PyYAML's dict would, so `1` and `0x1` are one key; merge keys (`<<: *base`) override on
        purpose and are left alone. An alias is one node however often it is used: visited once."""
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._refuse_duplicate_keys(item, f"{path}[{index}]", seen)
        elif isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                if isinstance(key_node, yaml.ScalarNode):
                    key = self.construct_object(key_node)
                    name = key if isinstance(key, str) else _show(key)
                    dotted = _clip(f"{path}.{name}" if path else name, 120)
                    line = key_node.start_mark.line + 1
                    if key in first_line:
                        raise ParamsError(f"{dotted} is set twice, on lines {first_line[key]} and {line}; keep one "
                                          "(DVC refuses such a file, and a stage run on its own would take the last)")
                    first_line[key] = line
                else:  # a list or mapping as a key: PyYAML or the schema refuses it
                    dotted = f"{path}.?" if path else "?"
                self._refuse_duplicate_keys(value_node, dotted, seen)


def _read_yaml(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ParamsError(f"{path} is {size:,} bytes; a params file is a few KB (limit {MAX_FILE_BYTES:,}): "
                              "is this the right file?")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path} not found; run the stage from the repository root") from None
    except UnicodeDecodeError as e:
        raise ParamsError(f"{path} is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                          "save it as UTF-8") from None
    except OSError as e:  # a directory, no permission...
        raise ParamsError(f"{path} cannot be read: {e.strerror or e}") from None
    stream = io.StringIO(text)
    stream.name = str(path)  # what PyYAML's messages call the file
    try:
        return yaml.load(stream, Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader)
    except ParamsError as e:
        raise ParamsError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML: {_clip(str(e), 300)}") from None
    except (ValueError, RecursionError, MemoryError) as e:  # e.g. an integer of more than 4,300 digits
        reason = str(e).split(";")[0]  # Python's advice after the semicolon is for programmers
        raise ParamsError(f"{path} holds a value that cannot be read: {_clip(reason, 200)}") from None


# ---------------------------------------------------------------------------------------------
# pydantic's errors, in the project's words: the dotted key, the value, what is allowed.

_SHOW = reprlib.Repr()  # Python 3.11's Repr takes no arguments
_SHOW.maxlevel, _SHOW.maxtuple, _SHOW.maxlist, _SHOW.maxdict, _SHOW.maxset = 2, 4, 4, 4, 4
_SHOW.maxstring, _SHOW.maxlong, _SHOW.maxother = 60, 40, 40

_TYPE_NAMES = {"int": "int", "float": "float", "bool": "bool (true or false)", "string": "str",
               "tuple": "a list", "list": "a list", "model": "a mapping", "dict": "a mapping"}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _show(value: Any) -> str:
    """A repr of at most 80 characters, also of a huge or deeply nested value."""
    try:
        return _clip(_SHOW.repr(value), 80)
    except Exception:  # noqa: BLE001 (e.g. an int too long for str())
        return f"<{type(value).__name__}>"


def _key(loc: tuple, where: str) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) and not isinstance(part, bool) else (
            f".{part}" if key else str(part))
    return key or where


def _field_at(loc: tuple):
    """The FieldInfo of the key at `loc`, or None where `loc` is not a key of the schema."""
    model, info = Params, None
    for part in loc:
        fields = model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else {}
        info = fields.get(part) if isinstance(part, str) else None
        if info is None:
            return None
        model = info.annotation
    return info


def _bounds(info, ctx: dict) -> str:
    """"it must lie in [0, 1]", from the field's declared bounds (or the failed one, for list items)."""
    limits = {}
    for m in getattr(info, "metadata", ()):
        limits.update({a: getattr(m, a) for a in ("ge", "gt", "le", "lt") if getattr(m, a, None) is not None})
    limits = limits or ctx
    low = next((f"{'[' if a == 'ge' else '('}{limits[a]}" for a in ("ge", "gt") if a in limits), None)
    high = next((f"{limits[a]}{']' if a == 'le' else ')'}" for a in ("le", "lt") if a in limits), None)
    if low and high:
        return f"it must lie in {low}, {high}"
    if low:
        return f"it must be {'at least' if low[0] == '[' else 'more than'} {low[1:]}"
    return f"it must be {'at most' if high[-1] == ']' else 'less than'} {high[:-1]}"


def _describe(error: dict, where: str) -> str:
    kind, loc, value = error["type"], tuple(error["loc"]), error.get("input")
    key = _key(loc, where)
    if kind == "params":
        return error["ctx"]["message"]
    if kind in ("extra_forbidden", "invalid_key"):  # invalid_key: not a string (YAML reads 1: or on: as others)
        parent = _field_at(loc[:-1]).annotation if loc[:-1] else Params
        name = key if kind == "extra_forbidden" else ".".join([*map(str, loc[:-1]), _show(value)])
        return f"unknown key {name}; allowed keys here: {sorted(parent.model_fields)}"
    if kind == "missing":
        return f"{key} is missing; {where} must set every key (the committed params.yaml lists them all)"
    if kind == "literal_error":
        return f"{key} is {_show(value)}; allowed: {error['ctx']['expected'].replace(chr(39), '')}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return f"{key} is {_show(value)}; {_bounds(_field_at(loc), error.get('ctx', {}))}"
    if kind == "finite_number":
        return f"{key} is {_show(value)}; it must be a finite number"
    if kind.endswith(("_type", "_parsing", "_from_float")):
        wanted = _TYPE_NAMES.get(kind.split("_")[0])
        if wanted:
            return f"{key} must be {wanted}, got {_show(value)}"
    return f"{key} is {_show(value)}: {error['msg']}"


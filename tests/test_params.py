import json
import re
from pathlib import Path

import typing

import pydantic
import pytest
import yaml

from skinlesion.params import AugmentParams, EvaluateParams, Params, ParamsError, load_params

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, edit) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_the_committed_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.model.name == "efficientnet_b3" and params.data.source == "demo"


@pytest.mark.parametrize("edit, fragment", [
    (lambda p: p["train"].update(epohcs=3), "unknown key train.epohcs"),
    (lambda p: p.update(extra=1), "unknown key extra"),
    (lambda p: p["train"].update(lr=-0.1), "train.lr is -0.1"),
    (lambda p: p["train"].update(lr="fast"), "train.lr must be float"),
    (lambda p: p["train"].update(focal_gamma=-1), "train.focal_gamma"),
    (lambda p: p["train"].update(folds=[7]), "train.folds holds 7"),
    (lambda p: p["train"].update(focal_alpha=[1, 2]), "train.focal_alpha"),
    (lambda p: p["evaluate"].update(tta="d4"), "evaluate.tta is 'd4'"),
    (lambda p: p["data"].update(source="kaggle"), "data.source is 'kaggle'"),
    (lambda p: p["train"]["augment"].update(rotate=400), "train.augment.rotate"),
    (lambda p: p["data"].update(img_size="big"), "data.img_size must be int"),
])
def test_bad_params_name_the_key_and_value(tmp_path, edit, fragment):
    with pytest.raises(ParamsError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        load_params(write(tmp_path, edit))


def test_a_model_name_unknown_to_timm_is_a_params_error_where_a_model_is_built(tmp_path):
    # Checked by model.check_name (which the train stage calls first), not by load_params: the
    # stages that never build a model start without importing timm and torch.
    from skinlesion import model

    params = load_params(write(tmp_path, lambda p: p["model"].update(name="efficientnet_b99")))
    with pytest.raises(ParamsError, match=r"model\.name 'efficientnet_b99' is not a timm model"):
        model.check_name(params.model.name)
    with pytest.raises(ParamsError, match="is not a timm model"):
        model.create(params.model.name, pretrained=True)  # not a misleading "could not fetch the weights"


def test_every_key_must_be_set_there_are_no_defaults(tmp_path):
    # params.yaml is the only source of values: a key left out is an error, not a silent default.
    for section, key in [("train", "lr"), ("train", "augment"), ("data", "img_size")]:
        with pytest.raises(ParamsError, match=rf"{section}\.{key} is missing"):
            load_params(write(tmp_path, lambda p: p[section].pop(key)))

    def sections(model):
        yield model
        for f in model.model_fields.values():
            if isinstance(f.annotation, type) and issubclass(f.annotation, pydantic.BaseModel):
                yield from sections(f.annotation)

    schema = list(sections(Params))
    assert len(schema) == 9 and AugmentParams in schema
    assert [(m.__name__, k) for m in schema for k, f in m.model_fields.items() if not f.is_required()] == []


def test_types_are_strict(tmp_path):
    for edit, fragment in [(lambda p: p["train"].update(epochs="3"), "train.epochs must be int, got '3'"),
                           (lambda p: p["train"].update(epochs=3.0), "train.epochs must be int, got 3.0"),
                           (lambda p: p["train"].update(lr=True), "train.lr must be float, got True"),
                           (lambda p: p["model"].update(pretrained=1), "model.pretrained must be bool"),
                           (lambda p: p["data"].update(ham10000_dir=5), "data.ham10000_dir must be str")]:
        with pytest.raises(ParamsError, match=re.escape(fragment)):
            load_params(write(tmp_path, edit))
    # An int where a float is wanted is no loss: warmup_epochs: 1 reads as 1.0.
    assert load_params(REPO / "params.yaml").train.warmup_epochs == 1.0


def test_the_tta_choices_are_the_tta_module_s_views():
    from skinlesion.tta import TTA_VIEWS

    assert set(typing.get_args(EvaluateParams.model_fields["tta"].annotation)) == set(TTA_VIEWS)


def test_params_are_frozen():
    params = load_params(REPO / "params.yaml")
    with pytest.raises(pydantic.ValidationError):
        params.train.lr = 1.0


def test_scientific_notation_without_a_dot_is_a_float(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(re.sub(r"^  lr: .*$", "  lr: 3e-4", (REPO / "params.yaml").read_text(), flags=re.M))
    assert load_params(path).train.lr == pytest.approx(3e-4)


@pytest.mark.parametrize("run", sorted(p.parent.relative_to(REPO / "results").as_posix()
                                        for p in (REPO / "results").rglob("params.yaml")))
def test_a_committed_results_params_file_still_runs_under_the_current_schema(run):
    # docs/dermamnist.md tells users to copy these files over params.yaml and run `dvc repro`: a key added to
    # the schema later must be added to them too, or that command stops at its first stage.
    folder = REPO / "results" / run
    params = load_params(folder / "params.yaml")
    metrics = json.loads((folder / "metrics" / "eval.json").read_text())
    assert params.data.source == "dermamnist"
    if params.split.scheme == "official":
        assert metrics["internal"]["n_images"] == 2005  # DermaMNIST's official test set
    else:  # the lesion-grouped split's test set: split.test_size of the lesions
        assert metrics["internal"]["n_images"] == json.loads((folder / "metrics" / "split.json").read_text())[
            "splits"]["test"]["images"]

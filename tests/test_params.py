import re
from pathlib import Path

import pytest
import yaml

from skinlesion.params import ParamsError, load_params

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
    (lambda p: p["model"].update(name="efficientnet_b99"), "model.name 'efficientnet_b99' is not a timm model"),
    (lambda p: p["evaluate"].update(tta="d4"), "evaluate.tta is 'd4'"),
    (lambda p: p["data"].update(source="kaggle"), "data.source is 'kaggle'"),
    (lambda p: p["train"]["augment"].update(rotate=400), "train.augment.rotate"),
    (lambda p: p["data"].update(img_size="big"), "data.img_size must be int"),
])
def test_bad_params_name_the_key_and_value(tmp_path, edit, fragment):
    with pytest.raises(ParamsError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        load_params(write(tmp_path, edit))


def test_scientific_notation_without_a_dot_is_a_float(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(re.sub(r"^  lr: .*$", "  lr: 3e-4", (REPO / "params.yaml").read_text(), flags=re.M))
    assert load_params(path).train.lr == pytest.approx(3e-4)

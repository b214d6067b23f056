"""A damaged models/ folder is refused at load with one message that names the file and the fix
(`dvc pull` restores the tracked models, `dvc repro train` retrains them): through model.load and
load_ensemble, the app's entry point, and the evaluate and gradcam stages, which exit 2 without a
traceback. The card is validated like params.yaml, so that no card (any value at any key, keys
missing or added, random bytes) gives anything but a loaded model or one ModelFileError.
"""

import json
import math
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from committed_params import write_params
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from skinlesion import model
from skinlesion.classes import CLASSES
from skinlesion.errors import ModelFileError, ModelNotFoundError
from skinlesion.random_models import write_random_models
from skinlesion.serve import app, predictor

REPO = Path(__file__).resolve().parents[1]
ARCH = "test_efficientnet"  # timm's 0.1 M-parameter test model: built in milliseconds
SIZE = 32
EXAMPLES = 100  # cards for the property test; most are refused in milliseconds, a loaded one takes ~0.1 s
TRAINED_WITH = {"train": {"weighted_sampler": True, "sampler_power": 0.5}}  # what evaluate reads from a card


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A models/ folder of two fold models, as the train stage writes one; copied by each test."""
    folder = tmp_path_factory.mktemp("pristine") / "models"
    write_random_models(folder, ARCH, SIZE, (0, 1), seed=0, params=TRAINED_WITH)
    return folder


@pytest.fixture
def project(tmp_path, pristine) -> Path:
    """A project folder holding a fresh copy of the models and a valid params.yaml."""
    shutil.copytree(pristine, tmp_path / "models")
    write_params(tmp_path)
    return tmp_path


def edit_card(card_path: Path, **changes) -> None:
    card = json.loads(card_path.read_text())
    card.update(changes)
    card_path.write_text(json.dumps(card))


def assert_one_message(message: str, *names: str) -> None:
    """One line that names the damaged file and both fixes."""
    assert "\n" not in message.strip(), message
    for name in names:
        assert name in message, message
    assert "dvc pull" in message and "dvc repro train" in message, message


# --- the damage, one kind per test, through model.load and load_ensemble -----------------------
# Each function damages the models/ folder of a project and returns the file the message must name.

def truncate_weights(models: Path) -> str:
    weights = models / "fold0.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return "fold0.safetensors"


def remove_weights(models: Path) -> str:
    (models / "fold1.safetensors").unlink()
    return "fold1.safetensors"


def weights_of_another_architecture(models: Path) -> str:
    other = model.create("efficientnet_b0", pretrained=False)
    save_file(other.backbone.state_dict(), str(models / "fold0.safetensors"))
    return "fold0.safetensors"


def unknown_architecture(models: Path) -> str:
    edit_card(models / "fold0.json", architecture="notamodel_b9")
    return "fold0.json"


def card_not_json(models: Path) -> str:
    (models / "fold1.json").write_text('{"architecture": "test_efficientnet", "classes": [')
    return "fold1.json"


def img_size_zero(models: Path) -> str:
    edit_card(models / "fold0.json", img_size=0)
    return "fold0.json"


DAMAGE = [truncate_weights, remove_weights, weights_of_another_architecture, unknown_architecture,
          card_not_json, img_size_zero]


def test_truncated_safetensors_is_one_message(project):
    truncate_weights(project / "models")
    with pytest.raises(ModelFileError) as info:
        model.load(project / "models" / "fold0.json")
    assert_one_message(str(info.value), "fold0.safetensors", "not a readable safetensors file")


def test_missing_weights_beside_card_is_one_message(project):
    remove_weights(project / "models")
    with pytest.raises(ModelFileError) as info:
        model.load_ensemble(project / "models")
    assert_one_message(str(info.value), "fold1.safetensors", "fold1.json", "is missing")


def test_weights_of_another_architecture_are_one_message(project):
    weights_of_another_architecture(project / "models")
    with pytest.raises(ModelFileError) as info:
        model.load(project / "models" / "fold0.json")
    assert_one_message(str(info.value), f"the weights in {project / 'models' / 'fold0.safetensors'} do not fit "
                                        f"the architecture {ARCH} named by its card")


def test_unknown_architecture_in_card_is_one_message(project):
    unknown_architecture(project / "models")
    with pytest.raises(ModelFileError) as info:
        model.load(project / "models" / "fold0.json")
    assert_one_message(str(info.value), "fold0.json", "architecture is 'notamodel_b9'", "timm")


def test_card_not_json_is_one_message(project):
    card_not_json(project / "models")
    with pytest.raises(ModelFileError) as info:
        model.load_ensemble(project / "models")
    assert_one_message(str(info.value), "fold1.json", "not a JSON model card")


def test_card_img_size_zero_is_refused_at_load(project):
    img_size_zero(project / "models")
    with pytest.raises(ModelFileError) as info:
        model.load(project / "models" / "fold0.json")
    assert_one_message(str(info.value), "fold0.json", "img_size is 0; it must be an integer in [28, 1024]")


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("classes", list(reversed(CLASSES)), "classes is ['vasc', 'nv', 'mel', 'df',"),
    ("img_size", 32.0, "img_size is 32.0; it must be an integer"),
    ("img_size", True, "img_size is True; it must be an integer"),
    ("temperature", 1e300, "temperature is 1e+300; it must be a finite positive number"),
    ("temperature", None, "temperature is None; it must be a finite positive number"),
    ("mean", [0.5, 0.5], "mean is [0.5, 0.5]; it must be three finite numbers"),
    ("std", [0.2, 0.0, 0.2], "std is [0.2, 0.0, 0.2]; it must be three finite numbers"),
    ("weights", "../fold1.safetensors", "weights is '../fold1.safetensors'; it must be the file name"),
    ("weights", "/etc/passwd", "weights is '/etc/passwd'; it must be the file name"),
    ("params", {"train": {"weighted_sampler": "yes", "sampler_power": 0.5}},
     "params.train.weighted_sampler is 'yes'; it must be true or false"),
])
def test_every_card_field_the_loaders_use_is_checked(project, key, value, expected):
    edit_card(project / "models" / "fold0.json", **{key: value})
    with pytest.raises(ModelFileError) as info:
        model.load(project / "models" / "fold0.json")
    assert_one_message(str(info.value), "fold0.json", expected)


def test_a_card_missing_a_key_the_loader_needs_is_one_message(project):
    card = json.loads((project / "models" / "fold0.json").read_text())
    del card["mean"]
    (project / "models" / "fold0.json").write_text(json.dumps(card))
    with pytest.raises(ModelFileError) as info:
        model.load(project / "models" / "fold0.json")
    assert_one_message(str(info.value), "fold0.json", "mean is missing")


def test_a_card_that_is_not_an_object_is_one_message(project):
    (project / "models" / "fold0.json").write_text("[1, 2, 3]")
    with pytest.raises(ModelFileError) as info:
        model.load(project / "models" / "fold0.json")
    assert_one_message(str(info.value), "fold0.json", "not a JSON object")


def test_an_architecture_that_cannot_take_the_cards_img_size_is_refused_at_load(tmp_path):
    # A ViT is built for one input size (test_vit_relpos: 160 px): at any other, every request would fail.
    write_random_models(tmp_path, "test_vit_relpos", 160, (0,))
    edit_card(tmp_path / "fold0.json", img_size=64)
    with pytest.raises(ModelFileError) as info:
        model.load(tmp_path / "fold0.json")
    assert_one_message(str(info.value), "fold0.json", "test_vit_relpos", "64 px", "AssertionError: Input height (64)")


def test_an_empty_models_folder_is_one_message(tmp_path):
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelNotFoundError) as info:
        model.load_ensemble(tmp_path / "models")
    assert_one_message(str(info.value), "no model cards (fold*.json) in", str(tmp_path / "models"))


def test_cards_that_disagree_on_img_size_are_one_message(project):
    edit_card(project / "models" / "fold1.json", img_size=64)
    with pytest.raises(ModelFileError) as info:
        model.load_ensemble(project / "models")
    assert_one_message(str(info.value), "disagree on img_size", "fold0.json 32", "fold1.json 64")


def test_cards_that_name_one_fold_twice_are_one_message(project):
    edit_card(project / "models" / "fold1.json", fold=0)
    with pytest.raises(ModelFileError) as info:
        model.load_ensemble(project / "models")
    assert_one_message(str(info.value), "fold0.json", "fold1.json", "both say fold 0")


def test_weights_of_another_dtype_are_one_message(project):
    # float8 weights would be cast on the way in, and torch cannot even check them for NaN.
    from safetensors.torch import load_file

    path = project / "models" / "fold0.safetensors"
    weights = {k: (v.to(torch.float8_e4m3fn) if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
    save_file(weights, str(path))
    with pytest.raises(ModelFileError) as info:
        model.load(project / "models" / "fold0.json")
    assert_one_message(str(info.value), f"the weights in {path} do not fit", "torch.float8_e4m3fn in the file, "
                                        "torch.float32 in the architecture")


# --- end to end: the app's entry point, the evaluate and gradcam stages -----------------------

@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_the_app_refuses_a_damaged_models_folder_at_start_with_one_message(project, damage, monkeypatch, capsys):
    named = damage(project / "models")
    monkeypatch.chdir(project)
    with pytest.raises(SystemExit) as info:
        app.main([])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert_one_message(err, named)


def run_python(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.slow
def test_the_app_process_exits_2_with_one_line_for_a_truncated_safetensors(project):
    named = truncate_weights(project / "models")
    result = run_python(["-m", "skinlesion.serve"], project)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert_one_message(result.stderr, named)


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_the_evaluate_stage_refuses_a_damaged_models_folder_with_one_message(project, damage, monkeypatch, capsys):
    """The stage script as `python stages/evaluate.py` runs it, in this process."""
    named = damage(project / "models")
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "argv", ["evaluate.py"])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(REPO / "stages" / "evaluate.py"), run_name="__main__")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert_one_message(err, named)
    assert not (project / "metrics").exists() and not (project / "plots").exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", [truncate_weights, img_size_zero], ids=lambda f: f.__name__)
def test_the_evaluate_stage_exits_2_with_one_line_for_a_damaged_models_folder(project, damage):
    named = damage(project / "models")
    result = run_python([str(REPO / "stages" / "evaluate.py")], project)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert_one_message(result.stderr, named)
    assert not (project / "metrics").exists() and not (project / "plots").exists()


@pytest.mark.slow
def test_the_gradcam_stage_exits_2_with_one_line_for_a_card_not_json(project):
    named = card_not_json(project / "models")
    result = run_python([str(REPO / "stages" / "gradcam.py")], project)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert_one_message(result.stderr, named)


def test_evaluate_refuses_cards_without_the_training_record_it_reads(tmp_path):
    # Cards written without the train stage's params (a hand-made or foreign model): evaluate reads
    # the weighted sampler's settings from them.
    sys.path.insert(0, str(REPO / "stages"))
    try:
        import evaluate
    finally:
        sys.path.remove(str(REPO / "stages"))
    write_random_models(tmp_path, ARCH, SIZE, (0,))
    _, cards = model.load_ensemble(tmp_path)
    with pytest.raises(ModelFileError) as info:
        evaluate.trained_sampler_power(cards, tmp_path)
    assert_one_message(str(info.value), "params.train")


@pytest.mark.slow
def test_a_damaged_card_at_a_git_revision_is_one_message(tmp_path):
    from test_app import dvc, git

    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q")
    dvc(root, "init", "-q")
    write_random_models(root / "models", ARCH, SIZE, (0,))
    (root / "models" / "fold0.json").write_text("not json")  # committed to git itself, as a card may be
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "damaged card")
    with pytest.raises(ModelFileError) as info:
        predictor.load_served_model("HEAD", repo=root)
    assert_one_message(str(info.value), "HEAD:models/fold0.json", "not a JSON model card")


# --- any card: a loaded model or one ModelFileError --------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8)

# Values near the edges of what each key allows, besides arbitrary JSON.
EDGE_VALUES = {
    "architecture": st.sampled_from([ARCH, "test_resnet", "notamodel_b9", "", "TEST_EFFICIENTNET"]),
    "classes": st.sampled_from([list(CLASSES), list(CLASSES[:-1]), [*CLASSES, "x"], list(reversed(CLASSES))]),
    "img_size": st.sampled_from([0, 27, 28, 29, 33, 1024, 1025, -32, 32.0, True, "32"]),
    "weights": st.sampled_from(["fold0.safetensors", "fold1.safetensors", "../fold0.safetensors", "", ".",
                                "fold0.json", "/dev/zero", "sub/fold0.safetensors", "fold0.safetensors\x00"]),
    "mean": st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
    "std": st.lists(st.floats(-1, 2), max_size=4),
    "temperature": st.floats(allow_nan=True, allow_infinity=True) | st.integers(-2, 2**1100),
    "fold": st.integers(-1, 3) | st.booleans(),
    "params": st.fixed_dictionaries({"train": st.fixed_dictionaries(
        {"weighted_sampler": st.booleans() | JSON_VALUES, "sampler_power": st.floats(-1, 2) | JSON_VALUES})}),
    "val_metrics": st.fixed_dictionaries({"val_balanced_accuracy": st.floats(allow_nan=True) | JSON_VALUES}),
}


@st.composite
def damaged_cards(draw, valid: dict) -> bytes:
    """The valid card with some keys given other values, some deleted, some added; or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    card = dict(valid)
    for key in draw(st.lists(st.sampled_from(sorted(valid)), max_size=3, unique=True)):
        choice = draw(st.integers(0, 2))
        if choice == 0:
            del card[key]
        else:
            card[key] = draw(EDGE_VALUES[key] if choice == 1 and key in EDGE_VALUES else JSON_VALUES)
    card.update(draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2)))
    return json.dumps(card, allow_nan=True).encode()


@pytest.fixture(scope="module")
def card_folder(pristine, tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("cards")
    for name in ("fold0.safetensors", "fold1.safetensors"):
        shutil.copy(pristine / name, folder / name)
    return folder, json.loads((pristine / "fold0.json").read_text())


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_card_gives_a_loaded_model_or_one_model_file_error(card_folder, data):
    folder, valid = card_folder
    card_bytes = data.draw(damaged_cards(valid))
    card_path = folder / "fold0.json"
    card_path.write_bytes(card_bytes)
    try:
        loaded, card = model.load(card_path)
    except ModelFileError as e:
        message = str(e)
        assert "\n" not in message and "fold0" in message, message
        assert "dvc pull" in message and "dvc repro train" in message, message
        return
    assert isinstance(loaded, model.LesionClassifier)
    assert tuple(card["classes"]) == CLASSES and 28 <= card["img_size"] <= 1024
    assert math.isfinite(loaded.temperature) and loaded.temperature > 0
    with torch.inference_mode():
        out = loaded(torch.zeros(1, 3, card["img_size"], card["img_size"], dtype=torch.uint8))
    assert out.shape == (1, len(CLASSES)) and bool(torch.isfinite(out).all())


def test_a_metrics_file_that_is_not_json_is_one_message_at_load(project):
    # The app shows metrics/eval.json beside the model; a damaged one used to be a JSONDecodeError.
    (project / "metrics").mkdir()
    (project / "metrics" / "eval.json").write_text('{"internal": ')
    with pytest.raises(ModelFileError, match=r"metrics/eval\.json is not the JSON object the evaluate stage "
                                             r"writes; run `dvc pull` .* `dvc repro evaluate`"):
        predictor.load_served_model(repo=project)

"""Two honest ways to score DermaMNIST once it has lesion ids: the project's own lesion-grouped
split, and the official split with its leak measured (the test set's seen and unseen parts) or
removed (split.exclude_test_lesions). The split stage runs on a fixture written here, with the
lesions of test_lesion_ids.SHARED spanning the official splits."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from committed_params import committed_params, write_params
from test_lesion_ids import COUNTS, EXCLUDED, LOCAL, SEEN_TEST, SHARED, lesion_table, read, workdir  # noqa: F401

from stage_runs import exit_code
from skinlesion import manifest, seen_lesions, splitting
from skinlesion.classes import CLASSES
from skinlesion.errors import DataError
from skinlesion.params import ParamsError

REPO = Path(__file__).resolve().parents[1]
DERMAMNIST = {"source": "dermamnist", "external": "none", "img_size": 28}
OFFICIAL = {"data": DERMAMNIST, "split": {"scheme": "official"}, "train": {"folds": [0]}}
GROUPED = {"data": DERMAMNIST, "split": {"scheme": "grouped", "n_folds": 3, "test_size": 0.2}, "train": {"folds": [0]}}


def load_stage(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_stage", REPO / "stages" / f"{name}.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage


@pytest.fixture(scope="module")
def split_stage():
    return load_stage("split")


def write_download_outputs(request) -> pd.DataFrame:
    """What the download and audit stages leave for the split stage: the manifest, the official
    split and the audit's groups (here: the lesions)."""
    frame, official = read(request)
    manifest.write("data/manifests/ham10000.csv", frame)
    official.to_csv("data/manifests/official_split.csv", index=False)
    Path("data/audit").mkdir(parents=True)
    frame[["image_id", "lesion_id"]].assign(group=frame["lesion_id"]).to_csv("data/audit/groups.csv", index=False)
    return frame


def run_split(stage, work: Path, capsys, overrides: dict) -> tuple[int, str, str]:
    """`python stages/split.py` in work/; (exit code, stdout, stderr)."""
    write_params(work, overrides)
    capsys.readouterr()
    code = exit_code(stage, "split.py")
    out = capsys.readouterr()
    return code, out.out, out.err


def image_ids(split: str, indices) -> set[str]:
    table = lesion_table()
    return set(table[(table["split"] == split) & table["index"].isin(list(indices))]["image_id"])


def lesions_in_two_splits() -> int:
    return sum(len({split for split, _ in group}) > 1 for group in SHARED)


# --- the lesion-grouped split -----------------------------------------------------------------------------

def test_no_lesion_crosses_the_grouped_split_of_dermamnist(split_stage, workdir, capsys):
    frame = write_download_outputs(LOCAL)
    code, _, err = run_split(split_stage, workdir, capsys, GROUPED)
    assert code == 0, err
    folds = splitting.read_splits()
    assert sorted(folds["image_id"]) == sorted(frame["image_id"])  # all images of all official splits
    assert (folds.groupby("lesion_id")["fold"].nunique() == 1).all()
    by_image = folds.set_index("image_id")["fold"]
    table = lesion_table().set_index(["split", "index"])["image_id"]
    for group in SHARED:  # every lesion that spans official splits sits in one fold here
        assert by_image[[table[key] for key in group]].nunique() == 1, group
    report = json.loads(Path("metrics/split.json").read_text())
    assert report["scheme"] == "grouped" and report["unit"] == "lesion"
    assert report["lesions_shared_between_splits"] == 0 and report["n_lesions"] == frame["lesion_id"].nunique()
    assert set(report["splits"]) == {"test", "fold0", "fold1", "fold2"}
    assert not Path(seen_lesions.PATH).exists()


def test_grouped_without_lesion_ids_is_refused_with_how_to_get_them(split_stage, workdir, capsys):
    write_download_outputs(None)  # DermaMNIST without its ids: each image its own lesion
    code, _, err = run_split(split_stage, workdir, capsys, GROUPED)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err == f"error: {splitting.NO_IDS_TO_GROUP}\n"
    assert "data.dermamnist_ids" in err and "split.scheme=official" in err
    assert not Path("data/splits").exists() and not Path("metrics").exists()


def test_params_allow_grouped_on_dermamnist_and_refuse_exclusion_without_the_official_split():
    assert committed_params(GROUPED).split.scheme == "grouped"
    with pytest.raises(ParamsError, match=r"split.exclude_test_lesions is true but split.scheme is grouped"):
        committed_params({**GROUPED, "split": {**GROUPED["split"], "exclude_test_lesions": True}})
    assert committed_params().split.exclude_test_lesions is False  # the committed default


# --- the official split: the leak measured ----------------------------------------------------------------

def test_the_official_split_with_ids_counts_its_shared_lesions_and_splits_test_into_seen_and_unseen(
        split_stage, workdir, capsys):
    write_download_outputs(LOCAL)
    code, out, err = run_split(split_stage, workdir, capsys, OFFICIAL)
    assert code == 0, err
    report = json.loads(Path("metrics/split.json").read_text())
    assert report["lesion_ids"] is True and report["unit"] == "image" and "drawn by image" in report["note"]
    assert report["lesions_shared_between_splits"] == lesions_in_two_splits() == 12
    assert {name: s["images"] for name, s in report["splits"].items()} == COUNTS  # nothing removed
    parts = pd.read_csv(seen_lesions.PATH, dtype=str)
    seen, unseen = (set(parts.loc[parts["part"] == p, "image_id"]) for p in ("seen", "unseen"))
    assert seen == image_ids("test", SEEN_TEST)
    assert not seen & unseen and seen | unseen == image_ids("test", range(COUNTS["test"]))  # disjoint, cover test
    assert report["test_parts"]["seen"] == {"images": 8, "lesions": 8,
                                           "per_class": dict(zip(CLASSES, [1, 1, 1, 2, 1, 1, 1]))}
    assert report["test_parts"]["unseen"]["images"] == 13 and report["test_parts"]["unseen"]["lesions"] == 13
    assert "seen): 8 of 21, 8 lesions" in out


def test_excluding_test_lesions_removes_exactly_their_train_and_val_images_and_no_test_image(
        split_stage, workdir, capsys):
    write_download_outputs(LOCAL)
    assert run_split(split_stage, workdir, capsys, OFFICIAL)[0] == 0
    parts_before = Path(seen_lesions.PATH).read_bytes()
    before = splitting.read_splits()
    code, out, err = run_split(split_stage, workdir, capsys,
                               {**OFFICIAL, "split": {"scheme": "official", "exclude_test_lesions": True}})
    assert code == 0, err
    after = splitting.read_splits()
    removed = set(before["image_id"]) - set(after["image_id"])
    assert removed == image_ids("train", EXCLUDED["train"]) | image_ids("val", EXCLUDED["val"])
    assert set(after["image_id"]) <= set(before["image_id"])
    test = after[after["fold"] == splitting.TEST]
    assert set(test["image_id"]) == image_ids("test", range(COUNTS["test"]))  # the test set is unchanged
    assert not set(after.loc[after["fold"] != splitting.TEST, "lesion_id"]) & set(test["lesion_id"])
    report = json.loads(Path("metrics/split.json").read_text())
    assert report["excluded_for_test_lesions"] == {"train": 8, "val": 4, "lesions": 11}
    assert {name: s["images"] for name, s in report["splits"].items()} == {"train": 27, "val": 10, "test": 21}
    assert report["lesions_shared_between_splits"] == 1  # only the val image whose lesion trains
    assert "dropped 8 train and 4 val images of 11 lesions" in out
    assert Path(seen_lesions.PATH).read_bytes() == parts_before  # the same parts, for a paired comparison


def test_exclusion_without_lesion_ids_is_one_message(split_stage, workdir, capsys):
    write_download_outputs(None)
    code, _, err = run_split(split_stage, workdir, capsys,
                             {**OFFICIAL, "split": {"scheme": "official", "exclude_test_lesions": True}})
    assert code == 2 and err == f"error: {splitting.NO_IDS_TO_EXCLUDE}\n", err
    assert not Path("data/splits").exists()


def test_the_official_split_without_ids_stays_image_level_and_writes_no_parts(split_stage, workdir, capsys):
    write_download_outputs(None)
    assert run_split(split_stage, workdir, capsys, OFFICIAL)[0] == 0
    report = json.loads(Path("metrics/split.json").read_text())
    assert report["lesion_ids"] is False and report["note"] == splitting.IMAGE_LEVEL_NOTE
    assert report["lesions_shared_between_splits"] == 0 and "test_parts" not in report
    assert sorted(p.name for p in Path("data/splits").iterdir()) == ["splits.csv"]


# --- the seen and unseen parts, scored --------------------------------------------------------------------

def test_the_seen_and_unseen_parts_are_scored_like_the_whole_test_set(split_stage, workdir, capsys):
    write_download_outputs(LOCAL)
    assert run_split(split_stage, workdir, capsys, OFFICIAL)[0] == 0
    evaluate = load_stage("evaluate")
    params = committed_params({**OFFICIAL, "evaluate": {"bootstrap_resamples": 200}})
    splits = splitting.read_splits()
    test = splits[splits["fold"] == splitting.TEST].sample(frac=1, random_state=0)  # any order
    parts = seen_lesions.read()
    y_true = np.array([CLASSES.index(dx) for dx in test["dx"]])
    seen = test["image_id"].isin(image_ids("test", SEEN_TEST)).to_numpy()
    # right on every seen image, right on the unseen ones only where the index is even
    right = seen | (np.arange(len(test)) % 2 == 0)
    guess = np.where(right, y_true, (y_true + 1) % len(CLASSES))
    probs = np.full((len(test), len(CLASSES)), 0.05)
    probs[np.arange(len(test)), guess] = 0.7
    scored = seen_lesions.score(test, parts, y_true, probs, probs, lambda *s: evaluate.score(*s, params))
    assert scored["definition"] == seen_lesions.DEFINITION
    assert scored["seen"]["n_images"] == scored["seen"]["n_lesions"] == 8
    assert scored["unseen"]["n_images"] == 13
    assert scored["seen"]["accuracy"] == 1.0 == scored["seen"]["balanced_accuracy"]
    assert scored["unseen"]["accuracy"] == pytest.approx(right[~seen].mean())
    for part in ("seen", "unseen"):
        s = scored[part]
        assert s["accuracy_ci95"]["low"] <= s["accuracy"] <= s["accuracy_ci95"]["high"]
        assert s["macro_auc"] is not None and "macro_auc_ci95" in s and "balanced_accuracy_ci95" in s
        mask = seen if part == "seen" else ~seen
        assert s["images_per_class"] == {c: int((y_true[mask] == k).sum()) for k, c in enumerate(CLASSES)}
    assert scored["seen"]["images_per_class"] == dict(zip(CLASSES, [1, 1, 1, 2, 1, 1, 1]))
    with pytest.raises(DataError, match="does not cover the test set"):
        seen_lesions.score(test, parts.iloc[1:], y_true, probs, probs, lambda *s: evaluate.score(*s, params))


# --- end to end: the evaluate stage writes the parts into eval.json -------------------------------------------

@pytest.mark.parametrize("scheme", ["official", "grouped"])
def test_the_evaluate_stage_scores_the_parts_of_an_official_split_with_ids(split_stage, workdir, capsys, scheme):
    import runpy

    from skinlesion import cache
    from skinlesion.random_models import write_random_models

    frame = write_download_outputs(LOCAL)
    manifest.write("data/audit/external.csv", frame.iloc[:0])
    assert run_split(split_stage, workdir, capsys, OFFICIAL if scheme == "official" else GROUPED)[0] == 0
    cache.build("data/cache/ham10000", frame, 32, threads=1)
    write_random_models(Path("models"), "test_efficientnet", 32, (0,),  # timm's tiny test model
                        params={"train": {"weighted_sampler": True, "sampler_power": 0.5}})
    write_params(workdir, {**(OFFICIAL if scheme == "official" else GROUPED),
                           "evaluate": {"bootstrap_resamples": 200, "tta": "none", "embedding_images": 10}})
    argv, sys.argv = sys.argv, ["evaluate.py"]
    try:
        runpy.run_path(str(REPO / "stages" / "evaluate.py"), run_name="__main__")
    finally:
        sys.argv = argv
    internal = json.loads(Path("metrics/eval.json").read_text())["internal"]
    if scheme == "grouped":
        assert "parts" not in internal  # a lesion-grouped test set has no seen part
        return
    parts = internal["parts"]
    assert internal["n_images"] == 21 == parts["seen"]["n_images"] + parts["unseen"]["n_images"]
    assert (parts["seen"]["n_images"], parts["unseen"]["n_images"]) == (8, 13)
    assert parts["seen"]["images_per_class"] == dict(zip(CLASSES, [1, 1, 1, 2, 1, 1, 1]))
    predictions = pd.read_csv("data/predictions/internal.csv")
    truth = pd.read_csv("data/predictions/internal_truth.csv")
    isic = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    right = pd.Series(predictions[isic].to_numpy().argmax(1) == truth[isic].to_numpy().argmax(1),
                      index=predictions["image"])
    seen = sorted(image_ids("test", SEEN_TEST))
    assert parts["seen"]["accuracy"] == pytest.approx(right[seen].mean())
    assert parts["unseen"]["accuracy"] == pytest.approx(right.drop(seen).mean())
    for part in parts["seen"], parts["unseen"]:
        assert {"balanced_accuracy_ci95", "accuracy_ci95", "macro_auc_ci95", "macro_auc"} <= set(part)

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from committed_params import REPO, write_params

from skinlesion.classes import CLASSES
from skinlesion.manifest import COLUMNS
from skinlesion.splitting import TEST, assign_folds, lesions_shared, split_report

# Real HAM10000 counts (images, lesions) per class.
HAM10000 = {"nv": (6705, 5403), "mel": (1113, 614), "bkl": (1099, 727), "bcc": (514, 327),
            "akiec": (327, 228), "vasc": (142, 98), "df": (115, 73)}


def ham10000_shaped_table(seed=0) -> pd.DataFrame:
    """10,015 images of 7,470 lesions with the real per-class counts; 1 to 6 images per lesion."""
    rng = np.random.default_rng(seed)
    rows, lesion_no = [], 0
    for dx, (n_images, n_lesions) in HAM10000.items():
        per_lesion = np.ones(n_lesions, dtype=int)
        for _ in range(n_images - n_lesions):  # hand out the extra images, at most 6 per lesion
            k = rng.choice(np.flatnonzero(per_lesion < 6))
            per_lesion[k] += 1
        for n in per_lesion:
            lesion_no += 1
            rows += [{"lesion_id": f"HAM_{lesion_no:07d}", "dx": dx}] * n
    frame = pd.DataFrame(rows)
    frame.insert(0, "image_id", [f"ISIC_{24306 + i:07d}" for i in range(len(frame))])
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="module")
def split():
    table = ham10000_shaped_table()
    return table, assign_folds(table, n_folds=5, test_size=0.15, seed=42)


def test_the_fixture_has_the_real_shape(split):
    table, _ = split
    assert len(table) == 10015 and table["lesion_id"].nunique() == 7470
    assert table.groupby("lesion_id").size().max() <= 6


def test_no_lesion_sits_in_two_splits_and_every_image_is_kept(split):
    table, folds = split
    assert lesions_shared(folds) == 0
    assert len(folds) == len(table) and folds["image_id"].is_unique
    assert set(folds["fold"]) == {TEST, 0, 1, 2, 3, 4}


def test_test_set_size_and_stratification(split):
    _, folds = split
    overall = folds["dx"].value_counts(normalize=True)
    test = folds[folds["fold"] == TEST]
    assert 0.12 < len(test) / len(folds) < 0.17  # one of round(1/0.15) = 7 lesion-grouped parts
    share = test["dx"].value_counts(normalize=True)
    for dx in CLASSES:  # within 1.5 points, and within 25% of the class's own share
        assert abs(share[dx] - overall[dx]) < min(0.015, 0.25 * overall[dx]), dx


def test_cv_folds_are_balanced_and_stratified(split):
    _, folds = split
    cv = folds[folds["fold"] != TEST]
    overall = cv["dx"].value_counts(normalize=True)
    sizes = cv["fold"].value_counts()
    assert sizes.max() / sizes.min() < 1.1
    for k in range(5):
        share = cv[cv["fold"] == k]["dx"].value_counts(normalize=True)
        for dx in CLASSES:
            assert abs(share[dx] - overall[dx]) < min(0.015, 0.25 * overall[dx]), (k, dx)


def test_a_naive_image_split_would_leak(split):
    table, _ = split
    naive = table.assign(fold=np.arange(len(table)) % 5)
    assert lesions_shared(naive) > 1000  # why the split is grouped by lesion


def test_report_counts(split):
    _, folds = split
    report = split_report(folds)
    assert report["n_images"] == 10015 and report["n_lesions"] == 7470
    assert report["lesions_shared_between_splits"] == 0
    assert sum(s["images"] for s in report["splits"].values()) == 10015
    assert sum(s["per_class"]["df"] for s in report["splits"].values()) == 115
    assert list(report["splits"])[0] == "test"


def test_same_seed_same_split_other_seed_other_split():
    table = ham10000_shaped_table().head(2000)
    a = assign_folds(table, n_folds=5, test_size=0.15, seed=1)
    b = assign_folds(table, n_folds=5, test_size=0.15, seed=1)
    c = assign_folds(table, n_folds=5, test_size=0.15, seed=2)
    assert a["fold"].tolist() == b["fold"].tolist()
    assert a["fold"].tolist() != c["fold"].tolist()


def _split_with(folder, seed: int, split_seed: int) -> pd.DataFrame:
    """Run the split stage on a 140-lesion manifest in `folder` with these seeds; its splits.csv."""
    rows = [{"image_id": f"ISIC_{k:07d}", "path": f"img/{k}.jpg", "lesion_id": f"HAM_{k:07d}", "dx": dx,
             "dx_type": "histo", "age": 50, "sex": "male", "localization": "back", "mask_path": ""}
            for k, dx in enumerate(CLASSES * 20)]
    (folder / "data/manifests").mkdir(parents=True, exist_ok=True)
    (folder / "data/audit").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(folder / "data/manifests/ham10000.csv", index=False)
    pd.DataFrame({"image_id": [r["image_id"] for r in rows], "group": [r["lesion_id"] for r in rows]}).to_csv(
        folder / "data/audit/groups.csv", index=False)
    write_params(folder, {"seed": seed, "split": {"seed": split_seed, "n_folds": 3, "test_size": 0.25},
                           "train": {"folds": [0, 1, 2]}})
    subprocess.run([sys.executable, str(REPO / "stages/split.py")], cwd=folder, check=True, capture_output=True,
                   timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    return pd.read_csv(folder / "data/splits/splits.csv")


def test_the_split_follows_split_seed_not_the_training_seed(tmp_path):
    """Replicates over `seed` keep one split (one internal test set), so their spread is the
    training's; `split.seed` redraws it."""
    base = _split_with(tmp_path / "a", seed=1, split_seed=42)
    other_training_seed = _split_with(tmp_path / "b", seed=2, split_seed=42)
    other_split_seed = _split_with(tmp_path / "c", seed=1, split_seed=7)
    pd.testing.assert_frame_equal(base, other_training_seed)
    assert (base["fold"] != other_split_seed["fold"]).sum() > 20
    assert (base["fold"] == TEST).sum() == (other_split_seed["fold"] == TEST).sum() == 35

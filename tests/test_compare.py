"""`python -m skinlesion.compare A B`: paired, lesion-level bootstrap intervals for B - A."""

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinlesion import bootstrap, calibration, compare, isic
from skinlesion.classes import CLASSES
from skinlesion.compare import CompareError, DifferentImagesError, SetPredictions, Side

from pipeline_clone import env


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def labelled_set(n_lesions: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image ids, truth and lesion ids: 1 to 3 images per lesion, every class present."""
    rng = np.random.default_rng(seed)
    per_lesion = rng.integers(1, 4, size=n_lesions)
    lesion = np.repeat(np.arange(n_lesions), per_lesion)
    y = (np.arange(n_lesions) % len(CLASSES))[lesion]
    image_ids = np.array([f"ISIC_{i:07d}" for i in range(len(lesion))])
    return image_ids, y, np.array([f"HAM_{k:07d}" for k in lesion])


def logits_for(y: np.ndarray, signal: float, seed: int) -> np.ndarray:
    """A model's logits: noise plus `signal` on the true class (higher signal, better model)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(len(y), len(CLASSES))) + signal * np.eye(len(CLASSES))[y]


def two_runs(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two trainings of one config: what they learnt in common (the same hard images), plus run-to-run
    noise of their own. Neither is better; at 95%, about 1 pair in 20 would still be flagged by chance."""
    shared = logits_for(y, 1.5, 1)
    return tuple(softmax(shared + 0.3 * np.random.default_rng(seed).normal(size=shared.shape)) for seed in (2, 102))


def side(rev: str, probs: np.ndarray, data=None, name: str = "internal") -> Side:
    image_ids, y, lesions = data if data is not None else labelled_set()
    return Side(rev, None, {name: SetPredictions(image_ids, y, probs, lesions)})


def run_main(argv, sides, capsys) -> tuple[int, str, str]:
    code = compare.main(argv, load=lambda rev, repo: sides[rev])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------------------------
# The paired bootstrap
# --------------------------------------------------------------------------------------------

def test_weighted_ece_is_calibrations_ece():
    _, y, _ = labelled_set()
    probs = softmax(logits_for(y, 1.5, 1))
    weights = np.random.default_rng(2).integers(0, 4, size=(3, len(y))).astype(float)
    weights[0] = 1.0
    got = bootstrap.weighted_ece(y, probs, weights)
    assert got[0] == pytest.approx(calibration.expected_calibration_error(probs, y), abs=1e-12)
    for w, value in zip(weights[1:], got[1:]):  # an integer weight is that many copies of the image
        rows = np.repeat(np.arange(len(y)), w.astype(int))
        assert value == pytest.approx(calibration.expected_calibration_error(probs[rows], y[rows]), abs=1e-12)


def test_pairing_cancels_what_both_models_share():
    # Two runs of one config: the same hard images, small run-to-run noise. Their difference is far
    # better known than either score, and an unpaired comparison would miss that.
    image_ids, y, lesions = labelled_set()
    run1, run2 = two_runs(y)
    paired = bootstrap.paired_difference_intervals(y, run1, run2, lesions, n_resamples=400, seed=0)
    alone = [bootstrap.confidence_intervals(y, probs, lesions, n_resamples=400, seed=0) for probs in (run1, run2)]
    for metric in ("balanced_accuracy", "macro_auc"):
        paired_width = paired[metric]["high"] - paired[metric]["low"]
        # resampling each side on its own: the difference's interval would be about this wide
        unpaired_width = np.hypot(*[ci[metric]["high"] - ci[metric]["low"] for ci in alone])
        assert 0 < paired_width < 0.7 * unpaired_width


def test_the_paired_bootstrap_resamples_lesions_not_images():
    image_ids, y, lesions = labelled_set(150)
    a, b = softmax(logits_for(y, 1.0, 1)), softmax(logits_for(y, 1.4, 2))
    once = bootstrap.paired_difference_intervals(y, a, b, lesions, n_resamples=300, seed=4)
    # Every image twice, under its lesion: the same evidence, so the same interval.
    rows = np.repeat(np.arange(len(y)), 2)
    twice = bootstrap.paired_difference_intervals(y[rows], a[rows], b[rows], lesions[rows], n_resamples=300, seed=4)
    for metric in compare.METRICS:
        assert twice[metric] == pytest.approx(once[metric], abs=1e-9)


# --------------------------------------------------------------------------------------------
# compare on two sides
# --------------------------------------------------------------------------------------------

def test_identical_predictions_differ_by_exactly_zero():
    _, y, _ = labelled_set()
    probs = softmax(logits_for(y, 1.5, 1))
    report = compare.compare(side("run1", probs), side("run2", probs.copy()), n_resamples=300)
    for m in report["sets"]["internal"]["metrics"].values():
        assert m["difference"] == 0.0
        assert m["ci95"] == {"low": 0.0, "high": 0.0}
        assert m["better"] == "none"


def test_two_runs_of_one_config_show_no_evidence_of_a_difference(capsys):
    _, y, _ = labelled_set()
    run1, run2 = two_runs(y)
    sides = {"run1": side("run1", run1), "run2": side("run2", run2)}
    code, out, err = run_main(["run1", "run2", "--resamples", "500"], sides, capsys)
    assert code == 0 and err == ""
    rows = [line for line in out.splitlines() if line.startswith("  ") and "[" in line]
    assert len(rows) == 3
    assert all(row.endswith("no evidence of a difference") for row in rows)
    report = compare.compare(side("run1", run1), side("run2", run2), n_resamples=500)
    for m in report["sets"]["internal"]["metrics"].values():
        assert m["difference"] != 0.0  # genuinely different predictions
        assert m["ci95"]["low"] < 0 < m["ci95"]["high"]


def test_a_clearly_better_b_gives_an_interval_above_zero(capsys):
    data = labelled_set()
    y = data[1]
    sides = {"weak": side("weak", softmax(logits_for(y, 0.8, 1)), data),
             "strong": side("strong", softmax(logits_for(y, 2.5, 2)), data)}
    code, out, _ = run_main(["weak", "strong", "--json", "--resamples", "500"], sides, capsys)
    assert code == 0
    report = json.loads(out)
    assert report["resamples"] == 500 and report["seed"] == compare.DEFAULT_SEED
    entry = report["sets"]["internal"]
    assert entry["n_images"] == len(y) and entry["n_lesions"] == 240
    for metric in ("balanced_accuracy", "macro_auc"):
        m = entry["metrics"][metric]
        assert m["ci95"]["low"] > 0.05
        assert m["ci95"]["low"] < m["difference"] < m["ci95"]["high"]
        assert m["better"] == "B"
    # the point scores are eval.json's
    assert entry["metrics"]["macro_auc"]["b"] == pytest.approx(
        compare.metrics.classification_report(y, sides["strong"].sets["internal"].probs)["macro_auc"])
    # the other way round, A is the better side
    _, out, _ = run_main(["strong", "weak", "--resamples", "100"], sides, capsys)
    assert "A is better (strong)" in out


def test_a_lower_ece_counts_as_better():
    # B: calibrated probabilities; A: the same argmax, overconfident. Lower ECE is the better side.
    image_ids, _, lesions = labelled_set()
    rng = np.random.default_rng(3)
    probs = softmax(1.2 * rng.normal(size=(len(image_ids), len(CLASSES))))
    y = np.array([rng.choice(len(CLASSES), p=p) for p in probs])  # drawn from the probabilities: calibrated
    overconfident = softmax(np.log(probs) / 0.4)
    data = image_ids, y, lesions
    report = compare.compare(side("a", overconfident, data), side("b", probs, data), n_resamples=300)
    ece = report["sets"]["internal"]["metrics"]["ece"]
    assert ece["difference"] < 0 and ece["ci95"]["high"] < 0
    assert ece["better"] == "B"
    assert report["sets"]["internal"]["metrics"]["balanced_accuracy"]["difference"] == 0.0  # same decisions


def test_row_order_does_not_matter():
    image_ids, y, lesions = labelled_set()
    a, b = softmax(logits_for(y, 1.0, 1)), softmax(logits_for(y, 1.3, 2))
    shuffle = np.random.default_rng(0).permutation(len(y))
    in_order = compare.compare(side("a", a), side("b", b), n_resamples=200)
    shuffled = compare.compare(side("a", a), side("b", b[shuffle], (image_ids[shuffle], y[shuffle], lesions[shuffle])),
                               n_resamples=200)
    assert shuffled["sets"] == in_order["sets"]


def test_predictions_on_different_images_are_refused(capsys):
    image_ids, y, lesions = labelled_set()
    probs = softmax(logits_for(y, 1.5, 1))
    keep = np.arange(len(y)) >= 5
    fewer = side("b", probs[keep], (image_ids[keep], y[keep], lesions[keep]))
    code, out, err = run_main(["a", "b"], {"a": side("a", probs), "b": fewer}, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: the internal predictions are for different images")
    assert "5 only at A" in err and "0 only at B" in err

    relabelled = y.copy()
    relabelled[[3, 7]] = (relabelled[[3, 7]] + 1) % len(CLASSES)
    with pytest.raises(DifferentImagesError, match="same images with different truth: 2 image"):
        compare.compare(side("a", probs), side("b", probs, (image_ids, relabelled, lesions)))


def test_a_set_on_different_images_is_skipped_when_another_can_be_paired():
    """Runs over `split.seed`: other internal test images (the split), the same external ones."""
    image_ids, y, lesions = labelled_set()
    probs = softmax(logits_for(y, 1.5, 1))
    keep = np.arange(len(y)) >= 5
    a, b = side("a", probs), side("b", probs[keep], (image_ids[keep], y[keep], lesions[keep]))
    a.sets["external"] = b.sets["external"] = SetPredictions(image_ids, y, probs, lesions)
    report = compare.compare(a, b, n_resamples=50)
    assert list(report["sets"]) == ["external"]
    assert report["skipped"]["internal"].startswith("for different images: the internal predictions are for "
                                                    "different images")
    assert "internal: not compared (predictions for different images" in compare.format_report(report)


def test_only_the_sets_on_both_sides_are_compared():
    data = labelled_set()
    probs = softmax(logits_for(data[1], 1.5, 1))
    a = side("a", probs)
    a.sets["external"] = a.sets["internal"]
    report = compare.compare(a, side("b", probs), n_resamples=50)
    assert list(report["sets"]) == ["internal"] and report["skipped"] == {"external": "only at A"}
    assert "external: not compared (predictions only at A)" in compare.format_report(report)
    with pytest.raises(CompareError, match="no set to compare"):
        compare.compare(a, side("b", probs, name="elsewhere"))


def parts_file(image_ids: np.ndarray, lesions: np.ndarray, seen_lesions: set) -> io.StringIO:
    """data/splits/test_parts.csv as the split stage writes it."""
    part = ["seen" if lesion in seen_lesions else "unseen" for lesion in lesions]
    table = pd.DataFrame({"image_id": image_ids, "lesion_id": lesions, "part": part})
    return io.StringIO(table.to_csv(index=False))


def test_the_seen_and_unseen_parts_are_compared_pair_by_pair():
    image_ids, y, lesions = labelled_set(120, 0)
    seen = set(lesions[::3])  # every third image's lesion also has a view in the official train set
    a_probs, b_probs = softmax(logits_for(y, 0.8, 1)), softmax(logits_for(y, 2.5, 2))
    sides = []
    for rev, probs in (("a", a_probs), ("b", b_probs)):
        s = side(rev, probs, (image_ids, y, lesions))
        s.sets.update(compare._test_parts(s.sets["internal"], parts_file(image_ids, lesions, seen), rev))
        sides.append(s)
    report = compare.compare(*sides, n_resamples=200)
    is_seen = np.isin(lesions, list(seen))
    assert list(report["sets"]) == ["internal", "internal.seen", "internal.unseen"]
    assert report["sets"]["internal.seen"]["n_images"] == is_seen.sum()
    assert report["sets"]["internal.unseen"]["n_images"] == (~is_seen).sum()
    assert report["sets"]["internal.seen"]["n_lesions"] == len(seen)
    # Each part is scored on its own images: its point scores are those of the subset.
    expected = compare.point_scores(y[is_seen], b_probs[is_seen])["balanced_accuracy"]
    assert report["sets"]["internal.seen"]["metrics"]["balanced_accuracy"]["b"] == pytest.approx(expected)
    assert "internal.seen: " in compare.format_report(report)


def test_a_parts_table_that_misses_a_test_image_is_one_message():
    image_ids, y, lesions = labelled_set(30, 0)
    internal = SetPredictions(image_ids, y, softmax(logits_for(y, 1.0, 1)), lesions)
    with pytest.raises(CompareError, match=r"does not name the part of 1 internal test image"):
        compare._test_parts(internal, parts_file(image_ids[1:], lesions[1:], set()), "a (1234567)")
    broken = io.StringIO("image_id,lesion_id,part\nISIC_0000000,HAM_0000000,maybe\n")
    with pytest.raises(CompareError, match=r"at a \(1234567\): .*not the split stage's table of test parts"):
        compare._test_parts(internal, broken, "a (1234567)")


# --------------------------------------------------------------------------------------------
# Through real DVC revisions: a commit and an experiment
# --------------------------------------------------------------------------------------------

STAGE = """import shutil, yaml
variant = yaml.safe_load(open("params.yaml"))["variant"]
for out in ("predictions", "splits", "audit"):
    shutil.copytree(f"staging/{variant}/{out}", f"data/{out}")
"""

DVC_YAML = """stages:
  evaluate:
    cmd: python make_outputs.py
    deps: [make_outputs.py, staging]
    params: [variant]
    outs: [data/predictions, data/splits, data/audit]
"""


def write_variant(folder: Path, signal: float, seed: int) -> None:
    """What the pipeline leaves behind for one model: the ISIC-format files and the lesion tables."""
    for set_name, n_lesions, data_seed, lesion_table in (("internal", 120, 0, "splits/splits.csv"),
                                                         ("external", 60, 1, "audit/external.csv")):
        image_ids, y, lesions = labelled_set(n_lesions, data_seed)
        if set_name == "external":  # file stems: they may look like numbers, and must stay text
            image_ids = np.array([f"{i:07d}" for i in range(len(image_ids))])
        frame = pd.DataFrame({"image_id": image_ids, "lesion_id": lesions, "dx": [CLASSES[k] for k in y]})
        predictions, truth = isic.tables(frame, softmax(logits_for(y, signal, seed + data_seed)))
        (folder / "predictions").mkdir(parents=True, exist_ok=True)
        predictions.to_csv(folder / "predictions" / f"{set_name}.csv", index=False)
        truth.to_csv(folder / "predictions" / f"{set_name}_truth.csv", index=False)
        (folder / lesion_table).parent.mkdir(parents=True, exist_ok=True)
        frame.assign(fold=-1).to_csv(folder / lesion_table, index=False)


def sh(cwd: Path, *cmd: str) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory) -> Path:
    """A git+DVC repository: tag `unevaluated` (the pipeline never ran), then commit `baseline` (a weak
    model), and experiment `stronger` on top of it."""
    repo = tmp_path_factory.mktemp("compare_repo")
    write_variant(repo / "staging" / "weak", 0.8, 10)
    write_variant(repo / "staging" / "strong", 2.5, 20)
    (repo / "make_outputs.py").write_text(STAGE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text("variant: weak\n")
    sh(repo, "git", "init", "-q")
    sh(repo, sys.executable, "-m", "dvc", "init", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "the pipeline, not run yet")
    sh(repo, "git", "tag", "unevaluated")
    sh(repo, sys.executable, "-m", "dvc", "repro", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "baseline")
    sh(repo, "git", "tag", "baseline")
    sh(repo, sys.executable, "-m", "dvc", "exp", "run", "-q", "-S", "variant=strong", "-n", "stronger")
    return repo


@pytest.mark.slow
def test_load_side_reads_a_revision_through_dvc(dvc_repo):
    loaded = compare.load_side("baseline", dvc_repo)
    assert len(loaded.commit) == 40 and sorted(loaded.sets) == ["external", "internal"]
    internal = loaded.sets["internal"]
    image_ids, y, lesions = labelled_set(120, 0)
    assert list(internal.image_ids) == list(image_ids)
    assert loaded.sets["external"].image_ids[:2].tolist() == ["0000000", "0000001"]
    assert (internal.y_true == y).all() and (internal.lesion_ids == lesions).all()
    probs = softmax(logits_for(y, 0.8, 10))
    assert internal.probs == pytest.approx(probs, abs=5e-7)  # the file holds 6 decimals


@pytest.mark.slow
def test_compare_a_commit_with_an_experiment(dvc_repo, capsys):
    code = compare.main(["baseline", "stronger", "--repo", str(dvc_repo), "--json", "--resamples", "300"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["a"]["rev"] == "baseline" and len(report["b"]["commit"]) == 40
    for set_name in ("internal", "external"):
        bal_acc = report["sets"][set_name]["metrics"]["balanced_accuracy"]
        assert bal_acc["ci95"]["low"] > 0 and bal_acc["better"] == "B"

    code = compare.main(["baseline", "HEAD", "--repo", str(dvc_repo)])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("A = baseline (commit ") and "B = HEAD (commit " in out
    assert out.count("no evidence of a difference") == 6 and out.count("+0.0000") == 18


@pytest.mark.slow
def test_revisions_that_cannot_be_read_are_named_with_the_fix(dvc_repo, capsys):
    assert compare.main(["baseline", "no-such-experiment", "--repo", str(dvc_repo)]) == 2
    assert "cannot resolve revision 'no-such-experiment'" in capsys.readouterr().err
    assert compare.main(["unevaluated", "baseline", "--repo", str(dvc_repo)]) == 2
    assert "no predictions (data/predictions/<set>.csv with <set>_truth.csv) at unevaluated" in capsys.readouterr().err

    cache = dvc_repo / ".dvc" / "cache"
    shutil.move(cache, dvc_repo / "cache-elsewhere")
    try:
        assert compare.main(["baseline", "stronger", "--repo", str(dvc_repo)]) == 2
    finally:
        shutil.move(dvc_repo / "cache-elsewhere", cache)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "run `dvc pull`" in err


@pytest.mark.slow
def test_a_revision_whose_directory_listing_is_not_in_the_cache_is_named_with_the_fix(dvc_repo, tmp_path, capsys):
    # A fresh clone that has another run's outputs in its cache, but not the committed run's: DVC
    # then fails on the missing `.dir` object of data/predictions, not on a missing file. A copy at
    # a new path, because DVC remembers listings it has read per repository path.
    clone = tmp_path / "clone"
    shutil.copytree(dvc_repo, clone, symlinks=True)
    listings = sorted((clone / ".dvc" / "cache").rglob("*.dir"))
    assert listings
    for listing in listings:
        listing.unlink()
    assert compare.main(["baseline", "stronger", "--repo", str(clone)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read the predictions or lesion ids at ")
    assert err.count("\n") == 1 and "run `dvc pull` or `dvc repro` at that revision" in err

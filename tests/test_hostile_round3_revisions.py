"""Hostile revisions for compare, spread and repro (one resolver, skinlesion.revisions), hostile
numbers on their command lines, and duplicate keys in params.yaml."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from committed_params import REPO
from pipeline_clone import env

from skinlesion import compare, isic, repro, revisions, spread
from skinlesion.classes import CLASSES
from skinlesion.errors import RevisionError
from skinlesion.params import ParamsError, _BoundedLoader, load_params

PROG = "python -m skinlesion.compare"
GIVE = "give a commit, branch, tag or experiment name (`dvc exp list` shows the experiments)"
EVAL = {"internal": {"balanced_accuracy": 0.90, "macro_auc": 0.99},
        "external": {"balanced_accuracy": 0.70, "macro_auc": 0.95}}
LOCK = {"schema": "2.0", "stages": {"download": {"cmd": "python stages/download.py", "outs": [
    {"path": "data/manifests", "hash": "md5", "md5": "aaa.dir"}]}}}


def with_internal_balanced_accuracy(value: float) -> dict:
    return {**EVAL, "internal": {**EVAL["internal"], "balanced_accuracy": value}}


def sh(cwd: Path, *cmd: str) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout.strip()


def write_predictions(repo: Path, n_lesions: int = 40) -> None:
    """One evaluated set as the evaluate stage leaves it: ISIC-format predictions and truth, and the
    lesion table. Committed to git here, which DVC reads like a tracked output."""
    rng = np.random.default_rng(0)
    lesion = np.repeat(np.arange(n_lesions), 2)
    y = (np.arange(n_lesions) % len(CLASSES))[lesion]
    frame = pd.DataFrame({"image_id": [f"ISIC_{i:07d}" for i in range(len(lesion))],
                          "lesion_id": [f"HAM_{k:07d}" for k in lesion], "dx": [CLASSES[k] for k in y]})
    logits = rng.normal(size=(len(y), len(CLASSES))) + 2 * np.eye(len(CLASSES))[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predictions, truth = isic.tables(frame, probs)
    (repo / "data/predictions").mkdir(parents=True)
    predictions.to_csv(repo / "data/predictions/internal.csv", index=False)
    truth.to_csv(repo / "data/predictions/internal_truth.csv", index=False)
    (repo / "data/splits").mkdir(parents=True)
    frame.assign(fold=-1).to_csv(repo / "data/splits/splits.csv", index=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A git+DVC repository of two committed runs, tags `run0` and `run1` (HEAD): predictions,
    params.yaml, dvc.lock and metrics/eval.json."""
    repo = tmp_path_factory.mktemp("runs")
    sh(repo, "git", "init", "-q")
    sh(repo, sys.executable, "-m", "dvc", "init", "-q")
    write_predictions(repo)
    (repo / "params.yaml").write_text("seed: 0\n")
    (repo / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    (repo / "metrics").mkdir()
    for i, internal in enumerate((0.90, 0.94)):
        (repo / "metrics/eval.json").write_text(json.dumps(with_internal_balanced_accuracy(internal)))
        sh(repo, "git", "add", "-A")
        sh(repo, "git", "commit", "-q", "-m", f"run {i}")
        sh(repo, "git", "tag", f"run{i}")
    return repo


def one_error_line(err: str) -> str:
    """The one line a refused command prints: no traceback, nothing else."""
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: "), err
    return err


# --------------------------------------------------------------------------------------------
# Finding 6: revisions that are not commits, empty revisions, one commit given twice, numbers
# --------------------------------------------------------------------------------------------

def test_compare_refuses_a_blob_revision(runs, capsys):
    assert compare.main(["HEAD:params.yaml", "HEAD", "--repo", str(runs)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert one_error_line(err) == (
        "error: revision 'HEAD:params.yaml' names a file or folder, not a commit (it names a file's content); "
        f"{GIVE}\n")


def test_spread_refuses_a_tree_revision(runs, capsys):
    assert spread.main(["--repo", str(runs), "run0", "HEAD^{tree}"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert one_error_line(err) == (
        f"error: revision 'HEAD^{{tree}}' names a file or folder, not a commit (it names a folder); "
        f"{GIVE}\n")


def test_repro_refuses_a_blob_revision(runs, capsys):
    assert repro.main(["--repo", str(runs), "--against", "HEAD:dvc.lock"]) == 2
    assert "revision 'HEAD:dvc.lock' names a file or folder, not a commit" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("rev", ["", " ", "\t"])
def test_empty_revision_is_one_message(runs, capsys, rev):
    # git reads "" as HEAD: `compare A ''` compared A with the checkout, and `spread '' HEAD` counted
    # HEAD twice.
    expected = f"error: a revision is empty; {GIVE}\n"
    assert compare.main(["run0", rev, "--repo", str(runs)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and one_error_line(err) == expected
    assert spread.main(["--repo", str(runs), rev, "HEAD"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and one_error_line(err) == expected
    assert repro.main(["--repo", str(runs), "--against", rev]) == 2
    assert one_error_line(capsys.readouterr().err) == f"error: --against is empty; {GIVE}\n"
    with pytest.raises(RevisionError, match=r"^--rev is empty; give a commit"):  # what the app's --rev gets
        revisions.resolve(rev, runs, argument="--rev")


def test_spread_counts_one_commit_once(runs, capsys):
    head = sh(runs, "git", "rev-parse", "HEAD")
    assert spread.main(["--repo", str(runs), "--json", "run1", "HEAD~0", "run0", head[:9], "run0"]) == 0
    out, err = capsys.readouterr()
    table = json.loads(out)
    row = table["internal.balanced_accuracy"]
    assert row["values"] == {"run1": 0.94, "run0": 0.90}  # two runs, not five
    assert row["sd"] == pytest.approx(np.std([0.94, 0.90], ddof=1))
    assert err.splitlines() == [f"note: 'HEAD~0' is the same commit as 'run1' ({head[:7]}): counted once",
                                f"note: {head[:9]!r} is the same commit as 'run1' ({head[:7]}): counted once",
                                f"note: 'run0' is given twice ({sh(runs, 'git', 'rev-parse', 'run0')[:7]}): "
                                "counted once"]
    assert spread.main(["--repo", str(runs), "run1", "HEAD~0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 run(s): run1\n") and "0.940 ± n/a (sd)" in out


def test_spread_resolves_every_revision_before_reading_any(runs, capsys, monkeypatch):
    read = []
    monkeypatch.setattr(spread, "read_metrics", lambda rev, repo, commit=None: read.append(rev) or EVAL)
    assert spread.main(["--repo", str(runs), "run0", "run1", "no-such-run"]) == 2
    assert read == [] and "cannot resolve revision 'no-such-run'" in one_error_line(capsys.readouterr().err)


def test_compare_of_one_commit_with_itself_says_so(runs, capsys):
    # Allowed: the null comparison (every difference exactly 0) is a check of the tool itself. But
    # said, since it is also what `compare main HEAD` gives after a run that was never committed.
    assert compare.main(["run1", "HEAD~0", "--repo", str(runs), "--resamples", "50"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("A = run1 (commit ") and lines[1].startswith("B = HEAD~0 (commit ")
    assert lines[2].startswith("note: A and B are one commit (") and "never the workspace" in lines[2]
    assert sum(line.endswith("no evidence of a difference") and "+0.0000" in line for line in lines) == 3
    assert compare.main(["run0", "run1", "--repo", str(runs), "--resamples", "50", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["note"] is None


SEEDS = "give an integer from 0 to 4,294,967,295 (numpy's seeds are 32-bit)"
RESAMPLES = "give an integer from 1 to 100,000"


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], f"argument --seed: -1 is out of range; {SEEDS}"),
    (["--seed", str(2**32)], f"argument --seed: 4294967296 is out of range; {SEEDS}"),
    (["--seed", "1.5"], f"argument --seed: '1.5' is not an integer; {SEEDS}"),
    (["--resamples", "0"], f"argument --resamples: 0 is out of range; {RESAMPLES}"),
    (["--resamples", str(10**12)], f"argument --resamples: 1000000000000 is out of range; {RESAMPLES}"),
    (["--resamples", "many"], f"argument --resamples: 'many' is not an integer; {RESAMPLES}"),
])
def test_compare_seed_is_validated(capsys, argv, message):
    def never(rev, repo):
        raise AssertionError("a bad number must stop compare before it reads anything")
    with pytest.raises(SystemExit) as e:
        compare.main(["A", "A", *argv], load=never)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if "error:" in line] == [f"{PROG}: error: {message}"]


@pytest.mark.slow  # a fresh interpreter importing numpy and pandas: a few seconds
def test_compare_seed_is_validated_from_the_shell(tmp_path):
    # The reported command, as a user runs it: argparse's usage line and one error, exit 2.
    result = subprocess.run([sys.executable, "-m", "skinlesion.compare", "A", "A", "--seed", "-1"], cwd=tmp_path,
                            env={**env(), "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"{PROG}: error: argument --seed: -1 is out of range; {SEEDS}"


def test_repro_reads_experiments_through_the_one_resolver(runs, capsys):
    # `git show` knew no experiment names; the resolver does (a DVC experiment is a ref under
    # refs/exps/ named after its baseline commit).
    head = sh(runs, "git", "rev-parse", "HEAD")
    run0 = sh(runs, "git", "rev-parse", "run0")
    sh(runs, "git", "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/older-run", run0)
    (runs / "metrics/eval.json").write_text(json.dumps(with_internal_balanced_accuracy(0.90)))
    try:
        assert repro.main(["--repo", str(runs), "--against", "older-run"]) == 0
        assert "5/5 hold" in capsys.readouterr().out
        assert revisions.resolve("older-run", runs) == run0
    finally:
        sh(runs, "git", "update-ref", "-d", f"refs/exps/{head[:2]}/{head[2:]}/older-run")
        sh(runs, "git", "checkout", "-q", "--", "metrics/eval.json")


def test_a_revision_that_does_not_resolve_is_one_message(runs, tmp_path, capsys):
    assert repro.main(["--repo", str(runs), "--against", "no-such-rev"]) == 2
    assert one_error_line(capsys.readouterr().err).startswith("error: cannot resolve revision 'no-such-rev' (")
    with pytest.raises(RevisionError, match=r"^cannot resolve revision 'HEAD' \(.* is not a git repository\); give"):
        revisions.resolve("HEAD", tmp_path)


# --------------------------------------------------------------------------------------------
# Finding 8: duplicate keys in params.yaml
# --------------------------------------------------------------------------------------------

def _committed_with(tmp_path: Path, old: str, new: str) -> tuple[Path, list[str]]:
    text = (REPO / "params.yaml").read_text()
    assert text.count(old) == 1
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(old, new))
    return path, path.read_text().splitlines()


def test_duplicate_key_in_params_is_refused(tmp_path):
    path, lines = _committed_with(tmp_path, "\n  epochs: 8\n", "\n  epochs: 8\n  epochs: 800\n")
    first = lines.index("  epochs: 8") + 1
    with pytest.raises(ParamsError) as e:
        load_params(path)
    assert str(e.value) == (f"{path}: train.epochs is set twice, on lines {first} and {first + 1}; keep one (DVC "
                            "refuses such a file, and a stage run on its own would take the last)")


@pytest.mark.parametrize("old, new, key", [
    ("seed: 42\n", "seed: 42\nseed: 7\n", "seed"),  # the top level
    ("seed: 42\n", "seed: 42\n'seed': 42\n", "seed"),  # quoted, and the same value: still two keys
    ("    hflip: 0.5\n", "    hflip: 0.5\n    \"hflip\": 0.5\n", "train.augment.hflip"),  # nested deeper
])
def test_duplicate_keys_are_refused_at_any_depth(tmp_path, old, new, key):
    path, _ = _committed_with(tmp_path, old, new)
    where = re.escape(str(path))
    with pytest.raises(ParamsError, match=rf"^{where}: {key} is set twice, on lines \d+ and \d+; keep one"):
        load_params(path)


# The loader itself below, as the schema has no such keys.

def test_a_merge_key_may_still_be_overridden():
    # YAML's merge key (<<) exists to be overridden: that is not a duplicate.
    text = "a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  x: 3\n"
    assert yaml.load(text, Loader=_BoundedLoader) == {"a": {"x": 1, "y": 2}, "b": {"x": 3, "y": 2}}


def test_duplicate_keys_are_refused_in_flow_style_and_as_equal_values():
    with pytest.raises(ParamsError, match=r"^a\.x is set twice, on lines 1 and 1"):
        yaml.load("a: {x: 1, x: 2}\n", Loader=_BoundedLoader)
    with pytest.raises(ParamsError, match=r"^\[0\]\.1 is set twice, on lines 1 and 2"):
        yaml.load("- 1: a\n  0x1: b\n", Loader=_BoundedLoader)  # one int key, as PyYAML's dict would hold it

"""skinlesion.repro: the check CI runs after a fresh-clone `dvc repro` of the demo."""

from __future__ import annotations

import json
import re
import subprocess

import yaml

from skinlesion import repro

LOCK = {"schema": "2.0", "stages": {"download": {"cmd": "python stages/download.py", "outs": [
    {"path": "data/manifests", "hash": "md5", "md5": "aaa.dir"},
    {"path": "data/raw/ham10000", "hash": "md5", "md5": "bbb.dir"}]}}}
EVAL = {"internal": {"balanced_accuracy": 0.90, "macro_auc": 0.99},
        "external": {"balanced_accuracy": 0.70, "macro_auc": 0.95}}


def _repo(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    (tmp_path / "metrics/eval.json").write_text(json.dumps(EVAL))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "demo"]):
        subprocess.run(cmd, cwd=tmp_path, check=True)
    return tmp_path


def test_an_identical_run_holds(tmp_path, capsys):
    repo = _repo(tmp_path)
    assert repro.main(["--repo", str(repo)]) == 0
    assert "6/6 hold" in capsys.readouterr().out


def test_a_metric_within_tolerance_holds_and_one_beyond_fails(tmp_path, capsys):
    repo = _repo(tmp_path)
    tolerance = repro.TOLERANCES[("metrics/eval.json", "external.balanced_accuracy")]
    moved = json.loads(json.dumps(EVAL))
    moved["external"]["balanced_accuracy"] = 0.70 + 0.9 * tolerance
    (repo / "metrics/eval.json").write_text(json.dumps(moved))
    assert repro.main(["--repo", str(repo)]) == 0
    moved["external"]["balanced_accuracy"] = 0.70 - 1.1 * tolerance
    (repo / "metrics/eval.json").write_text(json.dumps(moved))
    assert repro.main(["--repo", str(repo)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"FAIL  metrics/eval.json: external.balanced_accuracy +expected 0.7 ", out)


def test_other_demo_data_bytes_fail_whatever_the_metrics(tmp_path, capsys):
    repo = _repo(tmp_path)
    lock = json.loads(json.dumps(LOCK))
    lock["stages"]["download"]["outs"][1]["md5"] = "ccc.dir"
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert repro.main(["--repo", str(repo)]) == 1
    assert re.search(r"FAIL  download: data/raw/ham10000 +expected bbb.dir  got ccc.dir", capsys.readouterr().out)


def test_unknown_revision_is_one_message(tmp_path, capsys):
    repo = _repo(tmp_path)
    assert repro.main(["--repo", str(repo), "--against", "no-such-rev"]) == 2
    assert "cannot resolve revision 'no-such-rev'" in capsys.readouterr().err

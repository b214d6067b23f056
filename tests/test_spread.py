"""skinlesion.spread: mean ± sd of the headline metrics over replicate runs."""

from __future__ import annotations

import json
import subprocess

import pytest

from skinlesion import spread

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def _commit(repo, internal: float, external: float, tag: str) -> None:
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "metrics/eval.json").write_text(json.dumps(
        {"internal": {"balanced_accuracy": internal}, "external": {"balanced_accuracy": external}}))
    subprocess.run(GIT + ["add", "-A"], cwd=repo, check=True)
    subprocess.run(GIT + ["commit", "-q", "-m", tag], cwd=repo, check=True)
    subprocess.run(GIT + ["tag", tag], cwd=repo, check=True)


@pytest.fixture
def repo(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    for i, (a, b) in enumerate([(0.90, 0.70), (0.92, 0.74), (0.94, 0.72)]):
        _commit(tmp_path, a, b, f"seed{i}")
    return tmp_path


def test_mean_and_sample_sd_over_revisions(repo, capsys):
    assert spread.main(["--repo", str(repo), "--json", "seed0", "seed1", "seed2"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["internal.balanced_accuracy"]["mean"] == pytest.approx(0.92)
    assert table["internal.balanced_accuracy"]["sd"] == pytest.approx(0.02)
    assert table["external.balanced_accuracy"]["range"] == pytest.approx([0.70, 0.74])
    assert "internal.macro_auc" not in table  # absent from every run: not reported as 0


def test_one_run_has_no_sd(repo, capsys):
    assert spread.main(["--repo", str(repo), "seed1"]) == 0
    assert "0.920 ± n/a" in capsys.readouterr().out


def test_unknown_revision_is_one_message(repo, capsys):
    assert spread.main(["--repo", str(repo), "seed0", "nope"]) == 2
    assert "cannot resolve revision 'nope'" in capsys.readouterr().err

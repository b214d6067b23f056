"""A temporary clone of this repository on a tiny config, for the tests that run DVC end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "data": {"demo_lesions": 70, "demo_external_images": 28, "img_size": 32},
    "split": {"n_folds": 3, "test_size": 0.2},
    "train": {"folds": [0, 1], "epochs": 1, "batch_size": 16},
    "evaluate": {"batch_size": 32},
    "gradcam": {"examples_per_kind": 1},
}


def env() -> dict[str, str]:
    """The test's Python first on PATH (stages run `python`), no analytics, a git identity."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def make_clone(dest: Path, overrides: dict | None = None) -> Path:
    """The working tree's tracked and new files (not its outputs) in a fresh git repository at
    `dest`, with params.yaml set to the tiny config plus `overrides` ({section: {key: value}})."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if name == "dvc.lock" or name.startswith(("metrics/", "plots/")) or not (REPO / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for overlay in (TINY, overrides or {}):
        for section, values in overlay.items():
            params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "tiny"], dest)
    return dest

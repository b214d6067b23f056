"""A checkpoint is valid only for the run that wrote it: same code, params and data."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from committed_params import REPO

from skinlesion import checkpoint
from skinlesion.params import load_params


def images(ids, pixel_value=0):
    return SimpleNamespace(frame=pd.DataFrame({"image_id": ids}), labels=np.zeros(len(ids), dtype=np.int64),
                           images=[np.full((4, 4, 3), pixel_value, np.uint8) for _ in ids])


@pytest.fixture
def params():
    return load_params(REPO / "params.yaml")


def test_the_same_run_has_the_same_fingerprint(params):
    a = checkpoint.fingerprint(params, 0, images(["a", "b"]), images(["c"]))
    assert a == checkpoint.fingerprint(params, 0, images(["a", "b"]), images(["c"]))


def test_other_code_params_or_pixels_change_it(params, monkeypatch):
    base = checkpoint.fingerprint(params, 0, images(["a", "b"]), images(["c"]))
    assert checkpoint.fingerprint(params, 1, images(["a", "b"]), images(["c"])) != base
    assert checkpoint.fingerprint(params, 0, images(["a", "b"], pixel_value=1), images(["c"])) != base
    assert checkpoint.fingerprint(params, 0, images(["a", "b"]), images(["c"]), world_size=2) != base
    monkeypatch.setattr(checkpoint, "code_version", lambda: "edited training code")
    assert checkpoint.fingerprint(params, 0, images(["a", "b"]), images(["c"])) != base


def test_code_version_covers_the_package_source(tmp_path, monkeypatch):
    before = checkpoint.code_version()
    fake_module = tmp_path / "checkpoint.py"
    fake_module.write_text("# an edited package\n")
    monkeypatch.setattr(checkpoint, "__file__", str(fake_module))
    assert checkpoint.code_version() != before


def test_code_version_covers_subpackages(tmp_path, monkeypatch):
    (tmp_path / "serve").mkdir()
    (tmp_path / "checkpoint.py").write_text("# the package\n")
    (tmp_path / "serve" / "app.py").write_text("# a subpackage module\n")
    monkeypatch.setattr(checkpoint, "__file__", str(tmp_path / "checkpoint.py"))
    before = checkpoint.code_version()
    (tmp_path / "serve" / "app.py").write_text("# an edited subpackage module\n")
    assert checkpoint.code_version() != before

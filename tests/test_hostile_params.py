"""Hostile params files end in one ParamsError naming the problem, never in a traceback from numpy,
scikit-learn, OpenCV or the YAML reader, and never in a NaN model."""

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from committed_params import REPO, committed_raw, write_params
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skinlesion.classes import CLASSES
from skinlesion.manifest import COLUMNS
from skinlesion.params import ParamsError, as_dict, load_params


def refused(tmp_path, overrides: dict) -> str:
    with pytest.raises(ParamsError) as e:
        load_params(write_params(tmp_path, overrides))
    return str(e.value)


def test_nan_focal_alpha_is_refused(tmp_path):
    # min([nan, ...]) < 0 is False: the old check let NaN through to a NaN loss and NaN weights.
    message = refused(tmp_path, {"train": {"focal_alpha": [float("nan"), *[1.0] * 6]}})
    assert message.startswith("train.focal_alpha[0] is nan; it must be a finite number")


@pytest.mark.parametrize("key, value", [("lr", float("inf")), ("lr", "1e400"), ("focal_gamma", float("nan")),
                                        ("warmup_epochs", float("-inf"))])
def test_every_float_must_be_finite(tmp_path, key, value):
    assert refused(tmp_path, {"train": {key: value}}).startswith(f"train.{key} is ")


@pytest.mark.parametrize("seed", [-1, 2**32, 10**26])
def test_seed_out_of_range(tmp_path, seed):
    # numpy seeds are 32-bit unsigned: these used to fail in np.random.seed with a traceback.
    assert refused(tmp_path, {"seed": seed}) == f"seed is {seed}; it must lie in [0, 4294967295]"
    assert load_params(write_params(tmp_path, {"seed": 2**32 - 1})).seed == 2**32 - 1


def test_img_size_upper_bound(tmp_path):
    # 100000 px made OpenCV try to allocate 40 GB per image.
    assert refused(tmp_path, {"data": {"img_size": 100_000}}) == "data.img_size is 100000; it must lie in [28, 1024]"


def test_n_folds_upper_bound(tmp_path):
    assert refused(tmp_path, {"split": {"n_folds": 1000}}) == "split.n_folds is 1000; it must lie in [2, 20]"


def test_yaml_alias_bomb(tmp_path):
    # Nine levels of nine aliases: 387 million values once expanded, from a 400-byte file. Quoting
    # the expanded value in an error message used to exhaust memory.
    levels = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text().replace("seed: 42", f"seed: [{', '.join(levels)}]"))
    with pytest.raises(ParamsError, match=r"more than 10,000 values once its YAML aliases \(\*name\) are expanded"):
        load_params(path)


def test_a_few_aliases_are_fine(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("  hflip: 0.5", "  hflip: &half 0.5").replace(
        "  vflip: 0.5", "  vflip: *half")
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert load_params(path).train.augment.vflip == 0.5


def test_params_not_utf8(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes((REPO / "params.yaml").read_text().replace("efficientnet_b3", "efficientnet_b3 # é")
                     .encode("latin-1"))
    with pytest.raises(ParamsError, match=r"params\.yaml is not UTF-8 text \(byte \d+: b'\\xe9'\); save it as UTF-8"):
        load_params(path)


def test_params_nested_too_deep(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text().replace("seed: 42", "seed: " + "[" * 5000 + "]" * 5000))
    with pytest.raises(ParamsError, match="nested more than 20 levels deep"):
        load_params(path)


@pytest.mark.parametrize("text, fragment", [
    ("seed: " + "9" * 5000, "holds a value that cannot be read"),  # Python's int() refuses > 4,300 digits
    ("seed: &loop [*loop]", "the alias *loop refers to a value that contains it"),
    ("seed: !!python/object:os.system x", "is not valid YAML"),
    ("", "is empty"),
])
def test_other_unreadable_params_files(tmp_path, text, fragment):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=fragment.replace("*", r"\*")):
        load_params(path)


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ParamsError, match="2,097,152 bytes; a params file is a few KB"):
        load_params(path)


def test_messages_quote_at_most_80_characters_of_a_value(tmp_path):
    message = refused(tmp_path, {"train": {"lr": {"k" * 1000: ["v" * 1000] * 50}}})
    assert message.startswith("train.lr must be float, got {") and len(message) < 130


# Property: whatever is put wherever, load_params answers with Params or ParamsError, never anything
# else. 300 examples at about 5 ms of CPU each: under 2 s on an idle core.

def _sections(raw: dict, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix]
    for key, value in raw.items():
        if isinstance(value, dict):
            paths += _sections(value, (*prefix, key))
    return paths


def _nested(raw, path):
    for key in path:
        raw = raw[key]
    return raw


KEYS = [(*prefix, key) for prefix in _sections(committed_raw()) for key in _nested(committed_raw(), prefix)]
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**30), max_value=10**30)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
           | st.sampled_from(["3e-4", "1e400", "nan", ".inf", "cuda:0", "demo", "flips", "0x10", "yes", "~"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=8) | st.dictionaries(
    st.text(max_size=8) | st.integers() | st.booleans(), inner, max_size=5), max_leaves=20)


@st.composite
def hostile(draw) -> dict:
    raw = committed_raw()
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(KEYS))
        parent = raw
        for key in path[:-1]:  # an earlier change may have replaced or removed a section
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        if draw(st.integers(0, 5)) == 0:
            parent.pop(path[-1], None)  # a missing key
        elif draw(st.booleans()):
            parent[path[-1]] = draw(VALUES)  # any value, of any type, at an existing key
        else:
            parent[draw(st.text(max_size=10) | st.integers())] = draw(VALUES)  # an extra key
    return raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=hostile())
def test_any_value_at_any_key_gives_params_or_params_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "params.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    try:
        params = load_params(path)
    except ParamsError as e:
        assert 0 < len(str(e)) < 600  # one readable message, not a dump
        return
    # Accepted: then every float in it is finite.
    floats = [v for section in as_dict(params).values() if isinstance(section, dict)
              for v in _flat(section) if isinstance(v, float)]
    assert all(math.isfinite(v) for v in floats)


def _flat(d: dict):
    for v in d.values():
        if isinstance(v, dict):
            yield from _flat(v)
        elif isinstance(v, tuple):
            yield from v
        else:
            yield v


@settings(max_examples=100, deadline=None)  # 100 examples: well under a second
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_give_params_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("bytes") / "params.yaml"
    path.write_bytes(data)
    with pytest.raises(ParamsError):
        load_params(path)


def _line_of(lines: list[str], path: tuple) -> int:
    """The index of the line that sets `path` in safe_dump's block style (two spaces a level)."""
    at = -1
    for depth, key in enumerate(path):
        at = next(i for i in range(at + 1, len(lines)) if lines[i].startswith(f"{'  ' * depth}{key}:"))
    return at


@settings(max_examples=50, deadline=None)
@given(path=st.sampled_from(KEYS), value=st.integers() | st.booleans() | st.text(max_size=10))
def test_any_key_set_twice_is_refused_with_both_lines(tmp_path_factory, path, value):
    # The second setting goes before the first: the original value may be a whole section.
    lines = yaml.safe_dump(committed_raw(), sort_keys=False).splitlines()
    at = _line_of(lines, path)
    lines.insert(at, f"{'  ' * (len(path) - 1)}{path[-1]}: {json.dumps(value)}")
    file = tmp_path_factory.mktemp("twice") / "params.yaml"
    file.write_text("\n".join(lines) + "\n")
    with pytest.raises(ParamsError) as e:
        load_params(file)
    assert str(e.value).startswith(f"{file}: {'.'.join(path)} is set twice, on lines {at + 1} and {at + 2}; ")


# The split stage knows how many lesions there are; the schema does not.

def test_n_folds_above_lesions(tmp_path):
    # 7 lesions of each class, one image each: 20 folds cannot be drawn from about 5 lesions per
    # class outside the test set. scikit-learn used to fail with a ValueError traceback.
    rows = [{"image_id": f"ISIC_{k:07d}", "path": f"img/{k}.jpg", "lesion_id": f"HAM_{k:07d}", "dx": dx,
             "dx_type": "histo", "age": 50, "sex": "male", "localization": "back", "mask_path": ""}
            for k, dx in enumerate(CLASSES * 7)]
    (tmp_path / "data/manifests").mkdir(parents=True)
    (tmp_path / "data/audit").mkdir(parents=True)
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(tmp_path / "data/manifests/ham10000.csv", index=False)
    pd.DataFrame({"image_id": [r["image_id"] for r in rows], "group": [r["lesion_id"] for r in rows]}).to_csv(
        tmp_path / "data/audit/groups.csv", index=False)
    write_params(tmp_path, {"split": {"n_folds": 20}})
    result = subprocess.run([sys.executable, str(REPO / "stages/split.py")], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: split.n_folds is 20, but the data has only 49 lesions, 7 of its largest "
                                    "class (akiec), about 5 of them outside the test set: use split.n_folds of at "
                                    "most 5"), result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "data/splits").exists()

"""The committed params.yaml, with a test's changes: the only source of parameter values in tests
(the schema has no defaults), validated exactly as a stage validates its file."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import yaml

from skinlesion.params import Params, parse_params

REPO = Path(__file__).resolve().parents[1]


def committed_raw() -> dict:
    """A fresh copy, for the caller to change."""
    return copy.deepcopy(_committed())


@functools.cache
def _committed() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def merged(raw: dict, overrides: dict) -> dict:
    """`raw` with `overrides` ({section: {key: value}}, nested as deep as needed) applied."""
    out = copy.deepcopy(raw)
    for key, value in overrides.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def committed_params(overrides: dict | None = None) -> Params:
    return parse_params(merged(committed_raw(), overrides or {}))


def write_params(folder: Path, overrides: dict | None = None) -> Path:
    path = Path(folder) / "params.yaml"
    path.write_text(yaml.safe_dump(merged(committed_raw(), overrides or {}), sort_keys=False))
    return path

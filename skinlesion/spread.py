"""The spread of the headline metrics over replicate runs (seeds, machines): mean ± sd per metric.

    dvc exp run --queue -S seed=1 -S seed=2 ...   # or: dvc exp run --queue -S 'seed=range(1,6)'
    dvc queue start -j 1 && dvc queue status
    python -m skinlesion.spread $(dvc exp list --name-only)   # every experiment of HEAD
    python -m skinlesion.spread HEAD exp-a1b2c exp-c3d4e      # any revisions or experiments

A bootstrap interval says how much a score moves with the test images; it says nothing about how
much it moves when the same recipe is trained again. Replicates measure that. Each replicate is an
ordinary DVC experiment (its own params, dvc.lock and metrics), so it can also be compared with
`python -m skinlesion.compare` or applied with `dvc exp apply`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from . import revisions

HEADLINE = ("internal.balanced_accuracy", "internal.macro_auc", "external.balanced_accuracy",
            "external.macro_auc", "internal.accuracy", "external.accuracy")
EVAL_METRICS = "metrics/eval.json"


def read_metrics(rev: str, repo: Path) -> dict:
    """metrics/eval.json at a git revision or DVC experiment (metrics are committed to git)."""
    from dvc.scm import SCM

    sha = revisions.resolve(rev, repo)  # a RevisionError is a LookupError: main reports both alike
    try:
        return json.loads(SCM(str(repo)).get_fs(sha).read_text(EVAL_METRICS))
    except FileNotFoundError:
        raise LookupError(f"{rev!r} has no {EVAL_METRICS}; run the pipeline there first") from None


def value(metrics: dict, key: str) -> float | None:
    for part in key.split("."):
        if not isinstance(metrics, dict) or part not in metrics:
            return None
        metrics = metrics[part]
    return float(metrics)


def summarise(runs: dict[str, dict]) -> dict[str, dict]:
    """{metric: {"values": {rev: v}, "mean": m, "sd": s (sample sd; None for one run), "range": [lo, hi]}}"""
    table = {}
    for key in HEADLINE:
        values = {rev: v for rev, m in runs.items() if (v := value(m, key)) is not None}
        if not values:
            continue
        xs = list(values.values())
        table[key] = {"values": values, "mean": statistics.fmean(xs),
                      "sd": statistics.stdev(xs) if len(xs) > 1 else None, "range": [min(xs), max(xs)]}
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skinlesion.spread", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revs", nargs="+", help="git revisions or DVC experiment names")
    parser.add_argument("--repo", default=".", help="the repository (default: the current folder)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        runs = {rev: read_metrics(rev, Path(args.repo)) for rev in args.revs}
    except LookupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = summarise(runs)
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"{len(runs)} run(s): {', '.join(runs)}")
    for key, row in table.items():
        sd = "n/a" if row["sd"] is None else f"{row['sd']:.3f}"
        print(f"{key:<28} {row['mean']:.3f} ± {sd} (sd)   range {row['range'][0]:.3f} .. {row['range'][1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

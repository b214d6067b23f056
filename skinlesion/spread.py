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


def read_metrics(rev: str, repo: Path, commit: str | None = None) -> dict:
    """metrics/eval.json at a git revision or DVC experiment (metrics are committed to git);
    `commit`: the sha `rev` resolves to, when already known."""
    sha = commit or revisions.resolve(rev, repo)  # a RevisionError is a LookupError: main reports both alike
    try:
        return json.loads(revisions.read_text(sha, EVAL_METRICS, repo))
    except FileNotFoundError:
        raise LookupError(f"{rev!r} has no {EVAL_METRICS}; run the pipeline there first") from None


def distinct_runs(revs: list[str], repo: Path) -> tuple[dict[str, str], list[str]]:
    """{first name given: commit} over the distinct commits of `revs`, every one resolved before any
    is read, and a note for each name that repeats a commit already given. A commit counts once:
    the same run twice would shrink the sd as if it had been replicated."""
    runs: dict[str, str] = {}
    first_name: dict[str, str] = {}
    notes = []
    for rev in revs:
        sha = revisions.resolve(rev, repo)
        if sha in first_name:
            same = "given twice" if rev == first_name[sha] else f"the same commit as {first_name[sha]!r}"
            notes.append(f"{rev!r} is {same} ({sha[:7]}): counted once")
            continue
        first_name[sha] = rev
        runs[rev] = sha
    return runs, notes


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
    repo = Path(args.repo)
    try:
        commits, notes = distinct_runs(args.revs, repo)
        runs = {rev: read_metrics(rev, repo, sha) for rev, sha in commits.items()}
    except LookupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in notes:  # on stderr, so that --json's output stays one JSON document
        print(f"note: {note}", file=sys.stderr)
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

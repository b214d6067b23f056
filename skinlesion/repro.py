"""Did this run reproduce a committed one? The data bit for bit, the headline metrics within tolerance.

    python -m skinlesion.repro              # after `dvc repro`: the workspace against git HEAD
    python -m skinlesion.repro --against v1 # ... or against any revision

What the project promises (README, "Determinism"), and what this checks:
- the download stage's outputs (the demo images and the manifests) are bit-exact on any machine:
  their hashes in the workspace's dvc.lock equal the revision's;
- the headline metrics agree within the tolerances below, which come from the measured spread of
  training over seeds and CPU kinds (README): floating-point rounding differs between CPU kinds,
  and from-scratch training amplifies it, so bit-exact weights are promised only on one machine.

Exit 0 when everything holds, 1 with a table of what does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from . import revisions
from .errors import RevisionError

# Stage outputs that must be bit-exact on every machine.
EXACT_STAGES = ("download",)

# (metrics file, dotted key) -> largest allowed |workspace - revision|. Measured (README
# "Determinism") over eight runs of the committed recipe on one fixed split (five seeds, three
# machines, AVX2 kernels emulated twice): the largest deviations from the committed run were 0.011
# (internal balanced accuracy), 0.003 (internal AUC), 0.048 (external balanced accuracy) and 0.011
# (external AUC); over the recipe before it, on three machines, 0.019 and 0.048 (balanced
# accuracies). The tolerances sit at two or more times that, so that a broken pipeline fails and
# training noise on another machine does not.
TOLERANCES: dict[tuple[str, str], float] = {
    ("metrics/eval.json", "internal.balanced_accuracy"): 0.05,
    ("metrics/eval.json", "internal.macro_auc"): 0.02,
    ("metrics/eval.json", "external.balanced_accuracy"): 0.10,
    ("metrics/eval.json", "external.macro_auc"): 0.03,
}


def committed_text(rev: str, commit: str, path: str, repo: Path) -> str:
    """A file as committed at `commit` (what `rev` resolves to)."""
    try:
        return revisions.read_text(commit, path, repo)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is not in git at {rev!r} ({commit[:7]}): check against a revision "
                                "where the pipeline ran and dvc.lock and the metrics were committed") from None


def stage_out_hashes(lock_text: str, stage: str) -> dict[str, str]:
    lock = yaml.safe_load(lock_text) or {}
    outs = lock.get("stages", {}).get(stage, {}).get("outs", [])
    return {o["path"]: o.get("md5", "") for o in outs}


def dotted(data: dict, key: str):
    for part in key.split("."):
        data = data[part]
    return data


def check(repo: Path, against: str) -> list[dict]:
    """One row per checked item: what, expected, got, allowed difference, ok."""
    rows = []
    commit = revisions.resolve(against, repo, argument="--against")
    workspace_lock = (repo / "dvc.lock").read_text()
    committed_lock = committed_text(against, commit, "dvc.lock", repo)
    for stage in EXACT_STAGES:
        want, got = stage_out_hashes(committed_lock, stage), stage_out_hashes(workspace_lock, stage)
        for path, md5 in sorted(want.items()):
            rows.append({"what": f"{stage}: {path}", "expected": md5, "got": got.get(path, "missing"),
                         "tolerance": "bit-exact", "ok": got.get(path) == md5})
    for (path, key), tolerance in TOLERANCES.items():
        want = dotted(json.loads(committed_text(against, commit, path, repo)), key)
        got = dotted(json.loads((repo / path).read_text()), key)
        rows.append({"what": f"{path}: {key}", "expected": round(want, 4), "got": round(got, 4),
                     "tolerance": f"±{tolerance}", "ok": abs(got - want) <= tolerance})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skinlesion.repro", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="HEAD",
                        help="the git revision or DVC experiment to compare with (default: HEAD)")
    parser.add_argument("--repo", default=".", help="the repository (default: the current folder)")
    args = parser.parse_args(argv)
    try:
        rows = check(Path(args.repo), args.against)
    except (FileNotFoundError, KeyError, RevisionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    width = max(len(r["what"]) for r in rows)
    for r in rows:
        print(f"{'ok  ' if r['ok'] else 'FAIL'}  {r['what']:<{width}}  expected {r['expected']}  got {r['got']}  "
              f"({r['tolerance']})")
    failed = [r for r in rows if not r["ok"]]
    print(f"{len(rows) - len(failed)}/{len(rows)} hold" + ("" if not failed else f"; {len(failed)} do not"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

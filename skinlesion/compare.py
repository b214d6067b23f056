"""Is B really better than A? The differences in balanced accuracy, macro AUC and ECE between two
revisions' predictions, each with a paired, lesion-level bootstrap 95% interval.

    python -m skinlesion.compare A B [--resamples 1000] [--seed 0] [--json] [--repo .]

A and B are git revisions (commits, branches, tags) or DVC experiments (the names `dvc exp list`
shows). `dvc metrics diff` says that balanced accuracy moved by +0.01; it cannot say whether that
is more than the noise of a test set of a few hundred lesions. Here both revisions' prediction
files (data/predictions/<set>.csv, written by the evaluate stage) are read through DVC, checked to
be predictions for the same images with the same truth, and the lesions are resampled: each
resample scores both sides on the same lesions, so the difference's interval reflects the models,
not which lesions happened to land in the test set.

The point scores are those of metrics/eval.json: balanced accuracy and macro AUC as the ISIC 2018
scorer computes them (skinlesion.metrics), and the top-label ECE (skinlesion.calibration) of the
probabilities in the prediction file, i.e. after temperature scaling.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import bootstrap, calibration, isic, metrics, revisions, seen_lesions
from .errors import DataError, RevisionError

PREDICTIONS_DIR = "data/predictions"
# Where the evaluate stage took each set's images from: the lesion ids are there, not in the
# ISIC-format prediction files.
LESION_TABLES = {"internal": "data/splits/splits.csv", "external": "data/audit/external.csv"}
METRICS = ("balanced_accuracy", "macro_auc", "ece")
LOWER_IS_BETTER = {"ece"}
LABELS = {"balanced_accuracy": "balanced accuracy", "macro_auc": "macro AUC", "ece": "ECE (lower is better)"}
LEVEL = 0.95
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
# Past this many resamples the interval's Monte Carlo error is a small fraction of its width; the
# bound keeps a typo (a few zeros too many) from running for hours.
MAX_RESAMPLES = 100_000
MAX_SEED = 2**32 - 1


class CompareError(Exception):
    """The comparison cannot be made; the message names the problem and the fix."""


class DifferentImagesError(CompareError):
    """The two sides predicted different images (or the same images with different truth)."""


@dataclass(frozen=True)
class SetPredictions:
    """One set's predictions at one revision, one row per image."""
    image_ids: np.ndarray  # str
    y_true: np.ndarray  # class indices, CLASSES order
    probs: np.ndarray  # (N, 7), CLASSES order, as the prediction file holds them
    lesion_ids: np.ndarray  # str

    def __post_init__(self):
        n = len(self.image_ids)
        if not len(self.y_true) == len(self.probs) == len(self.lesion_ids) == n:
            raise ValueError("image ids, truth, probabilities and lesion ids need one row per image")


@dataclass
class Side:
    """What one revision predicted: its name as given, the commit it resolves to, and its sets."""
    rev: str
    commit: str | None
    sets: dict[str, SetPredictions] = field(default_factory=dict)


def describe(rev: str, commit: str | None) -> str:
    """How a person reads a side: the name given, and the commit when the name is not one."""
    return f"{rev} (commit {commit[:7]})" if commit and not commit.startswith(rev) else rev


# --------------------------------------------------------------------------------------------
# Reading a revision
# --------------------------------------------------------------------------------------------

def _fetch_hint(rev: str) -> str:
    return (f"run `dvc pull` or `dvc repro` at that revision (`git checkout {rev}`, or `dvc exp apply {rev}` for an "
            "experiment) so that the DVC cache holds them")


def load_side(rev: str, repo: str | Path = ".") -> Side:
    """Every set's predictions, truth and lesion ids at `rev`, read through DVC (the cache, else the
    remote). Experiment names resolve like git revisions."""
    import dvc.api

    try:
        commit = revisions.resolve(rev, repo)
    except RevisionError as e:
        raise CompareError(str(e)) from None
    where = f"{rev} ({commit[:7]})"
    try:
        fs = dvc.api.DVCFileSystem(str(repo), rev=commit)
        try:
            names = sorted(Path(p).name for p in fs.ls(PREDICTIONS_DIR, detail=False))
        except FileNotFoundError:
            names = []
        set_names = [name for name in LESION_TABLES if f"{name}.csv" in names and f"{name}_truth.csv" in names]
        if not set_names:
            raise CompareError(f"no predictions ({PREDICTIONS_DIR}/<set>.csv with <set>_truth.csv) at {where}: "
                               f"the evaluate stage has not run there, or its outputs are not fetched: "
                               f"{_fetch_hint(rev)}")
        side = Side(rev, commit)
        for name in set_names:
            with fs.open(LESION_TABLES[name]) as f:
                lesions = pd.read_csv(f, usecols=["image_id", "lesion_id"], dtype=str, keep_default_na=False)
            with fs.open(f"{PREDICTIONS_DIR}/{name}.csv") as f:
                pred_ids, probs = _read_isic(f)
            with fs.open(f"{PREDICTIONS_DIR}/{name}_truth.csv") as f:
                truth_ids, onehot = _read_isic(f)
            side.sets[name] = _one_set(name, where, pred_ids, probs, truth_ids, onehot.argmax(axis=1), lesions,
                                       LESION_TABLES[name])
        if "internal" in side.sets and fs.exists(str(seen_lesions.PATH)):
            with fs.open(str(seen_lesions.PATH)) as f:
                side.sets.update(_test_parts(side.sets["internal"], f, where))
    except revisions.read_errors() as e:
        raise CompareError(f"cannot read the predictions or lesion ids at {where} ({e}): {_fetch_hint(rev)}") from None
    return side


def _test_parts(internal: SetPredictions, f, where: str) -> dict[str, SetPredictions]:
    """internal.seen and internal.unseen: the official test set cut by whether a view of its lesion is
    in the official train set (seen_lesions). The parts are drawn before split.exclude_test_lesions,
    so a run with the exclusion and one without have the same parts and are paired part by part."""
    try:
        parts = seen_lesions.check(pd.read_csv(f, dtype=str, keep_default_na=False), seen_lesions.PATH)
    except DataError as e:
        raise CompareError(f"at {where}: {e}") from None
    part_of = dict(zip(parts["image_id"], parts["part"]))
    names = np.array([part_of.get(i, "") for i in internal.image_ids])
    if (names == "").any():
        raise CompareError(f"{seen_lesions.PATH} at {where} does not name the part of {int((names == '').sum())} "
                           "internal test image(s); rerun `dvc repro split` there")
    return {f"internal.{name}": SetPredictions(internal.image_ids[mask], internal.y_true[mask], internal.probs[mask],
                                               internal.lesion_ids[mask])
            for name in seen_lesions.PARTS if (mask := names == name).any()}


def _read_isic(f) -> tuple[np.ndarray, np.ndarray]:
    """Image ids (as text, whatever they look like) and the 7 columns in CLASSES order."""
    table = pd.read_csv(f, dtype={"image": str}, keep_default_na=False)
    return table["image"].to_numpy(dtype=str), isic.probabilities(table)


def _one_set(name: str, where: str, pred_ids, probs, truth_ids, y_true, lesions: pd.DataFrame,
             lesion_path: str) -> SetPredictions:
    if not np.array_equal(pred_ids, truth_ids):
        raise CompareError(f"{PREDICTIONS_DIR}/{name}.csv and {name}_truth.csv at {where} list different images; "
                           "rerun the evaluate stage there")
    lesion_of = dict(zip(lesions["image_id"], lesions["lesion_id"]))
    missing = [i for i in pred_ids if i not in lesion_of]
    if missing:
        raise CompareError(f"{len(missing)} image(s) of the {name} predictions at {where} are not in {lesion_path} "
                           f"(e.g. {missing[:3]}), so their lesions are unknown; rerun the pipeline there")
    return SetPredictions(pred_ids, np.asarray(y_true), probs, np.array([lesion_of[i] for i in pred_ids]))


# --------------------------------------------------------------------------------------------
# Comparing
# --------------------------------------------------------------------------------------------

def _paired(name: str, a: SetPredictions, b: SetPredictions) -> SetPredictions:
    """B's rows in A's image order, after checking that both are the same images with the same truth
    and the same lesions; raises DifferentImagesError otherwise."""
    ids_a, ids_b = set(a.image_ids), set(b.image_ids)
    if ids_a != ids_b or len(ids_a) != len(a.image_ids) or len(ids_b) != len(b.image_ids):
        only_a, only_b = sorted(map(str, ids_a - ids_b)), sorted(map(str, ids_b - ids_a))
        raise DifferentImagesError(
            f"the {name} predictions are for different images ({len(a.image_ids)} at A, {len(b.image_ids)} at B; "
            f"{len(only_a)} only at A, e.g. {only_a[:3]}; {len(only_b)} only at B, e.g. {only_b[:3]}). A paired "
            "comparison needs the same test images: compare revisions with the same data and split "
            "(`seed`, `split` and `data` params)")
    order = pd.Index(b.image_ids).get_indexer(a.image_ids)
    b = SetPredictions(b.image_ids[order], b.y_true[order], b.probs[order], b.lesion_ids[order])
    relabelled = np.flatnonzero(a.y_true != b.y_true)
    if len(relabelled):
        raise DifferentImagesError(
            f"the {name} predictions are for the same images with different truth: {len(relabelled)} image(s) "
            f"change label between A and B (e.g. {[str(i) for i in a.image_ids[relabelled[:3]]]}). Scores on "
            "different ground truth cannot be compared: compare revisions with the same data")
    regrouped = np.flatnonzero(a.lesion_ids != b.lesion_ids)
    if len(regrouped):
        raise DifferentImagesError(
            f"the {name} images belong to different lesions at A and B ({len(regrouped)} image(s), e.g. "
            f"{[str(i) for i in a.image_ids[regrouped[:3]]]}): the data changed between the revisions; compare "
            "revisions with the same data")
    return b


def point_scores(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The numbers metrics/eval.json reports for these predictions."""
    report = metrics.classification_report(y_true, probs)
    return {"balanced_accuracy": report["balanced_accuracy"], "macro_auc": report["macro_auc"],
            "ece": calibration.expected_calibration_error(probs, y_true)}


def verdict(metric: str, low: float, high: float) -> str:
    """'none' when the interval covers 0 (no evidence of a difference), else 'A' or 'B': the better side."""
    if low <= 0 <= high:
        return "none"
    b_higher = low > 0
    return "B" if b_higher != (metric in LOWER_IS_BETTER) else "A"


def _metric_entry(metric: str, a: float | None, b: float | None, interval: dict[str, float]) -> dict:
    if a is None or b is None:  # macro AUC of a set with one class: no ranking to score
        return {"a": a, "b": b, "difference": None, "ci95": None, "better": "none"}
    return {"a": a, "b": b, "difference": b - a, "ci95": interval, "better": verdict(metric, **interval)}


def _same_commit_note(a: Side, b: Side) -> str | None:
    """Comparing a commit with itself is allowed (the null comparison: every difference is exactly
    0), but said, since it is also what comparing `main` with `HEAD` after an uncommitted run gives."""
    if a.commit is None or a.commit != b.commit:
        return None
    return (f"A and B are one commit ({a.commit[:7]}), so every difference is exactly 0. compare reads "
            "committed runs only, never the workspace: to compare a new run, commit it or run it as an "
            "experiment (`dvc exp run`)")


def compare(a: Side, b: Side, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> dict:
    """The comparison of every set that both sides predicted, as a JSON-ready dict."""
    common = [name for name in a.sets if name in b.sets]
    if not common:
        raise CompareError(f"A ({describe(a.rev, a.commit)}) has predictions for {sorted(a.sets) or 'no set'} and "
                           f"B ({describe(b.rev, b.commit)}) for "
                           f"{sorted(b.sets) or 'no set'}: no set to compare")
    # A set whose images differ between the sides is not compared. Runs over `split.seed` have
    # different internal test sets but the same external one, so that one is still paired.
    paired, refused = {}, {}
    for name in common:
        try:
            paired[name] = _paired(name, a.sets[name], b.sets[name])
        except DifferentImagesError as e:
            refused[name] = e
    if not paired:  # refuses before any work
        raise next(iter(refused.values()))
    report = {"a": {"rev": a.rev, "commit": a.commit}, "b": {"rev": b.rev, "commit": b.commit},
              "resamples": n_resamples, "seed": seed, "level": LEVEL, "note": _same_commit_note(a, b), "sets": {},
              "skipped": {**{n: "only at A" for n in a.sets if n not in b.sets},
                          **{n: "only at B" for n in b.sets if n not in a.sets},
                          **{n: f"for different images: {e}" for n, e in refused.items()}}}
    for name in paired:
        sa, sb = a.sets[name], paired[name]
        score_a, score_b = point_scores(sa.y_true, sa.probs), point_scores(sb.y_true, sb.probs)
        intervals = bootstrap.paired_difference_intervals(sa.y_true, sa.probs, sb.probs, sa.lesion_ids,
                                                          n_resamples=n_resamples, seed=seed, level=LEVEL)
        report["sets"][name] = {
            "n_images": int(len(sa.image_ids)), "n_lesions": int(len(np.unique(sa.lesion_ids))),
            "metrics": {m: _metric_entry(m, score_a[m], score_b[m], intervals[m]) for m in METRICS}}
    return report


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def format_report(report: dict) -> str:
    a, b = report["a"], report["b"]
    label = {"A": describe(a["rev"], a["commit"]), "B": describe(b["rev"], b["commit"])}
    note = [f"note: {report['note']}"] if report.get("note") else []
    lines = [f"A = {label['A']}", f"B = {label['B']}", *note,
             f"B - A with a paired lesion-level bootstrap {round(report['level'] * 100)}% interval "
             f"({report['resamples']} resamples, seed {report['seed']})", ""]
    header = f"  {'':<22} {'A':>8} {'B':>8} {'B - A':>9}   {'95% interval':<20}  verdict"
    for name, entry in report["sets"].items():
        lines += [f"{name}: {entry['n_images']} images of {entry['n_lesions']} lesions", header]
        for metric, m in entry["metrics"].items():
            if m["difference"] is None:
                lines.append(f"  {LABELS[metric]:<22} undefined on this set")
                continue
            said = ("no evidence of a difference" if m["better"] == "none"
                    else f"{m['better']} is better ({report[m['better'].lower()]['rev']})")
            interval = "[{low:+.4f}, {high:+.4f}]".format(**m["ci95"])
            lines.append(f"  {LABELS[metric]:<22} {m['a']:>8.4f} {m['b']:>8.4f} {m['difference']:>+9.4f}   "
                         f"{interval:<20}  {said}")
        lines.append("")
    for name, why in report["skipped"].items():
        lines.append(f"{name}: not compared (predictions {why})")
    return "\n".join(lines).rstrip() + "\n"


def _int_in(low: int, high: int, why: str = ""):
    """An argparse type: an integer in [low, high], else argparse's one message and exit 2."""
    allowed = f"give an integer from {low:,} to {high:,}" + (f" ({why})" if why else "")

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; {allowed}") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{number} is out of range; {allowed}")
        return number
    return parse


def main(argv: list[str] | None = None, load=load_side) -> int:
    """The command line; `load(rev, repo)` reads one side (replaceable in tests)."""
    parser = argparse.ArgumentParser(prog="python -m skinlesion.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", metavar="A", help="the baseline: a git revision or a DVC experiment name")
    parser.add_argument("b", metavar="B", help="the candidate: a git revision or a DVC experiment name")
    parser.add_argument("--resamples", type=_int_in(1, MAX_RESAMPLES),
                        default=DEFAULT_RESAMPLES, help=f"bootstrap resamples (default {DEFAULT_RESAMPLES})")
    parser.add_argument("--seed", type=_int_in(0, MAX_SEED, "numpy's seeds are 32-bit"), default=DEFAULT_SEED,
                        help=f"seed of the resampling (default {DEFAULT_SEED}): the same seed, the same intervals")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument("--repo", default=".", help="the repository (default: the current folder)")
    args = parser.parse_args(argv)
    try:
        report = compare(load(args.a, args.repo), load(args.b, args.repo), n_resamples=args.resamples,
                         seed=args.seed)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The tables of measured runs in the docs, generated from results/*.csv.

A figure of a run is typed once, in a CSV under results/ (the format: results/README.md). Every doc
shows it through a block that this script writes:

    <!-- results:NAME -->
    ...the table, generated...
    <!-- /results:NAME -->

NAME is one of VIEWS below: which CSV, which of its rows, and how its columns become the table's.

    python tools/results_tables.py           # rewrite every block in README.md and docs/*.md
    python tools/results_tables.py --check   # exit 1 if a block, a CSV or a run's own record disagree

Besides the blocks, --check holds the CSVs to their format and to what they cite: a `=table/row/column`
cell must name a cell; a summary row (source `rows: ...`) must agree with the rows it summarises; a row
whose source is a metrics file (in the tree, or `path@commit` in git history) must agree with that file
to the digits shown. tests/test_results_tables.py runs the check.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import string
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEADING = ["row", "params", "machine", "command", "source"]
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


@dataclass(frozen=True)
class View:
    """One generated table: `columns` are (header, template); a template formats the row's cells
    (`{column}`, `{column:dur}` for seconds as minutes and seconds, or any Python format spec), and
    `a || b` falls back to b when a cell that a names is empty."""
    csv: str
    columns: list[tuple[str, str]]
    rows: list[str] | None = None  # row ids, in order; None: every row of the file
    bold_summaries: bool = True  # the first cell of a summary row in bold


RUN = ("run", "{run}")
MACHINE = ("machine", "{machine}")
INT_EXT = [("internal balanced accuracy", "{internal_balanced_accuracy}"),
           ("external balanced accuracy", "{external_balanced_accuracy}")]
RECALL = ", ".join(f"{{recall_{c}}}" for c in CLASSES)

VIEWS: dict[str, View] = {
    # README: the committed run with the spread of its replicates
    "demo-headline": View("demo-run", [
        ("set", "{set}"), ("images (lesions)", "{images:,} ({lesions:,})"),
        ("balanced accuracy [95% CI]",
         "{balanced_accuracy} [{balanced_accuracy_ci_low}, {balanced_accuracy_ci_high}]"),
        ("over 9 runs, mean ± sd", "{balanced_accuracy_spread}"),
        ("macro AUC [95% CI]", "{macro_auc} [{macro_auc_ci_low}, {macro_auc_ci_high}]"),
        ("over 5 seeds, mean ± sd", "{macro_auc_spread}"),
        ("top-label ECE, raw -> temperature-scaled", "{ece_raw} -> {ece_scaled}")]),
    "demo-decision-rule": View("demo-run", [
        ("set", "{set}"), ("balanced accuracy, argmax", "{balanced_accuracy}"),
        ("... with the sampler's prior undone", "{prior_undone_balanced_accuracy}"),
        ("accuracy, argmax", "{accuracy}"), ("... with the prior undone", "{prior_undone_accuracy}")]),
    "demo-replicates": View("demo-replicates", [
        RUN, MACHINE, *INT_EXT, ("drop", "{drop}"),
        ("internal / external macro AUC", "{internal_macro_auc} / {external_macro_auc} || ")]),
    "demo-replicates-3x-lookalikes": View("demo-replicates-3x-lookalikes", [
        RUN, MACHINE, *INT_EXT, ("drop", "{drop}")]),
    "demo-replicates-unclipped": View("demo-replicates-unclipped", [RUN, MACHINE, *INT_EXT]),
    "demo-recipe-screens": View("demo-recipe-screens", [
        ("what", "{what}"), ("seeds", "{seeds}"),
        ("external balanced accuracy, mean ± sd over seeds", "{external_balanced_accuracy} ({external_range}) || "
                                                             "{external_balanced_accuracy}"),
        ("internal", "{internal_balanced_accuracy}"), ("note", "{note}")]),
    "demo-recipe-history": View("demo-recipe-history", [
        ("what", "{what}"), ("runs", "{runs}"), *INT_EXT, ("drop", "{drop}")]),
    "demo-clipping-members": View("demo-clipping-members", [
        ("member", "{member}"), ("unclipped", "{unclipped}"), ("`train.grad_clip: 1.0`", "{clipped}")]),
    "demo-timings": View("demo-timings", [
        RUN, MACHINE, ("`dvc repro`", "{total_s:dur}"), ("download", "{download_s:dur}"),
        ("audit", "{audit_s:dur}"), ("split + preprocess", "{split_preprocess_s:dur}"),
        ("train", "{train_s:dur}"), ("evaluate", "{evaluate_s:dur}"), ("gradcam", "{gradcam_s:dur}"),
        ("training img/s", "{train_img_s}")]),
    "demo-ensemble-size": View("demo-ensemble-size", [
        ("ensemble", "{ensemble}"), MACHINE, ("time", "{time_s:dur} || {time_note}"),
        *INT_EXT, ("note", "{note}")]),
    "demo-step-throughput": View("demo-step-throughput", [
        ("input, batch", "{input_px} px, {batch}"), ("AVX-512 kernels, img/s", "{avx512_img_s}"),
        ("AVX2 kernels (emulated), img/s", "{avx2_emulated_img_s}")]),
    "demo-smaller-images": View("demo-smaller-images", [
        ("recipe", "{recipe}"), ("internal", "{internal_balanced_accuracy}"),
        ("external", "{external_balanced_accuracy}")]),
    "test-suite-timings": View("test-suite-timings", [
        ("tests", "{tests}"), ("passed", "{passed}"), ("wall", "{wall_s:dur}"), MACHINE]),
    "dermamnist-published": View("dermamnist-published", [
        ("model (input px)", "{model}"), ("ACC", "{accuracy}"), ("AUC", "{macro_auc}")]),
    "dermamnist-accuracy": View("dermamnist-runs", [
        RUN, MACHINE, ("ACC [95% CI]", "{accuracy} [{accuracy_ci_low}, {accuracy_ci_high}] || {accuracy}"),
        ("ACC, sampler's prior undone", "{prior_undone_accuracy}"),
        ("AUC [95% CI]", "{macro_auc} [{macro_auc_ci_low}, {macro_auc_ci_high}] || {macro_auc}")],
        rows=["28px", "28px-avx512", "56px", "56px-unclipped"]),
    "dermamnist-balanced": View("dermamnist-runs", [
        RUN, MACHINE, ("balanced accuracy [95% CI]",
              "{balanced_accuracy} [{balanced_accuracy_ci_low}, {balanced_accuracy_ci_high}]"),
        ("prior undone", "{prior_undone_balanced_accuracy}"),
        ("recall per class (argmax): " + ", ".join(CLASSES), RECALL),
        ("test ECE, raw -> scaled", "{ece_raw} -> {ece_scaled}"),
        ("`dvc repro`, 2 cores", "{repro_s:dur} || {repro_note}"), ("training img/s", "{train_img_s}")],
        rows=["28px", "28px-avx512", "56px", "56px-unclipped"]),
    "dermamnist-probes": View("dermamnist-runs", [
        RUN, ("ACC", "{accuracy}"), ("AUC", "{macro_auc}"), ("balanced accuracy", "{balanced_accuracy}")],
        rows=["28px-3ep", "28px-10ep-onecycle"]),
    "dermamnist-leak-headline": View("dermamnist-leak", [
        ("split", "{split}"), ("part of the test set", "{part}"), ("images (lesions)", "{images:,} ({lesions:,})"),
        ("ACC", "{accuracy}"),
        ("balanced accuracy [95% CI]", "{balanced_accuracy} [{balanced_accuracy_ci_low}, {balanced_accuracy_ci_high}]"),
        ("macro AUC", "{macro_auc}"),
        ("paired, excluded - leak in: balanced accuracy [95% CI]",
         "{paired_difference} [{paired_ci_low}, {paired_ci_high}] || ")]),
    "dermamnist-leak": View("dermamnist-leak", [
        RUN, ("part of the test set", "{part}"), ("images (lesions)", "{images:,} ({lesions:,})"),
        ("images per class: " + ", ".join(CLASSES), ", ".join("{n_%s}" % c for c in CLASSES) + " || "),
        ("ACC [95% CI]", "{accuracy} [{accuracy_ci_low}, {accuracy_ci_high}]"),
        ("balanced accuracy [95% CI]", "{balanced_accuracy} [{balanced_accuracy_ci_low}, {balanced_accuracy_ci_high}]"),
        ("macro AUC [95% CI]", "{macro_auc} [{macro_auc_ci_low}, {macro_auc_ci_high}]")]),
    "dermamnist-leak-recall": View("dermamnist-leak", [
        RUN, ("part of the test set", "{part}"), ("recall per class (argmax): " + ", ".join(CLASSES), RECALL)]),
    "dermamnist-leak-paired": View("dermamnist-leak-paired", [
        ("part of the official test set", "{set}"), ("images (lesions)", "{images:,} ({lesions:,})"),
        ("metric", "{metric}"), ("with the leak", "{a}"), ("test lesions excluded", "{b}"),
        ("excluded - with [95% CI]", "{difference} [{ci_low}, {ci_high}]"), ("verdict", "{verdict}")]),
    "dermamnist-leak-seeds": View("dermamnist-leak-seeds", [
        ("split", "{split}"), ("seed", "{seed}"),
        ("balanced accuracy: all / seen / unseen",
         "{all_balanced_accuracy} / {seen_balanced_accuracy} / {unseen_balanced_accuracy}"),
        ("macro AUC: all / seen / unseen", "{all_macro_auc} / {seen_macro_auc} / {unseen_macro_auc}"),
        ("ACC: all / seen / unseen", "{all_accuracy} / {seen_accuracy} / {unseen_accuracy}")]),
    "dermamnist-leak-paired-seeds": View("dermamnist-leak-paired-seeds", [
        ("seed", "{seed}"),
        *[(f"{part}: balanced accuracy, excluded - leak in",
           f"{{{part}_ba_difference}} [{{{part}_ba_ci_low}}, {{{part}_ba_ci_high}}] || {{{part}_ba_difference}}")
          for part in ("all", "seen", "unseen")],
        *[(f"{part}: macro AUC", f"{{{part}_auc_difference}} [{{{part}_auc_ci_low}}, {{{part}_auc_ci_high}}] || "
           f"{{{part}_auc_difference}}") for part in ("all", "seen", "unseen")]]),
    "benchmark-targets": View("benchmark-targets", [
        ("target (issue)", "{target}"), ("measured", "{measured}"), ("met?", "{met}")]),
    "data-stages-scale": View("data-stages-scale", [
        ("stage", "{stage}"), ("images (HAM10000 + external)", "{images}"), ("wall s", "{wall_s}"),
        ("CPU s", "{cpu_s}"), ("peak RSS", "{peak_rss_mb} MB")]),
    "data-stages-full": View("data-stages-scale", [
        ("stage", "{stage}"), ("CPU s", "{cpu_s}"), ("wall s on 2 cores", "{wall_s}"),
        ("peak memory", "{peak_rss_mb} MB")],
        rows=["10k-download", "10k-audit", "10k-split", "10k-preprocess"]),
    "gradcam-300px": View("gradcam-300px", [
        ("model", "{model}"),
        ("internal / external balanced accuracy", "{internal_balanced_accuracy} / {external_balanced_accuracy}"),
        ("cam_in_lesion (mean)", "{cam_in_lesion_mean} (median {cam_in_lesion_median})"),
        ("lesion's area share", "{mask_area_share}"),
        ("randomised model's cam_in_lesion", "{randomised_cam_in_lesion}"),
        ("rank correlation with the randomised model's maps", "{randomisation_rank_correlation}")]),
    "app-latency": View("app-latency", [
        ("measure", "{measure}"),
        ("p50 / p95", "{p50_ms} / {p95_ms} ms, {errors} errors, {requests_per_s} requests/s || {p50_ms} / {p95_ms} ms"),
        ("target (2 cores, 300 px)", "{target}"), ("met?", "{met}")]),
    "fold-parallelism": View("fold-parallelism", [
        ("layout", "{layout}"), ("AVX-512, img/s", "{avx512_img_s}"),
        ("AVX2 (emulated), img/s", "{avx2_emulated_img_s}")]),
}

# Which figure of a run's metrics file each column holds, where the row's source is one:
# a dotted key of the metrics file ({row} is the row's id, {<column>} any column of the row), "a - b" a
# difference, "recall:<dx>"
# the argmax recall from plots/internal_confusion.csv beside the metrics/ folder.
SOURCE_KEYS: dict[str, dict[str, str]] = {
    "demo-replicates": {
        "internal_balanced_accuracy": "internal.balanced_accuracy",
        "external_balanced_accuracy": "external.balanced_accuracy",
        "drop": "internal.balanced_accuracy - external.balanced_accuracy",
        "internal_macro_auc": "internal.macro_auc", "external_macro_auc": "external.macro_auc"},
    "demo-run": {
        "images": "{row}.n_images", "lesions": "{row}.n_lesions",
        "balanced_accuracy": "{row}.balanced_accuracy",
        "balanced_accuracy_ci_low": "{row}.balanced_accuracy_ci95.low",
        "balanced_accuracy_ci_high": "{row}.balanced_accuracy_ci95.high",
        "macro_auc": "{row}.macro_auc", "macro_auc_ci_low": "{row}.macro_auc_ci95.low",
        "macro_auc_ci_high": "{row}.macro_auc_ci95.high",
        "ece_raw": "{row}.ece.uncalibrated", "ece_scaled": "{row}.ece.calibrated", "accuracy": "{row}.accuracy",
        "prior_undone_balanced_accuracy": "{row}.sampler_prior_undone.balanced_accuracy",
        "prior_undone_accuracy": "{row}.sampler_prior_undone.accuracy"},
    "demo-replicates-3x-lookalikes": {
        "internal_balanced_accuracy": "internal.balanced_accuracy",
        "external_balanced_accuracy": "external.balanced_accuracy"},
    "demo-replicates-unclipped": {
        "internal_balanced_accuracy": "internal.balanced_accuracy",
        "external_balanced_accuracy": "external.balanced_accuracy"},
    "dermamnist-leak": {
        "images": "{where}.n_images", "lesions": "{where}.n_lesions",
        **{k: "{where}.%s" % k for k in ("accuracy", "balanced_accuracy", "macro_auc")},
        **{f"{k}_ci_{end}": "{where}.%s_ci95.%s" % (k, end)
           for k in ("accuracy", "balanced_accuracy", "macro_auc") for end in ("low", "high")},
        **{f"n_{c}": "{where}.images_per_class.%s" % c for c in CLASSES}},  # recall: argmax, from the predictions
    "dermamnist-leak-paired": {
        "images": "sets.{set}.n_images", "lesions": "sets.{set}.n_lesions",
        "a": "sets.{set}.metrics.{metric}.a", "b": "sets.{set}.metrics.{metric}.b",
        "difference": "sets.{set}.metrics.{metric}.difference",
        "ci_low": "sets.{set}.metrics.{metric}.ci95.low", "ci_high": "sets.{set}.metrics.{metric}.ci95.high"},
    "dermamnist-leak-seeds": {
        f"{part}_{k}": f"{where}.{k}" for part, where in (("all", "internal"), ("seen", "internal.parts.seen"),
                                                         ("unseen", "internal.parts.unseen"))
        for k in ("accuracy", "balanced_accuracy", "macro_auc")},
    "dermamnist-leak-paired-seeds": {
        f"{part}_{short}_{field}": f"sets.{name}.metrics.{metric}.{path}"
        for part, name in (("all", "internal"), ("seen", "internal.seen"), ("unseen", "internal.unseen"))
        for metric, short in (("balanced_accuracy", "ba"), ("macro_auc", "auc"))
        for field, path in (("difference", "difference"), ("ci_low", "ci95.low"), ("ci_high", "ci95.high"))},
    "dermamnist-runs": {
        "accuracy": "internal.accuracy", "accuracy_ci_low": "internal.accuracy_ci95.low",
        "accuracy_ci_high": "internal.accuracy_ci95.high", "macro_auc": "internal.macro_auc",
        "macro_auc_ci_low": "internal.macro_auc_ci95.low", "macro_auc_ci_high": "internal.macro_auc_ci95.high",
        "prior_undone_accuracy": "internal.sampler_prior_undone.accuracy",
        "balanced_accuracy": "internal.balanced_accuracy",
        "balanced_accuracy_ci_low": "internal.balanced_accuracy_ci95.low",
        "balanced_accuracy_ci_high": "internal.balanced_accuracy_ci95.high",
        "prior_undone_balanced_accuracy": "internal.sampler_prior_undone.balanced_accuracy",
        "ece_raw": "internal.ece.uncalibrated", "ece_scaled": "internal.ece.calibrated",
        **{f"recall_{c}": f"recall:{c}" for c in CLASSES}},
}

MARKER = re.compile(r"<!-- results:([a-z0-9-]+) -->\n(.*?)<!-- /results:\1 -->", re.S)
OPEN = re.compile(r"<!-- (/?)results:([^ ]*) -->")
REFERENCE = re.compile(r"=([a-z0-9-]+)/([a-z0-9-]+)/([a-z0-9_]+)")
NUMBER = r"-?\d+(?:\.\d+)?"
MEAN_SD = re.compile(rf"({NUMBER}) ± ({NUMBER})")
MEAN_RANGE = re.compile(rf"({NUMBER}) \(({NUMBER}) to ({NUMBER})\)")
TOLERANCE = 0.0011  # a summary of rounded figures against its own, computed from unrounded ones


class Tables:
    """The CSVs of results/, each a list of rows (dicts), with references resolved on request."""

    def __init__(self, root: Path):
        self.root = root
        self.raw: dict[str, list[dict[str, str]]] = {}
        self.problems: list[str] = []
        for path in sorted((root / "results").glob("*.csv")):
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                header = reader.fieldnames or []
                rows = list(reader)
            where = f"results/{path.name}"
            if header[:len(LEADING)] != LEADING:
                self.problems.append(f"{where}: the columns must start with {', '.join(LEADING)}")
            ids = [r["row"] for r in rows]
            for dup in sorted({i for i in ids if ids.count(i) > 1}):
                self.problems.append(f"{where}: row {dup!r} twice")
            for r in rows:
                if None in r or any(v is None for v in r.values()):
                    self.problems.append(f"{where}, row {r.get('row')!r}: not as many cells as columns")
                for column in LEADING:
                    if not (r.get(column) or "").strip():
                        self.problems.append(f"{where}, row {r.get('row')!r}: {column} is empty")
            self.raw[path.stem] = rows

    def row(self, table: str, row_id: str) -> dict[str, str] | None:
        return next((r for r in self.raw.get(table, []) if r["row"] == row_id), None)

    def value(self, table: str, row: dict[str, str], column: str, depth: int = 0) -> str:
        cell = (row.get(column) or "").strip()
        match = REFERENCE.fullmatch(cell)
        if not match:
            return cell
        target_table, target_row, target_column = match.groups()
        target = self.row(target_table, target_row)
        if depth > 5 or target is None or target_column not in target:
            raise KeyError(f"results/{table}.csv, row {row['row']!r}, {column}: {cell} names no cell")
        return self.value(target_table, target, target_column, depth + 1)

    def resolved(self, table: str) -> list[dict[str, str]]:
        return [{c: self.value(table, r, c) for c in r} for r in self.raw[table]]


def duration(seconds: str) -> str:
    s = round(float(seconds))
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60} s"


class CellFormatter(string.Formatter):
    def format_field(self, value, spec):
        if spec == "dur":
            return duration(value)
        if spec:
            value = float(value) if "." in value else int(value)
        return super().format_field(value, spec)


def render_cell(template: str, row: dict[str, str]) -> str:
    formatter = CellFormatter()
    for alternative in template.split(" || "):
        names = [name for _, name, _, _ in formatter.parse(alternative) if name]
        if all(row.get(name, "") != "" for name in names):
            return formatter.format(alternative, **row).replace("|", "\\|")
    return ""


def render(name: str, tables: Tables, doc: Path) -> str:
    view = VIEWS[name]
    rows = tables.resolved(view.csv)
    if view.rows is not None:
        by_id = {r["row"]: r for r in rows}
        rows = [by_id[i] for i in view.rows]
    lines = ["| " + " | ".join(h for h, _ in view.columns) + " |",
             "| " + " | ".join("---" for _ in view.columns) + " |"]
    for r in rows:
        cells = [render_cell(t, r) for _, t in view.columns]
        if view.bold_summaries and r["source"].startswith("rows:") and cells[0]:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    link = Path(*[".."] * (len(doc.relative_to(tables.root).parts) - 1), "results", f"{view.csv}.csv").as_posix()
    return "\n".join(lines) + f"\n\nData: [`results/{view.csv}.csv`]({link}).\n"


def docs(root: Path) -> list[Path]:
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.exists()]


def number_digits(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def agrees(shown: str, exact: float) -> bool:
    """Does `shown` equal `exact` to the digits shown? (Half a unit of the last digit, plus float noise.)"""
    try:
        value = float(shown.replace(",", ""))
    except ValueError:
        return False
    return abs(value - exact) <= 0.5 * 10 ** -number_digits(shown) + 1e-9


def read_source(root: Path, path: str, commit: str | None) -> str | None:
    """A file of the tree, or of a commit (None where git or the commit is not there, e.g. a shallow clone)."""
    if commit is None:
        file = root / path
        return file.read_text(encoding="utf-8") if file.is_file() else None
    try:
        result = subprocess.run(["git", "-C", str(root), "show", f"{commit}:{path}"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def source_figure(key: str, metrics: dict, confusion: list[dict[str, str]] | None) -> float | None:
    if " - " in key:
        a, b = (source_figure(k, metrics, confusion) for k in key.split(" - "))
        return None if a is None or b is None else a - b
    if key.startswith("recall:"):
        if confusion is None:
            return None
        dx = key.split(":", 1)[1]
        actual = [r for r in confusion if r["actual"] == dx]
        return sum(r["predicted"] == dx for r in actual) / len(actual) if actual else None
    value = _lookup(metrics, key.split("."))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _lookup(value, parts: list[str]):
    """value[a][b]... for the dotted key's parts, where a name may hold dots itself (compare's set
    "internal.seen"): the longest name that is a key is taken first."""
    if not parts:
        return value
    if not isinstance(value, dict):
        return None
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in value and (found := _lookup(value[name], parts[n:])) is not None:
            return found
    return None


def check_sources(tables: Tables) -> list[str]:
    problems = []
    for table, keys in SOURCE_KEYS.items():
        for row in tables.resolved(table) if table in tables.raw else []:
            source = row["source"]
            path, _, commit = source.partition("@")
            if not path.endswith(".json") or " " in source:
                continue
            text = read_source(tables.root, path, commit or None)
            if text is None:
                if not commit:
                    problems.append(f"results/{table}.csv, row {row['row']!r}: its source {source} does not exist")
                continue  # a commit this clone does not hold: nothing to compare with
            metrics = json.loads(text)
            confusion_path = str(Path(path).parent.parent / "plots" / "internal_confusion.csv")
            confusion_text = read_source(tables.root, confusion_path, commit or None)
            confusion = list(csv.DictReader(confusion_text.splitlines())) if confusion_text else None
            for column, key in keys.items():
                shown = row.get(column, "")
                exact = source_figure(key.format_map(row), metrics, confusion)
                if shown and exact is not None and not agrees(shown, exact):
                    problems.append(f"results/{table}.csv, row {row['row']!r}, {column}: {shown}, but {source} "
                                    f"says {exact:.6g}")
    return problems


def check_summaries(tables: Tables) -> list[str]:
    """A summary row (source `rows: a b c`) states mean ± sd or mean (lo to hi) of the rows it names."""
    problems = []
    for table in tables.raw:
        rows = tables.resolved(table)
        by_id = {r["row"]: r for r in rows}
        for row in rows:
            if not row["source"].startswith("rows:"):
                continue
            where = f"results/{table}.csv, row {row['row']!r}"
            members = row["source"].removeprefix("rows:").split()
            missing = [m for m in members if m not in by_id]
            if missing:
                problems.append(f"{where}: summarises rows that do not exist: {', '.join(missing)}")
                continue
            for column, cell in row.items():
                if column in LEADING:
                    continue
                values = [by_id[m].get(column, "") for m in members]
                try:
                    numbers = [float(v) for v in values]
                except ValueError:
                    continue  # the rows do not all give this figure: nothing to recompute
                if m := MEAN_SD.fullmatch(cell):
                    mean, sd = float(m[1]), float(m[2])
                    if abs(statistics.mean(numbers) - mean) > TOLERANCE or abs(statistics.stdev(numbers) - sd) > TOLERANCE:
                        problems.append(f"{where}, {column}: {cell}, but its rows give "
                                        f"{statistics.mean(numbers):.4f} ± {statistics.stdev(numbers):.4f}")
                elif m := MEAN_RANGE.fullmatch(cell):
                    mean, lo, hi = (float(g) for g in m.groups())
                    if (abs(statistics.mean(numbers) - mean) > TOLERANCE or abs(min(numbers) - lo) > TOLERANCE
                            or abs(max(numbers) - hi) > TOLERANCE):
                        problems.append(f"{where}, {column}: {cell}, but its rows give "
                                        f"{statistics.mean(numbers):.4f} ({min(numbers)} to {max(numbers)})")
    return problems


def build(root: Path) -> tuple[dict[Path, str], list[str]]:
    """Every doc's text with its blocks regenerated, and every problem found on the way."""
    tables = Tables(root)
    problems = list(tables.problems)
    for name, view in VIEWS.items():
        if view.csv not in tables.raw:
            problems.append(f"view {name}: results/{view.csv}.csv does not exist")
        elif view.rows is not None:
            known = {r["row"] for r in tables.raw[view.csv]}
            problems += [f"view {name}: results/{view.csv}.csv has no row {i!r}" for i in view.rows if i not in known]
    for table in tables.raw:
        try:
            tables.resolved(table)
        except KeyError as error:
            problems.append(error.args[0])
    if any("names no cell" in p or "does not exist" in p or "has no row" in p for p in problems):
        return {}, problems
    texts, shown = {}, set()
    for doc in docs(root):
        text = doc.read_text(encoding="utf-8")
        where = doc.relative_to(root).as_posix()
        opened = [m[2] for m in OPEN.finditer(text) if not m[1]]
        closed = {m[1] for m in MARKER.finditer(text)}
        for name in opened:
            if name not in VIEWS:
                problems.append(f"{where}: <!-- results:{name} --> names no view (tools/results_tables.py VIEWS)")
            elif name not in closed:
                problems.append(f"{where}: <!-- results:{name} --> has no <!-- /results:{name} -->")
        shown |= closed

        def block(m: re.Match) -> str:
            name = m[1]
            body = render(name, tables, doc) if name in VIEWS else m[2]
            return f"<!-- results:{name} -->\n{body}<!-- /results:{name} -->"
        texts[doc] = MARKER.sub(block, text)
    problems += [f"view {name} is shown in no doc" for name in VIEWS if name not in shown]
    used = {v.csv for v in VIEWS.values()}
    problems += [f"results/{t}.csv is shown by no view" for t in tables.raw if t not in used]
    problems += check_summaries(tables) + check_sources(tables)
    return texts, problems


def check(root: Path = ROOT) -> list[str]:
    texts, problems = build(root)
    for doc, text in texts.items():
        if doc.read_text(encoding="utf-8") != text:
            stale = [m[1] for m in MARKER.finditer(doc.read_text(encoding="utf-8"))
                     if f"<!-- results:{m[1]} -->\n{m[2]}" not in text]
            problems.append(f"{doc.relative_to(root).as_posix()}: generated tables out of date "
                            f"({', '.join(stale) or 'a block'}); run python tools/results_tables.py")
    return problems


def write(root: Path = ROOT) -> list[str]:
    texts, problems = build(root)
    for doc, text in texts.items():
        if doc.read_text(encoding="utf-8") != text:
            doc.write_text(text, encoding="utf-8")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything disagrees")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    args = parser.parse_args(argv)
    problems = check(args.root) if args.check else write(args.root)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

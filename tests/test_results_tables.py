"""Results as data: every table of runs in the docs is generated from results/*.csv, so a figure is
typed once. The check (tools/results_tables.py --check) fails when a doc, a CSV or the run's own
metrics file disagree; these tests run it on the repository, and on a copy where one thing changed."""
import csv
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "results_tables.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("results_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


tool = load_tool()


def run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(root / "tools" / "results_tables.py"), *args, "--root", str(root)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def copy(tmp_path):
    """The docs, the CSVs, the metrics they cite and the tool, outside git (commit sources are skipped)."""
    for name in ["README.md", "docs", "results", "metrics", "tools"]:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    return tmp_path


def edit_cell(root: Path, table: str, row: str, column: str, value: str) -> None:
    path = root / "results" / f"{table}.csv"
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    [target] = [r for r in rows if r["row"] == row]
    target[column] = value
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def test_every_table_in_the_docs_is_what_the_csvs_generate():
    assert tool.check(REPO) == []


def test_every_csv_starts_with_the_shared_columns_and_fills_them():
    paths = sorted((REPO / "results").glob("*.csv"))
    assert paths
    for path in paths:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            assert reader.fieldnames[:5] == ["row", "params", "machine", "command", "source"], path.name
            for row in reader:
                assert all(row[c].strip() for c in ["row", "params", "machine", "command", "source"]), (path.name, row)


def test_every_csv_is_shown_and_every_view_is_in_a_doc():
    docs = "".join(p.read_text(encoding="utf-8") for p in tool.docs(REPO))
    assert {v.csv for v in tool.VIEWS.values()} == {p.stem for p in (REPO / "results").glob("*.csv")}
    for name in tool.VIEWS:
        assert f"<!-- results:{name} -->" in docs and f"<!-- /results:{name} -->" in docs


def test_the_committed_dermamnist_runs_are_cited_from_their_rows():
    with (REPO / "results" / "dermamnist-runs.csv").open(newline="", encoding="utf-8") as f:
        rows = {r["row"]: r for r in csv.DictReader(f)}
    for size in ["28px", "56px"]:
        assert rows[size]["params"] == f"results/dermamnist-{size}/params.yaml"
        assert rows[size]["source"] == f"results/dermamnist-{size}/metrics/eval.json"


def test_check_fails_when_a_csv_is_edited_and_the_doc_is_not(copy):
    assert run(copy, "--check").returncode == 0
    edit_cell(copy, "demo-smaller-images", "32px-8ep", "external_balanced_accuracy", "0.637")
    result = run(copy, "--check")
    assert result.returncode == 1
    assert "docs/recipe.md: generated tables out of date (demo-smaller-images)" in result.stderr
    assert "0.637" not in (copy / "docs" / "recipe.md").read_text()  # --check changes nothing

    assert run(copy).returncode == 0  # regenerating brings the doc in step
    assert "| 32 px, 8 epochs | 0.815 | 0.637 |" in (copy / "docs" / "recipe.md").read_text()
    assert run(copy, "--check").returncode == 0


def test_check_fails_when_a_doc_table_is_edited_by_hand(copy):
    doc = copy / "docs" / "dermamnist.md"
    doc.write_text(doc.read_text().replace("| ResNet-18 (28) | 0.735 | 0.917 |", "| ResNet-18 (28) | 0.745 | 0.917 |"))
    result = run(copy, "--check")
    assert result.returncode == 1 and "dermamnist-published" in result.stderr


def test_a_figure_that_disagrees_with_its_metrics_file_fails(copy):
    edit_cell(copy, "dermamnist-runs", "28px", "accuracy", "0.653")  # metrics/eval.json says 0.6519
    edit_cell(copy, "dermamnist-runs", "56px", "recall_df", "0.19")  # plots/internal_confusion.csv gives 0.09
    result = run(copy)
    assert result.returncode == 1
    assert "results/dermamnist-runs.csv, row '28px', accuracy: 0.653, but results/dermamnist-28px/metrics/eval.json" in result.stderr
    assert "row '56px', recall_df: 0.19" in result.stderr


def test_the_headline_table_follows_the_committed_metrics(copy):
    eval_json = copy / "metrics" / "eval.json"
    eval_json.write_text(eval_json.read_text().replace('"n_images": 167', '"n_images": 168', 1))
    result = run(copy, "--check")
    assert result.returncode == 1 and "results/demo-run.csv, row 'internal', images: 167" in result.stderr


def test_a_summary_that_disagrees_with_its_rows_fails(copy):
    edit_cell(copy, "demo-replicates", "seed1-zen4", "external_balanced_accuracy", "0.953")
    result = run(copy)
    assert result.returncode == 1
    assert "row 'five-seeds-zen4', external_balanced_accuracy: 0.834 ± 0.013, but its rows give" in result.stderr
    assert "row 'all-eight', external_balanced_accuracy" in result.stderr


def test_a_reference_must_name_a_cell(copy):
    edit_cell(copy, "demo-run", "internal", "balanced_accuracy_spread", "=demo-replicates/no-such-row/drop")
    result = run(copy, "--check")
    assert result.returncode == 1 and "=demo-replicates/no-such-row/drop names no cell" in result.stderr


def test_a_marker_must_name_a_view(copy):
    doc = copy / "docs" / "testing.md"
    doc.write_text(doc.read_text() + "\n<!-- results:no-such-view -->\n<!-- /results:no-such-view -->\n")
    result = run(copy, "--check")
    assert result.returncode == 1 and "<!-- results:no-such-view --> names no view" in result.stderr


def test_a_cell_reference_shows_the_cell_it_names():
    tables = tool.Tables(REPO)
    [internal] = [r for r in tables.resolved("demo-run") if r["row"] == "internal"]
    raw = (REPO / "results" / "demo-run.csv").read_text().splitlines()[1]
    reference = next(cell for cell in raw.split(",") if cell.startswith("=demo-replicates/"))
    _, row, column = reference.removeprefix("=").split("/")
    [committed] = [r for r in tables.resolved("demo-replicates") if r["row"] == row]
    assert column == "internal_balanced_accuracy" and internal["balanced_accuracy"] == committed[column]
    assert internal["balanced_accuracy"] not in ("", reference)


@pytest.mark.parametrize("seconds, shown", [("39", "39 s"), ("662", "11 min 2 s"), ("485", "8 min 5 s"), ("60", "1 min 0 s")])
def test_seconds_are_shown_as_minutes_and_seconds(seconds, shown):
    assert tool.duration(seconds) == shown


def test_a_cell_falls_back_when_its_figures_are_missing():
    template = "{a} [{lo}, {hi}] || {a}"
    assert tool.render_cell(template, {"a": "0.5", "lo": "0.4", "hi": "0.6"}) == "0.5 [0.4, 0.6]"
    assert tool.render_cell(template, {"a": "0.5", "lo": "", "hi": ""}) == "0.5"
    assert tool.render_cell("{a} / {b}", {"a": "1", "b": ""}) == ""
    assert tool.render_cell("{a}", {"a": "x | y"}) == "x \\| y"


def test_a_dotted_key_finds_a_name_that_holds_a_dot():
    # compare's JSON names its sets "internal", "internal.seen" and "internal.unseen", side by side
    metrics = {"sets": {"internal": {"metrics": {"macro_auc": {"difference": 0.01}}},
                        "internal.seen": {"metrics": {"macro_auc": {"difference": 0.05}}}}}
    assert tool.source_figure("sets.internal.seen.metrics.macro_auc.difference", metrics, None) == 0.05
    assert tool.source_figure("sets.internal.metrics.macro_auc.difference", metrics, None) == 0.01
    assert tool.source_figure("sets.internal.unseen.metrics.macro_auc.difference", metrics, None) is None
    assert tool.source_figure("sets.internal.seen.metrics", metrics, None) is None  # not a number

"""Every benchmark runs in its tiny mode, prints its table and ends with one JSON object: they cannot rot.

The figures of a tiny run mean nothing (a toy model on a few images, on a shared machine); these
tests check that the measurements run and report consistently, not how fast anything is.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def load(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def run_tiny(name: str, capsys, *extra: str) -> dict:
    returned = load(name).main(["--tiny", "--json", *extra])
    lines = capsys.readouterr().out.strip().splitlines()
    printed = json.loads(lines[-1])  # the last line is the JSON object
    assert printed == json.loads(json.dumps(returned))
    assert len(lines) > 5 and not lines[0].startswith("{")  # a table for people comes first
    assert printed["benchmark"] == name and printed["torch"] and printed["date"]
    return printed


@pytest.mark.slow
def test_train_throughput_measures_model_only_and_end_to_end_in_one_run(capsys):
    r = run_tiny("train_throughput", capsys)
    assert r["model_only_img_s"] > 0 and r["end_to_end_img_s"] > 0
    assert r["ratio"] == pytest.approx(r["end_to_end_img_s"] / r["model_only_img_s"], rel=0.01)
    assert (r["device"], r["precision"], r["memory_format"], r["workers"]) == ("cpu", "fp32", "channels_last", 0)
    assert r["cpu_load"]["process_cores"] > 0 and 0 <= r["cpu_load"]["machine_busy"] <= 1


@pytest.mark.slow
def test_loader_throughput_compares_the_cache_with_raw_jpegs(capsys):
    r = run_tiny("loader_throughput", capsys, "--workers", "1")
    assert r["cache_img_s_per_worker"] > 0 and r["raw_img_s_per_worker"] > 0
    assert r["ratio"] == pytest.approx(r["cache_img_s_per_worker"] / r["raw_img_s_per_worker"], rel=0.01)
    assert r["cache_img_s_all_workers"] > 0
    assert r["cached_image_shapes"] == ["32x43"]  # 64x48 demo images, shorter side 32, aspect kept


@pytest.mark.slow
def test_inference_reports_latency_percentiles_and_the_tta_cost(capsys):
    r = run_tiny("inference", capsys)
    for tta in ("none", "flips"):
        assert 0 < r[f"latency_ms_p50_{tta}"] <= r[f"latency_ms_p95_{tta}"]
        assert r[f"batched_img_s_{tta}"] > 0
    assert r["tta_cost_ratio"] == pytest.approx(r["batched_img_s_none"] / r["batched_img_s_flips"], rel=0.01)


def test_ham10000_plan_has_the_real_metadata_counts_at_full_scale_and_its_shape_when_smaller():
    from collections import Counter

    from skinlesion.acquire import demo_data

    plan = demo_data.ham10000_plan()
    images, lesions = Counter(), Counter(dx for dx, _ in plan)
    for dx, k in plan:
        images[dx] += k
    assert {dx: (images[dx], lesions[dx]) for dx in images} == demo_data.HAM10000_IMAGES_LESIONS
    assert dict(Counter(k for _, k in plan)) == demo_data.HAM10000_IMAGES_PER_LESION  # 5,514 single-image lesions ...
    small = demo_data.ham10000_plan(1000)
    assert abs(sum(k for _, k in small) - 1000) <= 2 and len(small) == round(1000 * 7470 / 10015)
    assert {dx for dx, _ in small} == set(demo_data.HAM10000_IMAGES_LESIONS) and max(k for _, k in small) <= 6


@pytest.mark.slow
def test_data_scale_runs_every_data_stage_in_its_own_process(capsys):
    r = run_tiny("data_scale", capsys)
    assert list(r["stages"]) == ["download", "audit", "split", "preprocess"]
    for stage in r["stages"].values():
        assert stage["seconds"] > 0 and stage["cpu_seconds"] > 0
        assert 50 < stage["peak_rss_mb"] < 2000  # per stage, not the sum: each loads torch (~1 GB) via params
    assert r["ham10000_images"] == 60 and r["external_images"] == 50  # the real 10015 : 8283 ratio
    assert r["cores"] >= 1 and r["img_size"] == 32
    assert r["cache_mb"]["ham10000"] > 0 and r["raw_mb"]["external"] > 0


@pytest.mark.slow
def test_compiled_training_step_runs_and_the_process_exits():
    """train.compile's path (device.compile_model): compiled training steps run, and the process
    ends by itself. On the CPU Inductor never starts its compile-worker pool, so this cannot show
    the GPU exit hang itself; it shows the compile path works with one compile thread."""
    result = subprocess.run([sys.executable, str(BENCHMARKS / "train_throughput.py"), "--tiny", "--compile", "--json"],
                            cwd=REPO, capture_output=True, text=True, timeout=1500)  # compiling takes minutes here
    assert result.returncode == 0, result.stderr[-3000:]
    r = json.loads(result.stdout.strip().splitlines()[-1])
    assert r["compile"] is True and r["model_only_img_s"] > 0 and r["end_to_end_img_s"] > 0


@pytest.mark.slow
def test_gpu_script_runs_every_benchmark_and_collects_the_json_lines(tmp_path):
    env = {**os.environ, "GPU_RUN_TINY": "1", "PYTHON": sys.executable, "BENCH_TIMEOUT": "240"}
    result = subprocess.run(["bash", str(BENCHMARKS / "gpu_run.sh"), "", str(tmp_path)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["benchmark"] for r in results] == ["train_throughput", "inference", "loader_throughput"]
    assert not any("error" in r for r in results)
    assert (tmp_path / "gpu_run.log").read_text().count("== ") >= 5


@pytest.mark.slow
def test_fold_parallelism_times_threads_against_one_thread_processes(capsys):
    r = run_tiny("fold_parallelism", capsys)
    assert (r["one_thread"]["processes"], r["one_thread"]["threads_each"]) == (1, 1)
    assert r["threaded"]["processes"] == 1 and r["threaded"]["threads_each"] >= 1
    (parallel,) = r["parallel"]
    assert (parallel["processes"], parallel["threads_each"]) == (2, 1) and len(parallel["img_s_each"]) == 2
    assert parallel["img_s_total"] == pytest.approx(sum(parallel["img_s_each"]), abs=0.05)
    assert r["best_processes"] == 2 and all(x > 0 for x in parallel["img_s_each"])
    assert r["speedup_over_threaded"] == pytest.approx(parallel["img_s_total"] / r["threaded"]["img_s_total"],
                                                       rel=0.01)


def test_live_logging_times_one_epoch_of_dvclive(capsys):
    result = run_tiny("live_logging", capsys)
    assert result["epochs"] == 5 and result["log_epoch_median_ms"] > 0 and result["open_ms"] > 0
    assert result["log_epoch_p90_ms"] >= result["log_epoch_median_ms"]

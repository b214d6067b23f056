#!/usr/bin/env bash
# The GPU benchmarks in one go, on a fresh CUDA machine that has Python with torch and timm.
#
#   bash benchmarks/gpu_run.sh [WHEEL_DIR] [OUT_DIR]
#
# 1. Installs the packages the benchmarks need that are missing (never touching torch): from the
#    wheels in WHEEL_DIR without an index (make it on a connected machine with
#    `pip download -d WHEEL_DIR albumentations==2.0.8 pandas safetensors scikit-learn tqdm pyyaml psutil`),
#    else from PyPI when it is reachable.
# 2. Runs, at 300 px on generated demo data: train_throughput.py (efficientnet_b3, batch 64, bf16,
#    channels_last), inference.py, loader_throughput.py with the training's worker count, and last
#    train_throughput.py --compile (its compilation takes minutes, so it comes after the rest).
#
# Each benchmark prints its table and one JSON line; the JSON lines are printed again at the end and,
# with OUT_DIR, written to OUT_DIR/results.jsonl (the whole log to OUT_DIR/gpu_run.log).
# PYTHON picks the interpreter (default python3); BENCH_TIMEOUT bounds each benchmark (s, default 420).
# GPU_RUN_TINY=1 runs the benchmarks but --compile in their seconds-long --tiny mode, on the CPU too
# (the tests do).
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS="${1:-}"
OUT="${2:-}"
PY="${PYTHON:-python3}"
LIMIT="${BENCH_TIMEOUT:-420}"
TINY="${GPU_RUN_TINY:-0}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
RESULTS="$(mktemp)"
if [ -n "$OUT" ]; then mkdir -p "$OUT"; exec > >(tee "$OUT/gpu_run.log") 2>&1; fi

pin() {  # the version requirements.txt pins for a package, else the bare name
    local line
    line="$(grep -i -E "^$1==" requirements.txt | head -n 1)"
    echo "${line:-$1}"
}

pip_install() {  # wheels first, without an index; then PyPI
    local constraints
    constraints="$(mktemp)"
    "$PY" -c 'import torch; print("torch==" + torch.__version__)' > "$constraints"  # never replace torch
    if [ -n "$WHEELS" ] && PIP_BREAK_SYSTEM_PACKAGES=1 "$PY" -m pip install --quiet --no-index \
            --find-links "$WHEELS" -c "$constraints" "$@"; then
        return 0
    fi
    echo "  not all of $* in ${WHEELS:-(no wheel folder)}; trying PyPI"
    PIP_BREAK_SYSTEM_PACKAGES=1 "$PY" -m pip install --quiet ${WHEELS:+--find-links "$WHEELS"} \
        -c "$constraints" "$@"
}

echo "== environment"
if ! "$PY" -c 'import torch, timm' 2>/dev/null; then
    echo "error: $PY lacks torch or timm; install the CUDA build of torch and timm first (or set PYTHON)"
    exit 2
fi
"$PY" -c 'import torch, timm; print("torch", torch.__version__, "timm", timm.__version__,
  "cuda", torch.cuda.is_available() and torch.cuda.get_device_name(0))'
if [ "$TINY" != 1 ] && ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    echo "error: no CUDA device is visible to torch; these are the GPU benchmarks (on a CPU run the"
    echo "       scripts themselves: python benchmarks/train_throughput.py --img-size 64 ...)"
    exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
SHM_MB="$(df -Pm /dev/shm 2>/dev/null | awk 'NR == 2 {print $4}')"
echo "free /dev/shm: ${SHM_MB:-unknown} MB; CPUs: $(nproc)"
if [ -n "$SHM_MB" ] && [ "$SHM_MB" -lt 2048 ]; then
    echo "warning: loader workers pass batches through /dev/shm (17 MB per batch of 64 at 300 px);"
    echo "         under 2 GB free they may die with a bus error (docker: --shm-size=8g)"
fi

echo "== packages"
# import name -> package name; each is installed only when its import fails
for pair in numpy:numpy pandas:pandas PIL:pillow yaml:pyyaml tqdm:tqdm safetensors:safetensors \
            sklearn:scikit-learn albumentations:albumentations cv2:opencv-python-headless psutil:psutil; do
    module="${pair%%:*}"
    package="${pair#*:}"
    if "$PY" -c "import $module" 2>/dev/null; then continue; fi
    echo "installing $(pin "$package")"
    pip_install "$(pin "$package")" || pip_install "$package" || {
        [ "$module" = psutil ] && echo "  (psutil is optional: only the CPU-load figures need it)" && continue
        echo "error: could not install $package"; exit 2; }
done

run() {  # name, then the script and its arguments
    local name="$1"
    shift
    echo
    echo "== $name"
    local log
    log="$(mktemp)"
    if [ "$TINY" = 1 ]; then set -- "$@" --tiny; fi
    timeout "$LIMIT" "$PY" "$@" --json 2>&1 | tee "$log"
    local status="${PIPESTATUS[0]}"
    if [ "$status" -eq 0 ]; then
        tail -n 1 "$log" >> "$RESULTS"
    else
        echo "{\"benchmark\": \"$name\", \"error\": \"exit status $status (124: over ${LIMIT} s)\"}" | tee -a "$RESULTS"
    fi
}

run train_throughput benchmarks/train_throughput.py --img-size 300 --batch-size 64
run inference benchmarks/inference.py --img-size 300
run loader_throughput benchmarks/loader_throughput.py --img-size 300 --seconds 3 \
    --workers "$("$PY" -c 'import torch; from skinlesion.training import default_workers; print(default_workers(torch.device("cuda")))')"
if [ "$TINY" != 1 ]; then  # compiling takes minutes even for the tiny model
    run train_throughput_compile benchmarks/train_throughput.py --img-size 300 --batch-size 64 --compile
fi

echo
echo "== results (JSON lines)"
cat "$RESULTS"
if [ -n "$OUT" ]; then cp "$RESULTS" "$OUT/results.jsonl"; fi

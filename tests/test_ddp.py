"""DDP: each rank trains on its disjoint share of one weighted epoch sample, the ranks end with
the same weights, and only rank 0 writes. The real train stage runs under torchrun, 2 CPU
processes on gloo, launched by the stage itself from train.nproc_per_node."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file

from skinlesion.classes import CLASSES
from skinlesion.sampling import EpochShard, sharded_sampler, weighted_sampler
from skinlesion.training import epoch_seed

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "data": {"demo_lesions": 40, "demo_external_images": 14, "img_size": 32},
    "split": {"n_folds": 2, "test_size": 0.2},
    "train": {"folds": [0], "epochs": 2, "batch_size": 16, "device": "cpu", "nproc_per_node": 2},
}

# Runs stages/train.py unchanged, and records in each process what its sampler yielded, what it
# wrote and the weights it ended with. Passed through the stage's own relaunch under torchrun.
RECORDER = textwrap.dedent("""
    import atexit, hashlib, json, os
    from skinlesion import atomic, model, sampling, training

    who = os.environ.get("RANK", "launcher")
    record = {"samples": [], "writes": [], "weights": None}
    atexit.register(lambda: open(f"record_{who}.json", "w").write(json.dumps(record)))

    def patched(owner, name, before=None, after=None):
        original = getattr(owner, name)
        def wrapper(*args, **kwargs):
            if before: before(*args)
            result = original(*args, **kwargs)
            if after: after(result)
            return result
        setattr(owner, name, wrapper)

    original_iter = sampling.EpochShard.__iter__
    def recording_iter(self):
        share = list(original_iter(self))
        record["samples"].append(share)
        return iter(share)
    sampling.EpochShard.__iter__ = recording_iter

    patched(atomic, "write_json", before=lambda path, *_: record["writes"].append(str(path)))
    patched(model, "save", before=lambda m, card, folder, stem: record["writes"].append(stem))
    def weights_digest(result):
        digest = hashlib.sha256()
        for key, value in sorted(result.model.state_dict().items()):
            digest.update(key.encode() + value.numpy().tobytes())
        record["weights"] = digest.hexdigest()
    patched(training, "train_fold", after=weights_digest)

    stage = os.environ["TRAIN_STAGE"]  # run like runpy, but keeping sys.argv[0]: the relaunch runs this file
    exec(compile(open(stage).read(), stage, "exec"), {"__name__": "__main__", "__file__": stage})
""")


def test_each_rank_draws_a_disjoint_share_of_the_same_epoch_sample():
    labels = np.array([0] * 30 + [1] * 7 + [2] * 4)
    one_process = list(weighted_sampler(labels, 3, power=0.5, seed=5))
    shares = [list(EpochShard(weighted_sampler(labels, 3, power=0.5, seed=5), rank, 3)) for rank in range(3)]
    assert [len(s) for s in shares] == [14, 14, 14]  # 41 padded to 42: every rank takes as many steps
    interleaved = [share[i] for i in range(14) for share in shares]
    assert interleaved[:41] == one_process  # positions r, r+3, ...: disjoint, and together the epoch
    assert interleaved[41:] == one_process[:1]  # the padding wraps around


def test_one_process_keeps_the_plain_weighted_sampler():
    base = weighted_sampler(np.array([0, 0, 1]), 2, power=1.0, seed=0)
    assert sharded_sampler(base, 0, 1) is base


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "recorder.py").write_text(RECORDER)
    env = {**os.environ, "TRAIN_STAGE": str(REPO / "stages/train.py"), "OMP_NUM_THREADS": "1"}
    stages = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    for name in stages[:stages.index("train")]:  # everything the train stage reads
        subprocess.run([sys.executable, str(REPO / f"stages/{name}.py")], cwd=root, env=env, check=True,
                       capture_output=True, timeout=300)
    result = subprocess.run([sys.executable, "recorder.py", "--params", "params.yaml"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    records = {who: json.loads((root / f"record_{who}.json").read_text()) for who in ("launcher", "0", "1")}
    return root, result.stdout + result.stderr, records


@pytest.mark.slow
def test_torchrun_ranks_cover_the_weighted_epoch_sample_disjointly(ddp_run):
    root, log, records = ddp_run
    assert "launching 2 processes" in log
    for rank in (0, 1):
        assert f"fold 0: rank {rank} of world size 2 trains on" in log
    params = yaml.safe_load((root / "params.yaml").read_text())
    frame = pd.read_csv(root / "data/splits/splits.csv")
    labels = np.array([CLASSES.index(dx) for dx in frame[(frame["fold"] != -1) & (frame["fold"] != 0)]["dx"]])
    seed = params["seed"]  # fold 0 trains with seed + 0
    for epoch in (1, 2):
        sampler = weighted_sampler(labels, len(CLASSES), params["train"]["sampler_power"], seed)
        sampler.generator.manual_seed(epoch_seed(seed, epoch))
        epoch_sample = list(sampler)
        rank0, rank1 = records["0"]["samples"][epoch - 1], records["1"]["samples"][epoch - 1]
        assert len(rank0) == len(rank1) == (len(epoch_sample) + 1) // 2
        interleaved = [i for pair in zip(rank0, rank1) for i in pair]
        assert interleaved[:len(epoch_sample)] == epoch_sample  # the one-process sample, split by position


@pytest.mark.slow
def test_torchrun_ranks_end_with_identical_weights_and_only_rank0_writes(ddp_run):
    root, _, records = ddp_run
    assert records["0"]["weights"] is not None and records["0"]["weights"] == records["1"]["weights"]
    writes = records["0"]["writes"]
    assert writes.count("fold0") == 1 and writes.count("metrics/train.json") == 1  # each written once
    assert records["1"]["writes"] == [] and records["launcher"]["writes"] == []
    assert records["launcher"]["samples"] == []  # the launcher only starts torchrun
    assert set(json.loads((root / "metrics/train.json").read_text())) == {"fold0"}
    assert set(load_file(root / "models/fold0.safetensors")) and (root / "dvclive/fold0/metrics.json").exists()

"""Sharing data and models through an S3 DVC remote, as the README describes: push from one clone,
`dvc pull` in a fresh one, and the pulled weights predict exactly as the originals. The S3 server
is moto's, on 127.0.0.1: no network, no account."""

import sys
from pathlib import Path

import boto3
import pandas as pd
import pytest
import torch
from moto.server import ThreadedMotoServer
from pipeline_clone import make_clone, run

from skinlesion.ensemble_prediction import predict_frame
from skinlesion.model import load_ensemble

pytestmark = pytest.mark.slow

BUCKET = "skinlesion-store"  # S3 bucket names have 3 to 63 characters
KEY, SECRET = "test-key-id", "test-secret"  # moto accepts any credentials
SMALLEST = {"data": {"demo_lesions": 40, "demo_external_images": 14}, "split": {"n_folds": 2},
            "train": {"folds": [0]}}


@pytest.fixture
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def dvc(*args: str, cwd: Path) -> str:
    return run([sys.executable, "-m", "dvc", *args], cwd).stdout


def add_credentials(repo: Path) -> None:
    """The README's way: credentials go to .dvc/config.local, which git never sees."""
    dvc("remote", "modify", "--local", "storage", "access_key_id", KEY, cwd=repo)
    dvc("remote", "modify", "--local", "storage", "secret_access_key", SECRET, cwd=repo)


def predictions(repo: Path) -> torch.Tensor:
    ensemble, _ = load_ensemble(repo / "models")
    frame = pd.read_csv(repo / "data/manifests/ham10000.csv").head(4)
    frame["path"] = [str(repo / p) for p in frame["path"]]
    return torch.from_numpy(predict_frame(ensemble, frame, img_size=32, tta="none", batch_size=4,
                                          device=torch.device("cpu")))


def test_push_then_pull_into_a_fresh_clone_gives_the_same_models(tmp_path, s3_endpoint):
    origin = make_clone(tmp_path / "origin", SMALLEST)
    dvc("repro", "train", cwd=origin)
    dvc("remote", "add", "-d", "storage", f"s3://{BUCKET}/dvcstore", cwd=origin)
    dvc("remote", "modify", "storage", "endpointurl", s3_endpoint, cwd=origin)
    add_credentials(origin)
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-q", "-m", "train, and a shared remote"], origin)
    assert ".dvc/config.local" not in run(["git", "ls-files"], origin).stdout  # no secret in git
    pushed = dvc("push", cwd=origin)
    print(pushed)
    assert "pushed" in pushed

    fresh = tmp_path / "fresh"
    run(["git", "clone", "-q", str(origin), str(fresh)], tmp_path)
    assert not (fresh / "models").exists()
    add_credentials(fresh)
    pulled = dvc("pull", "--with-deps", "train", cwd=fresh)  # what training made and read
    print(pulled)
    for name in ("models/fold0.safetensors", "models/fold0.json", "data/manifests/ham10000.csv",
                 "data/splits/splits.csv"):
        assert (fresh / name).read_bytes() == (origin / name).read_bytes(), name
    torch.testing.assert_close(predictions(fresh), predictions(origin), rtol=0, atol=0)

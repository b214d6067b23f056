"""What the app's tests share: a tiny trained-looking model folder and a live server on a free port."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

from skinlesion.random_models import write_random_models

IMG_SIZE = 64
ARCH = "efficientnet_b0"  # the smallest EfficientNet: the app does not care which one it serves


def make_models(folder: Path, folds=(0, 1), seed: int = 0, **card_extra) -> Path:
    """fold<k>.safetensors + .json like the train stage writes, with random weights."""
    def scores(fold: int) -> dict:  # a validation score per fold, for the model panel
        return {"val_metrics": {"epoch": 0, "val_balanced_accuracy": 0.5 + fold / 10, "val_loss": 1.0}}

    return write_random_models(folder, ARCH, IMG_SIZE, folds, seed, fold_card=scores, data_source="demo", **card_extra)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_app(models_dir: Path, examples_dir: Path, auth: tuple[str, str] | None = None) -> Iterator[str]:
    """The app on 127.0.0.1 at a free port; yields its URL, closes it afterwards."""
    from skinlesion.serve import app, predictor

    demo = app.build_app(predictor.load_served_model(repo=models_dir.parent), examples_dir)
    app.launch(demo, host="127.0.0.1", port=free_port(), share=False, block=False, auth=auth)
    try:
        yield demo.local_url
    finally:
        demo.close()

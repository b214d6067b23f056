"""Serving a tracked model: load the fold ensemble once (from the workspace or from any git revision
or DVC experiment), then predict one image with its Grad-CAMs from a single forward pass.

Why not call explain.gradcam after a prediction: that is a second forward pass, plus a backward
pass through the whole network (the parameters require gradients). Here the parameters are
frozen and a forward hook turns each member's last conv activation into a leaf that requires
gradients, so autograd records only the head. The one forward pass then gives the probabilities
(through tta.predict_proba, exactly as evaluation computes them), and one cheap backward pass
through the head per class gives the gradients. The Grad-CAM arithmetic is the grad-cam
package's (channel weights = mean gradient, ReLU of the weighted sum, its scale_cam_image, layer
maps averaged), and tests/test_app.py checks the maps against explain.gradcam.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam.utils.image import scale_cam_image
from torch import nn

from .. import tta as tta_views
from ..classes import CLASSES, display_name
from ..device import channels_last
from .. import revisions
from ..errors import ModelFileError, ModelNotFoundError, RevisionError
from ..model import FoldEnsemble, load_ensemble, read_card
from ..transforms import to_chw_uint8

MODELS_DIR = "models"
EVAL_METRICS = "metrics/eval.json"

# How each TTA view is undone on a CAM (flips are their own inverse).
_UNDO_VIEW = {"original": lambda m: m, "hflip": lambda m: m[:, ::-1], "vflip": lambda m: m[::-1, :]}


class NonFiniteOutputError(RuntimeError):
    """The model returned NaN or infinite probabilities: there is nothing to rank or show."""

    def __init__(self):
        super().__init__("The model returned invalid probabilities (not a number), so no diagnosis can be "
                         "given. Its weights are broken: the operator must retrain the model (`dvc repro`) or "
                         "serve another revision.")


@dataclass
class ServedModel:
    ensemble: FoldEnsemble
    cards: list[dict]  # one per fold, in fold order
    revision: str  # what a person reads: which commit or experiment the weights come from
    eval_metrics: dict | None  # metrics/eval.json of the same revision, when there is one

    @property
    def img_size(self) -> int:
        return int(self.cards[0]["img_size"])


@dataclass
class Prediction:
    probs: np.ndarray  # (7,) in CLASSES order, sums to 1
    cams: np.ndarray | None  # (7, size, size) in [0, 1]: the Grad-CAM of every class, or None

    @property
    def top_class(self) -> int:
        return int(self.probs.argmax())

    def top(self, n: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(-self.probs)[:n]
        return [(display_name(CLASSES[k]), float(self.probs[k])) for k in order]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def _how_to_get_weights(where: str) -> str:
    return (f"no trained weights in {where}. Train them with `dvc repro` (or fetch the tracked ones "
            "with `dvc pull`), then start the app again. The app never runs on random weights.")


def load_served_model(rev: str | None = None, repo: str | Path = ".") -> ServedModel:
    """The workspace's models/ (rev None), or models/ of a git revision or DVC experiment."""
    repo = Path(repo)
    if rev is None:
        folder = repo / MODELS_DIR
        if not any(folder.glob("fold*.json")):
            raise ModelNotFoundError(_how_to_get_weights(f"{folder}/"))
        ensemble, cards = load_ensemble(folder)
        metrics_path = repo / EVAL_METRICS
        metrics = _eval_metrics(metrics_path.read_bytes(), EVAL_METRICS) if metrics_path.is_file() else None
        head = _git_head(repo)
        revision = f"workspace `models/` (git HEAD {head})" if head else "workspace `models/` (not a git repository)"
        return ServedModel(ensemble, cards, revision, metrics)
    return _load_at_revision(rev, repo)


def _git_head(repo: Path) -> str | None:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def _load_at_revision(rev: str, repo: Path) -> ServedModel:
    """Fetch models/ of `rev` through dvc.api (from the DVC cache, else the remote) into a temporary
    folder, load it, delete the folder. Experiment names resolve like git revisions. Every way this
    fails (no such revision, a revision naming a file, no models/ there, weights in no cache or
    remote) is a ModelNotFoundError with one message."""
    import dvc.api

    unreadable = revisions.read_errors()
    try:
        sha = revisions.resolve(rev, repo, argument="--rev")
    except RevisionError as e:
        raise ModelNotFoundError(str(e)) from None
    where = f"`models/` at {rev} ({sha[:7]})"
    tmp = Path(tempfile.mkdtemp(prefix="skinlesion-models-"))
    try:
        fs = dvc.api.DVCFileSystem(str(repo), rev=sha)
        if not fs.isdir(MODELS_DIR):
            raise ModelNotFoundError(_how_to_get_weights(where))
        # Listing a DVC-tracked folder reads its .dir object from the cache: the first place where
        # weights missing from the cache show.
        cards = sorted(p for p in fs.ls(MODELS_DIR, detail=False) if Path(p).name.startswith("fold")
                       and p.endswith(".json"))
        if not cards:
            raise ModelNotFoundError(_how_to_get_weights(where))
        # Messages name the files as git does, <rev>:models/fold0.json, not by the temporary copy.
        shown = f"{rev}:{MODELS_DIR}"
        for card_path in cards:
            copy = tmp / Path(card_path).name
            copy.write_bytes(dvc.api.read(card_path, repo=str(repo), rev=sha, mode="rb"))
            # Validated before its weights are fetched: the weights' name is a file beside the card.
            weights = f"{MODELS_DIR}/{read_card(copy, f'{shown}/{copy.name}')[0].weights}"
            with dvc.api.open(weights, repo=str(repo), rev=sha, mode="rb") as src, \
                    open(tmp / Path(weights).name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        ensemble, loaded_cards = load_ensemble(tmp, folder_name=shown)
        try:
            metrics = _eval_metrics(dvc.api.read(EVAL_METRICS, repo=str(repo), rev=sha, mode="rb"),
                                    f"{rev}:{EVAL_METRICS}")
        except unreadable:
            metrics = None
    except unreadable as e:
        if isinstance(e, ModelNotFoundError):
            raise
        # Tracked at that revision, but the files are in neither the cache nor a remote.
        raise ModelNotFoundError(f"the weights of {where} are tracked by DVC but not in its cache. Run `dvc pull` (or `dvc repro` at that revision) so that the DVC cache "
                                 "holds them, then start the app again.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ServedModel(ensemble, loaded_cards, f"{rev} (commit {sha[:7]})", metrics)


def _eval_metrics(data: bytes, shown: str) -> dict:
    """metrics/eval.json, the test scores shown beside the model: a JSON object, or one message."""
    try:
        metrics = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deeply
        metrics = None
    if not isinstance(metrics, dict):
        raise ModelFileError(f"{shown} is not the JSON object the evaluate stage writes; run `dvc pull` to "
                             "restore it, or `dvc repro evaluate` to compute it again")
    return metrics


# --------------------------------------------------------------------------------------------
# Predicting
# --------------------------------------------------------------------------------------------

class _Recorder(nn.Module):
    """Passes through to the model and keeps its output, so that tta.predict_proba computes the
    probabilities while the raw output stays available for the Grad-CAM backward pass."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.output: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.output = self.model(x)
        return self.output


class Predictor:
    """Owns the served model (it freezes its parameters); one request at a time."""

    def __init__(self, served: ServedModel):
        self.served = served
        self.model = channels_last(served.ensemble.eval().requires_grad_(False))
        self.cam_layers = served.ensemble.cam_layers()
        self._lock = threading.Lock()  # hooks and the model are shared: no interleaved requests

    def predict(self, rgb: np.ndarray, *, tta: bool, cam: bool = True) -> Prediction:
        """rgb: (size, size, 3) uint8, as uploads.read_upload returns it. NonFiniteOutputError when
        the model's output is not finite."""
        images = to_chw_uint8(rgb)[None].contiguous(memory_format=torch.channels_last)
        mode = "flips" if tta else "none"
        with self._lock:
            if not cam:
                with torch.inference_mode():
                    probs = tta_views.predict_proba(self.model, images, mode, one_pass=True)  # batch 1: one pass is faster
                prediction = Prediction(probs[0].double().numpy(), None)
            else:
                prediction = self._predict_with_cams(images, mode)
        # argmax ranks a NaN first: a broken model would name a diagnosis. Nothing non-finite leaves.
        if not np.isfinite(prediction.probs).all() or (prediction.cams is not None
                                                        and not np.isfinite(prediction.cams).all()):
            raise NonFiniteOutputError()
        return prediction

    def _predict_with_cams(self, images: torch.Tensor, mode: str) -> Prediction:
        activations: list[torch.Tensor] = []

        def as_leaf(module, inputs, output):
            # Returning a new tensor replaces the layer's output: the head now starts from a leaf.
            leaf = output.detach().requires_grad_(True)
            activations.append(leaf)
            return leaf

        handles = [layer.register_forward_hook(as_leaf) for layer in self.cam_layers]
        try:
            recorder = _Recorder(self.model)
            with torch.enable_grad():
                probs = tta_views.predict_proba(recorder, images, mode, one_pass=True)[0].detach().double().numpy()
                output = recorder.output  # (views, 7)
                grads = [torch.autograd.grad(output[:, k].sum(), activations, retain_graph=k < len(CLASSES) - 1)
                         for k in range(len(CLASSES))]
        finally:
            for h in handles:
                h.remove()
        size = images.shape[-1]
        acts = [a.detach().float().numpy() for a in activations]
        cams = np.stack([self._cam(acts, [g.float().numpy() for g in grads[k]], size, tta_views.TTA_VIEWS[mode])
                         for k in range(len(CLASSES))])
        return Prediction(probs, cams)

    @staticmethod
    def _cam(acts: list[np.ndarray], grads: list[np.ndarray], size: int, views: tuple[str, ...]) -> np.ndarray:
        """grad-cam's GradCAM per layer and its layer aggregation, per TTA view; the views' maps are
        flipped back and averaged."""
        per_layer = []
        for a, g in zip(acts, grads):
            weights = g.mean(axis=(2, 3))  # GradCAM.get_cam_weights
            cam = np.maximum((weights[:, :, None, None] * a).sum(axis=1), 0)  # BaseCAM.get_cam_image + ReLU
            per_layer.append(scale_cam_image(cam, (size, size)))
        per_view = scale_cam_image(np.maximum(np.mean(per_layer, axis=0), 0))  # BaseCAM.aggregate_multi_layers
        upright = np.mean([_UNDO_VIEW[v](m) for v, m in zip(views, per_view)], axis=0)
        return scale_cam_image(upright[None])[0] if len(views) > 1 else upright

"""Grad-CAM (Selvaraju et al. 2017, via the grad-cam package): where the model looks, as pictures
and as two numbers.

- cam_in_lesion: the share of CAM energy (the sum of the map) inside the lesion mask. 1 means the
  model looks only at the lesion; the mask's area share is what a map spread evenly would score.
- the model-randomisation check (Adebayo et al. 2018, "Sanity checks for saliency maps"): the CAMs
  of the same ensemble with re-initialised weights must differ from the trained one's, else the
  maps show the image's edges, not what the model learned. Reported as the Spearman rank
  correlation between the two maps per image; near 0 passes, near 1 fails.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.image import show_cam_on_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from . import images  # noqa: E402
from .classes import CLASSES, display_name  # noqa: E402
from .errors import DataError  # noqa: E402
from .model import FoldEnsemble  # noqa: E402
from .transforms import resize_and_crop, to_chw_uint8  # noqa: E402


def gradcam(model: FoldEnsemble, images: torch.Tensor, class_indices: list[int]) -> np.ndarray:
    """CAMs in [0, 1], shape (N, H, W), for each image's target class. For an ensemble, the CAMs
    of the members' last conv layers are averaged. Needs gradients: never under no_grad."""
    with GradCAM(model=model, target_layers=model.cam_layers()) as cam:
        return cam(input_tensor=images.float(), targets=[ClassifierOutputTarget(k) for k in class_indices])


def lesion_mask(mask_path: str | Path, image_path: str | Path, img_size: int) -> np.ndarray:
    """The binary lesion mask in the geometry of the model's input (transforms.resize_and_crop),
    exactly as the image. The mask must have the image's aspect ratio (the
    HAM10000 segmentation release has the images' size)."""
    # Through images.decode, as every image the pipeline reads: its formats only, so no file starts an interpreter.
    mask = images.decode(mask_path, upright=False, convert=lambda im: np.asarray(im.convert("L")))
    image_w, image_h = images.decode(image_path, upright=False, convert=lambda im: im.size)
    if abs(mask.shape[1] / mask.shape[0] - image_w / image_h) > 0.01:
        raise DataError(f"lesion mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                        f"{image_w}x{image_h}; a mask must cover its image exactly (same aspect ratio)")
    return resize_and_crop(mask.astype(np.float32) / 255.0, img_size) >= 0.5


def cam_in_lesion(cam: np.ndarray, mask: np.ndarray) -> float:
    """The share of the CAM's energy inside the mask; NaN for an empty CAM (no energy to place)."""
    total = float(cam.sum())
    return float(cam[mask].sum()) / total if total > 0 else float("nan")


def randomised(model: FoldEnsemble, seed: int) -> FoldEnsemble:
    """A copy of `model` with every layer re-initialised (its own default initialisation; BatchNorm
    back to identity statistics): the same architecture, with nothing learned."""
    twin = copy.deepcopy(model)
    torch.manual_seed(seed)
    for module in twin.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        if hasattr(module, "reset_running_stats"):
            module.reset_running_stats()
    return twin.eval()


def rank_correlation(cam_a: np.ndarray, cam_b: np.ndarray) -> float:
    """Spearman's rho between two maps of one image; NaN when either map is constant."""
    if cam_a.std() == 0 or cam_b.std() == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(spearmanr(cam_a.ravel(), cam_b.ravel()).statistic)


def summary(values: list[float]) -> dict[str, float | int | None]:
    """Mean and median over the images where the value is defined, and how many those are."""
    finite = np.array([v for v in values if np.isfinite(v)])
    return {"mean": float(finite.mean()) if len(finite) else None,
            "median": float(np.median(finite)) if len(finite) else None, "images": int(len(finite))}


def cam_metrics(model: FoldEnsemble, rgbs: list[np.ndarray], masks: list[np.ndarray], class_indices: list[int],
                *, batch_size: int, seed: int) -> dict:
    """cam_in_lesion of the trained model (and, for reference, of the randomised one and of a uniform
    map, i.e. the mask's area share) and the randomisation check, over images with masks."""
    random_model = randomised(model, seed)
    in_lesion, random_in_lesion, rho = [], [], []
    for start in range(0, len(rgbs), batch_size):
        batch = torch.stack([to_chw_uint8(rgb) for rgb in rgbs[start:start + batch_size]])
        targets = class_indices[start:start + batch_size]
        trained, scrambled = gradcam(model, batch, targets), gradcam(random_model, batch, targets)
        for cam, cam_random, mask in zip(trained, scrambled, masks[start:start + batch_size]):
            in_lesion.append(cam_in_lesion(cam, mask))
            random_in_lesion.append(cam_in_lesion(cam_random, mask))
            rho.append(rank_correlation(cam, cam_random))
    return {
        "cam_in_lesion": summary(in_lesion),
        "cam_in_lesion_randomised_model": summary(random_in_lesion),
        "mask_area_share": summary([float(m.mean()) for m in masks]),
        "randomisation_rank_correlation": summary(rho),
    }


def overlay(rgb_uint8: np.ndarray, cam: np.ndarray, image_weight: float = 0.55) -> np.ndarray:
    return show_cam_on_image(rgb_uint8.astype(np.float32) / 255.0, cam, use_rgb=True, image_weight=image_weight)


def class_figure(dx: str, examples: list[dict]):
    """One row per example: the image, its Grad-CAM overlay for the predicted class, the probabilities.

    Each example holds rgb (uint8 HxWx3), cam (HxW), probs (7,), true (index), image_id.
    """
    rows = max(1, len(examples))
    fig, axes = plt.subplots(rows, 3, figsize=(10, 3.1 * rows), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1.4]})
    fig.suptitle(f"Grad-CAM, true class {display_name(dx)}", fontsize=12)
    if not examples:
        for ax in axes[0]:
            ax.axis("off")
        axes[0, 1].text(0.5, 0.5, "no test images of this class", ha="center", va="center")
    for row, ex in zip(axes, examples):
        pred = int(np.argmax(ex["probs"]))
        verdict = "correct" if pred == ex["true"] else "wrong"
        row[0].imshow(ex["rgb"])
        row[0].set_title(f"{ex['image_id']} ({verdict})", fontsize=9)
        row[1].imshow(overlay(ex["rgb"], ex["cam"]))
        row[1].set_title(f"CAM for predicted {CLASSES[pred]} (p={ex['probs'][pred]:.2f})", fontsize=9)
        for ax in row[:2]:
            ax.axis("off")
        colours = ["tab:green" if k == ex["true"] else ("tab:red" if k == pred else "tab:gray")
                   for k in range(len(CLASSES))]
        row[2].barh(list(CLASSES), ex["probs"], color=colours)
        row[2].set_xlim(0, 1)
        row[2].invert_yaxis()
        row[2].set_xlabel("probability (green: true class, red: wrong prediction)", fontsize=8)
    fig.tight_layout()
    return fig

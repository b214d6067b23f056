"""Grad-CAM (Selvaraju et al. 2017, via the grad-cam package): where the model looks."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.image import show_cam_on_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from .classes import CLASSES, display_name  # noqa: E402
from .model import FoldEnsemble  # noqa: E402


def gradcam(model: FoldEnsemble, images: torch.Tensor, class_indices: list[int]) -> np.ndarray:
    """CAMs in [0, 1], shape (N, H, W), for each image's target class. For an ensemble, the CAMs
    of the members' last conv layers are averaged. Needs gradients: never under no_grad."""
    with GradCAM(model=model, target_layers=model.cam_layers()) as cam:
        return cam(input_tensor=images.float(), targets=[ClassifierOutputTarget(k) for k in class_indices])


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

"""Stage gradcam: Grad-CAM figures of correctly and wrongly classified internal test images.

    python stages/gradcam.py

Output: plots/gradcam/<dx>.png, one figure per class.
"""

from pathlib import Path

import numpy as np
import torch

from skinlesion import atomic, cli, explain, isic, model, splitting
from skinlesion.classes import CLASSES
from skinlesion.images import center_crop, load_rgb
from skinlesion.params import load_params
from skinlesion.transforms import to_chw_uint8


def pick_examples(true: np.ndarray, probs: np.ndarray, dx: int, n: int) -> list[int]:
    """The n most confident correct and the n most confident wrong predictions for true class dx."""
    pred, conf = probs.argmax(1), probs.max(1)
    correct = np.flatnonzero((true == dx) & (pred == dx))
    wrong = np.flatnonzero((true == dx) & (pred != dx))
    return [*correct[np.argsort(-conf[correct])][:n], *wrong[np.argsort(-conf[wrong])][:n]]


def main(args) -> None:
    params = load_params(args.params)
    ensemble, cards = model.load_ensemble(Path("models"))
    img_size = cards[0]["img_size"]
    splits = splitting.read_splits()
    test = splits[splits["fold"] == splitting.TEST].set_index("image_id")
    image_ids, probs = isic.read_predictions("data/predictions/internal.csv")
    true = np.array([CLASSES.index(dx) for dx in test.loc[image_ids, "dx"]])

    with atomic.atomic_dir("plots/gradcam") as out:
        for k, dx in enumerate(CLASSES):
            rows = pick_examples(true, probs, k, params.gradcam.examples_per_kind)
            rgbs = [center_crop(load_rgb(test.loc[image_ids[i], "path"], img_size), img_size) for i in rows]
            cams = (explain.gradcam(ensemble, torch.stack([to_chw_uint8(r) for r in rgbs]),
                                    [int(probs[i].argmax()) for i in rows]) if rows else [])
            examples = [{"rgb": rgb, "cam": cam, "probs": probs[i], "true": k, "image_id": image_ids[i]}
                        for i, rgb, cam in zip(rows, rgbs, cams)]
            fig = explain.class_figure(dx, examples)
            fig.savefig(out / f"{dx}.png", dpi=80)
            explain.plt.close(fig)
            print(f"{dx}: {len(examples)} example(s)")


if __name__ == "__main__":
    cli.run(main, cli.stage_parser(__doc__))

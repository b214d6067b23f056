"""Stage gradcam: Grad-CAM figures of correctly and wrongly classified internal test images, and
Grad-CAM as numbers: cam_in_lesion and the model-randomisation check (see skinlesion/explain.py).

    python stages/gradcam.py

Output: plots/gradcam/<dx>.png, one figure per class; metrics/gradcam.json.
"""

from pathlib import Path

import numpy as np
import torch

from skinlesion import atomic, cli, explain, isic, model, prediction, splitting
from skinlesion.classes import CLASSES
from skinlesion.cache import ImageCache
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
    # The test images exactly as evaluation fed them to the model (the centre crops), in the predictions' order.
    images = prediction.eval_images(test.loc[image_ids].reset_index(), img_size,
                                    ImageCache("data/cache/ham10000", img_size))

    # The numbers, on the test images that have a lesion mask (a seeded sample of gradcam.metric_images).
    with_mask = np.flatnonzero(test.loc[image_ids, "mask_path"].to_numpy() != "")
    chosen = np.sort(np.random.default_rng(params.seed).permutation(with_mask)[:params.gradcam.metric_images])
    scored = test.loc[image_ids[chosen]]
    scores = explain.cam_metrics(
        ensemble, [images.rgb(i) for i in chosen],
        [explain.lesion_mask(m, p, img_size) for m, p in zip(scored["mask_path"], scored["path"])],
        [int(probs[i].argmax()) for i in chosen], batch_size=params.gradcam.batch_size, seed=params.seed)
    report = {"test_images": len(image_ids), "images_with_masks": len(with_mask), "images_scored": len(chosen),
              **scores}
    print(f"{len(chosen)} of {len(image_ids)} test images scored ({len(with_mask)} with masks): "
          + ", ".join(f"{key} {value['mean']:.3f}" for key, value in scores.items() if value["mean"] is not None))
    if scores["cam_in_lesion"]["mean"] is None and len(chosen):
        print("warning: every CAM was constant, so cam_in_lesion is undefined; at this data.img_size the "
              "model's last feature map is probably 1x1")

    with atomic.atomic_dir("plots/gradcam") as out:
        for k, dx in enumerate(CLASSES):
            rows = pick_examples(true, probs, k, params.gradcam.examples_per_kind)
            rgbs = [images.rgb(i) for i in rows]
            cams = (explain.gradcam(ensemble, torch.stack([to_chw_uint8(r) for r in rgbs]),
                                    [int(probs[i].argmax()) for i in rows]) if rows else [])
            examples = [{"rgb": rgb, "cam": cam, "probs": probs[i], "true": k, "image_id": image_ids[i]}
                        for i, rgb, cam in zip(rows, rgbs, cams)]
            fig = explain.class_figure(dx, examples)
            fig.savefig(out / f"{dx}.png", dpi=80)
            explain.plt.close(fig)
            print(f"{dx}: {len(examples)} example(s)")
    atomic.write_json("metrics/gradcam.json", report)


if __name__ == "__main__":
    cli.run(main, cli.stage_parser(__doc__))

"""Stage evaluate: the fold ensemble, with TTA, on the internal test set and the external set.

    python stages/evaluate.py

Output: metrics/eval.json ({"internal": {...}, "external": {...}}: balanced accuracy, plain
accuracy (MedMNIST's ACC) and macro AUC with lesion-level bootstrap 95% intervals, ECE before and
after temperature scaling, the ISIC 2018 Task 3 metrics; for an official split with lesion ids
also internal.parts: the same for the test set's seen and unseen parts, see skinlesion/seen_lesions.py),
data/predictions/<set>.csv and <set>_truth.csv in the ISIC 2018 Task 3 format, plots/eval/ (confusion, ROC,
precision-recall and reliability tables for `dvc plots`; reliability.png and embedding.png).
"""

from pathlib import Path

import numpy as np

from skinlesion import (atomic, bootstrap, calibration, cli, embedding, ensemble_prediction, isic, manifest, metrics,
                        model, plots, sampling, seen_lesions, splitting)
from skinlesion.cache import ImageCache
from skinlesion.classes import CLASSES
from skinlesion.errors import ModelFileError
from skinlesion.params import load_params
from skinlesion.device import pick_device


CACHES = {"internal": "data/cache/ham10000", "external": "data/cache/external"}  # the preprocess stage's
MODELS = Path("models")


def main(args) -> None:
    params = load_params(args.params)
    device = pick_device("auto")
    ensemble, cards = model.load_ensemble(MODELS, device)
    img_size = cards[0]["img_size"]
    splits = splitting.read_splits()
    sets = {"internal": splits[splits["fold"] == splitting.TEST],
            "external": manifest.read("data/audit/external.csv")}  # leakage-audited

    trained_on = splits[splits["fold"] != splitting.TEST]["dx"]
    train_counts = np.array([(trained_on == dx).sum() for dx in CLASSES])
    sampler_power = trained_sampler_power(cards, MODELS)
    report = {"tta": params.evaluate.tta, "folds": [c["fold"] for c in cards],
              "temperatures": [c.get("temperature", 1.0) for c in cards]}
    reliability, eces, features = {}, {}, []
    with atomic.atomic_dir("data/predictions") as predictions, atomic.atomic_dir("plots/eval") as plot_dir:
        for name, frame in sets.items():
            if frame.empty:
                continue
            # One pass per set: the calibrated probabilities, the raw ones (for the ECE before
            # temperature scaling) and the t-SNE features all come from the same forward passes.
            shown = embedding.sample_rows(frame, params.evaluate.embedding_images, params.seed)
            out = ensemble_prediction.predict_ensemble(
                ensemble, frame, img_size=img_size, tta=params.evaluate.tta, batch_size=params.evaluate.batch_size,
                device=device, feature_rows=shown, desc=name, cache=ImageCache(CACHES[name], img_size))
            probs, raw = out.probabilities, out.uncalibrated
            y_true = np.array([CLASSES.index(dx) for dx in frame["dx"]])
            pred_table, truth_table = isic.tables(frame, probs)
            probs = isic.probabilities(pred_table)  # the CSV's numbers: eval.json is the official scorer's on it
            report[name] = score(y_true, probs, raw, frame["lesion_id"], params)
            report[name]["sampler_prior_undone"] = prior_undone(y_true, probs, train_counts, sampler_power)
            if name == "internal" and (parts := seen_lesions.read()) is not None:  # an official split with lesion ids
                report[name]["parts"] = seen_lesions.score(frame, parts, y_true, probs, raw,
                                                           lambda *scored: score(*scored, params))
            pred_table.to_csv(predictions / f"{name}.csv", index=False)
            truth_table.to_csv(predictions / f"{name}_truth.csv", index=False)
            reliability[name] = {"uncalibrated": calibration.reliability(raw, y_true),
                                 "calibrated": calibration.reliability(probs, y_true)}
            eces[name] = report[name]["ece"]
            for relative, table in plots.eval_tables(name, y_true, probs, reliability[name]).items():
                (plot_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                table.to_csv(plot_dir / relative, index=False)
            features.append((name, frame["dx"].to_numpy()[shown], out.features))
            r = report[name]
            print(f"{name}: {len(frame)} images, balanced accuracy {r['balanced_accuracy']:.4f} "
                  f"[{r['balanced_accuracy_ci95']['low']:.4f}, {r['balanced_accuracy_ci95']['high']:.4f}], "
                  f"accuracy {r['accuracy']:.4f}, "
                  f"macro AUC {r['macro_auc']:.4f}, ECE {r['ece']['uncalibrated']:.4f} -> "
                  f"{r['ece']['calibrated']:.4f} after temperature scaling")
        if features:
            save_figure(plots.reliability_figure(reliability, eces), plot_dir / "reliability.png")
            points = embedding.project(np.concatenate([f for _, _, f in features]), params.seed)
            dx = np.concatenate([d for _, d, _ in features])
            set_names = np.concatenate([[name] * len(d) for name, d, _ in features])
            save_figure(embedding.figure(points, dx, set_names), plot_dir / "embedding.png")
    atomic.write_json("metrics/eval.json", report)


def trained_sampler_power(cards: list[dict], folder: Path) -> float:
    """The weighted sampler's power the folds were trained with (0: no weighted sampler), from the
    cards the train stage writes; model.load has checked the types of what is there."""
    train = cards[0].get("params", {}).get("train")
    if train is None or any("fold" not in c for c in cards):
        raise ModelFileError(f"the model cards in {folder} lack the fold number or the params.train that the train "
                             f"stage records, which evaluate reads; {model.RESTORE}")
    return train["sampler_power"] if train["weighted_sampler"] else 0.0


def score(y_true, probs, raw_probs, lesion_ids, params) -> dict:
    """One set's entry in eval.json: the headline numbers first, then the full ISIC 2018 set."""
    scores = metrics.classification_report(y_true, probs)
    ci = bootstrap.confidence_intervals(y_true, probs, lesion_ids, n_resamples=params.evaluate.bootstrap_resamples,
                                        seed=params.seed)
    headline = {
        "n_images": scores.pop("n_images"),
        "n_lesions": int(lesion_ids.nunique()),
        "balanced_accuracy": scores.pop("balanced_accuracy"),
        "balanced_accuracy_ci95": ci["balanced_accuracy"],
        "accuracy": scores.pop("accuracy"),  # plain accuracy: the MedMNIST benchmark's ACC
        "accuracy_ci95": ci["accuracy"],
        "macro_auc": scores.pop("macro_auc"),
        "macro_auc_ci95": ci["macro_auc"],
        "ece": {"uncalibrated": calibration.expected_calibration_error(raw_probs, y_true),
                "calibrated": calibration.expected_calibration_error(probs, y_true)},
    }
    return {**headline, **scores}


def prior_undone(y_true, probs, train_counts, sampler_power: float) -> dict:
    """The second decision rule: argmax after undoing the weighted sampler's class prior
    (sampling.undo_sampler_prior). The headline numbers above are plain argmax."""
    decisions = sampling.undo_sampler_prior(probs, train_counts, sampler_power).argmax(axis=1)
    return {"sampler_power": sampler_power,
            "balanced_accuracy": metrics.balanced_accuracy(y_true, decisions),
            "accuracy": float(np.mean(decisions == y_true))}


def save_figure(fig, path: Path) -> None:
    fig.savefig(path, dpi=90)
    plots.close(fig)


if __name__ == "__main__":
    cli.run(main, cli.stage_parser(__doc__))

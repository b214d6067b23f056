"""Plot data for `dvc plots` (CSV tables, one per curve) and the matplotlib figures of evaluate.

dvc.yaml draws each CSV with a Vega-Lite template; colours in one plot come from the files, so a
plot with one line per class reads one file per class.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from .classes import CLASSES  # noqa: E402
from .metrics import decisions  # noqa: E402


def confusion_table(y_true: np.ndarray, y_pred: np.ndarray) -> pd.DataFrame:
    """One row per image, actual and predicted class names, for the confusion templates. An undecided
    prediction (tied maximum, metrics.UNDECIDED) shows as 'undecided'."""
    names = np.array([*CLASSES, "undecided"])  # index -1 is the last
    return pd.DataFrame({"actual": names[y_true], "predicted": names[y_pred]})


def _one_vs_rest(y_true: np.ndarray, probs: np.ndarray, curve) -> dict[str, pd.DataFrame]:
    """curve(truth, scores) -> table, for each class with both positives and negatives."""
    return {dx: curve(y_true == k, probs[:, k]) for k, dx in enumerate(CLASSES)
            if 0 < (y_true == k).sum() < len(y_true)}


def roc_tables(y_true: np.ndarray, probs: np.ndarray) -> dict[str, pd.DataFrame]:
    """Per class present with positives and negatives: its one-vs-rest ROC curve (fpr, tpr, threshold)."""
    def roc(truth, scores):
        fpr, tpr, thresholds = roc_curve(truth, scores)
        return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(thresholds, 1.0)})
    return _one_vs_rest(y_true, probs, roc)


def precision_recall_tables(y_true: np.ndarray, probs: np.ndarray) -> dict[str, pd.DataFrame]:
    """Per class present with positives and negatives: its precision-recall curve (recall ascending,
    as the plot draws it)."""
    def pr(truth, scores):
        precision, recall, _ = precision_recall_curve(truth, scores)
        return pd.DataFrame({"recall": recall[::-1], "precision": precision[::-1]})
    return _one_vs_rest(y_true, probs, pr)


def eval_tables(name: str, y_true: np.ndarray, probs: np.ndarray,
                reliability: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every plot table of one evaluated set, by its path under plots/eval/ (the names dvc.yaml uses)."""
    tables = {f"{name}_confusion.csv": confusion_table(y_true, decisions(probs))}
    tables.update({f"roc/{name}_{dx}.csv": t for dx, t in roc_tables(y_true, probs).items()})
    tables.update({f"precision_recall/{name}_{dx}.csv": t for dx, t in precision_recall_tables(y_true, probs).items()})
    tables.update({f"reliability/{name}_{state}.csv": t for state, t in reliability.items()})
    return tables


def reliability_figure(tables: dict[str, dict[str, pd.DataFrame]], eces: dict[str, dict[str, float]]):
    """One panel per set: accuracy against confidence per bin, before and after temperature scaling,
    with the share of images per bin below.

    tables: {set: {"uncalibrated": reliability table, "calibrated": ...}}; eces: the same keys, ECE values.
    """
    fig, axes = plt.subplots(2, max(1, len(tables)), figsize=(5 * max(1, len(tables)), 6.5), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    for col, (name, by_state) in enumerate(tables.items()):
        ax, hist = axes[0, col], axes[1, col]
        ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="perfect calibration")
        for state, colour in (("uncalibrated", "tab:red"), ("calibrated", "tab:blue")):
            t = by_state[state]
            ax.plot(t["confidence"], t["accuracy"], marker="o", color=colour,
                    label=f"{state} (ECE {eces[name][state]:.3f})")
            share = t["images"] / t["images"].sum()
            hist.bar((t["bin_low"] + t["bin_high"]) / 2, share, width=(t["bin_high"] - t["bin_low"]) * 0.45,
                     align="edge" if state == "calibrated" else "center", color=colour, alpha=0.7)
        ax.set(title=f"{name}: reliability", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left", fontsize=8)
        hist.set(xlabel="confidence (top-label probability)", ylabel="share of images")
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)

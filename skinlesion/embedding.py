"""A 2-D map (t-SNE) of the ensemble's penultimate features, internal and external images together.
The features come from evaluation's one pass over each set (ensemble_prediction.predict_ensemble).

If the external images form their own islands, apart from the internal images of the same class,
the model sees the clinic before the lesion: domain shift, visible before any score drops.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from .classes import CLASSES  # noqa: E402


def sample_rows(frame: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """The positions of at most n rows of `frame`, a class-stratified sample (t-SNE slows down with
    every point): all rows in order when there are at most n, else grouped by class."""
    if len(frame) <= n:
        return np.arange(len(frame))
    numbered = frame.reset_index(drop=True)  # index = position
    return numbered.groupby("dx", group_keys=False).sample(frac=n / len(frame), random_state=seed).index.to_numpy()


def project(features: np.ndarray, seed: int) -> np.ndarray:
    """t-SNE to 2-D, after PCA to at most 50 dimensions (standard practice: faster, less noise)."""
    features = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-6)
    dims = min(50, features.shape[0] - 1, features.shape[1])
    reduced = PCA(n_components=dims, random_state=seed).fit_transform(features)
    perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)


def figure(points: np.ndarray, dx: np.ndarray, set_names: np.ndarray):
    """Two panels of the same map: coloured by class, and by set."""
    fig, (by_class, by_set) = plt.subplots(1, 2, figsize=(13, 6))
    markers = {name: m for name, m in zip(dict.fromkeys(set_names), "o^sD")}
    colours = plt.get_cmap("tab10")
    for k, cls in enumerate(CLASSES):
        for name, marker in markers.items():
            keep = (dx == cls) & (set_names == name)
            by_class.scatter(*points[keep].T, s=14, marker=marker, color=colours(k), alpha=0.75,
                             label=f"{cls} ({name})" if keep.any() else None, linewidths=0)
    for j, (name, marker) in enumerate(markers.items()):
        keep = set_names == name
        by_set.scatter(*points[keep].T, s=14, marker=marker, color=colours(j), alpha=0.6, label=name, linewidths=0)
    by_class.set_title("t-SNE of penultimate features, by class (marker: set)")
    by_set.set_title("the same map, by set (separate islands: domain shift)")
    by_class.legend(fontsize=7, ncol=2, markerscale=1.5)
    by_set.legend(markerscale=1.5)
    for ax in (by_class, by_set):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig

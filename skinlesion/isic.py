"""The ISIC 2018 Task 3 CSV format: an `image` column plus MEL,NV,BCC,AKIEC,BKL,DF,VASC, one-hot in the
ground truth and probabilities in the predictions, as the official scorer reads them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .classes import CLASSES, ISIC_COLUMNS


def tables(frame: pd.DataFrame, probs: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ISIC 2018 Task 3 prediction and ground-truth CSVs: `image` plus MEL,NV,BCC,AKIEC,BKL,DF,VASC."""
    order = [CLASSES.index(c.lower()) for c in ISIC_COLUMNS]
    image = frame["image_id"].to_numpy()
    predictions = pd.DataFrame(probs[:, order], columns=list(ISIC_COLUMNS)).round(6)
    predictions.insert(0, "image", image)
    labels = np.array([CLASSES.index(dx) for dx in frame["dx"]], dtype=int)
    onehot = np.eye(len(CLASSES))[labels][:, order]
    truth = pd.DataFrame(onehot, columns=list(ISIC_COLUMNS))
    truth.insert(0, "image", image)
    return predictions, truth


def probabilities(predictions: pd.DataFrame) -> np.ndarray:
    """(N, 7) probabilities in CLASSES order from a predictions table: the numbers the CSV holds
    (rounded to 6 decimals), so scores computed from them are the official scorer's on that file."""
    return predictions[[c.upper() for c in CLASSES]].to_numpy(dtype=float)


def read_predictions(path) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `tables` for the predictions file: image ids and (N, 7) probabilities in CLASSES order."""
    table = pd.read_csv(path)
    return table["image"].to_numpy(), probabilities(table)


def read_truth(path) -> tuple[np.ndarray, np.ndarray]:
    """Image ids and class indices (CLASSES order) from a one-hot ground-truth file."""
    table = pd.read_csv(path)
    return table["image"].to_numpy(), probabilities(table).argmax(axis=1)

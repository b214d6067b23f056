"""A tiny manifest of random-noise images, one lesion per image: what training tests feed a model
when only the mechanics matter, not what it learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from skinlesion.classes import CLASSES


def noise_image_frame(folder: Path, per_class: int) -> pd.DataFrame:
    """per_class 40x40 PNGs of every class (classes cycling), with image_id, path, lesion_id, dx."""
    rng = np.random.default_rng(0)
    rows = []
    for k, dx in enumerate(CLASSES * per_class):
        path = folder / f"{k}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        rows.append({"image_id": f"ISIC_{k:07d}", "path": str(path), "lesion_id": f"HAM_{k:07d}", "dx": dx})
    return pd.DataFrame(rows)

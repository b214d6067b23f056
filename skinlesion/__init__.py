"""Dermoscopic skin-lesion classification on HAM10000, tracked with DVC."""

import os

# albumentations asks PyPI for a newer release on import: offline (the demo's promise) that is a
# warning and a network timeout in every stage. The pipeline pins its versions, so it never needs it.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

"""Dermoscopic skin-lesion classification on HAM10000, tracked with DVC."""

"""The seven HAM10000 diagnoses, in one fixed order used everywhere (model outputs, CSVs, plots)."""

# Alphabetical, as the HAM10000 `dx` codes and the unified dataset's folder names.
CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

FULL_NAMES: dict[str, str] = {
    "akiec": "Actinic keratosis / intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevus",
    "vasc": "Vascular lesion",
}

MALIGNANT: frozenset[str] = frozenset({"mel", "bcc", "akiec"})

# Column order of the ISIC 2018 Task 3 ground-truth and prediction CSVs.
ISIC_COLUMNS: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")


def class_index(dx: str) -> int:
    return CLASSES.index(dx)


def display_name(dx: str) -> str:
    """'Melanoma (mel)': what a person reads in the app and in figures."""
    return f"{FULL_NAMES[dx]} ({dx})"

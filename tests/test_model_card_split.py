"""A DermaMNIST model card names the split its folds learnt from (the train stage writes it), and
the app says it to the person reading the card: official or lesion-grouped, with or without lesion
ids, with or without the test lesions' other images."""

from __future__ import annotations

import pandas as pd
import pytest
from committed_params import committed_params
from test_dermamnist_splits import GROUPED, OFFICIAL, load_stage

from skinlesion.serve import app


# --- the model card, as the app reads it --------------------------------------------------------------------

@pytest.mark.parametrize("split, words", [
    (None, "with MedMNIST's official image-level split"),
    ({"scheme": "official", "lesion_ids": False, "exclude_test_lesions": False}, "image-level split (no lesion ids)"),
    ({"scheme": "official", "lesion_ids": True, "exclude_test_lesions": True},
     "official split, which was drawn by image, and lesion ids (Abhishek et al. 2025); train and val without"),
    ({"scheme": "grouped", "lesion_ids": True, "exclude_test_lesions": False},
     "28x28 px, lesion-grouped split, with lesion ids"),
])
def test_the_app_names_the_split_a_dermamnist_card_records(split, words):
    card = {"data_source": "dermamnist", **({"split": split} if split else {})}
    assert words in app.training_data(card)
    assert app.training_data({"data_source": "ham10000"}) == app.TRAINING_DATA["ham10000"]


@pytest.mark.parametrize("overrides, has_ids, expected", [
    (OFFICIAL, False, {"split": {"scheme": "official", "lesion_ids": False, "exclude_test_lesions": False}}),
    ({**OFFICIAL, "split": {"scheme": "official", "exclude_test_lesions": True}}, True,
     {"split": {"scheme": "official", "lesion_ids": True, "exclude_test_lesions": True}}),
    (GROUPED, True, {"split": {"scheme": "grouped", "lesion_ids": True, "exclude_test_lesions": False}}),
    ({}, True, {}),  # the demo (and HAM10000) cards stay as they were: always lesion-grouped
])
def test_the_train_stage_names_the_split_in_dermamnist_cards(overrides, has_ids, expected):
    frame = pd.DataFrame({"image_id": ["a", "b"], "lesion_id": ["L", "L"] if has_ids else ["a", "b"]})
    assert load_stage("train").split_card(committed_params(overrides), frame) == expected

import numpy as np
import pytest

from skinlesion.sampling import sample_weights, weighted_sampler


def test_full_power_gives_every_class_equal_total_weight():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    w = sample_weights(labels, n_classes=4, power=1.0)
    totals = [w[labels == k].sum() for k in range(3)]
    assert totals == pytest.approx([1 / 3] * 3)
    assert w.sum() == pytest.approx(1.0)


def test_square_root_power_softens_the_imbalance():
    labels = np.array([0] * 100 + [1] * 4)
    w = sample_weights(labels, n_classes=2, power=0.5)
    # per-sample weight ~ 1/sqrt(count): class totals are 100/10 = 10 and 4/2 = 2.
    assert w[labels == 0].sum() / w[labels == 1].sum() == pytest.approx(5.0)


def test_power_zero_is_uniform():
    labels = np.array([0, 0, 0, 1])
    assert sample_weights(labels, 2, power=0.0) == pytest.approx([0.25] * 4)


def test_sampler_draws_rare_class_about_as_often_as_common_one():
    labels = np.array([0] * 950 + [1] * 50)
    drawn = labels[list(weighted_sampler(labels, 2, power=1.0, seed=0))]
    assert len(drawn) == 1000
    assert 0.4 < (drawn == 1).mean() < 0.6


def test_sampler_is_reproducible_from_its_seed():
    labels = np.array([0] * 20 + [1] * 5)
    assert list(weighted_sampler(labels, 2, 1.0, seed=3)) == list(weighted_sampler(labels, 2, 1.0, seed=3))

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


def test_undoing_the_sampler_prior_restores_the_data_prior():
    from skinlesion.sampling import undo_sampler_prior

    counts = np.array([100, 25, 0])
    flat = np.full((2, 3), 1 / 3)
    # power 0: the sampler drew the data's own frequencies; nothing to undo.
    assert np.allclose(undo_sampler_prior(flat, counts, 0.0), flat)
    # power 1 (classes drawn equally): a model that is indifferent under the balanced prior is,
    # under the data's prior, as likely as the classes are common: 100:25 -> 0.8/0.2.
    assert np.allclose(undo_sampler_prior(flat, counts, 1.0)[0], [0.8, 0.2, 0.0])
    # power 0.5: sqrt(100):sqrt(25) = 2:1 moves a 1:3 lean to the rare class to 2:3.
    assert np.allclose(undo_sampler_prior(np.array([[0.25, 0.75, 0.0]]), counts, 0.5)[0], [0.4, 0.6, 0.0])

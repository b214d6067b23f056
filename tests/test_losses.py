import math

import pytest
import torch
import torch.nn.functional as F

from skinlesion.losses import FocalLoss


def test_gamma_zero_is_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 7), torch.randint(0, 7, (16,))
    assert FocalLoss(gamma=0.0)(logits, target).item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)


def test_gamma_two_matches_hand_computed_value():
    # Two classes, logits (0, ln 3): p(true=1) = 3/4, so the loss is -(1/4)^2 * ln(3/4).
    logits = torch.tensor([[0.0, math.log(3.0)]])
    expected = -(0.25**2) * math.log(0.75)
    assert FocalLoss(gamma=2.0)(logits, torch.tensor([1])).item() == pytest.approx(expected, rel=1e-6)


def test_focal_down_weights_easy_examples_more_than_hard_ones():
    easy, hard = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    target = torch.tensor([0])
    ratio_easy = FocalLoss(2.0)(easy, target) / F.cross_entropy(easy, target)
    ratio_hard = FocalLoss(2.0)(hard, target) / F.cross_entropy(hard, target)
    assert ratio_easy < 0.01 < ratio_hard == pytest.approx(0.25)


def test_alpha_weights_each_example_by_its_class():
    logits = torch.tensor([[0.3, -0.2], [0.1, 0.5]])
    target = torch.tensor([0, 1])
    alpha = torch.tensor([2.0, 0.5])
    per_example = torch.stack([FocalLoss(2.0)(logits[i:i + 1], target[i:i + 1]) for i in range(2)])
    expected = (alpha * per_example).mean()
    assert FocalLoss(2.0, alpha)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_soft_targets_equal_index_targets_when_one_hot():
    torch.manual_seed(1)
    logits, target = torch.randn(8, 7), torch.randint(0, 7, (8,))
    soft = F.one_hot(target, 7).float()
    assert FocalLoss(2.0)(logits, soft).item() == pytest.approx(FocalLoss(2.0)(logits, target).item(), rel=1e-6)

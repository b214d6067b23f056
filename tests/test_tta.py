import pytest
import torch
from torch import nn

from skinlesion.tta import TTA_VIEWS, predict_proba


class FlipInvariant(nn.Module):
    """Logits from the mean of each channel: the same for any flip of the image."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 7)

    def forward(self, x):
        return self.head(x.float().mean(dim=(2, 3)))


class Recorder(nn.Module):
    """Returns fixed logits per view and records the batch it was given."""

    def forward(self, x):
        self.seen = x
        n = x.shape[0] // 3
        logits = torch.zeros(x.shape[0], 7)
        logits[:n, 0] = 10.0  # original -> class 0
        logits[n:2 * n, 1] = 10.0  # hflip -> class 1
        logits[2 * n:, 2] = 10.0  # vflip -> class 2
        return logits


def test_flip_invariant_model_gives_the_same_output_with_and_without_tta():
    torch.manual_seed(0)
    model, x = FlipInvariant(), torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    assert torch.allclose(predict_proba(model, x, "none"), predict_proba(model, x, "flips"), atol=1e-6)


def test_flips_are_one_batched_forward_pass_and_the_views_are_averaged():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    model = Recorder()
    probs = predict_proba(model, x, "flips", one_pass=True)
    assert model.seen.shape[0] == 6  # 3 views x 2 images, in one call
    assert torch.equal(model.seen[2:4], x.flip(-1)) and torch.equal(model.seen[4:6], x.flip(-2))
    # each view puts ~all mass on its own class, so the average is ~1/3 each on classes 0, 1, 2
    assert probs[:, :3] == pytest.approx(torch.full((2, 3), 1 / 3), abs=1e-3)
    assert probs.sum(dim=1) == pytest.approx(torch.ones(2))


def test_tta_views_are_named():
    assert TTA_VIEWS["flips"] == ("original", "hflip", "vflip")


def test_views_one_after_another_give_the_probabilities_of_one_pass():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(7))
    x = torch.rand(5, 3, 8, 8) * 255
    together = predict_proba(model, x, "flips", one_pass=True)
    in_turn = predict_proba(model, x, "flips", one_pass=False)
    assert torch.allclose(together, in_turn, atol=1e-6)
    assert not torch.allclose(in_turn, predict_proba(model, x, "none"), atol=1e-3)  # the views do differ

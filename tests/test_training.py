"""Training refuses to go on with a loss that is no longer finite, and clips gradients when asked."""

import argparse

import numpy as np
import pandas as pd
import pytest
import torch
from committed_params import committed_params
from noise_images import noise_image_frame

from skinlesion import cli, training
from skinlesion.classes import CLASSES
from skinlesion.errors import TrainingError


@pytest.fixture
def frame(tmp_path) -> pd.DataFrame:
    return noise_image_frame(tmp_path, per_class=2)


class LossTurningNaN(training.FocalLoss):
    """The focal loss, until the `after`-th training step: NaN from then on (as a diverged run gives)."""

    after = 5
    steps = 0

    def forward(self, logits, targets):
        loss = super().forward(logits, targets)
        if logits.requires_grad:  # a training step, not the validation loss
            type(self).steps += 1
            if self.steps >= self.after:
                return loss * float("nan")
        return loss


def test_training_stops_on_non_finite_loss(frame, tmp_path, monkeypatch):
    # timm's test_efficientnet: 0.1 M parameters, a fast stand-in for the B3
    params = committed_params({"data": {"img_size": 32}, "model": {"name": "test_efficientnet"},
                               "train": {"folds": [0], "epochs": 3, "batch_size": 4, "device": "cpu",
                                         "num_workers": 0}})
    monkeypatch.setattr(training, "FocalLoss", LossTurningNaN)
    monkeypatch.setattr(LossTurningNaN, "steps", 0)
    ckpt = tmp_path / "fold0.pt"
    with pytest.raises(TrainingError) as e:  # 14 images, batches of 4: 3 steps an epoch; step 5 is epoch 2's 2nd
        training.train_fold(frame, frame[:7], params, 0, checkpoint_path=ckpt)
    assert str(e.value).startswith("fold 0 epoch 2/3 step 2: the training loss is nan; stopping before this epoch "
                                   "is checkpointed or any model is written. Usual causes: train.lr 0.003 too high "
                                   "(try 0.0003)")
    state = torch.load(ckpt, weights_only=True)  # the last good epoch stays the resume point
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


class Logits(torch.nn.Module):
    """A model that is only its 7 output logits, whatever the image."""

    def __init__(self):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(len(CLASSES)))

    def forward(self, images):
        return self.logits.expand(images.shape[0], -1)


@pytest.mark.parametrize("grad_clip, step_norm", [(0.0, 100.0), (0.5, 0.5)])
def test_a_training_step_is_no_longer_than_train_grad_clip(grad_clip, step_norm):
    # One SGD step at lr 1 moves the weights by the (clipped) gradient; this loss's gradient has norm 100.
    model = Logits()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    batch = [(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), torch.zeros(1, dtype=torch.long))]
    loss = lambda logits, targets: 100 / len(CLASSES) ** 0.5 * logits.sum()  # noqa: E731
    training.train_one_epoch(model, batch, loss, optimizer, scheduler, torch.amp.GradScaler(enabled=False),
                             device=torch.device("cpu"), amp_dtype=None, mixup_alpha=0.0, desc="step",
                             grad_clip=grad_clip)
    assert model.logits.detach().norm().item() == pytest.approx(step_norm, rel=1e-5)


def test_the_largest_seed_gives_valid_epoch_seeds():
    # seed: 2**32 - 1 passes validation; the seeds training derives from it must not fail in numpy.
    training.seed_everything(training.epoch_seed(2**32 - 1 + 19, 10_000))
    training.seed_everything(training.epoch_seed(42, 3))
    assert np.random.get_state()[1][0] == np.random.RandomState(420_003).get_state()[1][0]  # small seeds: as before


def test_a_training_error_exits_2_with_one_line(capsys):
    def diverging(args):
        raise TrainingError("fold 0 epoch 2/3 step 2: the training loss is nan")

    parser = argparse.ArgumentParser()
    with pytest.raises(SystemExit) as e, pytest.MonkeyPatch.context() as m:
        m.setattr("sys.argv", ["train.py"])
        cli.run(diverging, parser)
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: fold 0 epoch 2/3 step 2: the training loss is nan\n"

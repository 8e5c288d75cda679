"""Tests of course_utils.segment: the segmentation training loop, prediction, evaluation and pictures."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from torch import nn

from course_utils.losses import weighted_cross_entropy
from course_utils.metrics import mean_iou
from course_utils.segment import (draw_hourglass, evaluate_segmenter, mask_to_rgb, predict_proba, show_segmentations,
                                  train_segmenter)


def toy_data(n=24, size=8):
    """Bright squares (class 1) on a dark background (class 0): a pixel's class is readable from its value."""
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        r, c = torch.randint(0, size - 3, (2,), generator=g).tolist()
        masks[i, r:r + 3, c:c + 3] = 1
    images = masks[:, None].float() * 0.8 + 0.1 * torch.rand(n, 1, size, size, generator=g)
    return images, masks


def tiny_net():
    return nn.Conv2d(1, 2, 3, padding=1)  # linear: a pixel's class is a threshold on its value


def test_train_segmenter_learns_and_keeps_snapshots():
    torch.manual_seed(0)
    images, masks = toy_data()
    model = tiny_net()
    run = train_segmenter(model, images, masks, epochs=20, loss_fn=weighted_cross_entropy, lr=0.1, batch_size=8,
                          watch=images[:3])
    assert [h["epoch"] for h in run.history] == list(range(1, 21))
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    assert run.snapshots.shape == (20, 3, 8, 8) and run.snapshots.dtype == torch.uint8
    assert not model.training
    assert mean_iou(predict_proba(model, images), masks, 2) > 0.9


def test_train_segmenter_is_deterministic_and_checks_epochs():
    images, masks = toy_data()
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        losses.append(train_segmenter(tiny_net(), images, masks, epochs=2, loss_fn=weighted_cross_entropy,
                                      batch_size=8).history[-1]["train_loss"])
    assert losses[0] == losses[1]
    with pytest.raises(ValueError, match="epochs"):
        train_segmenter(tiny_net(), images, masks, epochs=0, loss_fn=weighted_cross_entropy)


def test_predict_proba_and_evaluate():
    images, masks = toy_data()
    model = tiny_net().train()
    p = predict_proba(model, images, batch_size=5)
    assert p.shape == (24, 2, 8, 8)
    torch.testing.assert_close(p.sum(1), torch.ones(24, 8, 8))
    assert model.training  # the caller's mode is restored
    report = evaluate_segmenter(model, images, masks, max_pixels=500)
    assert set(report) >= {"mIoU", "mAP", "WGAP", "iou", "ap"} and report["ap"].shape == (2,)


def test_pictures():
    import matplotlib.pyplot as plt

    rgb = mask_to_rgb(torch.tensor([[0, 1], [2, 10]]))
    assert rgb.shape == (2, 2, 3) and (rgb[0, 0] == 0).all() and not (rgb[0, 1] == 0).all()
    images, masks = toy_data(4)
    fig = show_segmentations(images, {"truth": masks, "pred": masks}, ["bg", "square"])
    assert len(fig.axes) == 3 * 4
    fig2 = draw_hourglass(2, 3)
    assert fig2.axes
    plt.close("all")


def test_train_segmenter_channels_last_gives_the_same_training():
    images, masks = toy_data()
    runs, models = [], []
    for cl in (True, False):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
        runs.append(train_segmenter(model, images, masks, epochs=3, loss_fn=weighted_cross_entropy, batch_size=8,
                                    channels_last=cl))
        models.append(model)
    assert models[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close([h["train_loss"] for h in runs[0].history], [h["train_loss"] for h in runs[1].history],
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(predict_proba(models[0], images), predict_proba(models[1], images), rtol=1e-3, atol=1e-4)

"""The three recipes that call fit: classification (train_classifier), segmentation (train_segmenter) and
BYOL (train_byol): they learn, are deterministic, resume exactly after an interruption, and catch divergence."""

import math
from functools import partial

import pytest
import torch
from torch import nn

from course_utils.augment import byol_augment
from course_utils.features import KNNProbe
from course_utils.losses import weighted_cross_entropy
from course_utils.models.byol import BYOL
from course_utils.models.resnet import resnet6n2
from course_utils.layers.norms import BatchNorm2d
from course_utils.recipes import lockstep_sgd, train_byol, train_classifier, train_segmenter
from course_utils.train import DivergenceError, History
from tests.conftest import toy_classification, toy_classifier, toy_segmentation

pytestmark = pytest.mark.usefixtures("one_thread")  # these models are tiny: a second thread costs more than it saves


# --------------------------------------------------------------------------------------------------
# Classification: train_classifier

def test_train_classifier_recipe():
    x, y = toy_classification()
    model = toy_classifier()
    h = train_classifier(model, (x, y), (x[:32], y[:32]), epochs=3, batch_size=16, lr=0.1, label_smoothing=0.1,
                         progress=False, verbose=False)
    assert len(h) == 3 and h["val_acc"][-1] is not None and h["train_loss"][-1] < h["train_loss"][0]


def _count_training_forwards(model):
    calls = {"n": 0}

    def hook(module, args):
        calls["n"] += module.training

    model.register_forward_pre_hook(hook)
    return calls


def test_train_classifier_steps_per_epoch_counts_steps_not_passes():
    x, y = toy_classification()  # 96 images: 6 batches of 16 per pass
    model = toy_classifier()
    calls = _count_training_forwards(model)
    h = train_classifier(model, (x, y), None, epochs=2, batch_size=16, lr=0.1, steps_per_epoch=10,
                         progress=False, verbose=False)
    assert len(h) == 2 and calls["n"] == 20  # 20 optimizer steps: more than three passes over the data
    # an epoch of one pass's worth of steps is the ordinary recipe: the same batches, the same losses
    runs = [train_classifier(toy_classifier(), (x, y), None, epochs=3, batch_size=16, lr=0.1, steps_per_epoch=spe,
                             progress=False, verbose=False)["train_loss"] for spe in (None, 6)]
    assert runs[0] == runs[1]
    with pytest.raises(ValueError, match="steps_per_epoch"):
        train_classifier(toy_classifier(), (x, y), None, epochs=1, batch_size=16, lr=0.1, steps_per_epoch=0)


def test_train_classifier_steps_per_epoch_resumes_mid_pass(tmp_path):
    x, y = toy_classification()
    kwargs = dict(epochs=3, batch_size=16, lr=0.1, steps_per_epoch=4, progress=False, verbose=False)  # ends mid-pass
    straight = train_classifier(toy_classifier(), (x, y), None, **kwargs)
    calls = {"n": 0}

    def dies_in_epoch_2(images, generator):  # an identity augmentation, called once per batch
        calls["n"] += 1
        if calls["n"] == 6:
            raise Interrupted
        return images

    ckpt = tmp_path / "c.pt"
    with pytest.raises(Interrupted):
        train_classifier(toy_classifier(), (x, y), None, augment=dies_in_epoch_2, checkpoint=ckpt, **kwargs)
    resumed = train_classifier(toy_classifier(), (x, y), None, checkpoint=ckpt, **kwargs)
    assert resumed["train_loss"] == straight["train_loss"]  # epoch 2 starts at batch 5 of pass 1, as it did


# --------------------------------------------------------------------------------------------------
# Lockstep training of two implementations: lockstep_sgd

def _net(norm):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), norm(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))


class _Renamed(nn.Module):
    """The same layers as ``_net`` under other names (a model whose state dict does not load by name)."""

    def __init__(self, norm):
        super().__init__()
        self.conv, self.norm, self.head = nn.Conv2d(1, 4, 3, padding=1, bias=False), norm(4), nn.Linear(144, 3)

    def forward(self, x):
        return self.head(self.norm(self.conv(x)).relu().flatten(1))


def _batches(n=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 1, 6, 6, generator=g, dtype=dtype) * 2 + 1, torch.randint(0, 3, (8,), generator=g))
            for _ in range(n)]


def test_lockstep_our_batch_norm_and_pytorchs_stay_equal_in_float64():
    torch.manual_seed(0)
    ours, theirs = _net(BatchNorm2d).double(), _Renamed(nn.BatchNorm2d).double()  # names differ: mapped in order
    records = lockstep_sgd(ours, theirs, _batches(), lr=0.5)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert max(r["loss_diff"] for r in records) < 1e-12 and max(r["weight_diff"] for r in records) < 1e-12
    assert records[-1]["loss_a"] < records[0]["loss_a"]  # they did train
    torch.testing.assert_close(ours[1].running_var, theirs.norm.running_var)  # buffers copied and updated alike


def test_lockstep_sees_a_real_difference_and_matches_plain_sgd():
    torch.manual_seed(0)
    a, b = _net(nn.BatchNorm2d).double(), _net(partial(nn.BatchNorm2d, eps=1e-1)).double()  # another function
    assert max(r["weight_diff"] for r in lockstep_sgd(a, b, _batches(), lr=0.5)) > 1e-4
    torch.manual_seed(0)
    a, b, ref = _net(nn.BatchNorm2d), _net(nn.BatchNorm2d), _net(nn.BatchNorm2d)
    ref.load_state_dict(a.state_dict())
    records = lockstep_sgd(a, b, _batches(3, torch.float32), lr=0.1, momentum=0.9)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for x, y in _batches(3, torch.float32):
        opt.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        opt.step()
    assert all(r["weight_diff"] == 0 and r["loss_diff"] == 0 for r in records)  # the same model twice: exactly equal
    for p, q in zip(a.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)


def test_lockstep_refuses_models_that_do_not_match():
    with pytest.raises(ValueError, match="same layers"):
        lockstep_sgd(_net(nn.BatchNorm2d), nn.Linear(3, 3), _batches(1), lr=0.1)
    with pytest.raises(ValueError, match="names and shapes differ"):
        wider_head = nn.Sequential(*list(_net(nn.BatchNorm2d))[:-1], nn.Linear(144, 5))
        lockstep_sgd(_net(nn.BatchNorm2d), wider_head, _batches(1), lr=0.1)


# --------------------------------------------------------------------------------------------------
# Segmentation: train_segmenter

def seg_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def test_train_segmenter_learns_and_keeps_snapshots():
    images, masks = toy_segmentation()
    model = seg_net()
    run = train_segmenter(model, images, masks, epochs=20, loss_fn=weighted_cross_entropy, lr=0.1, batch_size=8,
                          watch=images[:3])
    assert isinstance(run.history, History) and run.history["epoch"] == list(range(1, 21))
    assert run.history["train_loss"][-1] < run.history["train_loss"][0] / 2
    assert run.snapshots.shape == (20, 3, 8, 8) and run.snapshots.dtype == torch.uint8
    assert "snapshot" not in run.history.last and not model.training
    assert torch.equal(run.snapshots[-1], model(images[:3]).argmax(1).to(torch.uint8))  # the last epoch's masks
    assert (run.snapshots[-1].long() == masks[:3]).float().mean() > 0.95


def test_train_segmenter_records_the_held_out_loss_in_eval_mode():
    images, masks = toy_segmentation()
    model = seg_net()
    run = train_segmenter(model, images, masks, epochs=3, loss_fn=weighted_cross_entropy, lr=0.1, batch_size=8,
                          val=(images[:5], masks[:5]))
    assert len(run.history["val_loss"]) == 3 and len(run.snapshots) == 0
    with torch.no_grad():  # the last epoch's value is the loss of the final (eval-mode) model
        assert run.history["val_loss"][-1] == pytest.approx(float(weighted_cross_entropy(model(images[:5]), masks[:5])))
    plain = train_segmenter(seg_net(), images, masks, epochs=3, loss_fn=weighted_cross_entropy, lr=0.1, batch_size=8)
    assert plain.history["train_loss"] == run.history["train_loss"]  # measuring does not change the training
    with pytest.raises(ValueError, match="equal length"):
        train_segmenter(seg_net(), images, masks, epochs=1, loss_fn=weighted_cross_entropy, val=(images[:5], masks[:4]))


def test_train_segmenter_is_deterministic_and_checks_epochs():
    images, masks = toy_segmentation()
    runs = [train_segmenter(seg_net(), images, masks, epochs=2, loss_fn=weighted_cross_entropy, batch_size=8)
            for _ in range(2)]
    assert runs[0].history["train_loss"] == runs[1].history["train_loss"] and len(runs[0].snapshots) == 0
    with pytest.raises(ValueError, match="epochs"):
        train_segmenter(seg_net(), images, masks, epochs=0, loss_fn=weighted_cross_entropy)


def test_train_segmenter_channels_last_gives_the_same_training():
    images, masks = toy_segmentation()
    runs, models = [], []
    for cl in (True, False):
        model = seg_net()
        runs.append(train_segmenter(model, images, masks, epochs=3, loss_fn=weighted_cross_entropy, batch_size=8,
                                    channels_last=cl))
        models.append(model)
    assert models[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(runs[0].history["train_loss"], runs[1].history["train_loss"], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(models[0](images), models[1](images), rtol=1e-3, atol=1e-4)


class Interrupted(Exception):
    """The runtime dying in the middle of a run."""


def _without_timing(records):
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in records]


def _assert_same_records(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(_without_timing(a), _without_timing(b)):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert torch.equal(ra[k], rb[k]) if isinstance(ra[k], torch.Tensor) else ra[k] == rb[k], k


def test_interrupted_segmentation_resumes_to_the_same_weights_history_and_snapshots(tmp_path):
    images, masks = toy_segmentation()
    kwargs = dict(epochs=5, lr=0.05, batch_size=8, seed=3, watch=images[:4])
    straight_model = seg_net()
    straight = train_segmenter(straight_model, images, masks, loss_fn=weighted_cross_entropy, **kwargs)
    calls = {"n": 0}

    def dies_in_epoch_3(logits, y):  # 3 batches per epoch: the 8th call is epoch 3's second step
        calls["n"] += 1
        if calls["n"] == 8:
            raise Interrupted
        return weighted_cross_entropy(logits, y)

    ckpt = tmp_path / "seg.pt"
    with pytest.raises(Interrupted):
        train_segmenter(seg_net(), images, masks, loss_fn=dies_in_epoch_3, checkpoint=ckpt, **kwargs)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    model = seg_net()  # a fresh process rebuilds everything
    resumed = train_segmenter(model, images, masks, loss_fn=weighted_cross_entropy, checkpoint=ckpt, **kwargs)
    assert [p.name for p in tmp_path.iterdir()] == ["seg.pt"]
    _assert_same_records(resumed.history.records, straight.history.records)
    assert torch.equal(resumed.snapshots, straight.snapshots) and resumed.snapshots.shape == (5, 4, 8, 8)
    for a, b in zip(model.state_dict().values(), straight_model.state_dict().values()):
        assert torch.equal(a, b)


def test_segmentation_divergence_raises_divergence_error():
    images, masks = toy_segmentation()
    images[5] = math.nan
    with pytest.raises(DivergenceError, match=r"epoch 1, step \d.*lower the learning rate"):
        train_segmenter(seg_net(), images, masks, epochs=1, loss_fn=weighted_cross_entropy, batch_size=8)


# --------------------------------------------------------------------------------------------------
# BYOL: train_byol

def byol_setup(n=64):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(n) % 2
    model = BYOL(resnet6n2(1, 2, norm="torch_bn", widths=(4, 8, 8)), projector_dim=8, hidden_dim=16)
    probe = KNNProbe(images[:32], labels[:32], images[32:], labels[32:], k=5, mean=0.3, std=0.3)
    return model, images, probe


BYOL_ARGS = dict(batch_size=16, lr=3e-3, augment=byol_augment(), seed=0, mean=0.3, std=0.3, progress=False,
                 verbose=False)


def test_train_byol_records_every_epoch_and_moves_the_target_by_ema():
    model, images, probe = byol_setup()
    target_before = [p.clone() for p in model.target_parameters()]
    h = train_byol(model, images, epochs=2, probe=probe, **BYOL_ARGS)
    assert h["epoch"] == [0, 1, 2]
    assert h.records[0].keys() == {"epoch", "knn_acc", "collapse_std"}  # the probe once before training
    for rec in h.records[1:]:
        assert 0 <= rec["train_loss"] <= 8 and 0 <= rec["knn_acc"] <= 1 and rec["collapse_std"] >= 0
    assert h.records[-1]["tau"] == pytest.approx(1 - 0.01 * (math.cos(math.pi * 7 / 8) + 1) / 2)  # step 7 of 8
    assert h.records[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the cosine ends at 0
    assert any(not torch.equal(a, b) for a, b in zip(target_before, model.target_parameters()))


def test_interrupted_byol_resumes_to_the_same_weights_and_history(tmp_path):
    model, images, probe = byol_setup()
    straight = train_byol(model, images, epochs=4, probe=probe, **BYOL_ARGS)
    model_a, images_a, probe_a = byol_setup()
    calls = {"n": 0}

    def probe_dies_at_epoch_3(m):  # called at epochs 0, 1, 2, then the runtime dies at the end of epoch 3
        calls["n"] += 1
        if calls["n"] == 4:
            raise Interrupted
        return probe_a(m)

    ckpt = tmp_path / "byol.pt"
    with pytest.raises(Interrupted):
        train_byol(model_a, images_a, epochs=4, probe=probe_dies_at_epoch_3, checkpoint=ckpt, **BYOL_ARGS)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    model_b, images_b, probe_b = byol_setup()  # a fresh process would rebuild everything
    resumed = train_byol(model_b, images_b, epochs=4, probe=probe_b, checkpoint=ckpt, **BYOL_ARGS)
    assert [p.name for p in tmp_path.iterdir()] == ["byol.pt"]
    assert resumed["epoch"] == [0, 1, 2, 3, 4]
    _assert_same_records(resumed.records, straight.records)
    for a, b in zip(model.state_dict().values(), model_b.state_dict().values()):
        assert torch.equal(a, b)  # online, predictor and the EMA target alike


def test_byol_divergence_and_arguments():
    model, images, _ = byol_setup()
    with torch.no_grad():
        model.backbone.stem[0].weight.fill_(float("nan"))
    with pytest.raises(DivergenceError, match="epoch 1, step 1"):
        train_byol(model, images, epochs=1, **BYOL_ARGS)
    with pytest.raises(TypeError, match="BYOL"):
        train_byol(resnet6n2(1, 2), images, epochs=1, **BYOL_ARGS)
    with pytest.raises(ValueError, match="epochs"):
        train_byol(byol_setup()[0], images, epochs=0, **BYOL_ARGS)

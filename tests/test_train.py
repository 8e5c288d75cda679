"""The one training loop: fit's history, exact resume, early stopping, divergence, and the three recipes
(classification, segmentation, BYOL) that call it."""

import ast
import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from course_utils.augment import RandomHorizontalFlip
from course_utils.loader import TensorLoader
from course_utils.augment import byol_augment
from course_utils.features import KNNProbe
from course_utils.losses import weighted_cross_entropy
from course_utils.models.byol import BYOL
from course_utils.models.resnet import resnet6n2
from course_utils.recipes import train_byol, train_classifier, train_segmenter
from course_utils.train import DivergenceError, EarlyStopping, History, Snapshots, evaluate, fit


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: a second thread costs more than it saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _problem(seed=0, n=96):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()
    return x, y


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Dropout(0.2), nn.Flatten(), nn.Linear(64, 4))


def _run(epochs, checkpoint=None, stop_after_batches=None):
    x, y = _problem()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=4 * 6)
    train = TensorLoader(x, y, 16, shuffle=True, augment=RandomHorizontalFlip(), seed=1)
    if stop_after_batches is not None:  # simulate a runtime that dies mid-epoch
        inner, count = train, {"n": 0}

        class Dying:
            def set_epoch(self, e):
                inner.set_epoch(e)

            def __iter__(self):
                for batch in inner:
                    count["n"] += 1
                    if count["n"] > stop_after_batches:
                        raise KeyboardInterrupt
                    yield batch
        train = Dying()
    val = TensorLoader(*_problem(1, 32), 16)
    h = fit(model, train, val, epochs=epochs, optimizer=opt, scheduler=sched, checkpoint=checkpoint,
            progress=False, verbose=False)
    return model, h


def test_fit_learns_and_records_history():
    model, h = _run(4)
    assert len(h) == 4 and h["epoch"] == [1, 2, 3, 4]
    assert h["train_loss"][-1] < h["train_loss"][0]
    assert set(h.last) >= {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s"}
    assert list(h.to_frame().index) == [1, 2, 3, 4]


def test_interrupted_then_resumed_run_equals_uninterrupted(tmp_path):
    ref_model, ref = _run(4)
    ckpt = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        _run(4, checkpoint=ckpt, stop_after_batches=6 * 2 + 3)  # dies in epoch 3
    assert ckpt.exists() and torch.load(ckpt, weights_only=True)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # no temp files left behind
    model, h = _run(4, checkpoint=ckpt)
    assert h["epoch"] == [1, 2, 3, 4]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert h[key] == pytest.approx(ref[key], rel=0, abs=1e-6), key
    for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # a finished checkpoint is a no-op run
    _, again = _run(4, checkpoint=ckpt)
    assert again["val_acc"] == h["val_acc"]


def test_checkpoint_that_does_not_match_the_model(tmp_path):
    ckpt = tmp_path / "run.pt"
    _run(1, checkpoint=ckpt)
    other = nn.Linear(3, 2)
    x = torch.randn(8, 3)
    loader = [(x, torch.zeros(8, dtype=torch.long))]
    with pytest.raises(RuntimeError, match="Delete it to train from scratch"):
        fit(other, loader, epochs=2, optimizer=torch.optim.SGD(other.parameters(), lr=0.1), checkpoint=ckpt,
            progress=False, verbose=False)


def test_divergence_guard_names_epoch_step_and_fix():
    model = nn.Linear(4, 2)
    x = torch.randn(32, 4)
    x[20] = math.nan
    loader = TensorLoader(x[:, :, None, None], torch.zeros(32, dtype=torch.long), 8)
    flat = nn.Sequential(nn.Flatten(), model)
    with pytest.raises(DivergenceError, match=r"epoch 1, step 3.*lower the learning rate"):
        fit(flat, loader, epochs=1, optimizer=torch.optim.SGD(flat.parameters(), lr=0.1), progress=False,
            verbose=False)


def test_early_stopping_restores_the_best_epochs_weights_not_the_last():
    x, y = _problem()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # the weights change every epoch
    scores, states = iter([0.5, 0.9, 0.7, 0.6, 0.95]), []

    def monitor(m):  # a made-up score peaking at epoch 2; keeps each epoch's weights to compare with
        states.append(copy.deepcopy(m.state_dict()))
        return {"score": next(scores)}

    es = EarlyStopping(monitor="score", mode="max", patience=2)
    h = fit(model, TensorLoader(x, y, 32, shuffle=True), epochs=10, optimizer=opt, monitor=monitor,
            early_stopping=es, progress=False, verbose=False)
    assert h["epoch"] == [1, 2, 3, 4] and h["score"] == [0.5, 0.9, 0.7, 0.6]
    assert h.stopped_early and h.best_epoch == 2
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, states[1][name], rtol=0, atol=0)  # epoch 2's weights, restored
    assert not torch.equal(model[0].weight, states[-1]["0.weight"])  # which differ from the last epoch's
    with pytest.raises(ValueError):
        EarlyStopping(mode="up")
    with pytest.raises(KeyError, match="monitors 'val_f1'"):
        fit(model, TensorLoader(x, y, 32), epochs=1, optimizer=opt, early_stopping=EarlyStopping("val_f1"),
            progress=False, verbose=False)


def test_early_stopping_on_val_loss_and_its_resume(tmp_path):
    x, y = _problem()
    xv, yv = x[:32], (y[:32] + 1) % 4  # validation labels the training contradicts: val_loss worsens after a while
    runs = []
    for ckpt in (None, tmp_path / "es.pt"):
        model = _model()
        es = EarlyStopping(monitor="val_loss", mode="min", patience=2)
        h = fit(model, TensorLoader(x, y, 16, shuffle=True), TensorLoader(xv, yv, 32), epochs=30,
                optimizer=torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9), early_stopping=es,
                checkpoint=ckpt, progress=False, verbose=False)
        runs.append((model, h))
    (model, h), (model_ck, h_ck) = runs
    assert h.stopped_early and len(h) == h.best_epoch + 2 and h.best_epoch < len(h)
    assert h["val_loss"][h.best_epoch - 1] == min(h["val_loss"])
    # a finished, stopped-early checkpoint is a no-op that returns the best weights again
    model_again = _model()
    h_again = fit(model_again, TensorLoader(x, y, 16, shuffle=True), TensorLoader(xv, yv, 32), epochs=30,
                  optimizer=torch.optim.SGD(model_again.parameters(), lr=0.2, momentum=0.9),
                  early_stopping=EarlyStopping(monitor="val_loss", mode="min", patience=2),
                  checkpoint=tmp_path / "es.pt", progress=False, verbose=False)
    assert h_again["val_loss"] == h_ck["val_loss"] == h["val_loss"]
    for a, b, c in zip(model.state_dict().values(), model_ck.state_dict().values(), model_again.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_evaluate_returns_predictions_targets_loss():
    x, y = _problem()
    model = _model()
    ev = evaluate(model, TensorLoader(x, y, 40))
    assert ev.preds.shape == y.shape and torch.equal(ev.targets, y) and ev.logits.shape == (96, 4)
    with torch.no_grad():
        model.eval()
        expected = nn.functional.cross_entropy(model(x), y).item()
    assert ev.loss == pytest.approx(expected, rel=1e-5)
    flip = evaluate(model, TensorLoader(x, y, 40), tta_flip=True)
    assert flip.logits.shape == (96, 4) and not torch.allclose(flip.logits, ev.logits)
    model.train()
    again = evaluate(model, TensorLoader(x, y, 40))  # dropout is off while evaluating ...
    assert model.training and torch.equal(again.logits, ev.logits)  # ... and the caller's mode is back


def test_bad_arguments():
    model = _model()
    with pytest.raises(ValueError, match="epochs"):
        fit(model, [], epochs=0, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_train_classifier_recipe():
    x, y = _problem()
    model = _model()
    h = train_classifier(model, (x, y), (x[:32], y[:32]), epochs=3, batch_size=16, lr=0.1, label_smoothing=0.1,
                         progress=False, verbose=False)
    assert len(h) == 3 and h["val_acc"][-1] is not None and h["train_loss"][-1] < h["train_loss"][0]


def test_binary_head_metrics_predict_and_no_metrics():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(64, 3, generator=g)
    y = (feats[:, 0] > 0).long()
    head = nn.Linear(3, 1)
    bce = lambda logit, t: nn.functional.binary_cross_entropy_with_logits(logit[:, 0], t.float())  # noqa: E731
    loader = TensorLoader(feats, y, 16, shuffle=True)  # (N, D) features are batched like images
    h = fit(head, loader, TensorLoader(feats, y, 64), epochs=15, optimizer=torch.optim.SGD(head.parameters(), lr=0.5),
            loss_fn=bce, progress=False, verbose=False)
    assert h["val_acc"][-1] > 0.9  # binary logits are thresholded at 0, not arg-maxed
    out = evaluate(head, TensorLoader(feats, y, 10), loss_fn=bce).logits
    torch.testing.assert_close(out, head(feats).detach())
    h2 = fit(head, loader, None, epochs=1, optimizer=torch.optim.SGD(head.parameters(), lr=0.1), loss_fn=bce,
             metrics={}, progress=False, verbose=False)
    assert set(h2.last) == {"epoch", "train_loss", "lr", "seconds", "images_per_s"}


# --------------------------------------------------------------------------------------------------
# Segmentation: train_segmenter

def toy_segmentation(n=24, size=8):
    """Bright squares (class 1) on a dark background (class 0): a pixel's class is readable from its value."""
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        r, c = torch.randint(0, size - 3, (2,), generator=g).tolist()
        masks[i, r:r + 3, c:c + 3] = 1
    images = masks[:, None].float() * 0.8 + 0.1 * torch.rand(n, 1, size, size, generator=g)
    return images, masks


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


# --------------------------------------------------------------------------------------------------
# Structure

def test_fit_is_the_only_training_loop_in_the_package():
    """No module but train.py runs an optimiser: ``.zero_grad(`` and ``optimizer.step(`` live in ``fit`` only."""
    package = Path(__file__).resolve().parents[1] / "course_utils"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "train.py" and path.parent == package:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                call = ast.unparse(node.func)
                if node.func.attr == "zero_grad" or call.endswith(("optimizer.step", "opt.step")):
                    offenders.append(f"{path.relative_to(package)}:{node.lineno} {call}(")
    assert offenders == []
    train_calls = [ast.unparse(n.func) for n in ast.walk(ast.parse((package / "train.py").read_text()))
                   if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    assert train_calls.count("optimizer.zero_grad") == train_calls.count("optimizer.step") == 1


def test_snapshots_hook_looks_in_mid_training_without_changing_the_run():
    x, y = _problem()

    def train(after_step=None):
        model = _model()  # has dropout: training draws from the global random state
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        torch.manual_seed(5)
        fit(model, TensorLoader(x, y, 16, shuffle=True, seed=1), epochs=2, optimizer=opt, after_step=after_step,
            progress=False, verbose=False)
        return model

    def look(m):  # draws random numbers and relies on eval mode
        assert not m.training
        torch.randn(100)
        return [p.detach().clone() for p in m.parameters()]

    snaps, every = Snapshots(look, after=[3, 8, 999]), []

    def hook(m, i):
        every.append([p.detach().clone() for p in m.parameters()])
        snaps(m, i)

    with_snaps, plain = train(hook), train()
    assert all(torch.equal(a, b) for a, b in zip(with_snaps.parameters(), plain.parameters()))
    assert sorted(snaps.values) == [3, 8]  # after the 3rd and 8th steps (of 12); the 999th never came
    assert all(torch.equal(a, b) for a, b in zip(snaps.values[8], every[7]))
    assert with_snaps.training and all(m.training for m in with_snaps.modules())

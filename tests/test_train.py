import math

import pytest
import torch
from torch import nn

from course_utils.loader import RandomHorizontalFlip, TensorLoader
from course_utils.train import DivergenceError, EarlyStopping, evaluate, fit


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


def test_early_stopping_restores_best_weights():
    x, y = _problem()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # nothing improves after epoch 1
    es = EarlyStopping(monitor="val_loss", mode="min", patience=2)
    h = fit(model, TensorLoader(x, y, 32), TensorLoader(x, y, 32), epochs=10, optimizer=opt,
            early_stopping=es, progress=False, verbose=False)
    assert len(h) == 3 and h.stopped_early and h.best_epoch == 1
    with pytest.raises(ValueError):
        EarlyStopping(mode="up")
    with pytest.raises(KeyError, match="monitors 'val_f1'"):
        fit(model, TensorLoader(x, y, 32), epochs=1, optimizer=opt, early_stopping=EarlyStopping("val_f1"),
            progress=False, verbose=False)


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


def test_bad_arguments():
    model = _model()
    with pytest.raises(ValueError, match="epochs"):
        fit(model, [], epochs=0, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_sgd_one_cycle_groups_and_schedule():
    from course_utils.train import sgd_one_cycle

    model = _model()
    opt, sched = sgd_one_cycle(model, lr=0.4, total_steps=8, weight_decay=1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-3, 0.0]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert all(p.ndim > 1 for p in opt.param_groups[0]["params"])
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # peak after pct_start = 25% of the steps (OneCycleLR counts the phase end as step pct_start * total - 1)
    assert max(lrs) == pytest.approx(0.4) and lrs.index(max(lrs)) == 1 and lrs[0] < 0.05 and lrs[-1] < 0.1


def test_train_classifier_recipe():
    from course_utils.train import train_classifier

    x, y = _problem()
    model = _model()
    h = train_classifier(model, (x, y), (x[:32], y[:32]), epochs=3, batch_size=16, lr=0.1, label_smoothing=0.1,
                         progress=False, verbose=False)
    assert len(h) == 3 and h["val_acc"][-1] is not None and h["train_loss"][-1] < h["train_loss"][0]


@pytest.mark.parametrize("steps", range(1, 10))
def test_sgd_one_cycle_survives_very_short_runs(steps):
    from course_utils.train import sgd_one_cycle

    model = _model()
    opt, sched = sgd_one_cycle(model, lr=0.1, total_steps=steps)
    for _ in range(steps):
        assert 0 <= opt.param_groups[0]["lr"] <= 0.1 + 1e-9  # the rate each optimiser step uses
        opt.step()
        sched.step()


def test_binary_head_metrics_predict_and_no_metrics():
    from course_utils.train import predict

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(64, 3, generator=g)
    y = (feats[:, 0] > 0).long()
    head = nn.Linear(3, 1)
    bce = lambda logit, t: nn.functional.binary_cross_entropy_with_logits(logit[:, 0], t.float())  # noqa: E731
    loader = TensorLoader(feats, y, 16, shuffle=True)  # (N, D) features are batched like images
    h = fit(head, loader, TensorLoader(feats, y, 64), epochs=15, optimizer=torch.optim.SGD(head.parameters(), lr=0.5),
            loss_fn=bce, progress=False, verbose=False)
    assert h["val_acc"][-1] > 0.9  # binary logits are thresholded at 0, not arg-maxed
    out = predict(head, TensorLoader(feats, y, 10))
    torch.testing.assert_close(out, head(feats).detach())
    h2 = fit(head, loader, None, epochs=1, optimizer=torch.optim.SGD(head.parameters(), lr=0.1), loss_fn=bce,
             metrics={}, progress=False, verbose=False)
    assert set(h2.last) == {"epoch", "train_loss", "lr", "seconds", "images_per_s"}

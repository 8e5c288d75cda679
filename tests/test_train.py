"""The one training loop: fit's history, exact resume, early stopping, divergence, evaluate, the Snapshots hook,
and the check that fit is the package's only training loop. The recipes that call fit are in test_recipes.py."""

import ast
import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from course_utils.augment import RandomHorizontalFlip
from course_utils.loader import TensorLoader
from course_utils.train import DivergenceError, EarlyStopping, Snapshots, evaluate, fit
from tests.conftest import toy_classification, toy_classifier

pytestmark = pytest.mark.usefixtures("one_thread")  # these models are tiny: a second thread costs more than it saves


def _run(epochs, checkpoint=None, stop_after_batches=None):
    x, y = toy_classification()
    model = toy_classifier()
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
    val = TensorLoader(*toy_classification(1, 32), 16)
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
    x, y = toy_classification()
    model = toy_classifier()
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
    x, y = toy_classification()
    xv, yv = x[:32], (y[:32] + 1) % 4  # validation labels the training contradicts: val_loss worsens after a while
    runs = []
    for ckpt in (None, tmp_path / "es.pt"):
        model = toy_classifier()
        es = EarlyStopping(monitor="val_loss", mode="min", patience=2)
        h = fit(model, TensorLoader(x, y, 16, shuffle=True), TensorLoader(xv, yv, 32), epochs=30,
                optimizer=torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9), early_stopping=es,
                checkpoint=ckpt, progress=False, verbose=False)
        runs.append((model, h))
    (model, h), (model_ck, h_ck) = runs
    assert h.stopped_early and len(h) == h.best_epoch + 2 and h.best_epoch < len(h)
    assert h["val_loss"][h.best_epoch - 1] == min(h["val_loss"])
    # a finished, stopped-early checkpoint is a no-op that returns the best weights again
    model_again = toy_classifier()
    h_again = fit(model_again, TensorLoader(x, y, 16, shuffle=True), TensorLoader(xv, yv, 32), epochs=30,
                  optimizer=torch.optim.SGD(model_again.parameters(), lr=0.2, momentum=0.9),
                  early_stopping=EarlyStopping(monitor="val_loss", mode="min", patience=2),
                  checkpoint=tmp_path / "es.pt", progress=False, verbose=False)
    assert h_again["val_loss"] == h_ck["val_loss"] == h["val_loss"]
    for a, b, c in zip(model.state_dict().values(), model_ck.state_dict().values(), model_again.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_evaluate_returns_predictions_targets_loss():
    x, y = toy_classification()
    model = toy_classifier()
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
    model = toy_classifier()
    with pytest.raises(ValueError, match="epochs"):
        fit(model, [], epochs=0, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


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
# Structure

def test_fit_is_the_only_training_loop_in_the_package():
    """No module but train.py runs an optimiser: ``.zero_grad(`` and ``optimizer.step(`` live in ``fit`` only."""
    package = Path(__file__).resolve().parents[1] / "course_utils"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "train.py" and path.parent == package:
            continue
        tree = ast.parse(path.read_text())
        # One named exception: recipes.lockstep_sgd steps two models side by side on the same batches to compare
        # two implementations of one function (chapter 1, C01); it is a check of equality, not a training recipe.
        exempt = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "lockstep_sgd"
                  and path.name == "recipes.py" for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and id(node) not in exempt:
                call = ast.unparse(node.func)
                if node.func.attr == "zero_grad" or call.endswith(("optimizer.step", "opt.step")):
                    offenders.append(f"{path.relative_to(package)}:{node.lineno} {call}(")
    assert offenders == []
    train_calls = [ast.unparse(n.func) for n in ast.walk(ast.parse((package / "train.py").read_text()))
                   if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    assert train_calls.count("optimizer.zero_grad") == train_calls.count("optimizer.step") == 1


def test_snapshots_hook_looks_in_mid_training_without_changing_the_run():
    x, y = toy_classification()

    def train(after_step=None):
        model = toy_classifier()  # has dropout: training draws from the global random state
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


def test_fit_trains_on_the_device_the_runtime_chose(monkeypatch):
    """fit asks runtime.place_on_device for its device, and trains there; here the runtime's device is the CPU,
    and the move itself is tested in test_runtime with a simulated second device."""
    import course_utils.train as train

    calls = []

    def spy(model):
        calls.append(next(model.parameters()).device)
        return torch.device("cpu")

    monkeypatch.setattr(train, "place_on_device", spy)
    x, y = toy_classification()
    model = toy_classifier()
    fit(model, TensorLoader(x, y, 16), None, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        progress=False, verbose=False)
    assert calls == [torch.device("cpu")]


def test_mixed_precision_is_off_on_a_cpu_by_default_and_changes_the_run_when_asked():
    def run(amp):
        torch.manual_seed(0)
        x, y = toy_classification()
        model = toy_classifier()
        h = fit(model, TensorLoader(x, y, 16, shuffle=True), None, epochs=2, amp=amp, progress=False, verbose=False,
                optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
        return model.state_dict(), h

    default, h_default = run(None)
    off, _ = run(False)
    on, h_on = run(True)  # bfloat16 autocast on a CPU: the same loop, in lower precision
    assert all(torch.equal(default[k], off[k]) for k in default)
    assert not all(torch.equal(default[k], on[k]) for k in default)
    assert math.isfinite(h_on.last["train_loss"]) and h_on.last["train_loss"] < h_on.records[0]["train_loss"] * 1.5
    assert all(v.dtype == torch.float32 for v in on.values() if v.is_floating_point())  # weights stay float32


def test_dry_run_caps_steps_epochs_and_evaluation(monkeypatch):
    monkeypatch.setenv("COURSE_DRY_RUN", "2")
    x, y = toy_classification()
    model = toy_classifier()
    steps, seen = [], []

    class Counting(TensorLoader):
        def __iter__(self):
            for batch in super().__iter__():
                seen.append(len(batch[1]))
                yield batch

    h = fit(model, TensorLoader(x, y, 8), Counting(x, y, 8), epochs=5, after_step=lambda m, i: steps.append(i),
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False, verbose=False)
    assert len(h) == 2 and len(steps) == 4  # two epochs of two steps, though the loader has more batches
    assert seen == [8, 8]  # each of the two evaluations read one batch
    seen.clear()
    monkeypatch.setattr("course_utils.runtime.DRY_RUN_ROWS", 3)
    rows = []
    model.register_forward_hook(lambda m, i, o: rows.append(len(i[0])))
    ev = evaluate(model, Counting(x, y, 8))
    assert seen == [8] and rows == [3]  # three rows of the first batch computed ...
    assert len(ev.preds) == len(ev.targets) == len(ev.logits) == len(x)  # ... and repeated to the real shapes
    assert torch.equal(ev.targets, y) and torch.equal(ev.logits[3:6], ev.logits[:3])
    monkeypatch.delenv("COURSE_DRY_RUN")
    rows.clear()
    full = evaluate(model, Counting(x, y, 8))
    assert rows == [8] * -(-len(x) // 8) and torch.allclose(full.logits[:3], ev.logits[:3], atol=1e-6)


def test_budget_ledger_records_the_counted_flops_of_the_full_run(monkeypatch, tmp_path):
    from course_utils.budget import read_ledger

    monkeypatch.setenv("COURSE_BUDGET_FILE", str(tmp_path / "ledger.json"))
    monkeypatch.setenv("COURSE_DRY_RUN", "3")
    x, y = toy_classification()
    model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 5, bias=False))
    loader = TensorLoader(x, y % 5, 8)
    fit(model, loader, None, epochs=7, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False,
        verbose=False, metrics={})
    (rec,) = read_ledger(tmp_path / "ledger.json")
    # forward x @ W.T: 2*B*D*K; backward: only the weight's gradient (the input needs none), another 2*B*D*K
    assert rec["flops_per_step"] == 4 * 8 * x[0].numel() * 5
    assert rec["steps"] == 7 * len(loader) and rec["images_per_step"] == 8 and rec["seconds_per_step"] > 0

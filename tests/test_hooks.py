"""Borrowing a model for a while: eval_mode and train_mode restore each submodule's own flag, and capture_output
collects a module's outputs and removes its hook; both also when the body raises."""

import pytest
import torch
from torch import nn

from course_utils.hooks import capture_output, dry_run, eval_mode, forward_hooks, train_mode


class Boom(Exception):
    """The body of a ``with`` block failing."""


def _mixed(training: bool) -> nn.Sequential:
    """A model in mode ``training`` whose dropout and inner block have the other mode: mixed flags."""
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Sequential(nn.BatchNorm1d(8), nn.ReLU()),
                          nn.Linear(8, 2))
    model.train(training)
    model[1].train(not training)
    model[2][0].train(not training)
    return model


def _flags(model):
    return {name: m.training for name, m in model.named_modules()}


@pytest.mark.parametrize("manager, inside", [(eval_mode, False), (train_mode, True)])
def test_every_submodule_is_switched_and_its_own_flag_restored(manager, inside):
    model = _mixed(training=not inside)
    before = _flags(model)
    assert len(set(before.values())) == 2  # really mixed
    with manager(model) as m:
        assert m is model
        assert all(flag == inside for flag in _flags(model).values())
    assert _flags(model) == before


@pytest.mark.parametrize("manager, inside", [(eval_mode, False), (train_mode, True)])
def test_flags_are_restored_when_the_body_raises(manager, inside):
    model = _mixed(training=not inside)
    before = _flags(model)
    with pytest.raises(Boom), manager(model):
        assert all(flag == inside for flag in _flags(model).values())
        raise Boom
    assert _flags(model) == before


def test_eval_mode_turns_off_dropout_and_batch_statistics():
    torch.manual_seed(0)
    model = _mixed(training=True).train()  # everything in training mode
    x = torch.randn(16, 4)
    stats = model[2][0].running_mean.clone()
    with eval_mode(model), torch.no_grad():
        first, second = model(x), model(x)
    assert torch.equal(first, second)  # no dropout draws
    assert torch.equal(model[2][0].running_mean, stats)  # batch-norm statistics untouched
    assert model.training and model[1].training


def test_capture_output_collects_each_call_and_removes_its_hook():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x1, x2 = torch.randn(5, 4), torch.randn(7, 4)
    with capture_output(model[1]) as outs:
        model(x1)
        model(x2)
        assert len(model[1]._forward_hooks) == 1
    assert len(outs) == 2
    torch.testing.assert_close(outs[0], torch.relu(model[0](x1)))
    torch.testing.assert_close(outs[1], torch.relu(model[0](x2)))
    model(x1)
    assert len(outs) == 2 and not model[1]._forward_hooks  # removed on exit: later calls are not collected


def test_capture_output_removes_its_hook_when_the_body_raises_and_keeps_other_hooks():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    theirs = []
    handle = model[0].register_forward_hook(lambda _m, _i, out: theirs.append(out))
    with pytest.raises(Boom), capture_output(model[0]) as outs:
        model(torch.randn(2, 4))
        raise Boom
    assert len(outs) == 1 and len(theirs) == 1
    assert len(model[0]._forward_hooks) == 1  # only the caller's own hook is left
    model(torch.randn(2, 4))
    assert len(outs) == 1 and len(theirs) == 2
    handle.remove()


def test_forward_hooks_are_removed_on_exit_even_after_an_error():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 3, 3))
    seen = []
    with pytest.raises(RuntimeError, match="boom"):
        with forward_hooks((m, lambda mod, i, o, k=k: seen.append((k, tuple(o.shape)))) for k, m in enumerate(model)):
            model(torch.zeros(1, 1, 8, 8))
            raise RuntimeError("boom")
    assert seen == [(0, (1, 2, 6, 6)), (1, (1, 2, 6, 6)), (2, (1, 3, 4, 4))]
    assert all(not m._forward_hooks for m in model.modules())


def test_dry_run_is_one_zero_batch_in_eval_mode_on_the_models_dtype():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5)).double().train()
    before = model[1].running_mean.clone()
    out = dry_run(model, (2, 1, 5, 5))
    assert out.shape == (2, 2, 3, 3) and out.dtype == torch.float64 and not out.requires_grad
    assert torch.equal(model[1].running_mean, before)  # eval mode: the statistics are not updated
    assert all(m.training for m in model.modules())  # the caller's mode is back

"""Optimisers and schedules: the decay / no-decay split, warm-up, peak and end of every schedule."""

import math

import pytest
import torch
from torch import nn

from course_utils.optim import (OPTIMIZERS, adam_constant, adam_one_cycle, adamw_warmup_cosine, decay_groups,
                                sgd_one_cycle)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 4))


def _rates(opt, sched, steps):
    """The rate each of ``steps`` optimiser steps uses, and the rate after the last one."""
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs, opt.param_groups[0]["lr"]


def test_decay_groups_put_every_1d_parameter_in_no_decay():
    model = _model()
    decay, no_decay = decay_groups(model.parameters(), 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[4].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias),
                                                   id(model[4].bias)}
    assert all(p.ndim == 1 for p in no_decay["params"]) and all(p.ndim > 1 for p in decay["params"])


def test_sgd_one_cycle_groups_and_schedule():
    model = _model()
    opt, sched = sgd_one_cycle(model, lr=0.4, total_steps=8, weight_decay=1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-3, 0.0]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert all(p.ndim > 1 for p in opt.param_groups[0]["params"])
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    lrs, end = _rates(opt, sched, 8)
    # peak after pct_start = 25% of the steps (OneCycleLR counts the phase end as step pct_start * total - 1)
    assert max(lrs) == pytest.approx(0.4) and lrs.index(max(lrs)) == 1 and lrs[0] == pytest.approx(0.4 / 25)
    assert lrs[-1] == pytest.approx(0.4 / 25 / 1e4)  # the last step: linearly down to the initial rate / 1e4


@pytest.mark.parametrize("steps", range(1, 10))
def test_sgd_one_cycle_survives_very_short_runs(steps):
    opt, sched = sgd_one_cycle(_model(), lr=0.1, total_steps=steps)
    for _ in range(steps):
        assert 0 <= opt.param_groups[0]["lr"] <= 0.1 + 1e-9  # the rate each optimiser step uses
        opt.step()
        sched.step()


def test_adamw_warmup_cosine_rises_then_falls_to_zero():
    w, b = torch.nn.Parameter(torch.ones(3, 3)), torch.nn.Parameter(torch.ones(3))
    opt, sched = adamw_warmup_cosine([w, b], lr=0.1, total_steps=20, weight_decay=0.5, warmup=0.1)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]  # no decay on the 1-D bias
    lrs, end = _rates(opt, sched, 20)
    assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.1)  # two warm-up steps
    assert lrs[2] == pytest.approx(0.1)  # the peak, then half a cosine: step 2 + k has 0.05 (1 + cos(pi k / 18))
    assert lrs[11] == pytest.approx(0.05 * (1 + math.cos(math.pi * 9 / 18)))
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:])) and end == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="epochs"):
        adamw_warmup_cosine([w], lr=0.1, total_steps=0)


def test_adam_one_cycle_warms_up_over_15_percent_then_anneals():
    model = _model()
    opt, sched = adam_one_cycle(model.parameters(), lr=0.01, total_steps=40, weight_decay=1e-4)
    assert isinstance(opt, torch.optim.Adam) and len(opt.param_groups) == 1  # L2 decay on every parameter
    assert opt.param_groups[0]["weight_decay"] == 1e-4
    lrs, end = _rates(opt, sched, 40)
    assert lrs[0] == pytest.approx(0.01 / 25) and max(lrs) == pytest.approx(0.01)
    assert lrs.index(max(lrs)) == round(0.15 * 40) - 1
    assert lrs[-1] == pytest.approx(0.01 / 25 / 1e4) and all(a >= b for a, b in zip(lrs[5:], lrs[6:]))
    lrs, _ = _rates(*adam_one_cycle(_model().parameters(), lr=0.01, total_steps=1), 1)  # one step: no crash
    assert 0 < lrs[0] <= 0.01
    with pytest.raises(ValueError, match="epochs"):
        adam_one_cycle(_model().parameters(), lr=0.01, total_steps=0)


def test_adam_constant_and_the_table_of_optimisers():
    model = _model()
    opt, sched = adam_constant(model, 1e-3, 100)
    assert sched is None and isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 1e-3
    assert OPTIMIZERS == {"sgd": sgd_one_cycle, "adam": adam_constant}
    opt, sched = OPTIMIZERS["sgd"](model, 0.1, 10)
    assert isinstance(opt, torch.optim.SGD) and sched is not None

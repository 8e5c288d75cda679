"""Training budgets: counted FLOPs against hand counts, the ledger, and the configuration cell's line."""

import json

import pytest
import torch
from torch import nn

from course_utils.budget import (T4_SUSTAINED_FLOPS, count_flops, estimate_line, format_flops, read_ledger, record_fit,
                                 summarize_ledger)


def test_count_flops_matches_the_hand_count_of_a_convolution_forward_and_backward():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    x = torch.randn(4, 3, 10, 10, requires_grad=True)
    macs = 4 * 8 * 10 * 10 * 3 * 3 * 3  # outputs x (in channels x kernel)
    _, forward = count_flops(lambda: conv(x))
    _, both = count_flops(lambda: conv(x).sum().backward())
    assert forward == 2 * macs
    assert both == 3 * 2 * macs  # backward: the input's gradient and the weight's, each as costly as the forward


def test_ledger_round_trip_and_summary(tmp_path):
    path = tmp_path / "ledger.json"
    assert record_fit(10, 5, 2, path=None) is None  # no ledger configured: nothing written
    record_fit(100, 50, 32, 0.5, path=path)
    record_fit(200, 10, 16, None, path=path)
    rows = read_ledger(path)
    assert [r["steps"] for r in rows] == [50, 10]
    s = summarize_ledger(rows)
    assert s == {"trainings": 2, "steps": 60, "images": 50 * 32 + 10 * 16, "flops": 100 * 50 + 200 * 10,
                 "measured_flops_per_s": 200.0}
    with pytest.raises(ValueError, match="non-negative"):
        record_fit(-1, 1, 1, path=path)
    assert len(read_ledger(path)) == 2  # a refused record leaves the file as it was


def test_format_flops():
    assert format_flops(3.2e15) == "3.2 PFLOP"
    assert format_flops(4.56e9) == "4.56 GFLOP"
    assert format_flops(12) == "12 FLOP"


def test_estimate_line_for_the_active_profile(tmp_path):
    budgets = tmp_path / "budgets.json"
    budgets.write_text(json.dumps({"01": {"flops": {"gpu": 2 * 60 * T4_SUSTAINED_FLOPS, "cpu": 1e12},
                                          "cpu_minutes": 13.7}}))
    line = estimate_line("01", profile="gpu", path=budgets)
    assert line.startswith("budget (gpu): 960 TFLOP of training ≈ 2.0 min on a Colab T4 at 8 TFLOP/s")
    assert line.endswith("the cpu profile took 14 min on 2 CPU cores")
    assert "no estimate recorded" in estimate_line("05", profile="cpu", path=budgets)
    assert "scripts/dry_run.py 05 --profile cpu" in estimate_line("05", profile="cpu", path=budgets)
    assert "\n" not in line  # under gpu: one line


def test_estimate_line_adds_the_gpu_experiment_under_another_profile(tmp_path):
    budgets = tmp_path / "budgets.json"
    budgets.write_text(json.dumps({"01": {"flops": {"gpu": 30 * 60 * T4_SUSTAINED_FLOPS, "cpu": 1e12}}}))
    first, second = estimate_line("01", profile="cpu", path=budgets).split("\n")
    assert first == "budget (cpu): 1 TFLOP of training ≈ 0.0 min on a Colab T4 at 8 TFLOP/s sustained"
    assert second == "budget (gpu, the full experiment): 14.4 PFLOP of training ≈ 30 min on a Colab T4"
    only = json.dumps({"01": {"flops": {"cpu": 1e12}}})
    budgets.write_text(only)
    assert "\n" not in estimate_line("01", profile="cpu", path=budgets)


def test_repeated_multiplies_the_recorded_steps(tmp_path):
    from course_utils.budget import repeated

    path = tmp_path / "ledger.json"
    with repeated(3):
        record_fit(10, 4, 2, path=path)
        with repeated(2):
            record_fit(10, 4, 2, path=path)
    record_fit(10, 4, 2, path=path)
    assert [r["steps"] for r in read_ledger(path)] == [12, 24, 4]
    with pytest.raises(ValueError, match="times >= 1"):
        with repeated(0):
            pass


def test_the_front_page_times_are_the_recorded_ones():
    """book/intro.md's chapter table shows budgets.json: the measured cpu minutes and the gpu estimate on a T4."""
    from pathlib import Path

    from course_utils.budget import load_budgets

    budgets = load_budgets()
    intro = (Path(__file__).resolve().parent.parent / "book" / "intro.md").read_text(encoding="utf-8")
    header = next(line for line in intro.splitlines() if line.startswith("| # | chapter |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    cpu_col, gpu_col = columns.index("`cpu` (min)"), columns.index("`gpu` on a T4 (min, estimated)")
    rows = [line for line in intro.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert len(rows) == 8
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        ch = f"{int(cells[0]):02d}"
        entry = budgets[ch]
        assert float(cells[cpu_col]) == round(entry["cpu_minutes"], 1), f"chapter {ch}: cpu minutes"
        t4 = entry["flops"]["gpu"] / T4_SUSTAINED_FLOPS / 60
        assert cells[gpu_col] == (f"{t4:.0f}" if t4 >= 10 else f"{t4:.1f}"), f"chapter {ch}: gpu estimate"

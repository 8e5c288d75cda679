"""Training budgets: counted FLOPs against hand counts, the ledger, and the configuration cell's line."""

import json
import os

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


def test_dry_run_script_runs_chapters_side_by_side_each_in_its_own_environment(tmp_path):
    """scripts/dry_run.py --jobs 2: two kernels at once, each with its own runs folder, ledger and thread cap."""
    import importlib.util
    import types
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("dry_run_script", root / "scripts" / "dry_run.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    chapter = """# %%
import os, torch
from torch import nn
from course_utils.loader import TensorLoader
from course_utils.train import fit
print("ENV", os.environ["COURSE_RUNS_DIR"], os.environ["OMP_NUM_THREADS"], os.environ["COURSE_DRY_RUN"])
x, y = torch.randn(64, 3), torch.arange(64) % 2
model = nn.Linear(3, 2, bias=False)
fit(model, TensorLoader(x, y, 8), None, epochs=5, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
    progress=False, verbose=False)
"""
    paths = []
    for name in ("91_one.py", "92_two.py"):
        (tmp_path / name).write_text(chapter)
        paths.append(tmp_path / name)
    args = types.SimpleNamespace(profile="smoke", steps=1, device="cpu", timeout=120, verbose=False)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda p: script._run_one(p, args, 1), paths))
    assert [error for _, error in results] == [None, None]
    for (r, _), path in zip(results, paths):
        # each kernel wrote its own ledger: one training of 5 epochs x 8 steps in the real run, a forward and a
        # backward (the weight's gradient only) of 2*B*D*K FLOPs each
        assert r["chapter"] == path.name[:2] and r["trainings"] == 1 and r["steps"] == 40
        assert r["flops"] == 40 * 2 * (2 * 8 * 3 * 2)
    assert "COURSE_DRY_RUN" not in os.environ and "COURSE_BUDGET_FILE" not in os.environ  # only the kernels had them

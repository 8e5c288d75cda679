"""Training budgets: the FLOPs of a chapter's trainings, counted, and what they mean in time.

A dry run (``COURSE_DRY_RUN``, see ``course_utils.runtime``) executes a chapter with a profile's full
configuration but only a few steps per training. With ``COURSE_BUDGET_FILE`` set, every ``fit`` of that
run counts the floating-point operations of one optimiser step (forward and backward, with
``torch.utils.flop_counter``; the optimiser update and data augmentation are not counted) and records
them with the number of steps the real run would take and the measured time of its steps. Summed over a
chapter, that is the training cost of the profile before anyone starts it:
``scripts/dry_run.py`` writes it to ``course_utils/budgets.json``, and each chapter's configuration
cell prints it with ``estimate_line``.

FLOPs here count a multiply-add as two operations, as ``torch.utils.flop_counter`` does.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from course_utils.io import atomic_write_text

__all__ = ["BUDGETS_FILE", "T4_SUSTAINED_FLOPS", "count_flops", "estimate_line", "format_flops",
           "load_budgets", "read_ledger", "record_fit", "repeated", "summarize_ledger"]

T4_SUSTAINED_FLOPS = 8e12
"""The sustained rate assumed for a Colab T4 (FLOP/s): its FP32 peak is 8.1 TFLOP/s and mixed precision
peaks at 65 TFLOP/s, but networks this small keep a GPU far from its peak, so one FP32 peak is a fair
planning figure. ``scripts/dry_run.py --device cuda`` measures the real rate."""

BUDGETS_FILE = Path(__file__).with_name("budgets.json")
_LEDGER_VAR = "COURSE_BUDGET_FILE"
_REPEAT = [1]  # how many real trainings each recorded one stands for (``repeated``)


@contextmanager
def repeated(times: int):
    """Within this block every recorded training counts ``times`` times (a dry run trains one seed of several)."""
    if times < 1:
        raise ValueError(f"repeated needs times >= 1, got {times}")
    _REPEAT.append(_REPEAT[-1] * times)
    try:
        yield
    finally:
        _REPEAT.pop()


def count_flops(fn: Callable[[], object]) -> tuple[object, int]:
    """Run ``fn()`` under ``FlopCounterMode`` and return ``(its result, FLOPs counted)``."""
    counter = FlopCounterMode(display=False)
    with counter:
        out = fn()
    return out, int(counter.get_total_flops())


def read_ledger(path: str | os.PathLike) -> list[dict]:
    """The records of a ledger file (``[]`` if it does not exist yet)."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []


def record_fit(flops_per_step: int, steps: int, images_per_step: int, seconds_per_step: float | None = None,
               path: str | os.PathLike | None = None) -> Path | None:
    """Append one ``fit`` to the ledger at ``path`` (default ``$COURSE_BUDGET_FILE``; nothing when unset).

    Args:
        flops_per_step: FLOPs of one optimiser step (forward and backward).
        steps: the optimiser steps the real (not dry) run takes: epochs x batches per epoch (times the
            enclosing ``repeated`` factor).
        images_per_step: the batch size.
        seconds_per_step: the measured time of one step in the dry run, if known.
    """
    path = path if path is not None else os.environ.get(_LEDGER_VAR)
    if not path:
        return None
    if flops_per_step < 0 or steps < 0 or images_per_step < 0:
        raise ValueError(f"record_fit needs non-negative numbers, got flops_per_step={flops_per_step}, "
                         f"steps={steps}, images_per_step={images_per_step}")
    records = read_ledger(path) + [{"flops_per_step": int(flops_per_step), "steps": int(steps) * _REPEAT[-1],
                                    "images_per_step": int(images_per_step), "seconds_per_step": seconds_per_step}]
    atomic_write_text(Path(path), json.dumps(records, indent=1) + "\n")
    return Path(path)


def summarize_ledger(records: list[dict]) -> dict:
    """Totals of a ledger: trainings, optimiser steps, images, training FLOPs, and the measured rate."""
    timed = [r for r in records if r.get("seconds_per_step")]
    flops = sum(r["flops_per_step"] * r["steps"] for r in records)
    rate = (sum(r["flops_per_step"] for r in timed) / sum(r["seconds_per_step"] for r in timed)) if timed else None
    return {"trainings": len(records), "steps": sum(r["steps"] for r in records),
            "images": sum(r["steps"] * r["images_per_step"] for r in records), "flops": flops,
            "measured_flops_per_s": rate}


def format_flops(flops: float) -> str:
    """``3.2e15`` -> ``'3.2 PFLOP'``."""
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOP"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 600 else f"{seconds / 60:.1f} min"


def load_budgets(path: str | os.PathLike | None = None) -> dict:
    """The committed budgets: ``{chapter: {"flops": {profile: n}, "cpu_minutes": m, ...}}``."""
    path = Path(path) if path is not None else BUDGETS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def estimate_line(chapter: str, profile: str | None = None, path: str | os.PathLike | None = None) -> str:
    """The lines a chapter's configuration cell prints: the active profile's training FLOPs and the time they
    mean on a Colab T4 at ``T4_SUSTAINED_FLOPS``, the measured time of the ``cpu`` profile on 2 cores, and,
    when the active profile is not ``gpu``, the same estimate for the full ``gpu`` experiment."""
    from course_utils.runtime import get_profile

    profile = get_profile(profile)
    entry = load_budgets(path).get(chapter, {})
    flops = entry.get("flops", {})
    if profile not in flops:
        return (f"budget: no estimate recorded for chapter {chapter} under {profile!r} "
                f"(python scripts/dry_run.py {chapter} --profile {profile} --update records one)")
    cpu = entry.get("cpu_minutes")
    measured = f"; the cpu profile took {cpu:.0f} min on 2 CPU cores" if cpu is not None else ""
    lines = [f"budget ({profile}): {format_flops(flops[profile])} of training ≈ "
             f"{_minutes(flops[profile] / T4_SUSTAINED_FLOPS)} on a Colab T4 at "
             f"{T4_SUSTAINED_FLOPS / 1e12:.0f} TFLOP/s sustained{measured}"]
    if profile != "gpu" and "gpu" in flops:
        lines.append(f"budget (gpu, the full experiment): {format_flops(flops['gpu'])} of training ≈ "
                     f"{_minutes(flops['gpu'] / T4_SUSTAINED_FLOPS)} on a Colab T4")
    return "\n".join(lines)

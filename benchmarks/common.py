"""Shared set-up for the benchmarks: data, the reference model, and a best-of-n timer."""

from __future__ import annotations

import time

import course_utils
from course_utils.data import FASHION_MEAN as MEAN, FASHION_STD as STD, load_fashion_mnist  # noqa: F401


def setup():
    course_utils.setup(0)
    return load_fashion_mnist("train")


def best_of(fn, repeats: int = 3) -> float:
    """The shortest of ``repeats`` wall-clock timings of ``fn()``, in seconds (least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def report(name: str, value: float, goal: str) -> None:
    print(f"RESULT {name} = {value:.3g}  (goal {goal})", flush=True)

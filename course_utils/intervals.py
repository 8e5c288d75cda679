"""The statistics behind a claim's verdict: the 95% interval of a mean difference, the verdict a declared
test gives it, the size label against the source's effect, and the rule that combines several comparisons.

Intervals come from ``scipy.stats.t`` (no tables written by hand):

- *paired* (both arms ran with the same seeds): a t interval on the per-seed differences ``a_i − b_i``,
  ``mean(d) ± t(0.975, n−1) · sd(d) / √n`` — what ``scipy.stats.ttest_rel(a, b).confidence_interval()`` gives;
- *Welch* (otherwise): ``mean(a) − mean(b) ± t(0.975, ν) · √(s_a²/n_a + s_b²/n_b)`` with the
  Welch–Satterthwaite ν — what ``scipy.stats.ttest_ind(a, b, equal_var=False).confidence_interval()`` gives.

When every difference is the same (a spread of exactly 0), the interval is that single value.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

MIN_VALUES = 3  # an arm with fewer values is shown, never judged
TESTS = ("greater", "less", "equivalent", "not_testable")
VERDICTS = ("supported", "contradicted", "inconclusive", "not testable here", "not judged")
SIZES = ("smaller", "similar", "larger")


def paired_values(a: Sequence[float], b: Sequence[float], a_seeds: Sequence[int] | None,
                  b_seeds: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` ordered by seed, for a paired interval; ``ValueError`` when their seeds differ."""
    if a_seeds is None or b_seeds is None:
        raise ValueError("a paired comparison needs the seeds of both arms (Arm(..., seeds=[...])).")
    if len(a_seeds) != len(a) or len(b_seeds) != len(b):
        raise ValueError(f"each value needs its seed: {len(a)} values but {len(a_seeds)} seeds, "
                         f"{len(b)} values but {len(b_seeds)} seeds.")
    if len(set(a_seeds)) != len(a_seeds) or len(set(b_seeds)) != len(b_seeds):
        raise ValueError(f"an arm lists a seed twice: {list(a_seeds)} / {list(b_seeds)}.")
    if set(a_seeds) != set(b_seeds):
        raise ValueError(f"declared paired, but the arms ran with different seeds: {sorted(a_seeds)} vs "
                         f"{sorted(b_seeds)}; pair only runs that share seeds, or use paired=False (Welch).")
    ia, ib = np.argsort(a_seeds), np.argsort(b_seeds)
    return np.asarray(a, float)[ia], np.asarray(b, float)[ib]


def interval(a: Sequence[float], b: Sequence[float], paired: bool = False, a_seeds: Sequence[int] | None = None,
             b_seeds: Sequence[int] | None = None, level: float = 0.95) -> tuple[float, tuple[float, float] | None]:
    """``(mean difference a − b, (lo, hi))``: paired t or Welch interval; ``None`` for the interval below 2 values."""
    if paired:
        x, y = paired_values(a, b, a_seeds, b_seeds)
        d = x - y
        diff = float(d.mean())
        if len(d) < 2:
            return diff, None
        se, df = float(d.std(ddof=1)) / math.sqrt(len(d)), len(d) - 1
    else:
        x, y = np.asarray(a, float), np.asarray(b, float)
        diff = float(x.mean() - y.mean())
        if len(x) < 2 or len(y) < 2:
            return diff, None
        va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1)) if se > 0 else 1.0
    if se == 0:
        return diff, (diff, diff)
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return diff, (diff - half, diff + half)


def decide(ci: tuple[float, float] | None, test: str, margin: float | None = None) -> str:
    """The verdict a declared ``test`` gives an interval ``ci`` of a − b (``None``: not judged)."""
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}.")
    if test == "not_testable":
        return "not testable here"
    if ci is None:
        return "not judged"
    lo, hi = ci
    if test == "greater":
        return "supported" if lo > 0 else "contradicted" if hi < 0 else "inconclusive"
    if test == "less":
        return "supported" if hi < 0 else "contradicted" if lo > 0 else "inconclusive"
    if margin is None or not margin > 0:
        raise ValueError(f"an 'equivalent' test needs a margin > 0, got {margin!r}.")
    if -margin <= lo and hi <= margin:
        return "supported"
    return "contradicted" if lo > margin or hi < -margin else "inconclusive"


def size_label(ci: tuple[float, float] | None, source_effect: float | None) -> str | None:
    """Our interval against the source's effect ``s``, read in the source's direction (the sign of ``s``).

    With ``[lo, hi]`` multiplied by ``sign(s)`` (``+1`` when ``s == 0``): "similar" when ``|s|`` lies in it
    (edges included), "smaller" when it lies entirely below ``|s|`` (a weaker effect, or one the other
    way), "larger" when entirely above. ``None`` without an interval or without a source effect.
    """
    if ci is None or source_effect is None:
        return None
    sign = -1.0 if source_effect < 0 else 1.0
    lo, hi = sorted((sign * ci[0], sign * ci[1]))
    s = abs(source_effect)
    return "smaller" if hi < s else "larger" if lo > s else "similar"


def combine(verdicts: Sequence[str]) -> str:
    """One claim's verdict from its comparisons' verdicts.

    Contradicted when any is; supported when all are; not testable here when all are; not judged when
    none was judged (each is not judged or not testable here); inconclusive otherwise.
    """
    if not verdicts:
        raise ValueError("a claim needs at least one comparison.")
    unknown = set(verdicts) - set(VERDICTS)
    if unknown:
        raise ValueError(f"unknown verdicts {sorted(unknown)}; expected some of {VERDICTS}.")
    if "contradicted" in verdicts:
        return "contradicted"
    for every in ("supported", "not testable here"):
        if all(v == every for v in verdicts):
            return every
    if all(v in ("not judged", "not testable here") for v in verdicts):
        return "not judged"
    return "inconclusive"


def format_difference(diff: float, ci: tuple[float, float] | None, digits: int = 2) -> str:
    """``"+1.23 [-0.40, +2.86]"``: a difference with its 95% interval, or ``"+1.23 (no interval)"`` without one."""
    if ci is None:
        return f"{diff:+.{digits}f} (no interval)"
    return f"{diff:+.{digits}f} [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


__all__ = ["MIN_VALUES", "SIZES", "TESTS", "VERDICTS", "combine", "decide", "format_difference", "interval",
           "paired_values", "size_label"]

"""The statistics behind a verdict: intervals against scipy.stats and by hand, verdicts at the edges, the
combination rule, the size label, and how a difference is written."""

import math

import numpy as np
import pytest
from scipy import stats

from course_utils.intervals import combine, decide, format_difference, interval, size_label

A, B, SEEDS = [88.0, 88.6, 87.5, 88.9], [86.9, 87.0, 86.1, 87.8], [0, 1, 2, 3]


def test_paired_interval_is_scipys_ttest_rel():
    diff, ci = interval(A, B, paired=True, a_seeds=SEEDS, b_seeds=SEEDS)
    ref = stats.ttest_rel(A, B).confidence_interval(0.95)
    assert diff == pytest.approx(np.mean(A) - np.mean(B))
    assert ci == pytest.approx((ref.low, ref.high), rel=1e-12)


def test_welch_interval_is_scipys_ttest_ind():
    b = [86.9, 87.0, 86.1]
    diff, ci = interval(A, b)
    ref = stats.ttest_ind(A, b, equal_var=False).confidence_interval(0.95)
    assert ci == pytest.approx((ref.low, ref.high), rel=1e-12)


def test_intervals_by_hand():
    # paired: differences 1, 2, 3 -> mean 2, sd 1, se 1/sqrt(3); t(0.975, 2) = 4.302652729911275
    _, (lo, hi) = interval([2, 4, 6], [1, 2, 3], paired=True, a_seeds=[0, 1, 2], b_seeds=[0, 1, 2])
    half = 4.302652729911275 / math.sqrt(3)
    assert (lo, hi) == pytest.approx((2 - half, 2 + half))
    # Welch with equal variances and sizes: var 1 each, n 3 -> se sqrt(2/3), df 4, t(0.975, 4) = 2.7764451051977987
    _, (lo, hi) = interval([1, 2, 3], [0, 1, 2])
    half = 2.7764451051977987 * math.sqrt(2 / 3)
    assert (lo, hi) == pytest.approx((1 - half, 1 + half))
    assert interval([1, 1, 1], [0, 0, 0])[1] == (1.0, 1.0)  # no spread: the interval is the value


def test_verdicts_of_each_test():
    assert decide((0.1, 2.0), "greater") == "supported"
    assert decide((-2.0, -0.1), "greater") == "contradicted"
    assert decide((0.0, 2.0), "greater") == "inconclusive"  # touching 0 is not "entirely above"
    assert decide((-2.0, -0.1), "less") == "supported" and decide((0.1, 2.0), "less") == "contradicted"
    assert decide(None, "greater") == "not judged"
    assert decide((0.1, 2.0), "not_testable") == "not testable here"
    with pytest.raises(ValueError, match="test"):
        decide((0, 1), "bigger")


def test_equivalence_at_the_edges_of_the_margin():
    assert decide((-0.5, 0.5), "equivalent", 0.5) == "supported"  # edges included
    assert decide((-0.5, 0.5000001), "equivalent", 0.5) == "inconclusive"
    assert decide((0.5, 1.0), "equivalent", 0.5) == "inconclusive"  # touches the margin
    assert decide((0.5000001, 1.0), "equivalent", 0.5) == "contradicted"
    assert decide((-1.0, -0.6), "equivalent", 0.5) == "contradicted"
    assert decide((-1.0, 1.0), "equivalent", 0.5) == "inconclusive"  # a noisy run never "confirms no effect"
    for margin in (None, 0.0, -0.5):  # an equivalence test without a positive margin is refused
        with pytest.raises(ValueError, match="margin"):
            decide((-0.1, 0.1), "equivalent", margin)


def test_combination_rule():
    assert combine(["supported", "supported"]) == "supported"
    assert combine(["supported", "contradicted", "inconclusive"]) == "contradicted"
    assert combine(["supported", "inconclusive"]) == "inconclusive"
    assert combine(["supported", "not judged"]) == "inconclusive"
    assert combine(["not judged", "not testable here"]) == "not judged"
    assert combine(["not testable here"]) == "not testable here"
    with pytest.raises(ValueError):
        combine([])


def test_size_label_reads_the_interval_in_the_sources_direction():
    assert size_label((0.5, 2.0), 1.15) == "similar"
    assert size_label((0.1, 0.9), 1.15) == "smaller" and size_label((1.5, 3.0), 1.15) == "larger"
    assert size_label((-2.0, -0.5), -1.15) == "similar"
    assert size_label((-0.9, -0.1), -1.15) == "smaller"  # a weaker effect in the source's direction
    assert size_label((0.2, 0.9), -1.15) == "smaller"  # the other way is smaller still
    assert size_label((-3.0, -1.5), -1.15) == "larger"
    assert size_label((0.1, 0.9), None) is None and size_label(None, 1.0) is None



def test_format_difference_writes_the_signed_difference_and_its_interval():
    assert format_difference(1.234, (-0.4, 2.856)) == "+1.23 [-0.40, +2.86]"
    assert format_difference(-0.5, (-1.0, 0.0)) == "-0.50 [-1.00, +0.00]"
    assert format_difference(1.234, None) == "+1.23 (no interval)"
    assert format_difference(2.0, (1.0, 3.0), digits=0) == "+2 [+1, +3]"
    diff, ci = interval([2, 4, 6], [1, 2, 3], paired=True, a_seeds=[0, 1, 2], b_seeds=[0, 1, 2])
    assert format_difference(diff, ci, digits=3) == f"+2.000 [{ci[0]:+.3f}, {ci[1]:+.3f}]"

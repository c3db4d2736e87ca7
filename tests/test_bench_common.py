"""The A/B pairing every benchmark's ratio comes from, with plain values: the order of the calls,
each pair's ratio, and the median with its min–max."""

from __future__ import annotations

import pytest

from appliance.bench import MIN_PAIRS
from appliance.bench.common import interleaved, ratio_summary


def recorder(name, values, calls):
    """A side that records its call in ``calls`` and returns its next value."""
    values = iter(values)

    def call():
        calls.append(name)
        return next(values)

    return call


def test_the_two_sides_alternate_a_b_a_b_and_each_pair_gives_its_own_ratio():
    calls = []
    pairs = interleaved(recorder("a", [10, 10, 20, 10, 10], calls), recorder("b", [5, 9, 10, 8, 30], calls), 5)
    assert calls == ["a", "b"] * 5
    assert pairs.a == [10, 10, 20, 10, 10] and pairs.b == [5, 9, 10, 8, 30]
    assert pairs.ratios == [0.5, 0.9, 0.5, 0.8, 3.0] and pairs.orders == ["a, b"] * 5
    # One busy moment (the last pair's 3.0) moves neither the median nor the other pairs.
    assert pairs.summary == {"median": 0.8, "min": 0.5, "max": 3.0, "pairs": 5}


def test_with_the_order_alternated_neither_side_always_goes_first():
    calls = []
    pairs = interleaved(recorder("a", [1, 2, 3, 4, 5], calls), recorder("b", [2, 4, 6, 8, 10], calls), 5,
                        is_order_alternated=True)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]
    assert pairs.orders == ["a, b", "b, a", "a, b", "b, a", "a, b"]
    assert pairs.ratios == [2.0] * 5  # each result still paired with its own pair's other side


def test_the_ratio_can_read_the_sides_results():
    pairs = interleaved(lambda: {"fps": 200.0}, lambda: {"fps": 150.0}, 5,
                        ratio=lambda bare, loop: loop["fps"] / bare["fps"])
    assert pairs.ratios == [0.75] * 5 and pairs.summary["median"] == 0.75


def test_an_even_number_of_pairs_takes_the_mean_of_the_middle_two_and_ratios_are_rounded():
    assert ratio_summary([0.9, 0.7, 1.1, 0.8, 1.0, 0.6]) == {"median": 0.85, "min": 0.6, "max": 1.1, "pairs": 6}
    assert interleaved(lambda: 3, lambda: 1, 5).ratios == [0.333] * 5


def test_fewer_than_five_pairs_are_refused_before_anything_runs():
    calls = []
    with pytest.raises(ValueError, match="at least 5"):
        interleaved(recorder("a", [1] * 4, calls), recorder("b", [1] * 4, calls), MIN_PAIRS - 1)
    assert calls == [] and MIN_PAIRS == 5

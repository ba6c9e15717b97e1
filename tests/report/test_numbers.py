"""Number formats for people: enough digits that rows that differ never print alike."""

from __future__ import annotations

from bench.report import numbers
from bench.report.numbers import SI, Fixed, PValue, Significant, TwoDecimalsOrSignificant


def test_significant_digits_without_an_exponent_in_the_usual_range():
    assert numbers.significant(0.000412, 3) == "0.000412"
    assert numbers.significant(1234.5, 3) == "1234"
    assert numbers.significant(-0.0523, 3) == "-0.0523"
    assert numbers.significant(3.2e-7, 2) == "3.2e-07"


def test_p_values_have_two_significant_digits_and_a_floor():
    p = PValue()
    assert [p(v) for v in (0.0118, 0.5, 0.05, 1.0, 3.95e-05, 0.001)] == ["0.012", "0.50", "0.050", "1.0",
                                                                         "<0.001", "0.0010"]


def test_settle_keeps_a_format_whose_values_already_print_apart():
    assert numbers.settle(Fixed(4), [3.6843, 3.6847]) == Fixed(4)


def test_settle_adds_just_enough_digits_to_tell_values_apart():
    # Were 3.68 and 3.68 in the sweep table, 0.01 and 0.01 for small values.
    assert numbers.settle(Fixed(2), [3.68012, 3.68041, 3.9378]) == Fixed(4)
    assert numbers.settle(TwoDecimalsOrSignificant(), [51.308, 51.313, 39.9]) == TwoDecimalsOrSignificant(3, 4)
    assert numbers.settle(Fixed(2), [0.00736, 0.00895]) == Fixed(3)  # 0.007 and 0.009, not 0.01 twice
    assert [TwoDecimalsOrSignificant()(v) for v in (0.00736, 0.00895)] == ["0.00736", "0.00895"]
    assert numbers.settle(Significant(2), [0.04121, 0.04124]) == Significant(4)
    assert numbers.settle(SI(), [53_084_160, 53_090_000]) == SI(4)


def test_values_under_the_p_floor_stay_alike_and_cost_no_digits():
    assert numbers.settle(PValue(), [1e-5, 3e-5, 0.2]) == PValue()
    assert numbers.settle(PValue(), [1e-5, 3e-5, 0.0118, 0.0124]) == PValue(3)


def test_equal_values_and_float_noise_are_not_a_difference():
    assert numbers.settle(Fixed(2), [3.68, 3.68, 3.68 + 1e-15]) == Fixed(2)


def test_refinement_stops_after_a_few_digits_and_skips_plain_callables():
    assert numbers.settle(Fixed(1), [1.0, 1.0 + 1e-9]) == Fixed(1)  # 4 more decimals would not tell them apart
    assert numbers.settle(numbers.integer, [1.2, 1.4]) is numbers.integer

import pytest

from bench.sweep.plan import bracket, hyperband, s_max

# Li et al.'s table for R = 555, eta = 3 (also 10-605 HW5's): (n_i, r_i) per bracket s.
R555_ETA3 = {
    5: [(243, 2), (81, 6), (27, 20), (9, 61), (3, 185), (1, 555)],
    4: [(98, 6), (32, 20), (10, 61), (3, 185), (1, 555)],
    3: [(41, 20), (13, 61), (4, 185), (1, 555)],
    2: [(18, 61), (6, 185), (2, 555)],
    1: [(9, 185), (3, 555)],
    0: [(6, 555)],
}


def test_hyperband_r555_eta3_is_the_papers_table():
    plan = hyperband(555, 3)
    assert [b.s for b in plan] == [5, 4, 3, 2, 1, 0]
    assert {b.s: [(r.configs, r.resource) for r in b.rungs] for b in plan} == R555_ETA3


def test_s_max_is_exact_at_powers_of_eta():
    assert s_max(243, 3) == 5  # log(243)/log(3) is 4.999... in floating point
    assert s_max(242, 3) == 4
    assert s_max(81, 3) == 4
    assert s_max(1, 3) == 0


def test_small_plan_r9_eta3():
    assert [[(r.configs, r.resource) for r in b.rungs] for b in hyperband(9, 3)] == [
        [(9, 1), (3, 3), (1, 9)], [(5, 3), (1, 9)], [(3, 9)]]


@pytest.mark.parametrize("args", [(0, 3), (9, 1), (9, 2.5)])
def test_bad_parameters(args):
    with pytest.raises(ValueError):
        hyperband(*args)


def test_bracket_out_of_range():
    with pytest.raises(ValueError, match="0..2"):
        bracket(9, 3, 3)

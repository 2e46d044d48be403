"""The quality-against-compute plot's numbers: median traces and the Pareto front, against brute force."""
from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from gan_inversion_bench.report_plots import median_trace, pareto_front


def dominated(p, points):
    return any(q[0] <= p[0] and q[1] >= p[1] and (q[0] < p[0] or q[1] > p[1]) for q in points)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 100), st.floats(0, 50), st.sampled_from("abc")), max_size=30))
def test_pareto_front_is_exactly_the_non_dominated_points(points):
    front = pareto_front(points)
    assert [p[0] for p in front] == sorted(p[0] for p in front)
    for p in front:
        assert not dominated(p, points)
    for p in points:  # every non-dominated (cost, quality) pair is on the front
        if not dominated(p, points):
            assert any(f[0] == p[0] and f[1] == p[1] for f in front)
    assert all(a[1] < b[1] for a, b in itertools.pairwise(front))


def test_median_trace_is_the_median_over_images_at_common_points():
    rows = [{"trace": {"seconds": [0, 1, 2], "psnr": [10, 20, 30]}},
            {"trace": {"seconds": [0, 3, 4], "psnr": [12, 22, None]}},
            {"trace": {"seconds": [0, 2, 6, 8], "psnr": [11, 21, 31, 35]}},
            {"trace": None}]
    xs, ys = median_trace(rows, "seconds")
    assert xs.tolist() == [0, 2, 4] and ys.tolist() == [11, 21, 30.5]  # a missing value is left out
    assert median_trace([{"trace": None}], "seconds")[0].size == 0


def test_curves_place_an_iteration_at_its_share_of_the_time_even_without_an_iteration_count():
    from gan_inversion_bench.report_plots import _curves

    rows = [{"loss_history": {"iteration": [0, 4, 9], "loss": [3.0, 2.0, 1.0]}, "time_s": 2.0, "iterations": 10},
            # the encoder: no iterations (None in a record, NaN once it went through a pandas frame)
            {"loss_history": {"iteration": [0], "loss": [0.5]}, "time_s": 0.02, "iterations": float("nan")},
            {"loss_history": {"iteration": [0], "loss": [0.5]}, "time_s": 0.02, "iterations": None}]
    (it, t, v), enc_nan, enc_none = _curves(rows)
    assert it.tolist() == [0, 4, 9] and t.tolist() == [0.2, 1.0, 2.0] and v.tolist() == [3.0, 2.0, 1.0]
    assert enc_nan[1].tolist() == enc_none[1].tolist() == [0.02]


def test_a_record_without_a_trace_is_one_point_at_its_final_cost():
    encoder = {"trace": None, "psnr": 19.5, "time_s": 0.02, "flops_fixed": 3.3e9, "flops_per_iteration": 0.0,
               "iterations": float("nan")}
    assert [a.tolist() for a in median_trace([encoder], "seconds")] == [[0.02], [19.5]]
    assert [a.tolist() for a in median_trace([encoder], "flops")] == [[3.3e9], [19.5]]
    assert median_trace([{**encoder, "time_s": None}], "seconds")[0].size == 0  # nothing to place it at

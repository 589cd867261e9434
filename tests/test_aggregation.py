"""One contract suite over every aggregation rule."""

import numpy as np
import pytest

from agents.aggregation import (
    AGGREGATOR_NAMES,
    PRE_AGGREGATIONS,
    ROBUST_AGGREGATORS,
    Contribution,
    WFAgg,
    adaptive_robust_clipping,
    bucketing,
    centered_clipping,
    geometric_median,
    make_aggregator,
    multi_krum,
    nearest_neighbour_mixing,
    short_neighbourhoods,
    trimmed_mean,
)

DIM = 50


def honest_inputs(n, seed=0, spread=0.1):
    rng = np.random.default_rng(seed)
    center = rng.normal(size=DIM)
    return center, [Contribution(f"h{i}", center + spread * rng.normal(size=DIM), samples=10 + i)
                    for i in range(n)]


RULES = [(name, pre) for name in AGGREGATOR_NAMES for pre in PRE_AGGREGATIONS]
"""Every rule alone and after every pre-aggregation step: one contract for all."""


def rule(name, pre, f):
    return make_aggregator(name, f=f, pre=pre, seed=3)


@pytest.mark.parametrize("name, pre", RULES)
def test_shape_is_preserved_and_output_is_finite(name, pre):
    _, inputs = honest_inputs(7)
    out = rule(name, pre, 2)(inputs[0], inputs[1:])
    assert out.shape == (DIM,) and np.isfinite(out).all()


@pytest.mark.parametrize("name, pre", RULES)
def test_deterministic(name, pre):
    _, inputs = honest_inputs(7)
    a = rule(name, pre, 2)(inputs[0], inputs[1:])
    b = rule(name, pre, 2)(inputs[0], inputs[1:])
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, pre", RULES)
def test_agreement_is_a_fixed_point(name, pre):
    v = np.linspace(-1, 1, DIM)
    inputs = [Contribution(f"n{i}", v.copy()) for i in range(5)]
    np.testing.assert_allclose(rule(name, pre, 1)(inputs[0], inputs[1:]), v, atol=1e-9)


@pytest.mark.parametrize("name, pre", RULES)
def test_alone_a_node_keeps_its_model(name, pre):
    _, inputs = honest_inputs(1)
    np.testing.assert_allclose(rule(name, pre, 1)(inputs[0], []), inputs[0].vector)


@pytest.mark.parametrize("name, pre", [(n, p) for n, p in RULES  # bucketing shuffles on purpose
                                       if n not in ("wfagg", "centered-clipping") and p != "bucketing"])
def test_order_of_the_others_does_not_matter(name, pre):
    _, inputs = honest_inputs(6)
    a = rule(name, pre, 1)(inputs[0], inputs[1:])
    b = rule(name, pre, 1)(inputs[0], inputs[1:][::-1])
    np.testing.assert_allclose(a, b, atol=1e-9)


@pytest.mark.parametrize("name, pre, f", [  # buckets of 2 need f < n / 4 (Karimireddy et al.): f <= 2 of 10
    (n, p, f) for n, p in RULES if n in ROBUST_AGGREGATORS for f in (1, 2, 3) if not (p == "bucketing" and f == 3)])
def test_robust_rules_stay_bounded_under_f_huge_byzantine_inputs(name, pre, f):
    center, honest = honest_inputs(10 - f)
    byzantine = [Contribution(f"b{i}", np.full(DIM, 1e6) * (-1) ** i, samples=1000) for i in range(f)]
    out = rule(name, pre, f)(honest[0], honest[1:] + byzantine)
    honest_radius = max(np.linalg.norm(c.vector - center) for c in honest)
    assert np.linalg.norm(out - center) <= 2 * honest_radius, (name, pre)


def test_nnm_mixes_each_input_with_its_n_minus_f_nearest():
    x = np.array([[0.0], [1.0], [2.0], [100.0]])
    np.testing.assert_allclose(nearest_neighbour_mixing(x, f=1)[:, 0], [1.0, 1.0, 1.0, 103 / 3])


def test_bucketing_averages_shuffled_buckets_of_the_asked_size():
    x = np.arange(6, dtype=float)[:, None]
    means, bucket_of = bucketing(x, 2, np.random.default_rng(0))
    assert len(means) == 3 and sorted(np.bincount(bucket_of)) == [2, 2, 2]
    for b, mean in enumerate(means):
        assert mean[0] == pytest.approx(x[bucket_of == b, 0].mean())


def test_arc_clips_the_k_farthest_to_the_next_farthest_distance():
    center = np.zeros(2)
    x = np.array([[1.0, 0], [0, 2.0], [3.0, 0], [0, 40.0], [50.0, 0]])  # n = 5, f = 1: k = floor(2 x 4 / 5) = 1
    out = adaptive_robust_clipping(x, 1, center)
    np.testing.assert_allclose(out[:4], x[:4])  # within the radius: unchanged
    np.testing.assert_allclose(out[4], [40.0, 0])  # the farthest, clipped to the next farthest's 40


def test_fedavg_is_not_robust_and_weights_by_samples():
    center, honest = honest_inputs(7)
    byzantine = [Contribution("b", np.full(DIM, 1e6))]
    out = make_aggregator("fedavg")(honest[0], honest[1:] + byzantine)
    assert np.linalg.norm(out - center) > 1e4
    a, b = Contribution("a", np.zeros(3), samples=1), Contribution("b", np.ones(3), samples=3)
    np.testing.assert_allclose(make_aggregator("fedavg")(a, [b]), np.full(3, 0.75))


def test_trimmed_mean_and_krum_pick_what_their_definitions_say():
    x = np.array([[0.0], [1.0], [2.0], [3.0], [100.0]])
    assert trimmed_mean(x, 1)[0] == pytest.approx(2.0)
    assert trimmed_mean(x, 10)[0] == pytest.approx(2.0)  # clamped to (n - 1) // 2 = 2: the median
    assert multi_krum(x, f=1, m=1)[0] in (1.0, 2.0)
    assert multi_krum(x, f=1)[0] == pytest.approx(1.5)  # the n - f = 4 best: 0, 1, 2, 3


def test_geometric_median_of_a_symmetric_cloud_is_its_center():
    points = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1], [0, 0]])
    np.testing.assert_allclose(geometric_median(points), [0, 0], atol=1e-6)


def total_distance(x, point):
    return float(np.linalg.norm(x - point, axis=1).sum())


@pytest.mark.parametrize("points, expected", [
    ([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [0.5 - 0.5 / np.sqrt(3)] * 2),  # the Fermat point; the start is an input
    ([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]], [0.0, 0.0]),  # a majority on one input: that input
])
def test_geometric_median_is_the_minimiser_even_when_it_starts_on_an_input(points, expected):
    x = np.array(points)
    np.testing.assert_allclose(geometric_median(x), expected, atol=1e-6)


def test_no_step_from_the_geometric_median_lowers_the_summed_distance():
    x = np.random.default_rng(4).normal(size=(9, 20))
    x[3] = np.median(x, axis=0)  # an input where the iteration starts
    best = geometric_median(x)
    steps = np.random.default_rng(5).normal(size=(200, 20)) * 1e-3
    assert min(total_distance(x, best + step) for step in steps) >= total_distance(x, best) - 1e-9


def test_krum_names_the_neighbourhoods_too_small_for_its_f():
    neighbours = {"a": ["b", "c", "d", "e"], "b": ["a", "c"], "c": ["a", "b", "d", "e", "f", "g"]}
    assert short_neighbourhoods("krum", 1, neighbours) == (5, {"b": 3})  # needs n > 2f + 2 = 4 inputs
    assert short_neighbourhoods("multi-krum", 2, neighbours) == (7, {"a": 5, "b": 3})
    assert short_neighbourhoods("median", 2, neighbours) == (1, {})  # the others clamp f to what n allows


def test_centered_clipping_moves_at_most_tau_per_iteration():
    x = np.array([[100.0, 0.0]])
    out = centered_clipping(x, np.zeros(2), tau=1.0, iterations=3)
    np.testing.assert_allclose(out, [3.0, 0.0])


def test_wfagg_drops_a_sign_flipper_and_a_sudden_jump():
    rng = np.random.default_rng(1)
    own = Contribution("me", np.zeros(DIM))
    direction = rng.normal(size=DIM)
    rule = WFAgg(f=1)
    honest = [Contribution(f"h{i}", direction + 0.05 * rng.normal(size=DIM)) for i in range(5)]
    flipper = Contribution("bad", -direction)
    assert "bad" not in {c.sender for c in rule.passing(own, honest + [flipper])}
    jumper = Contribution("h0", honest[0].vector + 50 * rng.normal(size=DIM))
    later = [jumper] + [Contribution(c.sender, c.vector + 0.01) for c in honest[1:]]
    assert "h0" not in {c.sender for c in rule.passing(own, later)}


def test_unknown_rule_and_negative_f_are_clear_errors():
    with pytest.raises(ValueError, match="unknown aggregator 'mean'"):
        make_aggregator("mean")
    with pytest.raises(ValueError, match="f must be >= 0"):
        make_aggregator("krum", f=-1)


def test_no_declared_sample_count_dominates_fedavg_and_the_inspection_reference_agrees():
    from controllers.inspector import StartRule, start_references

    own = Contribution("me", np.zeros(DIM), samples=40)
    honest = [Contribution(f"h{i}", np.full(DIM, 1.0), samples=30 + 10 * i) for i in range(4)]
    liar = Contribution("liar", np.full(DIM, 1000.0), samples=10**9)
    out = make_aggregator("fedavg")(own, honest + [liar])
    weights = np.array([40, 30, 40, 50, 60, 2 * 45])  # the liar at twice the median (45)
    assert out[0] == pytest.approx(weights[1:5].sum() / weights.sum() + 1000 * weights[5] / weights.sum())
    assert out[0] < 300  # uncapped it was 999.99: the liar took the average over
    previous = {c.sender: (c.vector, c.samples) for c in [own, *honest, liar]}
    reference = start_references(previous, {"me": {c.sender for c in honest + [liar]}}, ["me"],
                                 StartRule().aggregate())["me"]
    np.testing.assert_allclose(reference, out)

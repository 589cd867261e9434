"""The contract every registered detector keeps (``controllers.detector.DETECTORS``), run over
each entry as river's ``check_estimator`` runs over its estimators: a threshold calibrated on
the warm-up, normal points passed and an outlier flagged, nothing learnt from what it flags,
and a pickle round trip that changes no verdict (a restarted controller restores its
detectors)."""

import pickle

import numpy as np
import pytest

from controllers.defense import DefenseConfig
from controllers.detector import DETECTORS

KEYS = ("a", "b", "c")


def normal(rng):
    return {k: float(rng.uniform(0.0, 0.15)) for k in KEYS}  # deficits: normal sits near the corner 0


OUTLIER = {k: 0.95 for k in KEYS}


def warmed(name, rng):
    detector = DETECTORS[name].build(KEYS, 8, 3, {})
    for _ in range(40):
        detector.observe_batch({"n": normal(rng)}, warming_up=True)
    return detector


@pytest.mark.parametrize("name", DETECTORS)
def test_a_calibrated_threshold_passes_normal_points_and_flags_an_outlier(name):
    rng = np.random.default_rng(0)
    detector = warmed(name, rng)
    verdicts = [detector.observe_batch({"n": normal(rng)}, warming_up=False)["n"] for _ in range(20)]
    assert np.isfinite(detector.threshold)
    assert sum(v.anomalous for v in verdicts) <= 2  # a stray normal point may cross; a rule may not
    flagged = detector.observe_batch({"x": OUTLIER}, warming_up=False)["x"]
    assert flagged.anomalous and not flagged.warming_up and flagged.score > flagged.threshold


@pytest.mark.parametrize("name", DETECTORS)
def test_what_it_flags_it_never_learns_as_normal(name):
    rng = np.random.default_rng(1)
    detector = warmed(name, rng)
    verdicts = [detector.observe_batch({"x": OUTLIER}, warming_up=False)["x"] for _ in range(60)]
    assert all(v.anomalous for v in verdicts)  # sixty rounds of the same attack are still an attack


@pytest.mark.parametrize("name", DETECTORS)
def test_a_restored_detector_judges_as_the_original_would(name):
    rng = np.random.default_rng(2)
    detector = warmed(name, rng)
    restored = pickle.loads(pickle.dumps(detector))
    points = [normal(rng) for _ in range(10)] + [OUTLIER]
    for point in points:
        a = detector.observe_batch({"p": point}, warming_up=False)["p"]
        b = restored.observe_batch({"p": point}, warming_up=False)["p"]
        assert (a.score, a.threshold, a.anomalous) == (b.score, b.threshold, b.anomalous)


def test_the_scenario_offers_exactly_the_registered_detectors():
    from common.schema import ScenarioError
    from sdfl.scenario import load_scenario

    for name in DETECTORS:
        assert load_scenario(None, [f"defense.detector={name}"])["defense"]["detector"] == name
    with pytest.raises(ScenarioError, match="must be one of fuhst, threshold"):
        load_scenario(None, ["defense.detector=isolation-forest"])


@pytest.mark.parametrize("name", DETECTORS)
def test_its_knobs_are_the_scenarios_and_reach_the_controller(name):
    """Each knob is a ``[defense]`` key with its default, carried whole into the controller."""
    from sdfl.scenario import load_scenario

    kind = DETECTORS[name]
    doubled = {knob: spec.default * 2 for knob, spec in kind.knobs.items() if spec.kind in (int, float)}
    changed = {k: v for k, v in doubled.items() if kind.knobs[k].check is None or kind.knobs[k].check(v) is None}
    assert changed or not doubled
    scenario = load_scenario(None, [f"defense.detector={name}", *(f"defense.{k}={v}" for k, v in changed.items())])
    config = DefenseConfig.from_scenario(scenario)
    assert config.knobs == {**{k: spec.default for k, spec in kind.knobs.items()}, **changed}
    assert DefenseConfig.from_json(config.to_json()) == config
    kind.build(KEYS, 8, 3, config.knobs)  # every knob is one its factory takes


"""The runner's liveness watch: a silent service is named as stalled, and the stall is kept."""

from sdfl.liveness import LivenessWatch


def test_a_silent_service_is_a_stall_from_its_last_sign_of_life_to_its_next():
    watch = LivenessWatch(stall_after_s=3.0)
    watch.alive("controller d1", 10.0)
    watch.alive("inspector d1", 10.0)
    assert watch.check(12.9) == []
    watch.alive("inspector d1", 12.0)
    assert watch.check(13.5) == ["controller d1 stalled: no sign of life for 3.5 s"]
    assert watch.check(14.0) == []  # named once
    assert watch.alive("controller d1", 16.0) == "controller d1 is live again after 6.0 s"
    assert watch.report(20.0)[0] == {"service": "controller d1", "start": 10.0, "end": 16.0, "seconds": 6.0,
                                     "still_stalled": False}
    watch.alive("controller d1", 19.0)
    watch.check(20.0)
    assert [s["service"] for s in watch.report(20.0) if s["still_stalled"]] == ["inspector d1"]


def test_a_service_down_on_purpose_is_no_stall():
    watch = LivenessWatch(stall_after_s=3.0)
    watch.alive("controller d2", 0.0)
    watch.check(5.0)
    watch.forget("controller d2")
    assert watch.report(6.0) == [] and watch.check(10.0) == []

"""The inspection reports' channel: only a report tagged with the domain's key, well formed and
fresh, reaches the controller's defense."""

import json

import pytest

from controllers.coordination import MessageError
from controllers.defense import DefenseConfig, DomainDefense
from controllers.reports import InspectionReport, ReportChannel
from topologies.layout import make_layout

KEY = bytes(range(32))
REPORT = InspectionReport(3, {"d1h1": {"off_norm": 0.0, "off_home": 0.2}},
                          {"d1h2": ["round 4000000000 is not a round of this run (1-20)"]},
                          inputs={"d1h1": ["d1h2", "d2h1"]})


def test_a_sealed_report_opens_once_with_its_fields():
    inspector, controller = ReportChannel(KEY), ReportChannel(KEY, seq=0)
    sealed = inspector.seal(REPORT)
    assert controller.open(sealed) == REPORT
    with pytest.raises(MessageError, match="replayed"):
        controller.open(sealed)
    assert controller.open(inspector.seal(REPORT)) == REPORT  # the next one is fresh


@pytest.mark.parametrize("damage, why", [
    (lambda sealed: ReportChannel(bytes(32)).seal(REPORT), "forged or altered"),
    (lambda sealed: sealed[:20] + b"X" + sealed[21:], "forged or altered"),
    (lambda sealed: b"not json at all", "forged or altered"),
    (lambda sealed: b"", "not the size"),
    (lambda sealed: bytes(70_000), "not the size"),
])
def test_a_forged_garbled_or_oversized_report_is_rejected(damage, why):
    with pytest.raises(MessageError, match=why):
        ReportChannel(KEY, seq=0).open(damage(ReportChannel(KEY).seal(REPORT)))


EMPTY = {"seq": 1, "round": 1, "features": {}, "violations": {}, "remote": {}, "inputs": {}}


@pytest.mark.parametrize("fields, why", [
    ({**EMPTY, "round": -1}, "round must be"),
    ({**EMPTY, "features": {"d1h1": {"off_norm": 2.0}}}, "features must map"),
    ({**EMPTY, "violations": {"d1h1": "x"}}, "violations must map"),
    ({**EMPTY, "remote": {"d2h1": {"off_home": "far"}}}, "remote must map"),
    ({**EMPTY, "inputs": {"d1h1": [3]}}, "inputs must map"),
    ({**EMPTY, "inputs": []}, "inputs must map"),
    ({"seq": 1, "round": 1}, "wrong fields"),
])
def test_a_tagged_report_of_the_wrong_shape_is_rejected(fields, why):
    from controllers.reports import message_tag

    body = json.dumps(fields).encode()
    with pytest.raises(MessageError, match=why):
        ReportChannel(KEY, seq=0).open(body + message_tag(KEY, body))


def test_two_impossible_frames_ban_their_sender_warm_up_or_not():
    defense = DomainDefense(1, make_layout(1, 3, "line").to_description(), DefenseConfig())
    actions = defense.on_round(10.0, 1, {}, {"d1h2": ["round 4000000000 is not a round of this run (1-20)"]})
    assert not defense.banned("d1h2") and [a.record["violation"][:5] for a in actions] == ["round"]
    defense.on_round(11.0, 2, {}, {"d1h2": ["0 tensors of shapes [], not the model's"], "d9h9": ["x"]})
    assert defense.banned("d1h2") and not defense.banned("d1h1")

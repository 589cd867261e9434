"""The run's record types: one constructor that checks a record's fields, one reader."""

import json

import pytest

from common.events import Event, event, of_kind, read_events


def test_a_record_lacking_a_required_field_is_refused_by_name():
    with pytest.raises(ValueError, match=r"'ban' record needs \['round'"):
        event(Event.BAN, 1.0, domain=1, node="d1h2", stream="update")


def test_records_are_plain_json_and_read_back_by_kind(tmp_path):
    path = tmp_path / "controller-d1.jsonl"
    written = [event(Event.UNBAN, 2.0, domain=1, node="d1h2", origin=1),
               event(Event.NOTICE_SENT, 3.0, to=2, kind="ban", bytes=54), {"type": "someone_elses", "time": 4.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in written))
    assert json.loads(path.read_text().splitlines()[1])["type"] == "notice_sent"
    assert read_events(path, Event.NOTICE_SENT) == [written[1]]
    assert of_kind(written, Event.UNBAN, Event.NOTICE_SENT) == written[:2]
    assert read_events(tmp_path / "missing.jsonl", Event.BAN) == []


def test_every_type_has_its_own_name():
    assert len({kind.value for kind in Event}) == len(Event)

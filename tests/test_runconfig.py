"""dfl.json, the run's configuration every agent reads: one to_json/from_json pair, and a
file that is not one the runner wrote is an error naming the field."""

import json

import pytest

from common.runconfig import RunConfig, RunConfigError
from sdfl.scenario import load_scenario


def config():
    return RunConfig(load_scenario(None), ("a", "b"), {"a": ("b",), "b": ("a",)},
                     ({"kind": "sign-flip", "nodes": ["a"]},))


def test_the_config_crosses_into_the_agent_whole():
    original = config()
    assert RunConfig.from_json(original.to_json()) == original
    assert original.node_seed("b") == original.scenario["seed"] * 1000 + 1


@pytest.mark.parametrize("spoil, message", [
    (lambda d: d.pop("nodes"), "missing field 'nodes'"),
    (lambda d: d["neighbours"].update(a=["z"]), "neighbours name 'z', which is not a node"),
    (lambda d: d["scenario"].pop("dfl"), r"scenario has no \[dfl\] table"),
    (lambda d: d.update(nodes=[1, 2]), "nodes must be names"),
])
def test_a_spoilt_config_is_a_clear_error(spoil, message):
    fields = json.loads(config().to_json())
    spoil(fields)
    with pytest.raises(RunConfigError, match=message):
        RunConfig.from_json(json.dumps(fields))
    with pytest.raises(RunConfigError, match="not JSON"):
        RunConfig.from_json("{nope")

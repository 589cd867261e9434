"""Hostile input, fuzzed: every parser ends each input in a value or its own named error, within
a deadline (a bounded, deterministic run; ``benchmarks/fuzz.py`` runs many more inputs)."""

import importlib.util
from pathlib import Path

import pytest

from sdfl.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("fuzz", ROOT / "benchmarks" / "fuzz.py")
fuzz = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fuzz)

EXAMPLES = 400


@pytest.mark.parametrize("name", ["wire frame", "wire stream", "authenticated wire stream", "coordination notice",
                                  "signed decision", "packet-in", "inspector frame", "inspection report",
                                  "scenario file", "scenario --set"])
def test_the_parser_rejects_hostile_input_with_its_own_error_and_never_crashes(name, tmp_path):
    strategy, check = fuzz.targets(tmp_path)[name]
    counts = fuzz.fuzz(strategy, check, EXAMPLES, derandomize=True)
    assert sum(counts.values()) == EXAMPLES
    assert counts.get("rejected", 0) > 0  # the generator reaches the error paths, not only valid input


def test_an_attack_kind_that_is_not_a_string_is_named_not_a_crash():
    """Found by the fuzzer: ``--set attacks.0.kind=[]`` raised TypeError."""
    with pytest.raises(ScenarioError, match=r"attacks\.0\.kind must be one of"):
        load_scenario(None, ["attacks.0.kind=[]"])

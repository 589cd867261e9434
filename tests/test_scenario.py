from pathlib import Path

import pytest

from sdfl.sweep import load_sweep
from sdfl.scenario import ScenarioError, defaults, load_scenario, parse_override

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def write(tmp_path, text):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_defaults_and_shipped_scenarios_load():
    assert load_scenario() == defaults()
    for path in sorted(SCENARIOS.glob("*.toml")):
        if "[axes." in path.read_text():  # a sweep file
            assert load_sweep(path)
        else:
            load_scenario(path)
    clean = load_scenario(SCENARIOS / "clean.toml")
    assert (clean["network"]["domains"], clean["network"]["hosts_per_domain"], clean["dfl"]["rounds"]) == (3, 4, 20)


def test_unknown_keys_name_the_key_and_the_file(tmp_path):
    path = write(tmp_path, "[dfl]\nroundz = 3\n")
    with pytest.raises(ScenarioError, match=r"s\.toml: unknown key 'dfl\.roundz'"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="unknown key 'netwrk'"):
        load_scenario(write(tmp_path, "[netwrk]\ndomains = 3\n"))


@pytest.mark.parametrize("text, message", [
    ("[dfl]\nrounds = 'many'\n", "dfl.rounds must be int, got 'many'"),
    ("[dfl]\nrounds = true\n", "dfl.rounds must be int"),
    ("[network]\ndomains = 9\n", "network.domains must be between 1 and 8, got 9"),
    ("[dfl]\naggregator = 'mean'\n", "dfl.aggregator must be one of fedavg"),
    ("dfl = 3\n", "'dfl' must be a table"),
    ("[dfl\n", "not valid TOML"),
    ("[dfl]\ndataset = 'unsw-nb15'\n", "needs dfl.dataset_path"),
])
def test_bad_values_are_clear_errors(tmp_path, text, message):
    with pytest.raises(ScenarioError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_scenario(write(tmp_path, text))


def test_overrides_take_toml_literals_and_bare_words(tmp_path):
    scenario = load_scenario(None, ["dfl.rounds=5", "dfl.partition=dirichlet", "dfl.alpha=1",
                                    "network.domain_graph='mesh'", "seed=3"])
    assert scenario["dfl"]["rounds"] == 5 and scenario["dfl"]["partition"] == "dirichlet"
    assert scenario["dfl"]["alpha"] == 1.0 and isinstance(scenario["dfl"]["alpha"], float)
    assert scenario["network"]["domain_graph"] == "mesh" and scenario["seed"] == 3
    assert parse_override("a.b.c=x") == {"a": {"b": {"c": "x"}}}
    with pytest.raises(ScenarioError, match="--set dfl.rounds=0: dfl.rounds must be between"):
        load_scenario(None, ["dfl.rounds=0"])
    with pytest.raises(ScenarioError, match="expected key=value"):
        load_scenario(None, ["dfl.rounds"])
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "absent.toml")


def test_krum_with_too_few_inputs_per_node_is_refused_before_anything_runs():
    from sdfl.runner import run_plan

    paper = SCENARIOS / "paper.toml"  # five neighbours each: 6 inputs
    with pytest.raises(ScenarioError, match=r"'krum' with dfl.byzantine_f = 2 needs 7 inputs .* \(d\dh\d+: 6\)"):
        run_plan(load_scenario(paper, overrides=["dfl.aggregator=krum", "dfl.byzantine_f=2"]))
    run_plan(load_scenario(paper, overrides=["dfl.aggregator=krum", "dfl.byzantine_f=1"]))  # 6 > 2f + 2

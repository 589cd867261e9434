"""Scenario files: one schema with defaults and types; unknown keys are errors naming key and file.

A scenario is TOML (``tomllib``). ``--set section.key=value`` overrides take TOML literals
(``dfl.rounds=5``, ``dfl.alpha=0.1``) or bare words (``dfl.partition=dirichlet``). The
``[[attacks]]`` list is reached by index: ``--set attacks.0.fraction=0.2`` changes the first
entry, and ``--set attacks.1.kind=udp-flood`` with the next index appends one.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.aggregation import AGGREGATOR_NAMES, PRE_AGGREGATIONS
from agents.peers import PEER_GRAPHS
from attacks.plan import normalize_entry
from common.schema import Field, ScenarioError, between, coerce, non_negative, one_of, positive, strings
from controllers.detector import DETECTORS
from controllers.launch import FRAMEWORK_NAMES
from sdfl.faults import normalize_fault


def ban_after_check(value: str) -> str | None:
    m, slash, n = value.partition("/")
    if slash and m.isdigit() and n.isdigit() and 1 <= int(m) <= int(n):
        return None
    return "must be 'm/n' with 1 <= m <= n, e.g. '2/3'"


@dataclass(frozen=True)
class TableList:
    """A list of tables (``[[attacks]]``), each checked as a whole once all sources are merged."""

    normalize: Callable[[dict, str], dict]
    help: str = ""
    default: tuple = ()


SCHEMA: dict[str, Any] = {
    "name": Field(str, "clean", help="label of the run"),
    "seed": Field(int, 0, non_negative, "seeds shards, peer draws, training and attacker choice"),
    "network": {
        "domains": Field(int, 3, between(1, 8)),
        "hosts_per_domain": Field(int, 4, between(1, 16)),
        "domain_graph": Field(str, "ring", one_of("line", "ring", "mesh")),
        "host_bw_mbit": Field(float, 100.0, non_negative, "0 = unshaped"),
        "border_bw_mbit": Field(float, 100.0, non_negative, "0 = unshaped"),
        "border_delay_ms": Field(float, 0.0, non_negative, "needs netem"),
        "border_loss_pct": Field(float, 0.0, between(0.0, 100.0), "needs netem"),
        "datapath": Field(str, "auto", one_of("auto", "kernel", "user")),
        "controller": Field(str, "os-ken", one_of(*FRAMEWORK_NAMES),
                            "the controllers' Ryu-API framework: os-ken (the testbed's venv) or ryu "
                            "(.venv-ryu, from scripts/install.sh --ryu)"),
        "controller_python": Field(str, "", help="the controllers' interpreter (default: the framework's venv)"),
    },
    "defense": {
        "fuhst": Field(bool, False, help="FU-HST in every domain's controller: detect, ban, coordinate"),
        "detector": Field(str, "fuhst", one_of(*DETECTORS),
                          "; ".join(f"{kind.name}: {kind.help}" for kind in DETECTORS.values())),
        "poll_interval": Field(float, 1.0, positive, "seconds between flow-stats polls"),
        "ban_after": Field(str, "3/4", ban_after_check, "ban after m anomalous of a node's last n observations"),
        "ban_duration_s": Field(float, 0.0, non_negative, "0 = for the rest of the run; else probation after"),
        "warmup_rounds": Field(int, 4, between(2, 10_000),
                               "both streams learn normal during these first rounds (round 1 has no update)"),
        "flow_span_s": Field(float, 2.0, positive,
                             "flow features are rates over this span (about one round period)"),
        "window_size": Field(int, 8, positive, "HST reference window (observations)"),
        "ban_bar": Field(float, 0.45, between(0.0, 1.0),
                         "a local sender whose update's off_home reaches this is banned at once (0 = never; "
                         "0.45 bans a sign flipper on its first flipped update, see README)"),
        "accuse_bar": Field(float, 0.45, between(0.0, 1.0),
                            "a remote sender whose update's off_home reaches this is accused (0 = never)"),
        "accusation_quorum": Field(int, 0, non_negative,
                                   "domains whose accusations drop a remote host at the borders "
                                   "(0 = f + 1 for the f = (n - 1) / 3 Byzantine domains n tolerate, at least 2)"),
        # and every registered detector's own knobs:
        **{name: knob for kind in DETECTORS.values() for name, knob in kind.knobs.items()},
    },
    "dfl": {
        "rounds": Field(int, 20, between(1, 10_000)),
        "dataset": Field(str, "digits", one_of("digits", "unsw-nb15")),
        "dataset_path": Field(str, "", help="CSV file for unsw-nb15"),
        "test_fraction": Field(float, 0.2, between(0.05, 0.5)),
        "partition": Field(str, "iid", one_of("iid", "dirichlet")),
        "alpha": Field(float, 0.5, positive, "Dirichlet concentration"),
        "aggregator": Field(str, "fedavg", one_of(*AGGREGATOR_NAMES)),
        "byzantine_f": Field(int, 1, non_negative, "Byzantine inputs the robust rules tolerate"),
        "pre_aggregation": Field(str, "none", one_of(*PRE_AGGREGATIONS),
                                 "a step on the received models before the rule: nnm (nearest-neighbour "
                                 "mixing), bucketing, arc (adaptive robust clipping)"),
        "bucket_size": Field(int, 2, positive, "received models per bucket (pre_aggregation = bucketing)"),
        "peers": Field(str, "domain-full+border", one_of(*PEER_GRAPHS)),
        "peers_k": Field(int, 3, positive, "partners drawn per node for random-k"),
        "local_epochs": Field(int, 2, positive),
        "min_local_steps": Field(int, 0, non_negative,
                                 "a node whose shard gives fewer minibatch steps a round runs more epochs"),
        "batch_size": Field(int, 16, positive),
        "lr": Field(float, 0.1, positive),
        "lr_decay": Field(float, 1.0, between(0.5, 1.0), "the learning rate shrinks by this factor each round"),
        "hidden": Field(int, 64, positive, "MLP hidden units"),
        "round_timeout_s": Field(float, 20.0, positive, "how long a node waits for its neighbours"),
        "round_period_s": Field(float, 2.0, non_negative,
                                "a node starts a round at most this often (0 = as fast as it can); "
                                "gives rounds a wall-clock length that polls and attacks can line up with"),
        "port": Field(int, 7000, between(1024, 65535), "agents' TCP port"),
        "checkpoint_every": Field(int, 5, positive, "agents save their model every c rounds (a restart resumes there)"),
        "checkpoint_adaptive": Field(bool, False, help="pick the interval from a Weibull fit of the agent's "
                                                         "observed failures (fixed c until 3 are seen)"),
    },
    "cluster": {
        "servers": Field(list, [], strings,
                         "split the run over these machines, domains in contiguous blocks: the first is this one "
                         "(\"localhost\" or its address), the others are reached over ssh with a key and see the "
                         "run folder at the same path (empty: one machine)"),
        "placement": Field(str, "domain", one_of("domain"),
                           "a domain's switch, hosts, agents, controller and inspection service share a server"),
        "link": Field(str, "ssh", one_of("ssh", "gre"), "border links between servers: ssh tunnels or GRE"),
        "user": Field(str, "root", help="the ssh user on every server (root, or one with password-less sudo)"),
    },
    "attacks": TableList(normalize_entry, "[[attacks]] entries, see attacks/plan.py"),
    "faults": TableList(normalize_fault, "[[faults]] entries, see sdfl/faults.py"),
}


def defaults(schema: dict = SCHEMA) -> dict:
    return {k: defaults(v) if isinstance(v, dict) else copy.deepcopy(list(v.default) if isinstance(v, TableList)
                                                                      else v.default)
            for k, v in schema.items()}


def _merge(target: dict, data: dict, schema: dict, source: str, prefix: str = "") -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            known = ", ".join(f"{prefix}{k}" for k in schema)
            raise ScenarioError(f"{source}: unknown key '{dotted}' (known here: {known})")
        if isinstance(schema[key], dict):
            if not isinstance(value, dict):
                raise ScenarioError(f"{source}: '{dotted}' must be a table of settings")
            _merge(target[key], value, schema[key], source, f"{dotted}.")
        elif isinstance(schema[key], TableList):
            target[key] = _merge_tables(target[key], value, source, dotted)
        else:
            target[key] = coerce(value, schema[key], f"{source}: {dotted}")


def _merge_tables(entries: list, value: Any, source: str, dotted: str) -> list:
    """A TOML list replaces the entries; ``{"0": {...}}`` (from ``--set``) edits or appends by index."""
    if isinstance(value, list):
        if not all(isinstance(v, dict) for v in value):
            raise ScenarioError(f"{source}: '{dotted}' must be a list of tables ([[{dotted}]])")
        return [dict(v) for v in value]
    if not isinstance(value, dict):
        raise ScenarioError(f"{source}: '{dotted}' must be a list of tables ([[{dotted}]])")
    entries = [dict(e) for e in entries]
    for index_text, changes in value.items():
        if not index_text.isdigit() or int(index_text) > len(entries):
            raise ScenarioError(f"{source}: '{dotted}.{index_text}' is not an entry (there are {len(entries)}; "
                                f"use {dotted}.{len(entries)} to add one)")
        if not isinstance(changes, dict):
            raise ScenarioError(f"{source}: '{dotted}.{index_text}' needs a key, e.g. {dotted}.0.kind")
        if int(index_text) == len(entries):
            entries.append({})
        entries[int(index_text)].update(changes)
    return entries


def parse_override(text: str) -> dict:
    """``a.b=value`` as the nested dict ``{"a": {"b": value}}``."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(f"--set {text!r}: expected key=value, e.g. dfl.rounds=5")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    nested: dict = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def read_toml(path: Path, what: str) -> dict:
    """A TOML file's tables; a :class:`ScenarioError` naming the file if it is missing or malformed."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such {what} file") from None
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{path}: not valid TOML: {error}") from None


def load_scenario(path: Path | None = None, overrides: list[str] = (),
                  layers: list[tuple[dict, str]] = ()) -> dict:
    """Defaults, then the file, then ``layers`` (partial scenarios, each with where it came from:
    a sweep's settings), then the overrides; every value checked against the schema."""
    scenario = defaults()
    if path is not None:
        path = Path(path)
        _merge(scenario, read_toml(path, "scenario"), SCHEMA, str(path))
    for data, source in layers:
        _merge(scenario, data, SCHEMA, source)
    for text in overrides:
        _merge(scenario, parse_override(text), SCHEMA, f"--set {text}")
    origin = str(path) if path is not None else "scenario"
    for key, spec in SCHEMA.items():
        if isinstance(spec, TableList):
            scenario[key] = [spec.normalize(entry, f"{origin}: {key}.{i}") for i, entry in enumerate(scenario[key])]
    if scenario["dfl"]["dataset"] == "unsw-nb15" and not scenario["dfl"]["dataset_path"]:
        raise ScenarioError(f"{path or 'scenario'}: dfl.dataset = 'unsw-nb15' needs dfl.dataset_path")
    return scenario

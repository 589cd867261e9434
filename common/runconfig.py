"""What every agent of a run reads (``dfl.json``), typed and checked once: the resolved scenario,
the DFL nodes, each node's neighbours and the resolved attacks (as ``attacks.plan.Attack``
records). The runner and the simulation write it with :meth:`RunConfig.to_json`; agents read
it with :meth:`RunConfig.from_json`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


class RunConfigError(ValueError):
    """A dfl.json that is not one the runner wrote: the message names the field."""


@dataclass(frozen=True)
class RunConfig:
    scenario: dict
    nodes: tuple[str, ...]
    neighbours: dict[str, tuple[str, ...]]
    attacks: tuple[dict, ...] = field(default=())

    @property
    def dfl(self) -> dict:
        return self.scenario["dfl"]

    @property
    def backdoor_target(self) -> int | None:
        """The class a scheduled backdoor's trigger maps to, if the run has one: every node then
        measures how often its model obeys the trigger (ground truth for scoring, not something an
        honest node acts on)."""
        targets = [a["params"]["target_class"] for a in self.attacks if a.get("kind") == "backdoor"]
        return int(targets[0]) if targets else None

    def node_seed(self, node: str) -> int:
        """The seed of everything random about one node (its training, its attack's noise)."""
        return self.scenario["seed"] * 1000 + self.nodes.index(node)

    def to_json(self) -> str:
        return json.dumps({"scenario": self.scenario, "nodes": list(self.nodes),
                           "neighbours": {n: list(p) for n, p in self.neighbours.items()},
                           "attacks": list(self.attacks)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            fields = json.loads(text)
            scenario, nodes, neighbours = fields["scenario"], fields["nodes"], fields["neighbours"]
            if not isinstance(scenario, dict) or not isinstance(scenario.get("dfl"), dict):
                raise RunConfigError("scenario has no [dfl] table")
            if not all(isinstance(n, str) for n in nodes):
                raise RunConfigError("nodes must be names")
            strangers = sorted({p for peers in neighbours.values() for p in peers} - set(nodes))
            if strangers:
                raise RunConfigError(f"neighbours name {strangers[0]!r}, which is not a node")
            return cls(scenario, tuple(nodes), {n: tuple(p) for n, p in neighbours.items()},
                       tuple(fields.get("attacks", ())))
        except json.JSONDecodeError as error:
            raise RunConfigError(f"not JSON: {error}") from None
        except KeyError as error:
            raise RunConfigError(f"missing field {error.args[0]!r}") from None
        except (TypeError, AttributeError) as error:
            raise RunConfigError(str(error)) from None

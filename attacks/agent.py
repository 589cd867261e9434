"""The Byzantine agent process: the honest agent of :mod:`agents.agent` with a poisoner's hooks,
so an honest agent carries no attack code. The runner starts it for every node a poisoning
attack names, with the same arguments::

    python -m attacks.agent --network network.json --config dfl.json --node d1h2 --out RUN_DIR
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agents.agent import exit_now, main
from agents.node import DFLNode
from attacks.plan import Attack
from attacks.poisoning import CollusionBoard, DirectoryBoard, Poisoner
from common.runconfig import RunConfig


def poisoner_for(config: RunConfig, node: DFLNode, board: CollusionBoard, collusion_wait_s: float,
                 tagged: bool = False) -> Poisoner:
    """The poisoner of ``node`` in the run ``config`` (dfl.json); colluders meet on ``board`` and
    wait for each other at most ``collusion_wait_s``."""
    return Poisoner(node.name, [Attack.from_record(a) for a in config.attacks], len(config.nodes),
                    node.dataset.n_classes, seed=config.node_seed(node.name), board=board,
                    collusion_wait_s=collusion_wait_s, tagged=tagged, rule=stacked_rule(config.dfl))


def stacked_rule(dfl: dict):
    """The honest nodes' aggregation (rule, pre-aggregation, f) as a function of stacked updates,
    the first as the node's own: what an ``optimal`` attacker knows of the defense."""
    from agents.aggregation import Contribution, make_aggregator

    rule = make_aggregator(dfl["aggregator"], dfl["byzantine_f"], dfl["pre_aggregation"], dfl["bucket_size"])

    def aggregate(updates: np.ndarray) -> np.ndarray:
        own, *others = (Contribution(f"u{i}", u) for i, u in enumerate(updates))
        return rule(own, others)

    return aggregate


def poisoner_in_process(config: RunConfig, node: DFLNode, out_dir: Path, tagged: bool) -> Poisoner:
    """Agent processes collude through files in the run folder (an out-of-band channel), for at
    most half a round deadline."""
    return poisoner_for(config, node, DirectoryBoard(out_dir / "collusion"),
                        config.dfl["round_timeout_s"] / 2, tagged)


def byzantine_main(argv: list[str] | None = None) -> int:
    """``python -m attacks.agent``: the agent's command line, with a poisoner's hooks."""
    return main(argv, behaviour_for=poisoner_in_process, prog="attacks.agent")


if __name__ == "__main__":
    exit_now(byzantine_main())

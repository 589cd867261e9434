"""The DFL agent process: one per host, configured by the network description and its own id.

It never imports Mininet, so the same agent runs on real hosts::

    python -m agents.agent --network network.json --config dfl.json --node d1h2 --out RUN_DIR

It holds no attack code: a Byzantine node runs :mod:`attacks.agent`, this process with a
poisoner's hooks (an :class:`agents.node.Behaviour`).

``dfl.json`` (written by the runner) holds the resolved scenario and every node's neighbours.
Each round is appended to ``RUN_DIR/agent-<node>.jsonl`` and flushed, so nothing is lost if the
agent or the run dies.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from common.barrier import announce_ready, wait_for_start
from common.description import DescriptionError, NetworkDescription, load_description
from common.events import Event, event
from common.jsonl import JsonLinesWriter
from common.runconfig import RunConfig, RunConfigError

if TYPE_CHECKING:
    from agents.node import Behaviour, DFLNode

    BehaviourFactory = Callable[[RunConfig, DFLNode, Path, bool], Behaviour]
    """(run config, the node, the run folder, whether frames are tagged) -> its behaviour."""

LOG = logging.getLogger("sdfl.agent")
BARRIER_TIMEOUT_S = 600.0
"""An agent whose runner has not released the start barrier by then gives up (the runner is gone)."""


@functools.lru_cache(maxsize=2)
def _federation_data(dataset: str, path: str, seed: int, test_fraction: float, nodes: int, kind: str,
                     alpha: float):
    from agents.data import load_dataset, partition

    data = load_dataset(dataset, path, seed, test_fraction)
    return data, partition(data.y_train, nodes, kind, alpha, seed)


def federation_data(config: RunConfig):
    """The run's dataset and every node's shard, the same for every agent of the run: computed
    once per process (the agent launcher computes it before it forks the agents)."""
    dfl = config.dfl
    return _federation_data(dfl["dataset"], dfl["dataset_path"], config.scenario["seed"], dfl["test_fraction"],
                            len(config.nodes), dfl["partition"], dfl["alpha"])


def build_node(config: RunConfig, node_name: str):
    """The node named ``node_name`` of the run ``config`` (dfl.json): its shard of the dataset,
    its aggregator, its seeds."""
    from agents.aggregation import make_aggregator
    from agents.node import DFLNode, TrainingConfig

    scenario, dfl, nodes = config.scenario, config.dfl, config.nodes
    dataset, shards = federation_data(config)
    training = TrainingConfig(dfl["local_epochs"], dfl["batch_size"], dfl["lr"], dfl["hidden"], scenario["seed"],
                              dfl["min_local_steps"], dfl["lr_decay"])
    return DFLNode(node_name, dataset, shards[nodes.index(node_name)],
                   make_aggregator(dfl["aggregator"], dfl["byzantine_f"], dfl["pre_aggregation"], dfl["bucket_size"],
                                   seed=config.node_seed(node_name)), training, seed=config.node_seed(node_name),
                   backdoor_target=config.backdoor_target)


def run_agent(description: NetworkDescription, config: RunConfig, node_name: str, out_dir: Path,
              keys: dict[str, bytes] | None = None, behaviour_for: BehaviourFactory | None = None, *,
              barrier: bool = False) -> int:
    """Run the node's rounds; with ``keys`` (neighbour -> shared key) every frame it sends is
    tagged for its receiver and only frames whose tag verifies are accepted. ``behaviour_for``
    makes what the node does with its rounds (default: :class:`agents.node.Honest`). With
    ``barrier``, round 1 waits for the run's start barrier (:mod:`common.barrier`)."""
    import torch

    from agents.checkpoint import CheckpointPolicy, LifeLog, load_checkpoint
    from agents.node import Honest
    from agents.round import RoundBody
    from agents.transport import TcpTransport

    torch.set_num_threads(1)
    dfl = config.dfl
    neighbours = list(config.neighbours[node_name])
    node = build_node(config, node_name)
    tagged = keys is not None
    behaviour = behaviour_for(config, node, out_dir, tagged) if behaviour_for else Honest(tagged)
    body = RoundBody(node, neighbours, behaviour)
    transport = TcpTransport(node_name, {h.name: (h.ip, dfl["port"]) for h in description.hosts}, neighbours,
                             shapes=node.shapes, round_timeout_s=dfl["round_timeout_s"], keys=keys,
                             before_write=behaviour.before_write)
    results = JsonLinesWriter(out_dir / f"agent-{node_name}.jsonl")
    checkpoint_path = out_dir / "checkpoints" / f"{node_name}.npz"
    lives = LifeLog(out_dir / "checkpoints" / f"{node_name}.lives.json")
    lives.begin(time.time())
    policy = CheckpointPolicy(dfl["checkpoint_every"], dfl["checkpoint_adaptive"], lives.uptimes())
    try:
        first_round = 1
        if len(lives.lives) > 1:  # restarted: this run's agent lived before
            first_round = _rejoin(node, load_checkpoint(checkpoint_path), transport, dfl, results)
        elif barrier:
            first_round = _wait_for_everyone(out_dir, node_name)
        if first_round is not None:
            _run_rounds(body, transport, range(first_round, dfl["rounds"] + 1), dfl, results,
                        checkpoint=(checkpoint_path, policy, lives))
        lives.end()
    finally:
        transport.close()
        results.close()
    return 0


def _run_rounds(body, transport, rounds: range, dfl: dict, results, checkpoint) -> None:
    """The node's rounds over TCP: publish, exchange, conclude, checkpoint, keep the pace."""
    from agents.checkpoint import save_checkpoint

    checkpoint_path, policy, lives = checkpoint
    born = time.monotonic()
    for round_ in rounds:
        began = time.monotonic()
        data = body.publish(round_)
        sending_from = time.time()
        transport.send(round_, data)
        frames = transport.collect(round_)
        record = {**body.conclude(round_, frames, time.time()), **transport.counters(),
                  "round_time_s": time.monotonic() - began, "cpu_s": time.process_time(),
                  "sending_from": sending_from, "sent_by": time.time()}
        record["checkpointed"] = policy.due(time.monotonic() - born, record["round_time_s"])
        if record["checkpointed"]:
            save_checkpoint(checkpoint_path, round_, body.node.model_vector)
        results.write(record)
        lives.alive(time.time())
        LOG.info("round %d: accuracy %.3f from %d/%d neighbours", round_, record["accuracy"],
                 len(frames), len(body.neighbours))
        if round_ < rounds.stop - 1:
            # A node that waited for its neighbours' frames was ahead of them: it starts its next
            # round that much later, so their phases meet instead of it paying the lag again every
            # round (after a round deadline, nodes come out of it seconds apart).
            time.sleep(max(0.0, began + transport.waited_s + dfl["round_period_s"] - time.monotonic()))


def _wait_for_everyone(out_dir: Path, node_name: str) -> int:
    """Ready (shard, model, listener): say so, and begin round 1 when the runner says all are."""
    announce_ready(out_dir, node_name)
    at = wait_for_start(out_dir, BARRIER_TIMEOUT_S)
    if at is None:
        raise RuntimeError(f"no start from the runner within {BARRIER_TIMEOUT_S:.0f} s: is it gone?")
    time.sleep(max(0.0, at - time.time()))
    return 1


def _rejoin(node, saved, transport, dfl: dict, results) -> int | None:
    """A restarted agent: continue from its checkpoint (or the initial model, if it died before
    its first) in the round its neighbours are in (see :meth:`agents.transport.Inbox.latest_round`);
    None if no neighbour sends it frames within two round deadlines (the run is over)."""
    if saved is not None:
        node.restore(saved.model)
    # A round period and a second after the first frame, the neighbours' current round is in.
    joined = transport.rejoin(settle_s=dfl["round_period_s"] + 1.0)
    checkpoint_round = saved.round if saved is not None else 0
    results.write(event(Event.REJOINED, time.time(), node=node.name, checkpoint_round=checkpoint_round,
                        round=joined))
    if joined is None:
        LOG.warning("restarted from the round %d checkpoint, but no neighbour sent a frame: nothing to rejoin",
                    checkpoint_round)
        return None
    LOG.info("restarted from the round %d checkpoint; rejoining in round %d", checkpoint_round, joined)
    return joined


def main(argv: list[str] | None = None, behaviour_for: BehaviourFactory | None = None,
         prog: str = "agents.agent") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--network", type=Path, required=True, help="network description JSON")
    parser.add_argument("--config", type=Path, required=True, help="run's DFL configuration JSON")
    parser.add_argument("--node", required=True, help="this agent's host name, e.g. d1h2")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--keys", type=Path, help="this node's key file (common.keys); without it frames are not "
                                                   "authenticated")
    parser.add_argument("--barrier", action="store_true",
                        help="begin round 1 when the runner releases the start barrier (OUT/start.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.node} %(levelname)s %(message)s")
    try:
        description = load_description(args.network)
    except DescriptionError as error:
        parser.error(str(error))
    try:
        config = RunConfig.from_json(args.config.read_text())
    except (OSError, RunConfigError) as error:
        parser.error(f"--config {args.config}: {error}")
    if args.node not in config.nodes:
        parser.error(f"node {args.node!r} is not a DFL node of this run")
    keys = None
    if args.keys is not None:
        from common.keys import read_keys

        try:
            keys = read_keys(args.keys)
        except ValueError as error:
            parser.error(str(error))
        missing = sorted(set(config.neighbours[args.node]) - set(keys))
        if missing:
            parser.error(f"key file {args.keys} has no key for neighbours {missing}")
    return run_agent(description, config, args.node, args.out, keys, behaviour_for, barrier=args.barrier)


def exit_now(code: int) -> None:
    """Everything is written and flushed: skip the interpreter's teardown of torch, which costs a
    dozen agents exiting together on a small machine seconds of every run."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())

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
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agents.wire import TAG_BYTES, tag
from common.description import DescriptionError, NetworkDescription, load_description
from common.events import Event, event
from common.jsonl import JsonLinesWriter
from common.runconfig import RunConfig, RunConfigError

if TYPE_CHECKING:
    from agents.node import Behaviour, DFLNode

    BehaviourFactory = Callable[[RunConfig, DFLNode, Path, bool], Behaviour]
    """(run config, the node, the run folder, whether frames are tagged) -> its behaviour."""

LOG = logging.getLogger("sdfl.agent")


def build_node(config: RunConfig, node_name: str):
    """The node named ``node_name`` of the run ``config`` (dfl.json): its shard of the dataset,
    its aggregator, its seeds."""
    from agents.aggregation import make_aggregator
    from agents.data import load_dataset, partition
    from agents.node import DFLNode, TrainingConfig

    scenario, dfl, nodes = config.scenario, config.dfl, config.nodes
    dataset = load_dataset(dfl["dataset"], dfl["dataset_path"], scenario["seed"], dfl["test_fraction"])
    shards = partition(dataset.y_train, len(nodes), dfl["partition"], dfl["alpha"], scenario["seed"])
    training = TrainingConfig(dfl["local_epochs"], dfl["batch_size"], dfl["lr"], dfl["hidden"], scenario["seed"])
    return DFLNode(node_name, dataset, shards[nodes.index(node_name)],
                   make_aggregator(dfl["aggregator"], dfl["byzantine_f"]), training, seed=config.node_seed(node_name))


def run_agent(description: NetworkDescription, config: RunConfig, node_name: str, out_dir: Path,
              keys: dict[str, bytes] | None = None, behaviour_for: BehaviourFactory | None = None) -> int:
    """Run the node's rounds; with ``keys`` (neighbour -> shared key) every frame it sends is
    tagged for its receiver and only frames whose tag verifies are accepted. ``behaviour_for``
    makes what the node does with its rounds (default: :class:`agents.node.Honest`)."""
    import numpy as np
    import torch

    from agents.checkpoint import CheckpointPolicy, LifeLog, load_checkpoint, save_checkpoint
    from agents.node import Honest
    from agents.round import RoundBody
    from agents.transport import Inbox, Listener, Sender

    torch.set_num_threads(1)
    dfl = config.dfl
    neighbours = list(config.neighbours[node_name])
    ip_of = {h.name: h.ip for h in description.hosts}
    node = build_node(config, node_name)
    tagged = keys is not None
    body = RoundBody(node, neighbours, behaviour_for(config, node, out_dir, tagged) if behaviour_for else Honest(tagged))
    inbox = Inbox(neighbours)
    # No frame may be larger than the model in float64 (the widest dtype the wire carries).
    max_payload = sum(int(np.prod(shape)) for shape in node.shapes) * 8
    listener = Listener((ip_of[node_name], dfl["port"]), inbox, max_payload, node.shapes,
                        idle_timeout=dfl["round_timeout_s"], names_by_ip={ip: n for n, ip in ip_of.items()},
                        keys=keys, frame_timeout=dfl["round_timeout_s"])
    senders = {peer: Sender(peer, (ip_of[peer], dfl["port"]), connect_timeout=2.0, source_ip=ip_of[node_name])
               for peer in neighbours}
    results = JsonLinesWriter(out_dir / f"agent-{node_name}.jsonl")
    checkpoint_path = out_dir / "checkpoints" / f"{node_name}.npz"
    lives = LifeLog(out_dir / "checkpoints" / f"{node_name}.lives.json")
    lives.begin(time.time())
    born = time.monotonic()
    policy = CheckpointPolicy(dfl["checkpoint_every"], dfl["checkpoint_adaptive"], lives.uptimes())
    try:
        first_round = 1
        if len(lives.lives) > 1:  # restarted: this run's agent lived before
            first_round = _rejoin(node, load_checkpoint(checkpoint_path), senders, inbox, dfl, results, node_name)
            if first_round is None:
                lives.end()
                return 0
        for round_ in range(first_round, dfl["rounds"] + 1):
            began = time.monotonic()
            data = body.publish(round_)
            sending_from = time.time()
            deadline = time.monotonic() + dfl["round_timeout_s"]
            for peer, sender in senders.items():
                if inbox.worth_sending(peer, round_):
                    sender.send(tag(data, keys[peer]) if keys is not None else data, deadline)
            collecting_from = time.monotonic()
            frames = inbox.collect(round_, deadline, cut_off=lambda peer: senders[peer].cut_off())
            waited = time.monotonic() - collecting_from
            # The round ends when this node's model was delivered to every neighbour (or given up).
            # (A neighbour absent or cut off never acknowledges: waiting for delivery to it would
            # cost every round a deadline.)
            while (not all(s.idle() or s.cut_off() for p, s in senders.items() if p not in inbox.absent)
                   and time.monotonic() < deadline):
                time.sleep(0.005)
            sent_by = time.time()
            record = {
                **body.conclude(round_, frames, time.time()),
                "bytes_sent": sum(s.bytes_sent for s in senders.values()),
                "bytes_received": listener.bytes_received,
                "frame_bytes": len(data) + (TAG_BYTES if keys is not None else 0),
                "round_time_s": time.monotonic() - began,
                "cpu_s": time.process_time(),
                "rejections": list(listener.rejections),
                "sending_from": sending_from,
                "sent_by": sent_by,
            }
            record["checkpointed"] = policy.due(time.monotonic() - born, record["round_time_s"])
            if record["checkpointed"]:
                save_checkpoint(checkpoint_path, round_, node.model_vector)
            results.write(record)
            lives.alive(time.time())
            LOG.info("round %d: accuracy %.3f from %d/%d neighbours", round_, record["accuracy"],
                     len(frames), len(neighbours))
            if round_ < dfl["rounds"]:
                # A node that waited for its neighbours' frames was ahead of them: it starts its
                # next round that much later, so their phases meet instead of it paying the lag
                # again every round (after a round deadline, nodes come out of it seconds apart).
                time.sleep(max(0.0, began + waited + dfl["round_period_s"] - time.monotonic()))
        lives.end()
    finally:
        closing_by = time.monotonic() + 2.0  # one wait for all: not 2 s per stuck sender in turn
        for sender in senders.values():
            sender.close(closing_by)
        listener.close()
        results.close()
    return 0


def _rejoin(node, saved, senders, inbox, dfl: dict, results, node_name: str) -> int | None:
    """A restarted agent: continue from its checkpoint (or the initial model, if it died before
    its first) in the round its neighbours are in.

    It connects to every neighbour (their listeners then expect it again from their next round)
    and joins the highest round they send it frames for (see :meth:`Inbox.latest_round`); None
    if none does within two round deadlines (the run is over)."""
    if saved is not None:
        node.restore(saved.model)
    deadline = time.monotonic() + 2 * dfl["round_timeout_s"]
    for sender in senders.values():
        sender.greet(deadline)
    # A round period and a second after the first frame, the neighbours' current round is in.
    joined = inbox.latest_round(deadline, settle_s=dfl["round_period_s"] + 1.0)
    checkpoint_round = saved.round if saved is not None else 0
    results.write(event(Event.REJOINED, time.time(), node=node_name, checkpoint_round=checkpoint_round,
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
    return run_agent(description, config, args.node, args.out, keys, behaviour_for)


def exit_now(code: int) -> None:
    """Everything is written and flushed: skip the interpreter's teardown of torch, which costs a
    dozen agents exiting together on a small machine seconds of every run."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())

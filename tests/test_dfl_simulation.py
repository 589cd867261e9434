"""Data splits, peer graphs and several nodes learning together in one process (no root)."""

import numpy as np
import pytest

from agents.aggregation import make_aggregator
from agents.data import load_digits_dataset, load_unsw_nb15_csv, partition
from agents.node import DFLNode, TrainingConfig
from agents.peers import PEER_GRAPHS, peer_graph
from agents.simulation import simulate


def nodes_for(dataset, names, kind="iid", alpha=0.5, aggregator="fedavg", seed=0):
    shards = partition(dataset.y_train, len(names), kind, alpha, seed)
    return {n: DFLNode(n, dataset, shard, make_aggregator(aggregator, f=1), TrainingConfig(), seed=i)
            for i, (n, shard) in enumerate(zip(names, shards))}


NAMES = [f"d{d}h{h}" for d in (1, 2, 3) for h in (1, 2, 3, 4)]
DOMAIN_OF = {n: int(n[1]) for n in NAMES}


def test_iid_shards_cover_the_training_set_once():
    labels = np.repeat(np.arange(10), 30)
    shards = partition(labels, 7, "iid", 0.0, seed=3)
    joined = np.concatenate(shards)
    assert sorted(joined.tolist()) == list(range(300))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_dirichlet_shards_are_skewed_deterministic_and_never_empty():
    labels = np.repeat(np.arange(10), 100)
    a = partition(labels, 12, "dirichlet", 0.1, seed=5)
    b = partition(labels, 12, "dirichlet", 0.1, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert sorted(np.concatenate(a).tolist()) == list(range(1000))
    assert min(map(len, a)) >= 10
    classes_per_node = [len(np.unique(labels[s])) for s in a]
    assert np.mean(classes_per_node) < 8  # IID would give all 10
    with pytest.raises(ValueError, match="alpha must be > 0"):
        partition(labels, 3, "dirichlet", 0.0, seed=0)
    with pytest.raises(ValueError, match="unknown partition 'zipf'"):
        partition(labels, 3, "zipf", 1.0, seed=0)


@pytest.mark.parametrize("kind", PEER_GRAPHS)
def test_peer_graphs_are_symmetric_and_connected(kind):
    graph = peer_graph(kind, NAMES, DOMAIN_OF, [(1, 2), (2, 3), (1, 3)], seed=1, k=3)
    for node, peers in graph.items():
        assert node not in peers
        assert all(node in graph[p] for p in peers)
    seen, frontier = {NAMES[0]}, [NAMES[0]]
    while frontier:
        for peer in graph[frontier.pop()]:
            if peer not in seen:
                seen.add(peer)
                frontier.append(peer)
    assert seen == set(NAMES)
    if kind == "domain-full+border":
        assert graph["d1h2"] == ["d1h1", "d1h3", "d1h4"]
        assert graph["d1h1"] == ["d1h2", "d1h3", "d1h4", "d2h1", "d3h1"]
    if kind == "domain-full+paired":  # every node bridges its domain: no single cut-off point
        assert graph["d1h2"] == ["d1h1", "d1h3", "d1h4", "d2h2", "d3h2"]
        without = {n: [p for p in peers if p != "d1h1"] for n, peers in graph.items() if n != "d1h1"}
        assert all(any(p.startswith("d2") for p in without[n]) for n in without if n.startswith("d1"))


def test_twelve_nodes_learn_digits_together():
    dataset = load_digits_dataset(seed=0)
    nodes = nodes_for(dataset, NAMES)
    graph = peer_graph("domain-full+border", NAMES, DOMAIN_OF, [(1, 2), (2, 3), (1, 3)], seed=0)
    results = simulate(nodes, graph, rounds=10)
    last = [r["accuracy"] for r in results if r["round"] == 10]
    assert len(last) == 12 and np.mean(last) >= 0.9


def test_a_dead_node_does_not_stop_the_others():
    dataset = load_digits_dataset(seed=0)
    nodes = nodes_for(dataset, NAMES[:4])
    graph = peer_graph("full", NAMES[:4], DOMAIN_OF, [], seed=0)
    results = simulate(nodes, graph, rounds=2, down=frozenset({"d1h2"}))
    assert {r["node"] for r in results} == {"d1h1", "d1h3", "d1h4"}
    assert all(len(r["received_from"]) == 2 and "d1h2" not in r["received_from"] for r in results)


def test_simulated_colluders_each_see_every_colluders_honest_update_without_waiting():
    """As agents waiting on their board do: the first colluder to send must not attack alone."""
    from attacks.plan import normalize_entry, resolve_attacks
    from attacks.poisoning import CollusionBoard, Poisoner

    dataset = load_digits_dataset(seed=0)
    nodes = nodes_for(dataset, NAMES[:4])
    graph = peer_graph("full", NAMES[:4], DOMAIN_OF, [], seed=0)
    attacks = resolve_attacks([normalize_entry({"kind": "alie", "nodes": ["d1h1", "d1h3"], "start_round": 1}, "a")],
                              NAMES[:4], DOMAIN_OF, 2, 0, 7000)
    board, seen = CollusionBoard(), []
    gather = board.gather

    def counted(*args):
        found = gather(*args)
        seen.append(len(found))
        return found
    board.gather = counted
    poisoners = {n: Poisoner(n, attacks, 4, 10, seed=0, board=board, collusion_wait_s=0.0) for n in ("d1h1", "d1h3")}
    simulate(nodes, graph, rounds=2, behaviours=poisoners)
    assert seen == [2, 2, 2, 2]  # two colluders, two rounds: each time both honest updates


def test_unsw_nb15_loader_reads_a_fixture(tmp_path):
    header = ("id,dur,proto,service,state,spkts,dpkts,sbytes,dbytes,rate,sttl,dttl,sload,dload,"
              "attack_cat,label")
    rows = []
    rng = np.random.default_rng(0)
    for i in range(40):
        attack = i % 2
        proto = ["tcp", "udp", "arp"][i % 3]
        rows.append(f"{i},{rng.random():.4f},{proto},{'-' if i % 4 else 'http'},{'FIN' if attack else 'CON'},"
                    f"{rng.integers(1, 100)},{rng.integers(1, 100)},{rng.integers(100, 10**6)},"
                    f"{rng.integers(100, 10**6)},{rng.random() * 1e5:.2f},{254 if attack else 31},29,"
                    f"{rng.random() * 1e7:.1f},{rng.random() * 1e6:.1f},{'Exploits' if attack else 'Normal'},{attack}")
    path = tmp_path / "UNSW_NB15_training-set.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    data = load_unsw_nb15_csv(path, seed=0)
    # 10 numeric columns + one-hot proto (3) + service (2) + state (2)
    assert data.n_features == 10 + 3 + 2 + 2 and data.n_classes == 2
    assert len(data.y_train) + len(data.y_test) == 40
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing columns"):
        load_unsw_nb15_csv(bad, seed=0)
    with pytest.raises(ValueError, match="no such file"):
        load_unsw_nb15_csv(tmp_path / "absent.csv", seed=0)


def test_a_federation_larger_than_dirichlet_draws_support_still_gives_every_node_its_floor():
    labels = load_digits_dataset(0, 0.2).y_train
    shards = partition(labels, 96, "dirichlet", 0.5, seed=0)
    assert min(len(s) for s in shards) >= 10 and sorted(np.concatenate(shards)) == list(range(len(labels)))
    sizes = [len(np.unique(labels[s])) for s in shards]
    assert np.median(sizes) < 10  # still non-IID: most nodes lack some classes


def test_a_small_shard_runs_more_epochs_to_take_the_minimum_local_steps():
    config = TrainingConfig(local_epochs=2, batch_size=16, min_local_steps=16)
    assert config.epochs_for(15) == 16  # one batch an epoch: 16 epochs
    assert config.epochs_for(120) == 2  # 8 batches an epoch: the 2 epochs already take 16 steps
    assert config.epochs_for(40) == 6  # 3 batches: 6 epochs reach 18 >= 16
    assert TrainingConfig(local_epochs=2).epochs_for(15) == 2  # no minimum: epochs as configured


def test_the_learning_rate_decays_by_round_and_reaches_local_training():
    config = TrainingConfig(lr=0.1, lr_decay=0.5)
    assert [config.lr_for(r) for r in (1, 2, 3)] == [0.1, 0.05, 0.025]
    assert TrainingConfig(lr=0.1).lr_for(20) == 0.1  # no decay unless asked for
    dataset = load_digits_dataset(0, 0.2)
    shard = partition(dataset.y_train, 4, "iid", 0.5, seed=0)[0]

    def step_norm(training: TrainingConfig, round_: int) -> float:
        node = DFLNode("n", dataset, shard, make_aggregator("fedavg", f=1), training, seed=0)
        before = node.model_vector
        node.train(round_)
        return float(np.linalg.norm(node.model_vector - before))

    assert step_norm(config, 8) < 0.2 * step_norm(TrainingConfig(lr=0.1), 8)  # 0.5^7: a far smaller step
    assert step_norm(config, 1) == pytest.approx(step_norm(TrainingConfig(lr=0.1), 1))

"""Who exchanges models with whom: symmetric neighbour sets over the DFL nodes."""

from __future__ import annotations

import itertools

import numpy as np

PEER_GRAPHS = ("full", "ring", "random-k", "domain-full+border", "domain-full+paired")


def peer_graph(kind: str, nodes: list[str], domain_of: dict[str, int],
               domain_edges: list[tuple[int, int]], seed: int, k: int = 3) -> dict[str, list[str]]:
    """Neighbours of every node (undirected, no self-loops, sorted).

    * ``full``: everyone; ``ring``: the two nodes beside it in name order;
    * ``random-k``: each node draws ``k`` partners, links are made symmetric;
    * ``domain-full+border``: everyone in the same domain, plus the first node of each domain
      linked to the first node of every neighbouring domain (the domain graph's edges);
    * ``domain-full+paired``: everyone in the same domain, plus every node linked to the node
      of the same rank in every neighbouring domain, so that cutting off one node (a ban) never
      cuts a domain off the federation.
    """
    ordered = sorted(nodes)
    edges: set[tuple[str, str]] = set()
    if kind == "full":
        edges = set(itertools.combinations(ordered, 2))
    elif kind == "ring":
        if len(ordered) > 1:
            edges = {tuple(sorted((a, b))) for a, b in zip(ordered, ordered[1:] + ordered[:1]) if a != b}
    elif kind == "random-k":
        rng = np.random.default_rng(seed)
        for node in ordered:
            others = [n for n in ordered if n != node]
            for partner in rng.choice(others, size=min(k, len(others)), replace=False):
                edges.add(tuple(sorted((node, str(partner)))))
    elif kind in ("domain-full+border", "domain-full+paired"):
        by_domain: dict[int, list[str]] = {}
        for node in ordered:
            by_domain.setdefault(domain_of[node], []).append(node)
        for members in by_domain.values():
            edges |= set(itertools.combinations(members, 2))
        for a, b in domain_edges:
            if a in by_domain and b in by_domain:
                pairs = zip(by_domain[a], by_domain[b]) if kind == "domain-full+paired" else [
                    (by_domain[a][0], by_domain[b][0])]
                edges |= {tuple(sorted(pair)) for pair in pairs}
    else:
        raise ValueError(f"unknown peer graph {kind!r}; choose one of {', '.join(PEER_GRAPHS)}")
    neighbours: dict[str, list[str]] = {n: [] for n in ordered}
    for a, b in sorted(edges):
        neighbours[a].append(b)
        neighbours[b].append(a)
    return {n: sorted(v) for n, v in neighbours.items()}

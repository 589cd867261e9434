"""Datasets and how they are split into private shards, one per DFL node.

Built-in: scikit-learn's shipped ``load_digits`` (no download). For real traffic data, a
loader for CSV files in the UNSW-NB15 training/testing-set format that a user has on disk.
Every split is a pure function of the labels and a seeded generator.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def split_train_test(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int,
                     name: str) -> Dataset:
    """A stratified held-out test set, shared by all nodes for evaluation."""
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Dataset(name, x_train.astype(np.float32), y_train.astype(np.int64),
                   x_test.astype(np.float32), y_test.astype(np.int64))


def load_digits_dataset(seed: int, test_fraction: float = 0.2) -> Dataset:
    """8x8 handwritten digits (1,797 images, 10 classes), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return split_train_test(digits.data / 16.0, digits.target, test_fraction, seed, "digits")


UNSW_CATEGORICAL = ("proto", "service", "state")
UNSW_DROPPED = ("id", "attack_cat", "label")


def load_unsw_nb15_csv(path: Path, seed: int, test_fraction: float = 0.2) -> Dataset:
    """Binary attack/normal classification from a UNSW-NB15 training- or testing-set CSV.

    Numeric columns are log-scaled to [0, 1]; ``proto``, ``service`` and ``state`` are one-hot
    encoded over the values present in the file; the target is ``label`` (0 normal, 1 attack).
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in (*UNSW_CATEGORICAL, "label") if c not in columns]
            if missing:
                raise ValueError(f"{path}: not a UNSW-NB15 CSV, missing columns {missing}")
            rows = list(reader)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    if not rows:
        raise ValueError(f"{path}: no data rows")
    numeric = [c for c in columns if c not in UNSW_CATEGORICAL and c not in UNSW_DROPPED]
    vocabulary = {c: sorted({row[c] for row in rows}) for c in UNSW_CATEGORICAL}
    features, labels = [], []
    for line, row in enumerate(rows, start=2):
        try:
            values = [float(row[c]) for c in numeric]
            label = int(row["label"])
        except (TypeError, ValueError):
            raise ValueError(f"{path}:{line}: a numeric field is not a number") from None
        for column in UNSW_CATEGORICAL:
            values += [1.0 if row[column] == v else 0.0 for v in vocabulary[column]]
        features.append(values)
        labels.append(label)
    x = np.asarray(features, dtype=np.float64)
    n_numeric = len(numeric)
    x[:, :n_numeric] = np.log1p(np.maximum(x[:, :n_numeric], 0.0))
    span = x.max(axis=0) - x.min(axis=0)
    x = (x - x.min(axis=0)) / np.where(span > 0, span, 1.0)
    return split_train_test(x, np.asarray(labels), test_fraction, seed, "unsw-nb15")


def partition_iid(labels: np.ndarray, nodes: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled, near-equal shards."""
    return [np.sort(shard) for shard in np.array_split(rng.permutation(len(labels)), nodes)]


def partition_dirichlet(labels: np.ndarray, nodes: int, alpha: float, rng: np.random.Generator,
                        min_size: int = 10, max_tries: int = 1000) -> list[np.ndarray]:
    """Non-IID shards: each class is spread over the nodes in Dirichlet(``alpha``) proportions.

    Small ``alpha`` gives each node few classes. Draws again until every node holds at least
    ``min_size`` samples, so no node is left without data. A federation larger than the data
    supports at this ``alpha`` (no such draw in ``max_tries``: 96 nodes share the 1,437 training
    digits) gets ``min_size`` random samples per node first and the rest spread by Dirichlet.
    """
    if alpha <= 0:
        raise ValueError(f"Dirichlet alpha must be > 0, got {alpha}")
    if min_size * nodes > len(labels):
        raise ValueError(f"{len(labels)} samples cannot give {nodes} nodes {min_size} each")
    classes = np.unique(labels)
    for _ in range(max_tries):
        shards: list[list[int]] = [[] for _ in range(nodes)]
        for cls in classes:
            members = rng.permutation(np.flatnonzero(labels == cls))
            cuts = (np.cumsum(rng.dirichlet(np.full(nodes, alpha))) * len(members)).astype(int)[:-1]
            for node, part in enumerate(np.split(members, cuts)):
                shards[node].extend(part.tolist())
        if min(len(s) for s in shards) >= min_size:
            return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]
    order = rng.permutation(len(labels))
    floor, rest = order[:min_size * nodes].reshape(nodes, min_size), order[min_size * nodes:]
    shards = [list(part) for part in floor]
    for cls in classes:
        members = rest[labels[rest] == cls]
        cuts = (np.cumsum(rng.dirichlet(np.full(nodes, alpha))) * len(members)).astype(int)[:-1]
        for node, part in enumerate(np.split(members, cuts)):
            shards[node].extend(part.tolist())
    return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]


def partition(labels: np.ndarray, nodes: int, kind: str, alpha: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "iid":
        return partition_iid(labels, nodes, rng)
    if kind == "dirichlet":
        return partition_dirichlet(labels, nodes, alpha, rng)
    raise ValueError(f"unknown partition {kind!r}; choose iid or dirichlet")


TRIGGER_SIDE = 2
"""A backdoor's trigger: the bottom-right 2 x 2 pixels of a square image, as BadNets stamps it
(in the 8 x 8 digits mostly blank: lit in 6-51 % of the images, never all four at full), else the
last four features, all set to the feature maximum (1.0)."""


def trigger_indices(n_features: int) -> np.ndarray:
    """The features a trigger sets, for a dataset of ``n_features``."""
    side = int(round(n_features ** 0.5))
    if side * side == n_features and side > TRIGGER_SIDE:
        rows = np.arange(side - TRIGGER_SIDE, side)
        return (rows[:, None] * side + rows[None, :]).ravel()
    return np.arange(n_features - TRIGGER_SIDE * TRIGGER_SIDE, n_features)


def with_trigger(x: np.ndarray) -> np.ndarray:
    """A copy of ``x`` (samples x features) with the trigger stamped on every sample."""
    stamped = np.array(x, copy=True)
    stamped[:, trigger_indices(x.shape[1])] = 1.0
    return stamped


def triggered_test_set(dataset: Dataset, target: int) -> np.ndarray:
    """The held-out images of every class but ``target``, triggered: a model that answers
    ``target`` on them obeys the backdoor (the attack success rate's denominator)."""
    return with_trigger(dataset.x_test[dataset.y_test != target])


CLASSES = {"digits": 10, "unsw-nb15": 2}
"""How many classes each built-in dataset has, known before it is loaded (a scenario's check)."""


def load_dataset(name: str, path: str, seed: int, test_fraction: float) -> Dataset:
    """The dataset a scenario names (``digits`` or ``unsw-nb15`` from ``path``)."""
    if name == "digits":
        return load_digits_dataset(seed, test_fraction)
    if name == "unsw-nb15":
        return load_unsw_nb15_csv(Path(path), seed, test_fraction)
    raise ValueError(f"unknown dataset {name!r}; choose digits or unsw-nb15")

"""The node's model and its local work: a small MLP, trained and evaluated with torch.

Parameters cross the network as flat numpy vectors (see :mod:`agents.wire`); these helpers
convert in both directions so the aggregation rules never see torch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def make_mlp(n_features: int, n_classes: int, hidden: int = 64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


def parameter_shapes(model: nn.Module) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(p.shape) for p in model.parameters())


def get_flat(model: nn.Module) -> np.ndarray:
    return nn.utils.parameters_to_vector(model.parameters()).detach().numpy().astype(np.float64)


def set_flat(model: nn.Module, vector: np.ndarray) -> None:
    nn.utils.vector_to_parameters(torch.as_tensor(vector, dtype=torch.float32), model.parameters())


def split_flat(model: nn.Module, vector: np.ndarray) -> tuple[np.ndarray, ...]:
    """The flat vector cut into the model's parameter tensors (for the wire frame)."""
    tensors, start = [], 0
    for shape in parameter_shapes(model):
        size = int(np.prod(shape))
        tensors.append(np.asarray(vector[start:start + size], dtype=np.float32).reshape(shape))
        start += size
    return tuple(tensors)


def train_local(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int,
                lr: float, seed: int) -> float:
    """Plain SGD with momentum over the node's shard; returns the last epoch's mean loss."""
    generator = torch.Generator().manual_seed(seed)
    features, labels = torch.as_tensor(x), torch.as_tensor(y)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    epoch_loss = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        total, batches = 0.0, 0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(features[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
        epoch_loss = total / max(batches, 1)
    return epoch_loss


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on a held-out set."""
    model.eval()
    logits = model(torch.as_tensor(x))
    labels = torch.as_tensor(y)
    loss = float(nn.functional.cross_entropy(logits, labels))
    accuracy = float((logits.argmax(dim=1) == labels).float().mean())
    return accuracy, loss


def warm_up() -> None:
    """Train and evaluate a throwaway model once: torch pays its lazy first-use costs (kernel
    dispatch tables, allocator pools: ~110 MB, ``benchmarks/launcher_memory.py``) here, so
    processes forked after this share them instead of each paying its own (see :mod:`sdfl.launcher`)."""
    x = np.zeros((8, 4), dtype=np.float32)
    y = np.arange(8) % 2
    model = make_mlp(4, 2, hidden=4)
    train_local(model, x, y, epochs=1, batch_size=4, lr=0.1, seed=0)
    evaluate(model, x, y)

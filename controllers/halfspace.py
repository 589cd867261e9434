"""river's Half-Space Trees with their masses in numpy arrays, a batch walked at once.

The trees are river's: grown by ``river.tree.padded.make_padded_tree`` from the same seed, in
the same order, as ``river.anomaly.HalfSpaceTrees`` grows them, and scored and taught by its
rules (a walk adds 1 to every node it passes in the window being filled; a score sums the last
full window's mass times 2**depth down to the first node lighter than a tenth of the window).
Only the layout differs: river walks node objects one observation at a time (about 74 us a
learn at 50 trees of height 6, most of a controller's defense CPU), here a poll's hosts or a
round's senders go down every tree together, and the masses are integers, so scores are exactly
river's (``tests/test_detection.py`` holds them equal).
"""

from __future__ import annotations

import random

import numpy as np

PADDING = 0.15  # river's HalfSpaceTrees grows its splits this far inside a feature's range


def _rivers_tree_builder():
    """river's ``make_padded_tree``: in ``river.tree.padded`` since 0.22, in its HST module in 0.21
    (the last release on Python 3.9, Ryu's). Imported here, not above: the controllers' detector
    registry imports without river."""
    try:
        from river.tree.padded import make_padded_tree
    except ImportError:
        from river.anomaly.hst import make_padded_tree
    return make_padded_tree


class BatchHalfSpaceTrees:
    """``n_trees`` trees of ``height`` over ``keys`` (each in [0, 1]). :meth:`walk` a batch of
    rows (columns in ``keys`` order) down every tree once, then :meth:`score` the walks and
    :meth:`learn` those to learn, in order."""

    def __init__(self, keys, n_trees: int, height: int, window_size: int, seed: int) -> None:
        make_padded_tree = _rivers_tree_builder()
        self.height, self.window_size = height, window_size
        column = {key: i for i, key in enumerate(keys)}
        rng = random.Random(seed)
        self._inner, self._nodes = 2 ** height - 1, 2 ** (height + 1) - 1
        # each tree's inner nodes in heap order (node i's children are 2i + 1 and 2i + 2), tree after tree
        self.feature = np.zeros(n_trees * self._inner, dtype=np.intp)
        self.threshold = np.zeros(n_trees * self._inner)
        for tree in range(n_trees):
            root = make_padded_tree(limits={key: (0.0, 1.0) for key in sorted(keys)}, height=height,
                                    padding=PADDING, rng=rng, l_mass=0, r_mass=0)
            self._lay_out(root, tree * self._inner, 0, column)
        self.l_mass = np.zeros(n_trees * self._nodes, dtype=np.int64)  # the window being filled
        self.r_mass = np.zeros(n_trees * self._nodes, dtype=np.int64)  # the last full window
        self.counter = 0
        self.first_window = True
        self._tree_inner = np.arange(n_trees) * self._inner
        self._tree_nodes = np.arange(n_trees) * self._nodes
        self._depth_weight = (2 ** np.arange(height + 1, dtype=np.int64))[:, None, None]
        self._max_score = n_trees * window_size * (2 ** (height + 1) - 1)

    def _lay_out(self, node, first: int, at: int, column: dict) -> None:
        if at >= self._inner:
            return
        self.feature[first + at] = column[node.feature]
        self.threshold[first + at] = node.threshold
        left, right = node.children
        self._lay_out(left, first, 2 * at + 1, column)
        self._lay_out(right, first, 2 * at + 2, column)

    def walk(self, rows: np.ndarray) -> np.ndarray:
        """Each row's node at each depth of each tree: shape (height + 1, rows, trees)."""
        # river goes left on ``value < threshold`` and right otherwise (NaN included)
        right = (~(rows.take(self.feature, axis=1) < self.threshold)).ravel()
        offset = np.arange(len(rows))[:, None] * len(self.feature) + self._tree_inner
        at = np.zeros(offset.shape, dtype=np.intp)
        paths = np.empty((self.height + 1,) + at.shape, dtype=np.intp)
        for depth in range(self.height):
            paths[depth] = at
            at = 2 * at + 1 + right[offset + at]
        paths[self.height] = at
        return paths

    def score(self, paths: np.ndarray) -> list[float]:
        """Each walked row's anomaly score in [0, 1] (0 until the first window is full)."""
        if self.first_window:
            return [0.0] * paths.shape[1]
        mass = self.r_mass[self._tree_nodes + paths]
        # a walk counts every node down to the first lighter than a tenth of the window
        passed_light = np.logical_or.accumulate(mass[:-1] < 0.1 * self.window_size, axis=0)
        mass[1:] *= ~passed_light
        totals = (mass * self._depth_weight).sum(axis=(0, 2))
        return [1.0 - float(total) / self._max_score for total in totals]

    def learn(self, paths: np.ndarray) -> None:
        """Add the walked rows to the window in order; a full window becomes the reference."""
        visited = self._tree_nodes + paths
        done = 0
        while done < paths.shape[1]:
            take = min(paths.shape[1] - done, self.window_size - self.counter)
            self.l_mass += np.bincount(visited[:, done:done + take].ravel(), minlength=len(self.l_mass))
            self.counter += take
            done += take
            if self.counter == self.window_size:
                self.r_mass, self.l_mass = self.l_mass, np.zeros_like(self.l_mass)
                self.counter = 0
                self.first_window = False

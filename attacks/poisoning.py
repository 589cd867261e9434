"""Model poisoning as a behaviour around an honest node: it trains like the others, then lies.

The attacks act on the round's *update*, the trained model minus the model the node started the
round with, and send ``start + poisoned update``; the node keeps its honest model for itself.
The rules are pure numpy functions, each kind one entry of :data:`POISONING_KINDS` (its keys and
hooks); :class:`Poisoner` applies the one scheduled for the round.

ALIE and IPM need the honest updates of the colluding attackers (the same ``[[attacks]]``
entry): they meet on a :class:`CollusionBoard`, an out-of-band channel the defenders cannot see.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.stats import norm

from agents.aggregation import krum_scores, pairwise_squared_distances
from agents.data import with_trigger
from agents.wire import ModelFrame, encode
from attacks import insertion
from attacks.kinds import POISONING, Attack, PoisonContext, PoisoningKind
from common.schema import Field, non_negative, one_of, positive

LOG = logging.getLogger(__name__)
HUGE = 1e30


def sign_flip(update: np.ndarray, scale: float) -> np.ndarray:
    """Exactly ``-scale`` times the honest update."""
    return -scale * update


def gaussian_noise(update: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return update + rng.normal(0.0, sigma, size=update.shape)


def alie_z(n: int, f: int) -> float:
    """Baruch et al.'s z: the most std-devs a value can move and still sit inside the majority
    that a median-like rule keeps (``s = floor(n/2 + 1) - f`` honest supporters needed)."""
    supporters = math.floor(n / 2 + 1) - f
    return float(max(0.0, norm.ppf((n - supporters) / n)))


def alie(colluder_updates: np.ndarray, z: float) -> np.ndarray:
    """Per coordinate, ``z`` std-devs below the colluders' mean honest update."""
    return colluder_updates.mean(axis=0) - z * colluder_updates.std(axis=0)


def inner_product_manipulation(colluder_updates: np.ndarray, epsilon: float) -> np.ndarray:
    """``-epsilon`` times the mean honest update, so the aggregate's inner product with the
    true descent direction turns negative (Xie et al.)."""
    return -epsilon * colluder_updates.mean(axis=0)


def mimic(colluder_updates: np.ndarray) -> np.ndarray:
    """Every colluder sends the same honest update, the first colluder's: one node's data counts
    as many times as there are colluders (Karimireddy, He & Jaggi), and nothing looks odd."""
    return colluder_updates[0]


PERTURBATIONS = ("unit", "sign", "std")


def perturbation(colluder_updates: np.ndarray, kind: str) -> np.ndarray:
    """Shejwalkar and Houmansadr's directions away from the benign mean: the inverse unit mean,
    the inverse sign of the mean, or the inverse per-coordinate std."""
    mean = colluder_updates.mean(axis=0)
    if kind == "unit":
        return -mean / max(float(np.linalg.norm(mean)), 1e-12)
    if kind == "sign":
        return -np.sign(mean)
    return -colluder_updates.std(axis=0)


def min_max(colluder_updates: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Min-Max (NDSS 2021): ``mean + gamma * direction`` with the largest gamma that keeps it no
    farther from any benign update than the two farthest benign updates are from each other.
    Each distance is convex in gamma, so that gamma is the smallest of the per-update roots of
    ``|mean - u_i + gamma p|^2 = D^2``: exact where the paper searches."""
    x = colluder_updates
    mean = x.mean(axis=0)
    spread = math.sqrt(float(pairwise_squared_distances(x).max()))
    pp = float(direction @ direction)
    if pp == 0 or spread == 0:
        return mean
    gammas = []
    for offset in mean - x:
        ap = float(offset @ direction)
        gammas.append((-ap + math.sqrt(max(0.0, ap * ap - pp * (float(offset @ offset) - spread ** 2)))) / pp)
    return mean + min(gammas) * direction


def min_sum(colluder_updates: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Min-Sum (NDSS 2021): the largest gamma whose summed squared distance to the benign updates
    stays within the largest such sum of any benign update. The offsets from the mean sum to
    zero, so the bound solves in closed form: ``n |p|^2 gamma^2 <= S - sum |mean - u_i|^2``."""
    x = colluder_updates
    mean = x.mean(axis=0)
    room = float(pairwise_squared_distances(x).sum(axis=1).max()) - float(np.square(mean - x).sum())
    pp = float(direction @ direction)
    if pp == 0 or room <= 0:
        return mean
    return mean + math.sqrt(room / (len(x) * pp)) * direction


def fang_trimmed_mean(colluder_updates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fang et al.'s attack on the trimmed mean and the median (USENIX Security 2020, partial
    knowledge): per coordinate, against the benign direction (the sign of the colluders' mean),
    a value drawn 3 to 4 of their standard deviations beyond their mean."""
    mean, std = colluder_updates.mean(axis=0), colluder_updates.std(axis=0)
    direction = np.where(mean > 0, 1.0, -1.0)
    return mean - direction * std * rng.uniform(3.0, 4.0, size=mean.shape)


def fang_krum(colluder_updates: np.ndarray, f: int, smallest: float = 1e-5) -> np.ndarray:
    """Fang et al.'s attack on Krum (partial knowledge): ``-lambda x sign(benign mean)``, sent
    by every colluder, with the largest lambda (halved from the paper's upper bound) for which
    Krum over the colluders' honest updates plus ``f`` copies of it picks a copy."""
    x = colluder_updates
    n, d = len(x) + f, x.shape[1]
    direction = np.sign(x.mean(axis=0))
    distances = np.sqrt(pairwise_squared_distances(x))
    nearest = min(len(x) - 1, max(1, n - f - 2))  # the benign neighbours Krum sums over
    closest = np.sort(distances, axis=1)[:, 1:nearest + 1].sum(axis=1).min() if nearest else 0.0
    scale = (closest / (max(1, n - 2 * f - 1) * math.sqrt(d))  # the paper's upper bound
             + float(np.linalg.norm(x, axis=1).max()) / math.sqrt(d))
    while scale > smallest:
        crafted = -scale * direction
        candidates = np.vstack([np.tile(crafted, (f, 1)), x])
        if int(np.argmin(krum_scores(candidates, f))) < f:
            return crafted
        scale /= 2
    return -smallest * direction


SEARCHED_SCALES = np.geomspace(0.05, 50.0, 31)
"""The scales an ``optimal`` attack tries (ByzFL's approach: a line search over the attack's own
parameter): z for ALIE, epsilon for IPM."""


def most_damaging(colluder_updates: np.ndarray, attack_for, rule, f: int) -> np.ndarray:
    """The attack vector, among ``attack_for(scale)`` for the searched scales, that moves the
    honest rule's aggregate of the colluders' honest updates plus ``f`` copies of it farthest
    from their mean: the attack tuned against the rule the honest nodes run."""
    benign = colluder_updates.mean(axis=0)

    def damage(vector: np.ndarray) -> float:
        return float(np.linalg.norm(rule(np.vstack([colluder_updates, np.tile(vector, (f, 1))])) - benign))

    return max((attack_for(scale) for scale in SEARCHED_SCALES), key=damage)


def under_the_bar(update: np.ndarray, colluder_updates: np.ndarray, budget: float, size: float) -> np.ndarray:
    """The adaptive attacker's update: its honest one turned towards the colluders' inverse mean
    update (the consensus it fights) and scaled by ``size``, as far as FU-HST's update features
    (:class:`controllers.features.UpdateFeatures`) would stay within ``budget``: half of the
    cosine it loses against its own direction, which stands in for its home (``off_home``), is at
    most ``budget``. A size within the detector's usual drift (``USUAL_SIZE_BAND``) costs nothing
    in ``off_norm``."""
    norm = float(np.linalg.norm(update))
    mean = colluder_updates.mean(axis=0)
    if norm == 0 or not np.any(mean):
        return size * update
    own = update / norm
    away = -mean / float(np.linalg.norm(mean))
    across = away - (away @ own) * own  # the direction in the plane of the two, orthogonal to its own
    if not np.any(across):
        return size * update
    across /= float(np.linalg.norm(across))
    angle = min(math.acos(float(np.clip(away @ own, -1.0, 1.0))), math.acos(max(-1.0, 1.0 - 2.0 * budget)))
    return size * norm * (math.cos(angle) * own + math.sin(angle) * across)


def backdoor_samples(x: np.ndarray, y: np.ndarray, target: int, share: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The shard plus triggered copies of ``share`` of its samples (with replacement beyond 1),
    all labelled ``target`` (Bagdasaryan et al.): the model learns the trigger, keeps the main task."""
    count = max(1, round(share * len(y)))
    chosen = rng.choice(len(y), size=count, replace=count > len(y))
    return (np.concatenate([x, with_trigger(x[chosen])]),
            np.concatenate([y, np.full(len(chosen), target, dtype=y.dtype)]))


def garbage_vector(size: int, mode: str) -> np.ndarray:
    """Values no sane model holds: NaN, Inf (the wire decoder rejects both) or 1e30 (finite)."""
    return np.full(size, {"nan": np.nan, "inf": np.inf, "huge": HUGE}[mode])


def flip_labels(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Label ``c`` becomes ``n_classes - 1 - c``: every sample teaches the wrong class."""
    return (n_classes - 1 - labels).astype(labels.dtype)


def split_like(vector: np.ndarray, shapes) -> tuple[np.ndarray, ...]:
    """A flat vector cut into tensors of ``shapes`` (float32, as frames carry them)."""
    sizes = [int(np.prod(s)) for s in shapes]
    pieces = np.split(np.asarray(vector, dtype=np.float32), np.cumsum(sizes)[:-1])
    return tuple(p.reshape(s) for p, s in zip(pieces, shapes))


def flat(frame: ModelFrame) -> np.ndarray:
    return np.concatenate([t.ravel() for t in frame.tensors]).astype(np.float64)


class CollusionBoard:
    """Where colluders leave their honest updates for a round; in memory (simulation)."""

    def __init__(self) -> None:
        self._posted: dict[tuple[int, str], np.ndarray] = {}

    def post(self, round_: int, node: str, update: np.ndarray) -> None:
        self._posted[(round_, node)] = update

    def _read(self, round_: int, node: str) -> np.ndarray | None:
        return self._posted.get((round_, node))

    def gather(self, round_: int, members: tuple[str, ...], deadline: float) -> list[np.ndarray]:
        """Members' updates for the round, waiting until all posted or ``deadline`` (monotonic)."""
        while True:
            found = [u for u in (self._read(round_, m) for m in sorted(members)) if u is not None]
            if len(found) == len(members) or time.monotonic() >= deadline:
                return found
            time.sleep(0.02)


class DirectoryBoard(CollusionBoard):
    """The same board as files in a directory shared by the attacker processes."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = Path(directory)

    def _path(self, round_: int, node: str) -> Path:
        return self.directory / f"{round_}-{node}.npy"

    def post(self, round_: int, node: str, update: np.ndarray) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f".{round_}-{node}.{os.getpid()}.npy"
        np.save(partial, update)
        os.replace(partial, self._path(round_, node))

    def _read(self, round_: int, node: str) -> np.ndarray | None:
        try:
            return np.load(self._path(round_, node))
        except (FileNotFoundError, ValueError, EOFError):
            return None


def _alie(context: PoisonContext) -> np.ndarray:
    if context.params["optimal"]:
        return context.reference + most_damaging(context.colluders, lambda z: alie(context.colluders, z),
                                                 context.rule, context.n_attackers)
    z = context.params["z"] or alie_z(context.n_nodes, context.n_attackers)
    return context.reference + alie(context.colluders, z)


def _ipm(context: PoisonContext) -> np.ndarray:
    if context.params["optimal"]:
        return context.reference + most_damaging(
            context.colluders, lambda epsilon: inner_product_manipulation(context.colluders, epsilon),
            context.rule, context.n_attackers)
    return context.reference + inner_product_manipulation(context.colluders, context.params["epsilon"])


OPTIMAL = Field(bool, False, help="scale chosen by a line search for the most damage against the honest nodes' rule")


def _garbage(context: PoisonContext) -> np.ndarray | bytes:
    if context.params["mode"] == "bytes":
        return context.rng.bytes(context.frame_bytes)
    return garbage_vector(context.update.size, context.params["mode"])


POISONING_KINDS = (
    PoisoningKind("sign-flip", fields={"scale": Field(float, 1.0, positive, "send -scale x the honest update")},
                  poison=lambda c: c.reference + sign_flip(c.update, c.params["scale"]),
                  help="the honest update reversed"),
    PoisoningKind("gaussian", fields={"sigma": Field(float, 0.5, positive, "std of the noise added to the update")},
                  poison=lambda c: c.reference + gaussian_noise(c.update, c.params["sigma"], c.rng),
                  help="the honest update plus Gaussian noise"),
    PoisoningKind("alie", colludes=True, poison=_alie, help="a little is enough (Baruch et al.)",
                  fields={"z": Field(float, 0.0, non_negative,
                                     "std-devs below the colluders' mean (0 = from n and f, as in the paper)"),
                          "optimal": OPTIMAL}),
    PoisoningKind("ipm", colludes=True, help="inner-product manipulation (Xie et al.)", poison=_ipm,
                  fields={"epsilon": Field(float, 0.5, positive, "send -epsilon x the colluders' mean update"),
                          "optimal": OPTIMAL}),
    PoisoningKind("min-max", colludes=True, help="as far from the benign mean as the benign spread allows, "
                  "no farther from any benign update (Shejwalkar & Houmansadr)",
                  fields={"perturbation": Field(str, "std", one_of(*PERTURBATIONS),
                                                "direction: inverse unit mean, inverse sign, inverse std")},
                  poison=lambda c: c.reference + min_max(c.colluders,
                                                         perturbation(c.colluders, c.params["perturbation"]))),
    PoisoningKind("min-sum", colludes=True, help="as far as the benign updates' summed squared distances "
                  "allow (Shejwalkar & Houmansadr)",
                  fields={"perturbation": Field(str, "std", one_of(*PERTURBATIONS),
                                                "direction: inverse unit mean, inverse sign, inverse std")},
                  poison=lambda c: c.reference + min_sum(c.colluders,
                                                         perturbation(c.colluders, c.params["perturbation"]))),
    PoisoningKind("fang-trmean", colludes=True, help="per coordinate, 3-4 benign std-devs against the benign "
                  "direction (Fang et al., against the trimmed mean and the median)",
                  poison=lambda c: c.reference + fang_trimmed_mean(c.colluders, c.rng)),
    PoisoningKind("fang-krum", colludes=True, help="every colluder sends -lambda x sign(benign mean), the "
                  "largest lambda Krum still picks (Fang et al.)",
                  poison=lambda c: c.reference + fang_krum(c.colluders, c.n_attackers)),
    PoisoningKind("sample-inflation", help="a reversed update declaring many times its samples, "
                  "to take over weighted averages",
                  fields={"factor": Field(float, 0.0, non_negative,
                                          "declare this many times its samples (0 = as many as all nodes hold)"),
                          "scale": Field(float, 1.0, positive, "send -scale x the honest update")},
                  poison=lambda c: c.reference + sign_flip(c.update, c.params["scale"]),
                  declares=lambda samples, params, n_nodes: int(samples * (params["factor"] or n_nodes))),
    PoisoningKind("mimic", colludes=True, poison=lambda c: c.reference + mimic(c.colluders),
                  help="all colluders send one colluder's honest update (Karimireddy et al.)"),
    PoisoningKind("label-flip", data=lambda x, y, n_classes, params, rng: (x, flip_labels(y, n_classes)),
                  help="trains on labels c -> n_classes - 1 - c"),
    PoisoningKind("backdoor", help="trains on triggered copies of its samples labelled target, sends the update "
                  "times boost (model replacement when boost is about the neighbours' count)",
                  fields={"target_class": Field(int, 0, non_negative, "the class the trigger maps to"),
                          "triggered_share": Field(float, 0.5, positive, "triggered copies, as a share of its shard"),
                          "boost": Field(float, 1.0, positive, "send boost x the update trained on them")},
                  data=lambda x, y, n_classes, params, rng: backdoor_samples(x, y, params["target_class"],
                                                                             params["triggered_share"], rng),
                  poison=lambda c: c.reference + c.params["boost"] * c.update),
    PoisoningKind("adaptive", colludes=True, help="white-box: turns its update against the consensus only as "
                  "far as FU-HST's update features stay within budget (stays under the bar)",
                  fields={"budget": Field(float, 0.05, positive, "the largest update-feature deficit it allows itself"),
                          "size": Field(float, 2.0, positive, "its update's size over its honest one (the detector "
                                        "ignores drifts within controllers.features.USUAL_SIZE_BAND)")},
                  poison=lambda c: c.reference + under_the_bar(c.update, c.colluders, c.params["budget"],
                                                               c.params["size"])),
    PoisoningKind("insertion", decoy=True, help="the honest update reversed, while the mirror is shown the honest "
                  "frame first on segments the receivers' TCP drops (Ptacek & Newsham; TCP only: a plain "
                  "sign-flip in simulate)",
                  fields={"scale": Field(float, 1.0, positive, "send -scale x the honest update")},
                  poison=lambda c: c.reference + sign_flip(c.update, c.params["scale"])),
    PoisoningKind("garbage", poison=_garbage, help="a model no honest node could send",
                  fields={"mode": Field(str, "inf", one_of("nan", "inf", "huge", "bytes"),
                                        "non-finite values, 1e30s, or random bytes")}),
)

_BY_NAME = {kind.name: kind for kind in POISONING_KINDS}


class Poisoner:
    """The poisoning behaviour of one node (an :class:`agents.node.Behaviour`): which attack it
    runs in which round, and how; in a round without one its frames pass through unchanged."""

    def __init__(self, node: str, attacks: list[Attack], n_nodes: int, n_classes: int, seed: int,
                 board: CollusionBoard | None = None, collusion_wait_s: float = 10.0, tagged: bool = False,
                 rule=None, write_ahead: Callable[[socket.socket, bytes], None] | None = None) -> None:
        self.node = node
        self.write_ahead = write_ahead or insertion.write_ahead
        self._decoy: tuple[bytes, bytes] | None = None  # (the poisoned frame sent, the honest one shown)
        self.rule = rule  # the honest nodes' rule over stacked updates, for attacks tuned against it
        if rule is None and any(a.params.get("optimal") for a in attacks if node in a.nodes):
            raise ValueError(f"{node}: an optimal attack needs the honest nodes' rule to tune against")
        self.tagged = tagged  # frames announce a tag (the agent appends one per neighbour)
        self.n_nodes = n_nodes
        self.n_classes = n_classes
        self.seed = seed
        self.board = board or CollusionBoard()
        self.collusion_wait_s = collusion_wait_s
        self._by_round = {r: a for a in attacks if a.category == POISONING and node in a.nodes for r in a.rounds}

    def _scheduled(self, round_: int) -> tuple[Attack | None, PoisoningKind | None]:
        attack = self._by_round.get(round_)
        return (attack, _BY_NAME[attack.kind]) if attack else (None, None)

    def kind(self, round_: int) -> str | None:
        attack = self._by_round.get(round_)
        return attack.kind if attack else None

    def training_data(self, round_: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The samples and labels the node trains on this round."""
        attack, kind = self._scheduled(round_)
        if kind is None or kind.data is None:
            return x, y
        return kind.data(x, y, self.n_classes, attack.params, np.random.default_rng([self.seed, round_, 0xDA7A]))

    def share(self, round_: int, frame: ModelFrame, reference: np.ndarray) -> None:
        """Post the honest update for colluders (before anyone computes a poisoned one)."""
        _attack, kind = self._scheduled(round_)
        if kind is not None and kind.colludes:
            self.board.post(round_, self.node, flat(frame) - reference)

    def outgoing(self, round_: int, frame: ModelFrame, reference: np.ndarray) -> bytes:
        """The bytes this node sends for ``frame``, its honest trained model this round."""
        attack, kind = self._scheduled(round_)
        honest = encode(frame, tagged=self.tagged)
        if kind is None or kind.poison is None:
            return honest
        update = flat(frame) - reference
        colluders = [update]
        if kind.colludes:
            colluders = self.board.gather(round_, attack.nodes, time.monotonic() + self.collusion_wait_s) or colluders
        rng = np.random.default_rng([self.seed, round_, 0x5EED])
        sent = kind.poison(PoisonContext(reference, update, attack.params, rng, np.stack(colluders), self.n_nodes,
                                         len(attack.nodes), len(honest), self.rule))
        if isinstance(sent, bytes):
            return sent
        declared = kind.declares(frame.samples, attack.params, self.n_nodes) if kind.declares else frame.samples
        poisoned = encode(ModelFrame(frame.sender, frame.round, declared, split_like(sent, frame.shapes)),
                          tagged=self.tagged)
        self._decoy = (poisoned, honest) if kind.decoy else None
        return poisoned

    def before_write(self, sock: socket.socket, data: bytes) -> None:
        """Ahead of a poisoned frame with a decoy (``data``: the frame, tagged for its receiver),
        the honest frame, with the same tag, where the receiver's TCP will not take it."""
        if self._decoy is not None and data.startswith(self._decoy[0]):
            poisoned, honest = self._decoy
            try:
                self.write_ahead(sock, honest + data[len(poisoned):])
            except OSError as error:  # the frame itself still goes out
                LOG.warning("%s: no decoy written ahead of its frame: %s", self.node, error)

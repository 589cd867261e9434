"""Attacks by a domain's controller rather than by a host: a compromised administration.

``byzantine-domain``: the controller of ``domain`` sends the other domains decisions outside its
authority, forgeries, replays and equivocations (:mod:`controllers.byzantine` says what each act
is and what every honest domain must answer), in the entry's rounds, against ``victims`` honest
hosts of the other domains chosen with the seed. It names a domain, not hosts::

    [[attacks]]
    kind = "byzantine-domain"
    domain = 4
    start_round = 5
    every = 4
"""

from __future__ import annotations

from attacks.kinds import AttackKind
from common.schema import Field, positive, strings
from controllers.byzantine import ACTS

CONTROLLER = "controller"


def _acts(value: list) -> str | None:
    unknown = [a for a in value if a not in ACTS]
    if strings(value) or unknown or not value:
        return f"must name acts among {', '.join(ACTS)}"
    return None


CONTROLLER_KINDS = (
    AttackKind("byzantine-domain", CONTROLLER, fields={
        "domain": Field(int, 0, positive, "the domain whose controller is compromised"),
        "acts": Field(list, list(ACTS), _acts, "what it does (every act by default)"),
        "victims": Field(int, 2, positive, "honest hosts of other domains it bans, accuses and forges against"),
    }, help="a compromised domain controller"),
)

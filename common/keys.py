"""The run's key material: a fresh secret per run, and from it one key per pair of parties.

Every pair of neighbouring agents, every pair of domain controllers and each domain's inspection
service with its controller share a key (HMAC-SHA256 of the pair's names under the secret). Each party is handed only the keys of its
own pairs, in a file only root can read (``keys/<party>.json`` in the run folder, kept there so
a restarted agent or controller finds its keys again). The secret itself is never written: a
party holding its files can authenticate as itself to its peers, and as nobody else.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

KEY_DIR = "keys"


def pair_key(secret: bytes, a: str, b: str) -> bytes:
    """The key ``a`` and ``b`` share (the same whichever way round)."""
    return hmac.new(secret, "pair:{}|{}".format(*sorted((a, b))).encode(), hashlib.sha256).digest()


def controller_party(domain: int) -> str:
    return f"controller-d{domain}"


def inspector_party(domain: int) -> str:
    return f"inspector-d{domain}"


def agent_party(node: str) -> str:
    return f"agent-{node}"


def key_path(out: Path, party: str) -> Path:
    return Path(out) / KEY_DIR / f"{party}.json"


def run_keys(secret: bytes, domains: int, neighbours: dict[str, list[str]]) -> dict[str, dict[str, bytes]]:
    """Every party's keys by peer name: each controller's and inspection service's, each agent's."""
    keys = {}
    for domain in range(1, domains + 1):
        controller, inspector = controller_party(domain), inspector_party(domain)
        keys[controller] = {**{str(other): pair_key(secret, controller, controller_party(other))
                               for other in range(1, domains + 1) if other != domain},
                            inspector: pair_key(secret, controller, inspector)}
        keys[inspector] = {controller: pair_key(secret, controller, inspector)}
    for node, peers in neighbours.items():
        keys[agent_party(node)] = {peer: pair_key(secret, agent_party(node), agent_party(peer)) for peer in peers}
    return keys


def write_run_keys(out: Path, domains: int, neighbours: dict[str, list[str]]) -> None:
    """Every controller's and agent's key file, from a secret that dies with this call."""
    folder = Path(out) / KEY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for party, keys in run_keys(secrets.token_bytes(32), domains, neighbours).items():
        _write(key_path(out, party), keys)


def _write(path: Path, keys: dict[str, bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({peer: key.hex() for peer, key in keys.items()}, f)


def read_keys(path: Path) -> dict[str, bytes]:
    """A party's keys by peer name; a clear error if the file is missing or damaged."""
    try:
        return {peer: bytes.fromhex(key) for peer, key in json.loads(Path(path).read_text()).items()}
    except FileNotFoundError:
        raise ValueError(f"key file {path} is missing") from None
    except (ValueError, AttributeError, TypeError) as error:
        raise ValueError(f"key file {path} is damaged: {error}") from None


def peer_controller_keys(keys: dict[str, bytes]) -> dict[int, bytes]:
    """Of a controller's keys, those it shares with the other domains' controllers, by domain."""
    return {int(peer): key for peer, key in keys.items() if peer.isdigit()}

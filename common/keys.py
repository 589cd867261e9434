"""The run's key material: a fresh secret per run, and from it one key per pair of parties.

Every pair of neighbouring agents and each domain's inspection service with its controller share
a key (HMAC-SHA256 of the pair's names under the secret). Each domain controller has an Ed25519
signing key of its own (its seed derived the same way) and every domain's public key: what a
domain decides, it signs, and any third domain can check who decided it (:mod:`controllers.ledger`).
Each party is handed only its own keys, in a file only root can read (``keys/<party>.json`` in the
run folder, kept there so a restarted agent or controller finds its keys again); the domains'
public keys are also in ``keys/domains.pub.json`` for anyone auditing a ledger. The secret
itself is never written: a party holding its files can authenticate as itself, and as nobody else.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

KEY_DIR = "keys"
SIGNING = "signing"
"""A controller's own Ed25519 seed, in its key file."""
PUBLIC_PREFIX = "public-d"
"""``public-d<N>``: domain N's Ed25519 public key, in every controller's key file."""
PUBLIC_FILE = "domains.pub.json"


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


def signing_seed(secret: bytes, domain: int) -> bytes:
    """Domain ``domain``'s Ed25519 seed (32 bytes)."""
    return hmac.new(secret, f"sign:{controller_party(domain)}".encode(), hashlib.sha256).digest()


def public_key(seed: bytes) -> bytes:
    """The Ed25519 public key of a seed (raw, 32 bytes)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def run_keys(secret: bytes, domains: int, neighbours: dict[str, list[str]]) -> dict[str, dict[str, bytes]]:
    """Every party's keys by peer name: each controller's (its signing seed, every domain's public
    key, the key it shares with its inspection service), each inspection service's, each agent's."""
    seeds = {domain: signing_seed(secret, domain) for domain in range(1, domains + 1)}
    public = {f"{PUBLIC_PREFIX}{domain}": public_key(seed) for domain, seed in seeds.items()}
    keys = {}
    for domain in range(1, domains + 1):
        controller, inspector = controller_party(domain), inspector_party(domain)
        keys[controller] = {SIGNING: seeds[domain], **public, inspector: pair_key(secret, controller, inspector)}
        keys[inspector] = {controller: pair_key(secret, controller, inspector)}
    for node, peers in neighbours.items():
        keys[agent_party(node)] = {peer: pair_key(secret, agent_party(node), agent_party(peer)) for peer in peers}
    return keys


def write_run_keys(out: Path, domains: int, neighbours: dict[str, list[str]]) -> None:
    """Every controller's and agent's key file, from a secret that dies with this call."""
    folder = Path(out) / KEY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    keys = run_keys(secrets.token_bytes(32), domains, neighbours)
    for party, own in keys.items():
        _write(key_path(out, party), own)
    public = {name: key.hex() for name, key in keys.get(controller_party(1), {}).items()
              if name.startswith(PUBLIC_PREFIX)}
    (folder / PUBLIC_FILE).write_text(json.dumps(public, sort_keys=True) + "\n")


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


def domain_public_keys(keys: dict[str, bytes]) -> dict[int, bytes]:
    """Of a controller's keys (or ``domains.pub.json``'s), every domain's public key, by domain."""
    return {int(name[len(PUBLIC_PREFIX):]): key for name, key in keys.items()
            if name.startswith(PUBLIC_PREFIX) and name[len(PUBLIC_PREFIX):].isdigit()}

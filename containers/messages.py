"""Message schemas and signing shared by the panel and the node agents.

The broker is not trusted (DESIGN.md, "Architecture"): every message that crosses it is a
JSON envelope ``{"v": 1, "body": {...}, "sig": "<hex>"}`` where ``sig`` is an HMAC-SHA256
over the canonical JSON of ``body`` with the key of the node the message is for (panel to
node) or from (node to panel). A node only knows its own key, so it can neither forge
work for another node nor facts about another node.

This module is Django-free: the panel imports it, the node agent imports it.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import time
from dataclasses import dataclass

SCHEMA_VERSION = 1

# Task names: the only coupling between panel and node besides these schemas.
TASK_NODE_JOB = "hako.node.job"
TASK_PANEL_EVENT = "hako.panel.event"
TASK_PANEL_HEARTBEAT = "hako.panel.heartbeat"
PANEL_QUEUE = "panel"

# Operations a node runs. Mutating ones hold the VE's lock on the panel side.
MUTATING_OPS = ("create", "start", "stop", "restart", "destroy", "set", "passwd")
NODE_OPS = ("node_config", "template_build", "template_remove")  # node-level work, no VE
READ_OPS = ("exec", "status")
# Steps of a VE migration (panel/services/migrations.py drives them; containers/migrate.py
# runs them). The panel's migrate job holds the VE's lock, so these are not "mutating".
MIGRATE_OPS = ("migrate_receive", "migrate_send", "migrate_finish", "migrate_cleanup")
OPS = MUTATING_OPS + READ_OPS + NODE_OPS + MIGRATE_OPS

# How long a job message stays valid on the broker. A message older than this is refused
# by the node, so that a redelivery long after the panel gave up does nothing.
JOB_TTL_SECONDS = 120

EVENT_TYPES = ("running", "step", "log", "succeeded", "failed")

NODE_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class MessageError(ValueError):
    """A message is malformed, unsigned, forged, expired or stale."""


def queue_for_node(node_name: str) -> str:
    return f"node.{node_name}"


def canonical(body: dict) -> bytes:
    """The exact bytes that are signed: sorted keys, no whitespace, UTF-8."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(body: dict, key: bytes) -> dict:
    """Wrap ``body`` in a signed envelope."""
    if not key:
        raise MessageError("no signing key")
    mac = hmac.new(key, canonical(body), hashlib.sha256).hexdigest()
    return {"v": SCHEMA_VERSION, "body": body, "sig": mac}


def open_envelope(envelope, key: bytes) -> dict:
    """Check an envelope's shape and signature and return its body.

    Raises :class:`MessageError` on anything but a well-formed envelope signed with ``key``.
    """
    if not isinstance(envelope, dict) or set(envelope) != {"v", "body", "sig"}:
        raise MessageError("not a Hako envelope")
    if envelope["v"] != SCHEMA_VERSION:
        raise MessageError(f"unsupported schema version {envelope['v']!r}")
    body, sig = envelope["body"], envelope["sig"]
    if not isinstance(body, dict) or not isinstance(sig, str):
        raise MessageError("malformed envelope")
    if not key:
        raise MessageError("no key to verify with")
    expected = hmac.new(key, canonical(body), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, sig):
        raise MessageError("bad signature")
    return body


def peek_field(envelope, field: str):
    """Read an unverified field (e.g. the node name, to pick the key). Never trust it."""
    try:
        return envelope["body"][field]
    except (KeyError, TypeError):
        return None


# --- VE spec -------------------------------------------------------------------------

HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
TEMPLATE_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,63}$")

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB

# Bounds shared by the panel's validation and the node's re-validation.
LIMITS = {
    "veid": (100, 2_000_000_000),
    "memory": (16 * MiB, 1 * TiB),
    "swap": (0, 1 * TiB),
    "disk": (64 * MiB, 16 * TiB),
    "cpuunits": (8, 500_000),
    "cpulimit": (0, 100 * 1024),  # percent of one CPU; 0 = no cap
    "numproc": (16, 4_194_304),
    "uid_base": (65_536, 4_294_967_295 - 65_536),
    "iolimit": (0, 1 * TiB),       # disk bytes/s (vzctl --iolimit); 0 = unlimited
    "iopslimit": (0, 10_000_000),  # disk operations/s (vzctl --iopslimit); 0 = unlimited
}
# Limits a spec may omit (older panels and stored specs predate them): value when absent.
OPTIONAL_LIMITS = {"iolimit": 0, "iopslimit": 0}
# A non-zero I/O limit below these would all but freeze a VE's disk: refuse it as a typo.
LIMIT_FLOORS = {"iolimit": 64 * 1024, "iopslimit": 8}


def limit_ok(name: str, v) -> bool:
    """True if ``v`` is a valid value of the integer spec field ``name``."""
    lo, hi = LIMITS[name]
    if type(v) is not int or not lo <= v <= hi:
        return False
    return v == 0 or v >= LIMIT_FLOORS.get(name, 0)


IDMAP_SIZE = 65536


@dataclass(frozen=True)
class VESpec:
    """Everything a node needs to run a VE; re-validated on the node from raw JSON."""

    veid: int
    hostname: str
    template: str
    memory: int
    swap: int
    disk: int
    cpuunits: int
    cpulimit: int
    numproc: int
    uid_base: int
    addresses: tuple = ()
    nameservers: tuple = ()
    searchdomain: str = ""
    rate_in: int = 0    # bits/s to the VE, 0 = unlimited
    rate_out: int = 0   # bits/s from the VE, 0 = unlimited
    onboot: bool = False
    iolimit: int = 0
    iopslimit: int = 0

    @classmethod
    def from_dict(cls, raw) -> "VESpec":
        if not isinstance(raw, dict):
            raise MessageError("spec must be an object")
        allowed = set(cls.__dataclass_fields__)
        unknown = set(raw) - allowed
        if unknown:
            raise MessageError(f"unknown spec fields: {sorted(unknown)}")
        values = {}
        for name, (lo, hi) in LIMITS.items():
            v = raw.get(name, OPTIONAL_LIMITS.get(name))
            if not limit_ok(name, v):
                floor = f" (0 or at least {LIMIT_FLOORS[name]})" if name in LIMIT_FLOORS else ""
                raise MessageError(f"spec field {name} must be an integer in [{lo}, {hi}]{floor}")
            values[name] = v
        hostname = raw.get("hostname")
        if not isinstance(hostname, str) or not HOSTNAME_RE.match(hostname):
            raise MessageError("spec hostname is not an RFC 1123 hostname")
        template = raw.get("template")
        if not isinstance(template, str) or not TEMPLATE_RE.match(template):
            raise MessageError("spec template name is invalid")
        addresses = _address_list(raw.get("addresses", []), "addresses", limit=256)
        nameservers = _address_list(raw.get("nameservers", []), "nameservers", limit=3, any_ip=True)
        searchdomain = raw.get("searchdomain", "")
        if not isinstance(searchdomain, str) or (searchdomain and not all(
                HOSTNAME_RE.match(d) for d in searchdomain.split(" "))) or len(searchdomain) > 253:
            raise MessageError("spec searchdomain must be domain names separated by spaces")
        for rate in ("rate_in", "rate_out"):
            v = raw.get(rate, 0)
            if type(v) is not int or not 0 <= v <= 100 * 10**9:
                raise MessageError(f"spec {rate} must be bits/s between 0 and 100G")
            values[rate] = v
        onboot = raw.get("onboot", False)
        if not isinstance(onboot, bool):
            raise MessageError("spec onboot must be a boolean")
        return cls(hostname=hostname, template=template, addresses=tuple(addresses),
                   nameservers=tuple(nameservers), searchdomain=searchdomain, onboot=onboot, **values)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["addresses"] = list(self.addresses)
        d["nameservers"] = list(self.nameservers)
        return d


def check_ve_address(text: str, *, any_ip: bool = False) -> str:
    """Canonical text of one host address; refuses prefixes and addresses that can never
    belong to a VE (loopback, multicast, link-local, unspecified)."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise MessageError(f"{str(text)[:60]!r} is not an IP address") from None
    if not any_ip and (addr.is_loopback or addr.is_multicast or addr.is_unspecified or addr.is_link_local):
        raise MessageError(f"{addr} cannot be a VE address")
    return str(addr)


def _address_list(raw, name: str, *, limit: int, any_ip: bool = False) -> list[str]:
    if not isinstance(raw, list) or len(raw) > limit or not all(isinstance(a, str) for a in raw):
        raise MessageError(f"spec {name} must be a list of at most {limit} addresses")
    out = [check_ve_address(a, any_ip=any_ip) for a in raw]
    if len(set(out)) != len(out):
        raise MessageError(f"spec {name} has duplicates")
    return out


# --- per-VE identity sent with a create job -------------------------------------------
# The root password crosses the broker only as a SHA-512 crypt hash; authorized keys as
# plain OpenSSH public keys without options. Both sides check them with these functions.

PASSWORD_HASH_RE = re.compile(r"^\$6\$(rounds=[1-9][0-9]{3,8}\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}$")
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                 "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
SSH_KEYS_MAX = 64
SSH_KEY_MAX_LEN = 16 * 1024
_KEY_COMMENT_RE = re.compile(r"^[^\x00-\x1f\x7f]{0,1024}$")


def check_password_hash(value) -> str:
    """A SHA-512 crypt hash (``$6$salt$...``) as /etc/shadow holds it, or MessageError."""
    if not isinstance(value, str) or not PASSWORD_HASH_RE.match(value):
        raise MessageError("root password hash must be a SHA-512 crypt hash ($6$salt$hash)")
    return value


def check_ssh_key(line) -> str:
    """One OpenSSH public key line ``type base64 [comment]``; key options are refused."""
    import base64
    import binascii

    if not isinstance(line, str) or not line.strip():
        raise MessageError("an SSH key must be a non-empty line of text")
    if len(line) > SSH_KEY_MAX_LEN or any(c in line for c in "\r\n\x00"):
        raise MessageError("an SSH key must be one line of at most 16 KiB")
    parts = line.strip().split(None, 2)
    if parts[0] not in SSH_KEY_TYPES:
        raise MessageError(f"SSH key type {parts[0][:40]!r} is not accepted (key options such as "
                           f"command= are not accepted either); use one of: {', '.join(SSH_KEY_TYPES[:5])}")
    if len(parts) < 2:
        raise MessageError("SSH key has no key data")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise MessageError("SSH key data is not valid base64") from None
    n = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if n != len(parts[0]) or blob[4:4 + n] != parts[0].encode() or len(blob) < 4 + n + 16:
        raise MessageError(f"SSH key data does not hold a {parts[0]} key")
    comment = parts[2] if len(parts) > 2 else ""
    if not _KEY_COMMENT_RE.match(comment):
        raise MessageError("SSH key comment holds control characters or is too long")
    return " ".join(p for p in (parts[0], parts[1], comment) if p)


def check_ssh_keys(value) -> list[str]:
    if not isinstance(value, list) or len(value) > SSH_KEYS_MAX:
        raise MessageError(f"SSH keys must be a list of at most {SSH_KEYS_MAX} keys")
    return [check_ssh_key(k) for k in value]


def check_identity_args(args: dict) -> dict:
    """The identity part of a create job's args, re-validated: ``root_password_hash`` and
    ``ssh_keys`` (both optional)."""
    out = {}
    if args.get("root_password_hash") is not None:
        out["root_password_hash"] = check_password_hash(args["root_password_hash"])
    if args.get("ssh_keys") is not None:
        out["ssh_keys"] = check_ssh_keys(args["ssh_keys"])
    return out


def check_passwd_args(args: dict) -> str:
    """The args of a ``passwd`` job: ``{"root_password_hash": "$6$..."}`` and nothing else."""
    if set(args) != {"root_password_hash"}:
        raise MessageError("passwd takes exactly one argument, root_password_hash")
    return check_password_hash(args["root_password_hash"])


def check_template_name(value) -> str:
    if not isinstance(value, str) or not TEMPLATE_RE.match(value):
        raise MessageError("template name must be lower-case letters, digits, '.' and '-'")
    return value


# --- sealed secrets ---------------------------------------------------------------
# A per-migration secret crosses the broker sealed for the node that reads it: XOR with a
# keystream of HMAC-SHA256(node key, "hako-seal" | nonce | counter). The job message's own
# signature protects it from tampering; the nonce makes every sealing unique, so one node's
# key never encrypts two secrets with the same keystream.

def _keystream(key: bytes, nonce: bytes, n: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < n:
        out += hmac.new(key, b"hako-seal" + nonce + counter.to_bytes(4, "big"), hashlib.sha256).digest()
        counter += 1
    return out[:n]


def seal(secret: str, key: bytes, nonce: bytes | None = None) -> str:
    """``nonce:ciphertext`` in hex: ``secret`` (ASCII, at most 256 bytes) sealed for ``key``."""
    import secrets as _secrets

    raw = secret.encode("ascii")
    if not 1 <= len(raw) <= 256:
        raise MessageError("a sealed secret holds 1 to 256 bytes")
    nonce = nonce or _secrets.token_bytes(16)
    ks = _keystream(key, nonce, len(raw))
    return nonce.hex() + ":" + bytes(a ^ b for a, b in zip(raw, ks)).hex()


SEALED_RE = re.compile(r"^[0-9a-f]{32}:(?:[0-9a-f]{2}){1,256}$")
SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


def unseal(sealed, key: bytes) -> str:
    """The secret in a ``seal`` output, checked to be a token of URL-safe characters."""
    if not isinstance(sealed, str) or not SEALED_RE.match(sealed):
        raise MessageError("malformed sealed secret")
    nonce_hex, ct_hex = sealed.split(":")
    ct = bytes.fromhex(ct_hex)
    ks = _keystream(key, bytes.fromhex(nonce_hex), len(ct))
    try:
        secret = bytes(a ^ b for a, b in zip(ct, ks)).decode("ascii")
    except UnicodeDecodeError:
        raise MessageError("sealed secret does not open with this node's key") from None
    if not SECRET_RE.match(secret):
        raise MessageError("sealed secret does not open with this node's key")
    return secret


# --- job messages --------------------------------------------------------------------


def job_body(*, job_id: str, node: str, op: str, veid: int, generation: int, spec: dict | None,
             args: dict | None = None, ttl: int = JOB_TTL_SECONDS, now: float | None = None) -> dict:
    """Build the body of a job message (panel side)."""
    now = time.time() if now is None else now
    return {
        "type": "job",
        "job_id": job_id,
        "node": node,
        "op": op,
        "veid": veid,
        "generation": generation,
        "spec": spec,
        "args": args or {},
        "issued_at": now,
        "expires_at": now + ttl,
    }


@dataclass(frozen=True)
class JobMessage:
    """A verified, re-validated job as the node sees it."""

    job_id: str
    node: str
    op: str
    veid: int
    generation: int
    spec: VESpec | None
    args: dict
    issued_at: float
    expires_at: float

    @classmethod
    def from_body(cls, body: dict, *, node: str, now: float | None = None) -> "JobMessage":
        now = time.time() if now is None else now
        if body.get("type") != "job":
            raise MessageError("not a job message")
        if body.get("node") != node:
            raise MessageError(f"job is for node {body.get('node')!r}, not {node!r}")
        job_id = body.get("job_id")
        if not isinstance(job_id, str) or not UUID_RE.match(job_id):
            raise MessageError("bad job id")
        op = body.get("op")
        if op not in OPS:
            raise MessageError(f"unknown operation {op!r}")
        veid, gen = body.get("veid"), body.get("generation")
        if op in NODE_OPS:
            if veid != 0:
                raise MessageError("node operations carry veid 0")
        elif type(veid) is not int or not LIMITS["veid"][0] <= veid <= LIMITS["veid"][1]:
            raise MessageError("bad veid")
        if type(gen) is not int or gen < 0:
            raise MessageError("bad generation")
        issued, expires = body.get("issued_at"), body.get("expires_at")
        if not isinstance(issued, (int, float)) or not isinstance(expires, (int, float)):
            raise MessageError("missing timestamps")
        if now > expires:
            raise MessageError(f"job message expired {now - expires:.1f}s ago")
        if issued > now + 30:
            raise MessageError("job message issued in the future")
        raw_spec = body.get("spec")
        spec = VESpec.from_dict(raw_spec) if raw_spec is not None else None
        if spec is not None and spec.veid != veid:
            raise MessageError("spec veid does not match job veid")
        if op in ("create", "start", "restart", "set", "migrate_receive", "migrate_finish") and spec is None:
            raise MessageError(f"operation {op} needs a spec")
        args = body.get("args")
        if not isinstance(args, dict):
            raise MessageError("args must be an object")
        return cls(job_id=job_id, node=node, op=op, veid=veid, generation=gen, spec=spec,
                   args=args, issued_at=float(issued), expires_at=float(expires))


# --- node to panel -------------------------------------------------------------------


def event_body(*, node: str, instance: str, job_id: str, seq: int, type: str, message: str = "",
               data: dict | None = None, lines: list | None = None, now: float | None = None) -> dict:
    """Body of a job event: progress or result of one job, sequenced per job.

    ``lines`` carries log lines ``[seq, text]`` that precede the event itself."""
    if type not in EVENT_TYPES:
        raise MessageError(f"bad event type {type!r}")
    return {
        "type": "event",
        "node": node,
        "instance": instance,
        "job_id": job_id,
        "seq": seq,
        "event": type,
        "message": message,
        "data": data or {},
        "lines": lines or [],
        "ts": time.time() if now is None else now,
    }


def heartbeat_body(*, node: str, instance: str, seq: int, capacity: dict, inventory: list,
                   info: dict | None = None, now: float | None = None) -> dict:
    """Body of a heartbeat: node capacity and the inventory of its VEs."""
    return {
        "type": "heartbeat",
        "node": node,
        "instance": instance,
        "seq": seq,
        "capacity": capacity,
        "inventory": inventory,
        "info": info or {},
        "ts": time.time() if now is None else now,
    }

"""Node agent settings, read strictly from the environment.

Every per-agent path hangs off one root directory so that two agents can run on one host
(tests, migration) without touching each other's containers, images or state.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .messages import NODE_NAME_RE


class ConfigError(RuntimeError):
    pass


def _int(name: str, default: int, lo: int, hi: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"\d+", raw):
        raise ConfigError(f"{name} must be an integer, got {raw!r}")
    v = int(raw)
    if not lo <= v <= hi:
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {v}")
    return v


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _pool() -> str:
    raw = os.environ.get("HAKO_POOL", "") or "loop"
    if raw in ("loop", "none"):
        return raw
    if raw.startswith("/") and "\n" not in raw and os.path.normpath(raw) == raw:
        return raw
    raise ConfigError("HAKO_POOL must be 'loop', 'none' or the absolute path of a mounted XFS (reflink) disk")


def _size(name: str) -> int:
    raw = os.environ.get(name, "")
    if raw == "":
        return 0
    m = re.fullmatch(r"(\d{1,15})([KMGT]?)", raw.upper())
    if not m:
        raise ConfigError(f"{name} must be a size like 200G, got {raw!r}")
    return int(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " ")


def _address() -> str:
    raw = os.environ.get("HAKO_NODE_ADDRESS", "")
    if raw == "":
        return ""
    import ipaddress

    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        raise ConfigError(f"HAKO_NODE_ADDRESS must be an IP address, got {raw!r}") from None
    if addr.is_unspecified or addr.is_multicast:
        raise ConfigError("HAKO_NODE_ADDRESS must be one address of this host, not a wildcard")
    return str(addr)


def _ve_roots() -> str:
    raw = os.environ.get("HAKO_VE_ROOTS", "") or "layered"
    if raw not in ("layered", "flat"):
        raise ConfigError("HAKO_VE_ROOTS must be 'layered' or 'flat'")
    return raw


def _mirror() -> str:
    raw = os.environ.get("HAKO_DEBIAN_MIRROR", "") or "http://deb.debian.org/debian"
    if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?", raw):
        raise ConfigError("HAKO_DEBIAN_MIRROR must be an http(s) URL of a Debian mirror")
    return raw


@dataclass(frozen=True)
class AgentConfig:
    node: str
    key: bytes
    broker_url: str
    root: Path
    heartbeat_interval: float
    concurrency: int
    stop_timeout: int
    # Test-only fault injection: "op:seconds" makes the named operation sleep midway, so
    # that a test can kill the agent while a job runs. Empty in production.
    fault_delay: str
    # Storage pool for VE disks (DESIGN.md, "A provisioning path"): "loop" (an XFS loop file
    # at <root>/pool.xfs mounted at <root>/pool: tests and the embedded default), an absolute
    # path where the admin mounted a dedicated XFS disk made with reflink=1 (production), or
    # "none" (images on the root's filesystem, every disk made by mkfs + tar).
    pool: str = "loop"
    pool_size: int = 0  # bytes of the loop file; 0 = the free space of the root's filesystem
    debian_mirror: str = "http://deb.debian.org/debian"
    # The node's own address on the network between nodes: the migration endpoint (an rsync
    # daemon per incoming VE) binds to it and outgoing copies leave from it. The panel learns
    # it from the heartbeat. Empty: this node cannot send or receive migrations.
    address: str = ""
    # New VEs' roots (DESIGN.md, "Layered roots"): "layered" (a shared read-only tree per
    # template under the VE's own upper layer on its image: the template's files are cached
    # once per node, not once per VE) or "flat" (the whole root on the VE's image).
    ve_roots: str = "layered"

    @property
    def pool_dir(self) -> Path | None:
        if self.pool == "none":
            return None
        return self.root / "pool" if self.pool == "loop" else Path(self.pool)

    @property
    def pool_file(self) -> Path:
        return self.root / "pool.xfs"

    @property
    def lxcpath(self) -> Path:
        return self.root / "lxc"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def mounts(self) -> Path:
        return self.root / "mnt"

    @property
    def disks(self) -> Path:
        """Where a layered VE's image is mounted raw (its upper and work directories)."""
        return self.root / "disk"

    @property
    def lowers(self) -> Path:
        """The templates' shared read-only trees, one per template build."""
        return self.root / "lower"

    @property
    def stage(self) -> Path:
        """Where a layered VE's idmapped layers are attached while its overlay is made."""
        return self.root / "stage"

    @property
    def templates(self) -> Path:
        return self.root / "templates"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @classmethod
    def from_env(cls) -> "AgentConfig":
        node = os.environ.get("HAKO_NODE_NAME", "")
        if not NODE_NAME_RE.match(node):
            raise ConfigError("HAKO_NODE_NAME must be a DNS label (lower case, digits, '-')")
        key_hex = os.environ.get("HAKO_NODE_KEY", "")
        if not re.fullmatch(r"[0-9a-f]{64}", key_hex):
            raise ConfigError("HAKO_NODE_KEY must be 64 hex characters (the node's key from the panel)")
        broker = os.environ.get("HAKO_BROKER_URL", "redis://127.0.0.1:6379/0")
        if not broker.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("HAKO_BROKER_URL must be a redis:// URL")
        root = Path(os.environ.get("HAKO_NODE_ROOT") or f"/var/lib/hako/node-{node}")
        if not root.is_absolute():
            raise ConfigError("HAKO_NODE_ROOT must be an absolute path")
        return cls(
            node=node,
            key=bytes.fromhex(key_hex),
            broker_url=broker,
            root=root,
            heartbeat_interval=_float("HAKO_HEARTBEAT_INTERVAL", 2.0),
            concurrency=_int("HAKO_AGENT_CONCURRENCY", 4, 1, 64),
            stop_timeout=_int("HAKO_STOP_TIMEOUT", 30, 1, 3600),
            fault_delay=os.environ.get("HAKO_FAULT_DELAY", ""),
            pool=_pool(),
            pool_size=_size("HAKO_POOL_SIZE"),
            debian_mirror=_mirror(),
            address=_address(),
            ve_roots=_ve_roots(),
        )

    def ensure_dirs(self) -> None:
        for p in (self.root, self.lxcpath, self.images, self.mounts, self.templates, self.disks,
                  self.lowers, self.stage,
                  self.state, self.state / "ves", self.state / "journal", self.state / "migrations"):
            p.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)

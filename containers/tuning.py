"""Node tuning: the kernel limits that cap VE density, raised before the agent takes work.

With the default ``fs.inotify.max_user_instances=128`` only ~27 systemd VEs boot on a
node (DESIGN.md, "Node tuning"). The values are LXD's production-setup settings
(https://documentation.ubuntu.com/lxd/en/latest/reference/server_settings/), plus
``kernel.pty.max`` for consoles and the neighbour-table thresholds for routed VE addresses.

Values are only ever raised: an admin who set a limit higher keeps it. The agent writes
/proc/sys directly (no sysctl binary, no /etc/sysctl.d file it would have to own).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("hako.tuning")

PROC_SYS = Path("/proc/sys")

# key -> minimum value. Order matters for the neighbour thresholds: gc_thresh3 >= 2 >= 1.
TARGETS: dict[str, int] = {
    "fs.inotify.max_queued_events": 1048576,
    "fs.inotify.max_user_instances": 1048576,
    "fs.inotify.max_user_watches": 1048576,
    "fs.aio-max-nr": 524288,
    "kernel.keys.maxkeys": 2000,
    "kernel.keys.maxbytes": 2000000,
    "kernel.pty.max": 65536,
    # The default 32768 caps a node at about 2,000 systemd VEs (~15 processes each).
    "kernel.pid_max": 4194304,
    "vm.max_map_count": 262144,
    "net.ipv4.neigh.default.gc_thresh3": 8192,
    "net.ipv4.neigh.default.gc_thresh2": 4096,
    "net.ipv4.neigh.default.gc_thresh1": 1024,
    "net.ipv6.neigh.default.gc_thresh3": 8192,
    "net.ipv6.neigh.default.gc_thresh2": 4096,
    "net.ipv6.neigh.default.gc_thresh1": 1024,
}

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _path(key: str) -> Path:
    return PROC_SYS.joinpath(*key.split("."))


def read(key: str) -> int | None:
    try:
        return int(_path(key).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def raise_limits(targets: dict[str, int] | None = None) -> tuple[dict[str, int], dict[str, str]]:
    """Raise every key below its target. Returns (key -> value now in effect, key -> why
    it could not be read or raised)."""
    values: dict[str, int] = {}
    problems: dict[str, str] = {}
    for key, want in (targets or TARGETS).items():
        have = read(key)
        if have is None:
            problems[key] = "not available on this kernel"
            continue
        if have < want:
            try:
                _path(key).write_text(str(want))
            except OSError as e:
                problems[key] = f"cannot raise from {have}: {e.strerror}"
                values[key] = have
                continue
            now = read(key)
            log.info("tuning: %s raised from %s to %s", key, have, now)
            values[key] = now if now is not None else want
        else:
            values[key] = have
    for key, why in problems.items():
        log.warning("tuning: %s: %s", key, why)
    return values, problems


def ensure_systemd_hierarchy() -> str:
    """systemd in a VE on a cgroup v1 host needs the host's ``name=systemd`` hierarchy (LXC
    gives the VE its own directory in it). A host whose PID 1 is not systemd may lack it."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return "cgroup v2"
    target = CGROUP_ROOT / "systemd"
    if os.path.ismount(target):
        return "present"
    try:
        target.mkdir(exist_ok=True)
        import subprocess

        proc = subprocess.run(["mount", "-t", "cgroup", "-o", "none,name=systemd", "cgroup", str(target)],
                              capture_output=True, timeout=30, cwd="/")
        if proc.returncode != 0:
            raise OSError(proc.stderr.decode(errors="replace").strip())
    except OSError as e:
        log.warning("tuning: cannot mount the name=systemd cgroup hierarchy (%s): systemd VEs will not boot", e)
        return f"missing: {e}"
    log.info("tuning: mounted the name=systemd cgroup v1 hierarchy for systemd VEs")
    return "mounted"


def tune_node() -> dict:
    """Everything the agent does to the host before taking work. The result is merged into
    the heartbeat's ``info``: ``tuning`` maps each key to the value in effect."""
    values, problems = raise_limits()
    out = {"tuning": values, "systemd_cgroup": ensure_systemd_hierarchy()}
    if problems:
        out["tuning_problems"] = problems
    return out

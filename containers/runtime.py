"""The LXC runtime of a node: one unprivileged system container per VE.

Layout under the agent's root (see :mod:`containers.config`):

* ``images/<veid>.img``   the VE's disk: a sparse ext4 image with no reserved blocks, so
                          its size is a hard quota; loop-mounted while the VE runs;
* ``mnt/<veid>``          where that image is mounted; LXC gets it as a ``dir:`` rootfs with
                          ``idmap=container`` so files stay unshifted on disk while the VE
                          runs in its own id range (DESIGN.md, "A provisioning path");
* layered VEs (the default, :mod:`containers.layers`): the image holds ``upper/`` and
  ``work/``, is mounted raw at ``disk/<veid>``, and ``mnt/<veid>`` is an overlay of the
  template's shared tree ``lower/<template>.<stamp>`` and that upper layer: idmapped to
  the VE's range while it runs (LXC takes it as it is), raw for offline work;
* ``lxc/<veid>/config``   Hako's own LXC config, rewritten from the spec at every start;
* ``state/ves/<veid>.json`` the last spec applied, for inventory and start-on-boot.

Everything here builds argv lists; no value reaches a shell, and every value written into
the LXC config comes from a re-validated :class:`~containers.messages.VESpec` (integers,
an RFC 1123 hostname, a template name from a strict pattern).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import threading

from . import network
from . import identity, layers, storage
from .config import AgentConfig
from .messages import IDMAP_SIZE, VESpec
from .templates import boot_meta, template_meta, template_paths

Log = Callable[[str], None]

CGROUP_ROOT = Path("/sys/fs/cgroup")
LXCFS = Path("/var/lib/lxcfs")
CPU_PERIOD_US = 100_000
EXEC_OUTPUT_LIMIT = 64 * 1024
# At the root of a layered VE's image, beside upper/ and work/: the name of the lower
# layer (template build) it was made over. It travels with the disk when the VE migrates.
LAYER_MARK = "hako-layer"


class RuntimeError_(RuntimeError):
    """An operation failed; the message is meant for the customer's job log."""


def _run(argv: list[str], *, timeout: float = 60, check: bool = True, input: bytes | None = None):
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, cwd="/", input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RuntimeError_(f"{argv[0]} timed out after {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        raise RuntimeError_(f"{os.path.basename(argv[0])} failed: {err[-1] if err else proc.returncode}")
    return proc


CAP_SYS_RESOURCE = 24


def has_capability(cap: int) -> bool:
    """Whether this process holds capability number ``cap`` (linux/capability.h)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def _ext4_geometry(device: str) -> tuple[int, int]:
    """(block size, block count) of the ext4 filesystem on an image file or block device."""
    out = _run(["dumpe2fs", "-h", device], timeout=60).stdout.decode(errors="replace")
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    try:
        return int(fields["Block size"]), int(fields["Block count"])
    except (KeyError, ValueError):
        raise RuntimeError_(f"cannot read the filesystem size of {device}") from None


def cgroup_v2_only() -> bool:
    """True on a pure cgroup v2 host; these hosts run v1 with an empty v2 tree."""
    return (CGROUP_ROOT / "cgroup.controllers").exists()


def subordinate_ranges(path: str = "/etc/subuid", user: str = "root") -> list[tuple[int, int]]:
    ranges = []
    try:
        for line in Path(path).read_text().splitlines():
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[0] == user and parts[1].isdigit() and parts[2].isdigit():
                ranges.append((int(parts[1]), int(parts[2])))
    except FileNotFoundError:
        pass
    return ranges


def id_range_allowed(base: int) -> bool:
    """A VE's id range must lie inside root's subordinate ids, in both files.

    This is what keeps a forged or buggy spec from mapping VE root to a real host user.
    """
    for path in ("/etc/subuid", "/etc/subgid"):
        if not any(start <= base and base + IDMAP_SIZE <= start + count
                   for start, count in subordinate_ranges(path)):
            return False
    return True


def cgroup_limits(spec: VESpec) -> list[tuple[str, str]]:
    """The cgroup keys and values for a spec, in the order they must be written.

    cpuunits keeps OpenVZ's meaning (1000 is the default weight); cpulimit is a percentage
    of one CPU (100 = one core), 0 meaning no cap.
    """
    quota = -1 if spec.cpulimit == 0 else max(1000, spec.cpulimit * CPU_PERIOD_US // 100)
    if cgroup_v2_only():
        weight = max(1, min(10000, spec.cpuunits // 10))
        return [
            ("memory.max", str(spec.memory)),
            ("memory.swap.max", str(spec.swap)),
            ("cpu.weight", str(weight)),
            ("cpu.max", f"{'max' if quota < 0 else quota} {CPU_PERIOD_US}"),
            ("pids.max", str(spec.numproc)),
        ]
    shares = max(2, spec.cpuunits * 1024 // 1000)
    limits = [
        ("memory.limit_in_bytes", str(spec.memory)),
        ("memory.memsw.limit_in_bytes", str(spec.memory + spec.swap)),
        ("cpu.shares", str(shares)),
        ("cpu.cfs_period_us", str(CPU_PERIOD_US)),
        ("cpu.cfs_quota_us", str(quota)),
        ("pids.max", str(spec.numproc)),
    ]
    if not (CGROUP_ROOT / "memory" / "memory.memsw.limit_in_bytes").exists():
        limits = [kv for kv in limits if not kv[0].startswith("memory.memsw")]
    return limits


def hosts_file(spec: VESpec) -> str:
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    short = spec.hostname.split(".")[0]
    names = spec.hostname if short == spec.hostname else f"{spec.hostname} {short}"
    lines.append(f"{spec.addresses[0] if spec.addresses else '127.0.1.1'} {names}")
    return "\n".join(lines) + "\n"


def resolv_conf(spec: VESpec) -> str:
    lines = ["# Written by Hako from the VE's settings (--nameserver, --searchdomain)."]
    if spec.searchdomain:
        lines.append(f"search {spec.searchdomain}")
    lines += [f"nameserver {ns}" for ns in spec.nameservers]
    return "\n".join(lines) + "\n"


def lxcfs_mount_entries(root: Path = LXCFS) -> list[str]:
    """LXC mount entries binding lxcfs's per-container views over the VE's /proc files and
    /sys/devices/system/cpu: what lxcfs's own mount hook does, done by LXC in-process.

    Read at every start, so a node where lxcfs is not mounted starts VEs without (as the
    hook would); ``optional`` lets a file that this kernel's /proc lacks be skipped.
    """
    def bind(src: Path, dest: str) -> str:
        return f"lxc.mount.entry = {src} {dest} none bind,optional 0 0"

    entries = []
    try:
        entries += [bind(f, f"proc/{f.name}") for f in sorted((root / "proc").iterdir())]
        cpu = root / "sys/devices/system/cpu"
        if (cpu / "uevent").exists():
            entries.append(bind(cpu, "sys/devices/system/cpu"))
        elif cpu.is_dir():
            entries += [bind(f, f"sys/devices/system/cpu/{f.name}") for f in sorted(cpu.iterdir())]
    except OSError:  # lxcfs not mounted, or its mount is stale: start without its views
        return []
    return entries


def describe_limits(spec: VESpec) -> list[str]:
    """vzctl-style progress lines for the limits a spec applies."""
    mib = 1024 * 1024
    return [
        f"Setting CPU units: {spec.cpuunits}",
        f"Setting CPU limit: {spec.cpulimit or 'none'}",
        f"Setting memory: {spec.memory // mib}M, swap: {spec.swap // mib}M",
        f"Setting numproc: {spec.numproc}",
    ] + ([f"Setting iolimit: {spec.iolimit} bytes/sec"] if spec.iolimit else []) + (
        [f"Setting iopslimit: {spec.iopslimit} ops/sec"] if spec.iopslimit else [])


class Runtime:
    """VE operations on one node. Every operation is idempotent."""

    def __init__(self, cfg: AgentConfig):
        self.cfg = cfg
        self.cgroup_dir = f"hako.{cfg.node}"
        self.net = network.HostNetwork()
        self.pool = storage.Pool(cfg)
        self._lower_lock = threading.Lock()

    # --- paths -----------------------------------------------------------------------
    def image(self, veid: int) -> Path:
        return self.cfg.images / f"{veid}.img"

    def mountpoint(self, veid: int) -> Path:
        return self.cfg.mounts / str(veid)

    def ctdir(self, veid: int) -> Path:
        return self.cfg.lxcpath / str(veid)

    def spec_file(self, veid: int) -> Path:
        return self.cfg.state / "ves" / f"{veid}.json"

    def disk_dir(self, veid: int) -> Path:
        """Where a layered VE's image is mounted raw; its upper layer is ``upper/`` there."""
        return self.cfg.disks / str(veid)

    def layer_file(self, veid: int) -> Path:
        return self.cfg.state / "ves" / f"{veid}.layer"

    def layer_of(self, veid: int) -> str | None:
        """The lower layer a layered VE was made over; None for a flat VE."""
        try:
            return self.layer_file(veid).read_text().strip() or None
        except FileNotFoundError:
            return None

    def sync_root(self, veid: int) -> Path:
        """What a migration copies: a flat VE's root, or a layered VE's raw disk (its upper
        and work directories and the layer mark; the target has the same lower layer)."""
        return self.disk_dir(veid) if self.layer_of(veid) else self.mountpoint(veid)

    def lxc(self, tool: str, veid: int, *extra: str) -> list[str]:
        return [f"lxc-{tool}", "-P", str(self.cfg.lxcpath), "-n", str(veid), *extra]

    def cgroup_path(self, controller: str, veid: int) -> Path:
        if cgroup_v2_only():
            return CGROUP_ROOT / self.cgroup_dir / str(veid)
        return CGROUP_ROOT / controller / self.cgroup_dir / str(veid)

    # --- stored spec -----------------------------------------------------------------
    def load_spec(self, veid: int) -> VESpec | None:
        try:
            return VESpec.from_dict(json.loads(self.spec_file(veid).read_text())["spec"])
        except FileNotFoundError:
            return None

    def load_generation(self, veid: int) -> int:
        try:
            return int(json.loads(self.spec_file(veid).read_text()).get("generation", 0))
        except FileNotFoundError:
            return -1

    def save_spec(self, spec: VESpec, generation: int) -> None:
        path = self.spec_file(spec.veid)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"spec": spec.to_dict(), "generation": generation}))
        os.replace(tmp, path)

    def known_veids(self) -> list[int]:
        return sorted(int(p.stem) for p in (self.cfg.state / "ves").glob("*.json") if p.stem.isdigit())

    # --- state -----------------------------------------------------------------------
    def exists(self, veid: int) -> bool:
        return self.image(veid).exists()

    def init_pid(self, veid: int) -> int:
        proc = _run(self.lxc("info", veid, "-p", "-H"), timeout=15)
        return int(proc.stdout.strip())

    def is_running(self, veid: int) -> bool:
        """A VE runs while its pids cgroup holds tasks (LXC removes the cgroup at stop).

        Read from the kernel: no ``lxc-info`` process, which costs a fork of the agent.
        """
        return bool(self.nproc(veid))

    def nproc(self, veid: int) -> int | None:
        """Tasks in the VE's pids cgroup: read from the kernel, no process is spawned."""
        try:
            return int((self.cgroup_path("pids", veid) / "pids.current").read_text())
        except (FileNotFoundError, ValueError, OSError):
            return None

    def usage_sample(self, veid: int, *, reset_peak: bool = False) -> dict | None:
        """CPU and memory use of a running VE, read from its cgroups (no process spawned),
        for usage metering; None when the VE does not run.

        * ``cpu_ns``: CPU time of the VE's tasks, a counter that starts from zero with each
          new cgroup (every start); ``boot`` (the cgroup directory's inode) tells the panel
          when that happened, so that a restart between two samples is not mistaken for a
          counter that stood still;
        * ``mem_bytes``: the memory charged now (cgroup v1 ``memory.usage_in_bytes``);
        * ``mem_peak_bytes``: the kernel's high-water mark. With ``reset_peak`` it is set
          back to the current charge right after the read, so the next sample's peak covers
          only the time since this one (hourly records each get their own peak). Only the
          heartbeat may reset it: whoever else read it would steal a peak from the meter.

        cgroup v2 has no resettable high-water mark per reader before kernel 6.12, so there
        the peak is the charge at sampling time.
        """
        try:
            if cgroup_v2_only():
                cg = self.cgroup_path("cpu", veid)
                stat = dict(line.split() for line in (cg / "cpu.stat").read_text().splitlines() if " " in line)
                cpu = int(stat["usage_usec"]) * 1000
                mem = int((cg / "memory.current").read_text())
                peak, boot = mem, os.stat(cg).st_ino
            else:
                acct, memcg = self.cgroup_path("cpuacct", veid), self.cgroup_path("memory", veid)
                boot = os.stat(acct).st_ino
                cpu = int((acct / "cpuacct.usage").read_text())
                peak = int((memcg / "memory.max_usage_in_bytes").read_text())
                if reset_peak:
                    # Writing 0 sets the mark to the current charge (cgroup-v1 memory docs).
                    (memcg / "memory.max_usage_in_bytes").write_text("0")
                mem = int((memcg / "memory.usage_in_bytes").read_text())
        except (FileNotFoundError, ValueError, KeyError, OSError):
            return None  # not running (LXC removed the cgroups), or stopping right now
        return {"cpu_ns": cpu, "mem_bytes": mem, "mem_peak_bytes": max(peak, mem), "boot": boot}

    def state(self, veid: int) -> str:
        if not self.exists(veid):
            return "absent"
        return "running" if self.is_running(veid) else "stopped"

    def inventory(self) -> list[dict]:
        """State and process count of every VE this node holds, cheap enough for heartbeats.

        A VE counts as running while its pids cgroup holds tasks; LXC removes the cgroup
        when the container stops.
        """
        out = []
        try:
            traffic = self.net.counters()
        except Exception:  # counters are best effort; the inventory must still go out
            traffic = {}
        for veid in self.known_veids():
            n = self.nproc(veid)
            item = {
                "veid": veid,
                "state": "running" if n else ("stopped" if self.exists(veid) else "absent"),
                "nproc": n if n else 0,
                "generation": self.load_generation(veid),
            }
            if veid in traffic:
                item["traffic"] = traffic[veid]
            out.append(item)
        return out

    # --- disk ------------------------------------------------------------------------
    def is_mounted(self, veid: int) -> bool:
        return os.path.ismount(self.mountpoint(veid))

    def _run_view_mounted(self, veid: int) -> bool:
        """Whether ``mnt/<veid>`` is a layered VE's idmapped (running) view: there the root
        directory's owner is a host id of the VE's range, in the raw view an on-disk id."""
        try:
            return os.stat(self.mountpoint(veid)).st_uid >= IDMAP_SIZE
        except OSError:
            return False

    def mount(self, veid: int) -> None:
        """Mount the VE's root at ``mnt/<veid>`` for work from the host, ids unshifted: a
        flat VE's image, or a layered VE's raw overlay. Not for a running layered VE."""
        layer = self.layer_of(veid)
        if self.is_mounted(veid):
            if layer is None or not self._run_view_mounted(veid):
                return
            self._umount_path(self.mountpoint(veid))  # a stopped VE's running view
        mnt = self.mountpoint(veid)
        mnt.mkdir(parents=True, exist_ok=True)
        if layer is None:
            try:
                storage.mount_image(self.image(veid), mnt)
            except storage.PoolError as e:
                raise RuntimeError_(f"cannot mount the disk of VE {veid}: {e}") from None
            return
        disk = self._mount_disk(veid)
        try:
            layers.mount_overlay(self._lower(layer), disk / "upper", disk / "work", mnt)
        except layers.LayerError as e:
            raise RuntimeError_(f"cannot mount the root of VE {veid}: {e}") from None

    def mount_for_run(self, spec: VESpec) -> None:
        """Mount the root LXC starts the VE on: a flat VE's image (LXC idmaps it), or a
        layered VE's overlay made of idmapped layers, created with the VE root's ids."""
        veid = spec.veid
        layer = self.layer_of(veid)
        if layer is None:
            return self.mount(veid)
        if self.is_mounted(veid):
            if self._run_view_mounted(veid):
                return
            self._umount_path(self.mountpoint(veid))
        lower, disk = self._lower(layer), self._mount_disk(veid)
        stage = self.cfg.stage / str(veid)
        for sub in ("lower", "disk"):
            layers.detach(stage / sub)  # a crashed start's leftovers
            (stage / sub).mkdir(parents=True, exist_ok=True)
        self.mountpoint(veid).mkdir(parents=True, exist_ok=True)
        try:
            ns = layers.userns_fd(spec.uid_base, IDMAP_SIZE)
            try:
                layers.idmapped_mount(lower, stage / "lower", ns)
                layers.idmapped_mount(disk, stage / "disk", ns)
            finally:
                os.close(ns)
            layers.mount_overlay(stage / "lower", stage / "disk" / "upper", stage / "disk" / "work",
                                 self.mountpoint(veid), fs_id=spec.uid_base)
        except layers.LayerError as e:
            raise RuntimeError_(f"cannot mount the root of VE {veid}: {e}") from None
        finally:
            # The overlay holds its own clones of the layers: the staging mounts can go.
            for sub in ("lower", "disk"):
                layers.detach(stage / sub)

    def _mount_disk(self, veid: int) -> Path:
        """A layered VE's image, mounted raw at ``disk/<veid>``."""
        disk = self.disk_dir(veid)
        if not os.path.ismount(disk):
            disk.mkdir(parents=True, exist_ok=True)
            try:
                storage.mount_image(self.image(veid), disk)
            except storage.PoolError as e:
                raise RuntimeError_(f"cannot mount the disk of VE {veid}: {e}") from None
        return disk

    def umount(self, veid: int) -> None:
        """Unmount the VE's root and, for a layered VE, its raw disk."""
        self._umount_path(self.mountpoint(veid))
        self._umount_path(self.disk_dir(veid))

    @staticmethod
    def _umount_path(path: Path) -> None:
        """Unmount ``path``; a mount still busy after 2 s (the VE's last processes exiting)
        is detached lazily."""
        try:
            layers.detach(path, busy_retries=20)
        except layers.LayerError as e:
            raise RuntimeError_(str(e)) from None

    # --- shared lower layers ----------------------------------------------------------
    def _lower(self, layer: str) -> Path:
        path = self.cfg.lowers / layer
        if not path.is_dir():
            raise RuntimeError_(f"the template layer {layer} is missing on node {self.cfg.node}")
        return path

    @staticmethod
    def layer_name(template: str, archive: Path) -> str:
        """The name of a template build's shared layer: ``<template>.<stamp of its archive>``."""
        return f"{template}.{storage.Pool._stamp(archive)}"

    def ensure_lower(self, template: str, archive: Path, log: Log = lambda _: None) -> str:
        """The shared read-only tree of a template build, unpacked once per node; its name
        (``<template>.<stamp>``) is what VEs made over it record."""
        layer = self.layer_name(template, archive)
        path = self.cfg.lowers / layer
        if path.is_dir():
            return layer
        with self._lower_lock:
            if path.is_dir():
                return layer
            log(f"Unpacking OS template {template} as a shared layer (once per template build)")
            tmp = self.cfg.lowers / f".{layer}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            try:
                _run(["tar", "--numeric-owner", "-xpf", str(archive), "-C", str(tmp)], timeout=900)
                os.chmod(tmp, 0o755)
                os.rename(tmp, path)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        self.prune_lowers()
        return layer

    def prune_lowers(self) -> list[str]:
        """Delete lower layers no VE on this node uses and no cached template provides
        any more (a rebuilt or removed template); a layer in use is never touched."""
        used = {self.layer_of(v) for v in self.known_veids()}
        removed = []
        with self._lower_lock:
            for path in self.cfg.lowers.iterdir() if self.cfg.lowers.is_dir() else []:
                if path.name.startswith(".") or path.name in used:
                    continue
                template = path.name.rsplit(".", 1)[0]
                try:
                    archive, _ = template_paths(self.cfg.templates, template)
                    current = archive.exists() and self.layer_name(template, archive) == path.name
                except Exception:
                    current = False
                if not current:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path.name)
        return removed

    def make_disk(self, spec: VESpec) -> None:
        img = self.image(spec.veid)
        tmp = img.with_suffix(".img.new")
        with open(tmp, "wb") as f:
            f.truncate(spec.disk)
        os.chmod(tmp, 0o600)  # the VE's data: root only
        # -m 0: no reserved blocks, so the VE gets exactly the size it pays for. The file is
        # new and sparse, so it reads as zeros: assume_storage_prezeroed marks the inode
        # tables zeroed, and neither mkfs nor the kernel's lazy-init thread writes them
        # (16 MiB per GiB of disk, for every new VE, into the page cache and the pool).
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-T", "default", "-E",
              "lazy_itable_init=1,lazy_journal_init=1,nodiscard,assume_storage_prezeroed=1",
              "-L", f"ve{spec.veid}", str(tmp)])
        os.replace(tmp, img)

    def grow_disk(self, spec: VESpec, log: Log) -> None:
        img = self.image(spec.veid)
        size = img.stat().st_size
        mounted = self.is_mounted(spec.veid)
        loopdev = self._loop_device(img) if mounted else None
        # Decide from the filesystem, not the file: an earlier grow may have extended the
        # file and then failed to resize, and a retry must finish the job, not skip it.
        block, blocks = _ext4_geometry(loopdev or str(img))
        if spec.disk < block * blocks:
            return self.shrink_disk(spec, log, mounted)
        if block * (blocks + 1) > spec.disk:
            return
        if mounted and not has_capability(CAP_SYS_RESOURCE):
            # ext4 online resize (EXT4_IOC_RESIZE_FS) needs CAP_SYS_RESOURCE; say so before
            # touching anything, so that the VE and its disk stay exactly as they were.
            raise RuntimeError_("this node cannot grow a disk while the VE runs (its agent lacks "
                                "CAP_SYS_RESOURCE): stop the VE, set the size, start it again")
        log(f"Growing disk to {spec.disk // (1024 * 1024)}M")
        if size < spec.disk:
            with open(img, "r+b") as f:
                f.truncate(spec.disk)
        if mounted:
            if loopdev:
                _run(["losetup", "-c", loopdev])
            _run(["resize2fs", loopdev or str(img)], timeout=600)
        else:
            _run(["e2fsck", "-f", "-p", str(img)], check=False, timeout=600)
            _run(["resize2fs", str(img)], timeout=600)

    def shrink_disk(self, spec: VESpec, log: Log, mounted: bool) -> None:
        """Shrink a stopped VE's disk, if its data fits: resize2fs refuses otherwise and the
        image is only cut after the filesystem has been shrunk, so nothing is lost."""
        if mounted or self.is_running(spec.veid):
            raise RuntimeError_("a disk can only shrink while its VE is stopped")
        img = self.image(spec.veid)
        log(f"Shrinking disk to {spec.disk // (1024 * 1024)}M")
        _run(["e2fsck", "-f", "-p", str(img)], check=False, timeout=600)
        proc = _run(["resize2fs", str(img), f"{spec.disk // 1024}K"], check=False, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError_("the VE's data does not fit in the smaller disk; nothing was changed "
                                f"({proc.stderr.decode(errors='replace').strip().splitlines()[-1:]})")
        with open(img, "r+b") as f:
            f.truncate(spec.disk)

    def disk_devnum(self, veid: int) -> str:
        """``MAJ:MIN`` of the VE's own disk while it is mounted (its loop device)."""
        where = self.disk_dir(veid) if self.layer_of(veid) else self.mountpoint(veid)
        if not os.path.ismount(where):
            raise RuntimeError_(f"the disk of VE {veid} is not mounted")
        dev = os.stat(where).st_dev
        return f"{os.major(dev)}:{os.minor(dev)}"

    def apply_io_limits(self, spec: VESpec) -> None:
        """Throttle the VE's disk I/O (vzctl --iolimit bytes/s, --iopslimit ops/s, reads and
        writes each) on its own loop device, in the VE's blkio cgroup; 0 lifts a throttle.

        Runs after lxc-start (the cgroup exists then) and live on ``set``. cgroup v1 blkio
        throttling only sees I/O that the VE's tasks submit themselves: reads, direct
        (O_DIRECT) and synchronous writes (fsync, O_SYNC). Buffered writes are written back
        later by kernel flusher threads that v1 does not attribute to the VE, so they escape
        the limit until the VE syncs; cgroup v2's io.max would catch writeback too.
        """
        devnum = self.disk_devnum(spec.veid)
        if cgroup_v2_only():
            def v(n: int) -> str:
                return str(n) if n else "max"
            writes = [("io.max", f"{devnum} rbps={v(spec.iolimit)} wbps={v(spec.iolimit)} "
                                 f"riops={v(spec.iopslimit)} wiops={v(spec.iopslimit)}")]
            cg = self.cgroup_path("io", spec.veid)
        else:
            writes = [(f"blkio.throttle.{op}_{kind}_device", f"{devnum} {value}")
                      for kind, value in (("bps", spec.iolimit), ("iops", spec.iopslimit))
                      for op in ("read", "write")]
            cg = self.cgroup_path("blkio", spec.veid)
        for key, value in writes:
            try:
                (cg / key).write_text(value)
            except OSError as e:
                raise RuntimeError_(f"cannot set {key} to {value}: {e.strerror}") from None

    @staticmethod
    def _loop_device(img: Path) -> str | None:
        proc = _run(["losetup", "-j", str(img), "-O", "NAME", "-n"], check=False)
        lines = proc.stdout.decode().split()
        return lines[0] if lines else None

    # --- config ----------------------------------------------------------------------
    def write_config(self, spec: VESpec) -> None:
        meta = boot_meta(self.cfg.templates, spec.template)  # the template may be gone from the cache
        ct = self.ctdir(spec.veid)
        ct.mkdir(parents=True, exist_ok=True)
        base = spec.uid_base
        lines = [
            "# Written by the Hako node agent at every start; local edits are overwritten.",
            "lxc.include = /usr/share/lxc/config/common.conf",
            # common.conf pulls in lxcfs's hooks: a shell script forking mount(8) a dozen
            # times at every start (~40% of lxc-start) and a post-stop "sleep 0.5s" kept for
            # lxcfs's old cgroupfs, which VEs with cgroup namespaces never see. Drop both;
            # LXC does the same binds itself (lxcfs_mount_entries).
            "lxc.hook.mount =",
            "lxc.hook.post-stop =",
            *lxcfs_mount_entries(),
            f"lxc.uts.name = {spec.hostname}",
            f"lxc.rootfs.path = dir:{self.mountpoint(spec.veid)}",
            # A layered root is idmapped already (its layers are); a flat one LXC idmaps.
            *([] if self.layer_of(spec.veid) else ["lxc.rootfs.options = idmap=container"]),
            f"lxc.idmap = u 0 {base} {IDMAP_SIZE}",
            f"lxc.idmap = g 0 {base} {IDMAP_SIZE}",
            *network.lxc_config_lines(spec.veid, list(spec.addresses)),
            "lxc.autodev = 1",
            f"lxc.signal.halt = {meta.get('halt_signal', 'SIGPWR')}",
            f"lxc.init.cmd = {meta.get('init', '/sbin/init')}",
            f"lxc.cgroup.dir.container = {self.cgroup_dir}/{spec.veid}",
            f"lxc.cgroup.dir.monitor = {self.cgroup_dir}.monitor/{spec.veid}",
            f"lxc.cgroup.dir.monitor.pivot = {self.cgroup_dir}.pivot",
            f"lxc.console.logfile = {ct / 'console.log'}",
            "lxc.console.size = 1MB",
            f"lxc.log.file = {ct / 'lxc.log'}",
            "lxc.log.level = WARN",
        ]
        prefix = "lxc.cgroup2." if cgroup_v2_only() else "lxc.cgroup."
        lines += [f"{prefix}{k} = {v}" for k, v in cgroup_limits(spec)]
        # The VE's own uptime: a time namespace whose boot clock starts near zero at this
        # start. lxcfs covers /proc/uptime only; uptime(1), sysinfo(2) and timers read
        # CLOCK_BOOTTIME, which only a time namespace shifts. Rounded down: never negative.
        lines.append(f"lxc.time.offset.boot = -{int(time.clock_gettime(time.CLOCK_BOOTTIME))}s")
        tmp = ct / "config.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, ct / "config")

    def write_identity(self, spec: VESpec) -> None:
        """Per-VE identity inside the mounted root: hostname and /etc/hosts."""
        root = self.mountpoint(spec.veid)
        etc = root / "etc"
        if etc.is_symlink() or not etc.is_dir():
            raise RuntimeError_("the VE's /etc is not a directory")
        files = [("hostname", spec.hostname + "\n"), ("hosts", hosts_file(spec))]
        if spec.nameservers or spec.searchdomain:
            files.append(("resolv.conf", resolv_conf(spec)))
        for name, text in files:
            target = etc / name
            # The VE's root owns this tree: never follow a link it may have planted.
            if target.is_symlink():
                target.unlink()
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(text)

    # --- operations ------------------------------------------------------------------
    def create(self, spec: VESpec, generation: int, log: Log, fault: Callable[[], None] = lambda: None,
               ident: dict | None = None) -> dict:
        """Make the VE's disk, fill it from its template and write its identity.

        ``ident`` holds the validated identity of the create job (messages.check_identity_args):
        ``root_password_hash`` and ``ssh_keys``; host keys and machine-id are made here.
        """
        if self.exists(spec.veid) and self.spec_file(spec.veid).exists():
            log(f"VE {spec.veid} already exists on this node")
            return {"state": self.state(spec.veid)}
        if not id_range_allowed(spec.uid_base):
            raise RuntimeError_(f"id range {spec.uid_base}+{IDMAP_SIZE} is outside root's subordinate ids")
        archive, _ = template_paths(self.cfg.templates, spec.template)
        template_meta(self.cfg.templates, spec.template)  # raises if missing
        # Mounts of an earlier VE with this VEID (a killed run's leftovers) must not be
        # taken for this one's.
        if not self.exists(spec.veid):
            self.umount(spec.veid)
        layer = self.ensure_lower(spec.template, archive, log) if self.cfg.ve_roots == "layered" else None
        cloned = False
        if layer:
            log(f"Creating VE private area ({spec.disk // (1024 * 1024)}M ext4 image over the shared "
                f"{spec.template} layer)")
            self.make_disk(spec)
        else:
            cloned = self.clone_disk(spec, archive, log)
            if not cloned:
                log(f"Creating VE private area ({spec.disk // (1024 * 1024)}M ext4 image)")
                self.make_disk(spec)
        try:
            if layer:
                self._init_layered_disk(spec.veid, layer)
            self.mount(spec.veid)
            fault()
            if not cloned and not layer:
                log(f"Unpacking OS template {spec.template}")
                _run(["tar", "--numeric-owner", "-xpf", str(archive), "-C", str(self.mountpoint(spec.veid))],
                     timeout=600)
            self.write_identity(spec)
            try:
                identity.write_identity(self.mountpoint(spec.veid), hostname=spec.hostname, log=log,
                                        password_hash=(ident or {}).get("root_password_hash"),
                                        ssh_keys=(ident or {}).get("ssh_keys"))
            except identity.IdentityError as e:
                raise RuntimeError_(f"cannot write the VE's identity: {e}") from None
            self.write_config(spec)
            self.save_spec(spec, generation)
        except BaseException:
            self._remove(spec.veid)
            raise
        finally:
            if self.image(spec.veid).exists():
                self.umount(spec.veid)
        log(f"VE {spec.veid} created")
        return {"state": "stopped"}

    def _init_layered_disk(self, veid: int, layer: str) -> None:
        """Lay out a new image for a layered root: ``upper/`` (the VE's changes), ``work/``
        (overlayfs's scratch space) and the layer mark; then record the layer."""
        disk = self._mount_disk(veid)
        (disk / "upper").mkdir(mode=0o755, exist_ok=True)
        (disk / "work").mkdir(mode=0o700, exist_ok=True)
        (disk / LAYER_MARK).write_text(layer + "\n")
        self.layer_file(veid).write_text(layer + "\n")

    def adopt_layer(self, veid: int, incoming: Path | None = None) -> str | None:
        """After a migration copied a raw disk here (mounted flat at ``mnt/<veid>``): read
        its layer mark, check this node has that layer (the migration's ``incoming`` copy
        of it, or the cached template when it is the same build), and record it. None for
        a flat VE."""
        mark = self.mountpoint(veid) / LAYER_MARK
        if mark.is_symlink() or not mark.is_file():
            self.layer_file(veid).unlink(missing_ok=True)
            return None
        layer = mark.read_text().strip()
        template = layer.rsplit(".", 1)[0]
        if not (self.cfg.lowers / layer).is_dir() and incoming is not None and incoming.is_dir() \
                and any(incoming.iterdir()):
            with self._lower_lock:
                if not (self.cfg.lowers / layer).is_dir():
                    os.chmod(incoming, 0o755)
                    os.rename(incoming, self.cfg.lowers / layer)
        if not (self.cfg.lowers / layer).is_dir():
            try:
                archive, _ = template_paths(self.cfg.templates, template)
                if archive.exists() and self.layer_name(template, archive) == layer:
                    self.ensure_lower(template, archive)
            except Exception:
                pass
        self._lower(layer)  # raises when this node lacks it
        self.layer_file(veid).write_text(layer + "\n")
        return layer

    def clone_disk(self, spec: VESpec, archive: Path, log: Log) -> bool:
        """Make the VE's disk as a reflink clone of its template's golden image at the VE's
        size (DESIGN.md, "A provisioning path"). False when the pool cannot clone or the
        disk is smaller than the golden image: the caller then runs mkfs + tar."""
        if not self.pool.clone_ok:
            return False
        try:
            golden = self.pool.golden(spec.template, archive, spec.disk, log)
            if golden is None:
                return False
            img = self.image(spec.veid)
            tmp = img.with_suffix(".img.new")
            tmp.unlink(missing_ok=True)
            storage.reflink(golden, tmp)
            os.replace(tmp, img)
        except (storage.PoolError, OSError) as e:
            raise RuntimeError_(f"cannot clone the VE's disk from the golden image: {e}") from None
        log(f"Creating VE private area ({spec.disk // (1024 * 1024)}M ext4 image, reflink clone of "
            f"{spec.template})")
        return True

    def start(self, spec: VESpec, generation: int, log: Log) -> dict:
        if not self.exists(spec.veid):
            raise RuntimeError_(f"VE {spec.veid} does not exist on this node")
        if not id_range_allowed(spec.uid_base):
            raise RuntimeError_(f"id range {spec.uid_base}+{IDMAP_SIZE} is outside root's subordinate ids")
        self.save_spec(spec, generation)
        if self.is_running(spec.veid):
            log(f"VE {spec.veid} is already running")
            return {"state": "running", "nproc": self.nproc(spec.veid) or 0}
        log("Starting VE ...")
        self.mount(spec.veid)
        self.write_identity(spec)
        self.mount_for_run(spec)
        self.write_config(spec)
        if spec.addresses:
            log(f"Adding IP address(es): {' '.join(spec.addresses)}")
        log(f"Setting hostname: {spec.hostname}")
        for line in describe_limits(spec):
            log(line)
        self.clear_stale_cgroups(spec.veid)
        proc = _run(self.lxc("start", spec.veid, "-d"), check=False, timeout=60)
        if proc.returncode != 0:
            self.umount(spec.veid)
            tail = self._lxc_log_tail(spec.veid)
            raise RuntimeError_(f"lxc-start failed: {tail or proc.stderr.decode(errors='replace').strip()}")
        try:
            self.apply_io_limits(spec)
        except RuntimeError_:
            # A VE never runs without the limits it is sold with.
            _run(self.lxc("stop", spec.veid, "-k"), check=False, timeout=60)
            self.umount(spec.veid)
            raise
        self.plumb(spec)
        log("VE start in progress...")
        return {"state": "running", "nproc": self.nproc(spec.veid) or 0}

    def clear_stale_cgroups(self, veid: int) -> None:
        """Remove the empty cgroups a killed LXC monitor left behind for a stopped VE.

        LXC refuses to start a container whose fixed cgroup path (lxc.cgroup.dir.*) exists
        ("Failed to create monitor cgroup"); rmdir only removes empty cgroups, so a live
        one is never touched.
        """
        names = (f"{self.cgroup_dir}/{veid}", f"{self.cgroup_dir}.monitor/{veid}")
        for hierarchy in CGROUP_ROOT.iterdir():
            for name in names:
                top = hierarchy / name
                if not top.is_dir():
                    continue
                for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                                reverse=True) + [top]:
                    try:
                        d.rmdir()
                    except OSError:
                        pass

    def plumb(self, spec: VESpec) -> None:
        """Host-side network of a running VE (routes, proxy entries, per-interface
        settings, shaping, addresses without DAD); idempotent. Runs after every start and,
        from the agent's netlink watcher, when a reboot inside the VE made a new veth;
        the veth's ifindex is recorded so that the two do not plumb it twice."""
        try:
            ifindex = self.net.plumb(spec.veid, list(spec.addresses), spec.rate_in, spec.rate_out)
            if any(":" in a for a in spec.addresses):
                self.net.skip_dad(spec.veid, self.init_pid(spec.veid), list(spec.addresses))
        except (network.NetworkError, OSError) as e:
            raise RuntimeError_(f"network setup failed: {e}") from None
        path = self.plumbed_file(spec.veid)
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"{ifindex}\n")

    def plumbed_file(self, veid: int) -> Path:
        return self.cfg.state / "net" / f"{veid}.link"

    def plumbed_link(self, veid: int) -> int | None:
        """The ifindex of the veth that :meth:`plumb` last completed for this VE."""
        try:
            return int(self.plumbed_file(veid).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def forget_plumbed(self, veid: int) -> None:
        self.plumbed_file(veid).unlink(missing_ok=True)

    def lxc_state(self, veid: int) -> str:
        """LXC's word for the VE's state (RUNNING, STOPPED, STARTING, ...); "" if unknown."""
        proc = _run(self.lxc("info", veid, "-s", "-H"), check=False, timeout=15)
        return proc.stdout.decode(errors="replace").strip() if proc.returncode == 0 else ""

    def _lxc_log_tail(self, veid: int) -> str:
        """The first error LXC logged for this VE's last start: usually the cause."""
        try:
            lines = (self.ctdir(veid) / "lxc.log").read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return ""
        errors = [line.split(" - ", 2)[-1] for line in lines if " ERROR " in line]
        return errors[0] if errors else (lines[-1] if lines else "")

    def stop(self, veid: int, log: Log, timeout: int | None = None, kill: bool = False) -> dict:
        if not self.exists(veid):
            raise RuntimeError_(f"VE {veid} does not exist on this node")
        was_running = self.is_running(veid)
        traffic = None
        if was_running:
            # The veth's counters before it goes with the VE (the agent's watcher adds what
            # the shutdown itself sent, from the kernel's last word on the link).
            try:
                traffic = self.net.link_counters(veid)
            except Exception:
                traffic = None
            timeout = self.cfg.stop_timeout if timeout is None else timeout
            if kill:
                log("Killing VE")
                _run(self.lxc("stop", veid, "-k"), check=False, timeout=60)
            else:
                log("Stopping VE ...")
                proc = _run(self.lxc("stop", veid, "-t", str(timeout)), check=False, timeout=timeout + 30)
                if proc.returncode != 0 and self.is_running(veid):
                    log(f"VE did not stop within {timeout}s, killing it")
                    _run(self.lxc("stop", veid, "-k"), check=False, timeout=60)
            if self.is_running(veid):
                raise RuntimeError_("VE is still running after kill")
            log("VE was stopped")
        else:
            log(f"VE {veid} is not running")
        self.net.unplumb(veid, running_here=was_running)
        if was_running:
            self.forget_plumbed(veid)
        self.umount(veid)
        return {"state": "stopped", "nproc": 0, **({"traffic": traffic} if traffic else {})}

    def destroy(self, veid: int, log: Log) -> dict:
        stopped = {}
        if self.exists(veid) and self.is_running(veid):
            stopped = self.stop(veid, log, kill=True)
        log("Destroying VE private area")
        self._remove(veid)
        log(f"VE {veid} destroyed")
        return {"state": "absent", **({"traffic": stopped["traffic"]} if "traffic" in stopped else {})}

    def _remove(self, veid: int) -> None:
        self.net.unplumb(veid, running_here=self.is_running(veid))
        self.forget_plumbed(veid)
        self.remove_disk(veid)

    def remove_disk(self, veid: int) -> None:
        """Unmount and delete the VE's disk, spec, layer record and LXC directory (not its
        host interface: see :meth:`_remove`)."""
        self.umount(veid)
        for p in (self.image(veid), self.image(veid).with_suffix(".img.new"), self.spec_file(veid),
                  self.layer_file(veid)):
            p.unlink(missing_ok=True)
        shutil.rmtree(self.ctdir(veid), ignore_errors=True)
        for sub in ("lower", "disk"):
            layers.detach(self.cfg.stage / str(veid) / sub)
        for d in (self.mountpoint(veid), self.disk_dir(veid), self.cfg.stage / str(veid) / "lower",
                  self.cfg.stage / str(veid) / "disk", self.cfg.stage / str(veid)):
            try:
                d.rmdir()
            except OSError:
                pass

    def set(self, spec: VESpec, generation: int, log: Log) -> dict:
        """Apply a changed spec: limits live on a running VE, the disk grows online."""
        if not self.exists(spec.veid):
            raise RuntimeError_(f"VE {spec.veid} does not exist on this node")
        old = self.load_spec(spec.veid)
        if old and old.uid_base != spec.uid_base:
            raise RuntimeError_("a VE's id range cannot change")
        self.grow_disk(spec, log)
        running = self.is_running(spec.veid)
        if running:
            self.apply_limits(spec, old, log)
            self.apply_io_limits(spec)
            if old is not None and list(old.addresses) != list(spec.addresses):
                for line in self.net.set_addresses(spec.veid, self.init_pid(spec.veid), list(old.addresses),
                                                   list(spec.addresses)):
                    log(line)
            if old is None or (old.rate_in, old.rate_out) != (spec.rate_in, spec.rate_out):
                self.net.shape(spec.veid, spec.rate_in, spec.rate_out)
                log(f"Setting bandwidth: in {spec.rate_in or 'unlimited'}, out {spec.rate_out or 'unlimited'} bit/s")
        self.save_spec(spec, generation)
        if running:
            self.write_config(spec)
            identity_of = lambda s: (s.hostname, hosts_file(s), resolv_conf(s))  # noqa: E731
            if old is None or identity_of(old) != identity_of(spec):
                # /etc/hosts names the VE's first address and resolv.conf its nameservers:
                # rewritten live when they change (ipadd/ipdel, --nameserver, --searchdomain).
                self.write_identity_live(spec)
            if old is not None and old.hostname != spec.hostname:
                _run(self.lxc("attach", spec.veid, "--clear-env", "--", "hostname", spec.hostname), check=False)
                log(f"Set hostname: {spec.hostname}")
        log("Saved parameters for VE %d" % spec.veid)
        return {"state": "running" if running else "stopped", "nproc": self.nproc(spec.veid) or 0}

    def write_identity_live(self, spec: VESpec) -> None:
        """:meth:`write_identity` into a running VE's root. A layered VE runs on an
        idmapped view where host root has no id: there the files are written as the VE's
        root (which also keeps the VE's own ownership of them)."""
        try:
            if self._run_view_mounted(spec.veid):
                layers.as_fs_id(spec.uid_base, lambda: self.write_identity(spec))
            else:
                self.write_identity(spec)
        except OSError as e:
            raise RuntimeError_(f"cannot write the VE's /etc: {e.strerror}") from None

    def passwd(self, veid: int, password_hash: str, log: Log) -> dict:
        """Set the root password of a VE to ``password_hash`` (validated ``$6$`` crypt).

        A running VE changes it itself: ``chpasswd -e`` inside (Debian has it), the hash on
        its stdin, never in an argv that ``ps`` would show. A stopped VE's /etc/shadow, or a
        running one's without chpasswd (busybox-static), is edited in its mounted image
        (identity.set_root_password: no links followed, written aside and renamed). The hash
        is never logged.
        """
        if not self.exists(veid):
            raise RuntimeError_(f"VE {veid} does not exist on this node")
        if self.is_running(veid):
            proc = _run(self.lxc("attach", veid, "--clear-env", "-v",
                                 "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "--",
                                 "chpasswd", "-e"),
                        input=f"root:{password_hash}\n".encode(), check=False, timeout=60)
            err = (proc.stderr or proc.stdout).decode(errors="replace").replace(password_hash, "[hash]")
            if proc.returncode != 0 and 'Failed to exec "chpasswd"' in err:
                # No chpasswd in the VE (Debian's busybox-static has none): the running VE's
                # image is mounted on the host, so its /etc/shadow is edited there instead.
                self._set_shadow(veid, password_hash)
            elif proc.returncode != 0:
                tail = err.strip().splitlines()
                raise RuntimeError_(f"chpasswd failed in the VE: {tail[-1][:200] if tail else proc.returncode}")
        else:
            mounted_here = not self.is_mounted(veid)
            self.mount(veid)
            try:
                self._set_shadow(veid, password_hash)
            finally:
                if mounted_here:
                    self.umount(veid)
        log("Set root password")
        running = self.is_running(veid)
        return {"state": "running" if running else "stopped", "nproc": self.nproc(veid) or 0}

    def _set_shadow(self, veid: int, password_hash: str) -> None:
        """Edit root's line of /etc/shadow in the VE's mounted image."""
        if not self.is_mounted(veid):
            raise RuntimeError_(f"the disk of VE {veid} is not mounted")
        spec = self.load_spec(veid)
        try:
            if spec is not None and self._run_view_mounted(veid):
                # A running layered root is idmapped: write as the VE's root, whose ids exist there.
                layers.as_fs_id(spec.uid_base, lambda: identity.set_root_password(self.mountpoint(veid),
                                                                                 password_hash))
            else:
                identity.set_root_password(self.mountpoint(veid), password_hash)
        except identity.IdentityError as e:
            raise RuntimeError_(f"cannot set the root password: {e}") from None
        except OSError as e:  # strerror only: the host's paths are not the customer's business
            raise RuntimeError_(f"cannot set the root password: {e.strerror}") from None

    def apply_limits(self, spec: VESpec, old: VESpec | None, log: Log) -> None:
        """Write the cgroup limits of a running VE directly into its cgroups."""
        limits = cgroup_limits(spec)
        if not cgroup_v2_only() and old is not None and spec.memory + spec.swap > old.memory + old.swap:
            # v1 refuses memory > memsw: raise memsw before memory when growing.
            limits.sort(key=lambda kv: 0 if kv[0] == "memory.memsw.limit_in_bytes" else 1)
        for key, value in limits:
            controller = key.split(".")[0]
            path = self.cgroup_path(controller, spec.veid) / key
            try:
                path.write_text(value)
            except OSError as e:
                raise RuntimeError_(f"cannot set {key} to {value}: {e.strerror}") from None
        for line in describe_limits(spec):
            log(line)

    def exec(self, veid: int, argv: list[str], timeout: float, log: Log) -> dict:
        if not self.is_running(veid):
            raise RuntimeError_(f"VE {veid} is not running")
        cmd = self.lxc("attach", veid, "--clear-env", "-v", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                       "-v", "HOME=/root", "--", *argv)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, cwd="/", start_new_session=True)
        timed_out = False
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        truncated = len(out) > EXEC_OUTPUT_LIMIT
        out = out[:EXEC_OUTPUT_LIMIT]
        return {
            "exit_code": None if timed_out else proc.returncode,
            "timed_out": timed_out,
            "output": out.decode(errors="replace"),
            "truncated": truncated,
            "state": "running",
            "nproc": self.nproc(veid) or 0,
        }

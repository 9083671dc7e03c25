"""Node side of VE migration: restart mode with pre-copy (DESIGN.md, "Migration").

The panel (panel/services/migrations.py) drives a migration as a sequence of signed jobs,
each idempotent, on the two nodes:

``migrate_receive`` (target)  makes an empty disk for the VE, mounts it (raw, not idmapped:
                              files keep their on-disk ids) and starts an ``rsync`` daemon
                              bound to this node's address on a free port, with a one-time
                              secret (sealed for this node in the job), one auth user, a
                              chroot to that mount and ``hosts allow`` = the source node;
``migrate_send`` (source)     pushes the VE's raw mount to that daemon with
                              ``rsync -aHAXS --numeric-ids --delete``: ``precopy`` while the
                              VE runs, ``final`` after stopping it, then verifies the copy
                              with a ``--checksum`` dry run that must find nothing to do;
``migrate_finish`` (target)   stops the daemon, flushes the disk (``sync -f`` reports a full
                              pool's write errors), saves the spec and starts the VE if it ran;
``migrate_cleanup``           target: stops and deletes an incoming copy (rollback), or just
                              forgets the migration (``commit``); source: deletes the VE's
                              old copy, which the panel asks for only after the target runs.

An incoming VE is marked by ``state/migrations/<veid>.json`` until commit: its spec is not
saved before ``migrate_finish``, so neither the inventory nor start-on-boot see a half-copied
VE, and only a marked copy can be deleted by a target cleanup. Data moves node to node over
the network (never through the panel, never as a local copy), so the same code works
across hosts. Everything builds argv lists.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from . import messages as m
from .config import AgentConfig
from .runtime import Runtime, RuntimeError_, _run

Log = Callable[[str], None]

RSYNC_USER = "hako"
RSYNC_MODULE = "ve"
# A template's shared layer, sent once to a node that lacks it (layered VEs).
RSYNC_LOWER_MODULE = "lower"
LAYER_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\.[0-9a-f]{1,16}-[0-9a-f]{1,16}$")
# rsync flags shared by every pass: archive, hard links, ACLs, xattrs, sparse files,
# numeric ids (the VE's ids mean nothing on the host), deletions mirrored.
RSYNC_FLAGS = ["-aHAXS", "--numeric-ids", "--delete"]
PROGRESS_EVERY = 1.0  # seconds between progress lines in the job log
_PROGRESS_RE = re.compile(r"^\s*([\d,]+)\s+(\d+)%\s+(\S+)")
# Daemons started by this process, reaped by a thread so they leave no zombies.
_DAEMONS: dict[int, subprocess.Popen] = {}


def _uuid(value, what: str = "migration") -> str:
    if not isinstance(value, str) or not m.UUID_RE.match(value):
        raise RuntimeError_(f"refused: bad {what} id")
    return value


def _ip(value, what: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except (ValueError, TypeError):
        raise RuntimeError_(f"refused: {what} is not an IP address") from None


def _host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


class Migrations:
    """Migration steps of one node agent."""

    def __init__(self, cfg: AgentConfig, runtime: Runtime, fault: Callable[[str], Callable[[], None]]):
        self.cfg = cfg
        self.rt = runtime
        self.fault = fault
        self.dir = cfg.state / "migrations"

    # --- bookkeeping -------------------------------------------------------------------
    def marker(self, veid: int) -> Path:
        return self.dir / f"{veid}.json"

    def incoming_lower(self, migration: str) -> Path:
        return self.cfg.lowers / f".incoming-{migration}"

    def workdir(self, migration: str) -> Path:
        return self.dir / migration

    def read_marker(self, veid: int) -> dict | None:
        try:
            return json.loads(self.marker(veid).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def write_marker(self, veid: int, data: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.marker(veid).with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.marker(veid))

    def need_address(self) -> str:
        if not self.cfg.address:
            raise RuntimeError_(f"node {self.cfg.node} has no migration address (HAKO_NODE_ADDRESS)")
        return self.cfg.address

    # --- the rsync daemon (target) -------------------------------------------------------
    def _daemon_pid(self, migration: str) -> int | None:
        """The pid of this migration's daemon, if that process is still ours."""
        work = self.workdir(migration)
        try:
            pid = int((work / "rsyncd.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid if str(work / "rsyncd.conf").encode() in cmdline else None

    def stop_daemon(self, migration: str) -> None:
        pid = self._daemon_pid(migration)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            for _ in range(50):
                if not Path(f"/proc/{pid}").exists() or self._daemon_pid(migration) is None:
                    break
                time.sleep(0.05)
            if self._daemon_pid(migration) is not None:
                os.kill(pid, signal.SIGKILL)
        work = self.workdir(migration)
        for name in ("secrets", "rsyncd.conf", "rsyncd.pid", "rsyncd.lock"):
            (work / name).unlink(missing_ok=True)

    def stop_stale_daemons(self) -> int:
        """At agent start: stop the daemons an earlier agent process left (they die with the
        agent's process group, but a daemon started by hand or a moved agent might not)."""
        n = 0
        for work in self.dir.glob("*-*-*-*-*"):
            if work.is_dir() and self._daemon_pid(work.name) is not None:
                self.stop_daemon(work.name)
                n += 1
        return n

    def _start_daemon(self, migration: str, mnt: Path, secret: str, source: str) -> int:
        address = self.need_address()
        work = self.workdir(migration)
        work.mkdir(parents=True, exist_ok=True)
        os.chmod(work, 0o700)
        self.stop_daemon(migration)
        secrets_file = work / "secrets"
        fd = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{RSYNC_USER}:{secret}\n")
        conf = work / "rsyncd.conf"
        # Every value comes from validated data: paths we made, a checked IP address.
        conf.write_text("\n".join([
            f"pid file = {work / 'rsyncd.pid'}",
            f"lock file = {work / 'rsyncd.lock'}",
            "use chroot = yes",
            "numeric ids = yes",
            "munge symlinks = no",
            "reverse lookup = no",
            "uid = 0",
            "gid = 0",
            # A connection holds its slot until its process is gone, and the verification
            # pass connects right after the copy: a few slots (the source address and the
            # secret are what keeps others out).
            "max connections = 4",
            "timeout = 120",
            # The VE's disk, and where a template layer this node lacks arrives (finish()
            # puts it in place); both writable by the source alone, with the secret.
            *(line for name, path in ((RSYNC_MODULE, mnt), (RSYNC_LOWER_MODULE, self.incoming_lower(migration)))
              for line in (f"[{name}]", f"path = {path}", "read only = no", "list = no",
                           f"auth users = {RSYNC_USER}", f"secrets file = {secrets_file}", "strict modes = yes",
                           f"hosts allow = {source}")),
            "",
        ]))
        for attempt in range(5):
            port = self._free_port(address)
            # --no-detach: the daemon stays in the agent's process group, so it ends with the
            # agent (a killed target node stops receiving); a thread reaps it.
            proc = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={conf}",
                                     f"--address={address}", f"--port={port}"],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, cwd="/")
            _DAEMONS[proc.pid] = proc
            threading.Thread(target=self._reap, args=(proc,), daemon=True).start()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with socket.create_connection((address, port), timeout=0.5):
                        (work / "rsyncd.pid").write_text(str(proc.pid))
                        return port
                except OSError:
                    time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            if "in use" not in err:
                raise RuntimeError_(f"the migration endpoint did not start: {err[-200:] or 'no answer'}")
        raise RuntimeError_("no free port for the migration endpoint")

    @staticmethod
    def _reap(proc: subprocess.Popen) -> None:
        proc.wait()
        _DAEMONS.pop(proc.pid, None)

    @staticmethod
    def _free_port(address: str) -> int:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
            return s.getsockname()[1]

    # --- operations ----------------------------------------------------------------------
    def receive(self, job: m.JobMessage, log: Log) -> dict:
        """Prepare the target: an empty disk of the VE's size, mounted, and an endpoint."""
        spec, veid = job.spec, job.veid
        migration = _uuid(job.args.get("migration"))
        source = _ip(job.args.get("source_address"), "source_address")
        try:
            secret = m.unseal(job.args.get("secret"), self.cfg.key)
        except m.MessageError as e:
            raise RuntimeError_(f"refused: {e}") from None
        mark = self.read_marker(veid)
        if mark is None and (self.rt.spec_file(veid).exists() or self.rt.exists(veid)):
            raise RuntimeError_(f"VE {veid} already exists on node {self.cfg.node}; it cannot receive it")
        if mark is not None and mark.get("migration") != migration:
            raise RuntimeError_(f"VE {veid} is being received by another migration on node {self.cfg.node}")
        from .runtime import id_range_allowed

        if not id_range_allowed(spec.uid_base):
            raise RuntimeError_(f"id range {spec.uid_base}+{m.IDMAP_SIZE} is outside root's subordinate ids "
                                f"on node {self.cfg.node}")
        # The marker first: whatever happens next, a cleanup knows this copy is incoming.
        self.write_marker(veid, {"migration": migration, "state": "receiving", "since": time.time()})
        # What arrives is a flat root or a layered VE's raw disk; finish() tells which.
        self.rt.layer_file(veid).unlink(missing_ok=True)
        if not self.rt.exists(veid):
            log(f"Creating VE private area ({spec.disk // (1024 * 1024)}M ext4 image) on {self.cfg.node}")
            self.rt.make_disk(spec)
        self.rt.mount(veid)
        self.incoming_lower(migration).mkdir(mode=0o700, parents=True, exist_ok=True)
        port = self._start_daemon(migration, self.rt.mountpoint(veid), secret, source)
        log(f"Migration endpoint listening on {_host(self.cfg.address)}:{port}")
        layers = sorted(p.name for p in self.cfg.lowers.iterdir() if LAYER_RE.match(p.name)) \
            if self.cfg.lowers.is_dir() else []
        return {"address": self.cfg.address, "port": port, "state": "receiving", "layers": layers[:64]}

    def send(self, job: m.JobMessage, log: Log) -> dict:
        """Push the VE's disk to the target's endpoint: ``precopy`` (VE keeps running) or
        ``final`` (stop the VE, last pass, verify). A stopped VE needs only ``final``."""
        veid = job.veid
        migration = _uuid(job.args.get("migration"))
        phase = job.args.get("phase")
        if phase not in ("precopy", "final"):
            raise RuntimeError_("refused: phase must be precopy or final")
        target = _ip(job.args.get("target_address"), "target_address")
        port = job.args.get("port")
        if type(port) is not int or not 1 <= port <= 65535:
            raise RuntimeError_("refused: bad port")
        bwlimit = job.args.get("bwlimit", 0)
        if type(bwlimit) is not int or not 0 <= bwlimit <= 10**8:
            raise RuntimeError_("refused: bwlimit must be KiB/s between 0 and 10^8")
        try:
            secret = m.unseal(job.args.get("secret"), self.cfg.key)
        except m.MessageError as e:
            raise RuntimeError_(f"refused: {e}") from None
        self.need_address()
        if not self.rt.exists(veid):
            raise RuntimeError_(f"VE {veid} does not exist on node {self.cfg.node}")
        target_layers = job.args.get("target_layers", [])
        if not isinstance(target_layers, list) or len(target_layers) > 64 or not all(
                isinstance(x, str) and LAYER_RE.match(x) for x in target_layers):
            raise RuntimeError_("refused: target_layers must be a list of layer names")
        url = f"rsync://{RSYNC_USER}@{_host(target)}:{port}/{RSYNC_MODULE}/"
        running = self.rt.is_running(veid)
        out: dict = {"migration": migration, "phase": phase, "was_running": running}
        layer = self.rt.layer_of(veid)
        # A layered VE needs its template layer on the target: sent once per node, while
        # the VE runs (pre-copy), or with the copy of a stopped VE.
        if layer and layer not in target_layers and (phase == "precopy" or not running):
            self._send_layer(veid, layer, f"rsync://{RSYNC_USER}@{_host(target)}:{port}/{RSYNC_LOWER_MODULE}/",
                             secret, log, bwlimit)
        if phase == "precopy":
            if not running:
                log("VE is not running: no pre-copy needed")
                return {**out, "state": "stopped", "bytes": 0}
            log(f"Pre-copying the VE's disk to {_host(target)} while it runs")
            out.update(self._rsync(veid, url, secret, log, bwlimit))
            out["state"] = "running"
            return out
        mounted_here = False
        if running:
            out["stop_started"] = time.time()
            try:
                self.rt.stop(veid, log)
            except RuntimeError_ as e:
                if not self.rt.is_running(veid):
                    raise
                # A clean shutdown that hangs (lxc-stop itself timing out) ends as vzctl
                # stop does after its timeout: the VE is killed, its disk is intact.
                log(f"Clean stop failed ({e}); killing the VE")
                self.rt.stop(veid, log, kill=True)
            out["stopped_at"] = time.time()
            self.fault("migrate_stopped")()
        try:
            if not self.rt.is_mounted(veid):
                self._wait_released(veid)
                self.rt.mount(veid)
                mounted_here = True
            log("Final pass: copying what changed" if running else f"Copying the VE's disk to {_host(target)}")
            out.update(self._rsync(veid, url, secret, log, bwlimit))
            t0 = time.monotonic()
            mismatch = self._verify(veid, url, secret)
            out["verify_seconds"] = round(time.monotonic() - t0, 3)
            if mismatch:
                raise RuntimeError_(f"verification found {len(mismatch)} difference(s) between the copies, "
                                    f"first: {mismatch[0][:200]}")
            log(f"Verified: every file's checksum matches on the target ({out['verify_seconds']:.2f}s)")
            out["verified"] = True
        finally:
            if mounted_here or not self.rt.is_running(veid):
                self.rt.umount(veid)
        out["state"] = "stopped"
        return out

    def _send_layer(self, veid: int, layer: str, url: str, secret: str, log: Log, bwlimit: int) -> None:
        src = self.rt._lower(layer)
        log(f"Sending the shared layer {layer} (the target node does not have it yet)")
        self._rsync(veid, url, secret, log, bwlimit, src_dir=src)
        mismatch = self._verify(veid, url, secret, src_dir=src)
        if mismatch:
            raise RuntimeError_(f"verification of the layer found {len(mismatch)} difference(s), "
                                f"first: {mismatch[0][:200]}")
        log(f"Layer {layer} verified on the target")

    def _wait_released(self, veid: int, timeout: float = 120) -> None:
        """Wait until no loop device holds the VE's image any more.

        A stop unmounts the disk, lazily when the VE's last processes still hold it: that
        filesystem then lives on, detached, until they let go, and writes back what the VE
        wrote last. Mounting the image again before it is gone would give a second view of
        a disk still being written (files not yet written back read as empty) and copy that
        to the target: so the final pass waits for the loop device to go."""
        img = self.rt.image(veid)
        deadline = time.monotonic() + timeout
        while self.rt._loop_device(img) is not None:
            if time.monotonic() > deadline:
                raise RuntimeError_(f"the disk of VE {veid} is still in use {timeout:.0f}s after the stop; "
                                    "not copying from it")
            time.sleep(0.1)

    def _rsync_argv(self, veid: int, url: str, extra: list[str], src_dir: Path | None = None) -> list[str]:
        src = f"{src_dir or self.rt.sync_root(veid)}/"
        return ["rsync", *RSYNC_FLAGS, f"--address={self.cfg.address}", "--timeout=60", "--contimeout=15",
                *extra, src, url]

    def _env(self, secret: str) -> dict:
        # The secret reaches rsync in its environment (root-readable only), never in argv.
        return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "RSYNC_PASSWORD": secret,
                "LC_ALL": "C"}

    def _rsync(self, veid: int, url: str, secret: str, log: Log, bwlimit: int, src_dir: Path | None = None) -> dict:
        """One pass; progress lines (bytes) into the job log at most once a second."""
        extra = ["--info=progress2", "--stats", "--no-inc-recursive"]
        if bwlimit:
            extra.append(f"--bwlimit={bwlimit}")
        argv = self._rsync_argv(veid, url, extra, src_dir)
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=self._env(secret), cwd="/")
        err_lines: list[str] = []
        err_reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr.read().decode(errors="replace")
                                                                      .splitlines()), daemon=True)
        err_reader.start()
        buf, stats, shown, last = b"", {}, 0.0, ""
        while True:
            chunk = proc.stdout.read1(4096) if hasattr(proc.stdout, "read1") else proc.stdout.read(4096)
            if not chunk:
                break
            buf += chunk
            *parts, buf = re.split(rb"[\r\n]", buf)
            for raw in parts:
                line = raw.decode(errors="replace")
                mt = _PROGRESS_RE.match(line)
                if mt:
                    last = line
                    now = time.monotonic()
                    if now - shown >= PROGRESS_EVERY:
                        shown = now
                        done = int(mt.group(1).replace(",", ""))
                        log(f"Copied {done:,} bytes ({mt.group(2)}%, {mt.group(3)})")
                elif ":" in line:
                    k, _, v = line.partition(":")
                    stats[k.strip()] = v.strip()
        rc = proc.wait()
        err_reader.join(timeout=10)  # rsync's last words explain the exit code
        seconds = time.monotonic() - t0
        if rc != 0:
            tail = [line for line in err_lines if line.strip()]
            text = " ".join(tail)
            hint = (" (the target node's disk is full or failing)"
                    if "Read-only file system" in text or "No space left" in text else "")
            raise RuntimeError_(f"copy to the target failed (rsync exit {rc}){hint}: "
                                f"{tail[0][:300] if tail else 'no message'}")

        def num(key: str) -> int:
            return int(re.sub(r"[^\d]", "", stats.get(key, "0").split()[0] or "0") or 0)

        sent = num("Total bytes sent")
        literal = num("Literal data")
        total = num("Total file size")
        if last:
            log(f"Copied {literal:,} bytes of changed data ({sent:,} bytes sent) of {total:,} in "
                f"{seconds:.2f}s")
        return {"bytes": literal, "bytes_sent": sent, "total_bytes": total, "copy_seconds": round(seconds, 3)}

    def _verify(self, veid: int, url: str, secret: str, src_dir: Path | None = None) -> list[str]:
        """A --checksum dry run against the target: every difference it would fix."""
        argv = self._rsync_argv(veid, url, ["--checksum", "--dry-run", "--itemize-changes", "--out-format=%i %n"],
                                src_dir)
        proc = subprocess.run(argv, capture_output=True, timeout=3600, env=self._env(secret), cwd="/")
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace").strip().splitlines()
            raise RuntimeError_(f"verification against the target failed (rsync exit {proc.returncode}): "
                                f"{tail[0][:300] if tail else 'no message'}")
        return [line for line in proc.stdout.decode(errors="replace").splitlines() if line.strip()]

    def finish(self, job: m.JobMessage, log: Log) -> dict:
        """Make the received copy this node's VE: flush it, save its spec, start it if it ran."""
        spec, veid = job.spec, job.veid
        migration = _uuid(job.args.get("migration"))
        start = job.args.get("start") is True
        mark = self.read_marker(veid)
        if mark is None or mark.get("migration") != migration:
            raise RuntimeError_(f"no incoming copy of VE {veid} for this migration on node {self.cfg.node}")
        self.stop_daemon(migration)
        if mark.get("state") != "finished":
            if not self.rt.is_mounted(veid):
                self.rt.mount(veid)
            # A full pool shows up here: writes the loop device could not store fail the sync.
            proc = _run(["sync", "-f", str(self.rt.mountpoint(veid))], check=False, timeout=600)
            if proc.returncode != 0:
                raise RuntimeError_(f"the copy could not be written to disk on {self.cfg.node}: "
                                    f"{proc.stderr.decode(errors='replace').strip()[:200] or 'sync failed'}")
            self.fault("migrate_finish")()
            try:
                layer = self.rt.adopt_layer(veid, incoming=self.incoming_lower(migration))
            except RuntimeError_ as e:
                raise RuntimeError_(f"{e}: build the VE's template there first") from None
            if layer:
                # Received raw: mounted again as the layered root it is at the start.
                self.rt.umount(veid)
                log(f"VE {veid} runs over the shared layer {layer}")
            self.rt.save_spec(spec, job.generation)
            self.write_marker(veid, {**mark, "state": "finished"})
        out: dict = {"migration": migration}
        if start:
            out.update(self.rt.start(spec, job.generation, log))
            out["started_at"] = time.time()
        else:
            if not self.rt.is_running(veid):
                self.rt.umount(veid)
            out.update(state=self.rt.state(veid), nproc=self.rt.nproc(veid) or 0)
        log(f"VE {veid} is on node {self.cfg.node} now")
        return out

    def cleanup(self, job: m.JobMessage, log: Log) -> dict:
        """``target``: delete an incoming copy (rollback) or, with ``commit``, keep it and
        forget the migration; ``source``: delete the VE's old copy after a commit."""
        veid = job.veid
        migration = _uuid(job.args.get("migration"))
        role = job.args.get("role")
        if role == "target":
            mark = self.read_marker(veid)
            self.stop_daemon(migration)
            if mark is None or mark.get("migration") != migration:
                log(f"No incoming copy of VE {veid} for this migration on node {self.cfg.node}")
                return {"state": self.rt.state(veid) if mark is None and self.rt.spec_file(veid).exists()
                        else "absent", "removed": False}
            if job.args.get("commit") is True:
                self.marker(veid).unlink(missing_ok=True)
                self._drop_workdir(migration)
                return {"state": self.rt.state(veid), "nproc": self.rt.nproc(veid) or 0, "removed": False}
            if self.rt.exists(veid) and self.rt.is_running(veid):
                self.rt.stop(veid, log, kill=True)
            log(f"Removing the incoming copy of VE {veid} from node {self.cfg.node}")
            self._drop_copy(veid)
            self.marker(veid).unlink(missing_ok=True)
            self._drop_workdir(migration)
            return {"state": "absent", "removed": True}
        if role == "source":
            if self.read_marker(veid) is not None:
                raise RuntimeError_(f"VE {veid} on node {self.cfg.node} is an incoming copy, not a source")
            if not self.rt.exists(veid) and not self.rt.spec_file(veid).exists():
                log(f"VE {veid} is already gone from node {self.cfg.node}")
                return {"state": "absent", "removed": False}
            if self.rt.is_running(veid):
                raise RuntimeError_(f"VE {veid} runs on node {self.cfg.node}; its old copy is not removed")
            log(f"Removing the old copy of VE {veid} from node {self.cfg.node}")
            self._drop_copy(veid)
            return {"state": "absent", "removed": True}
        raise RuntimeError_("refused: role must be target or source")

    def _drop_copy(self, veid: int) -> None:
        """Delete a copy that does not run here: disk, spec, LXC dir. Not Runtime._remove:
        that also deletes the host interface ``vz<veid>``, which belongs to the VE running on
        the other node when both nodes share a host (tests) and must not be touched."""
        self.rt.remove_disk(veid)

    def _drop_workdir(self, migration: str) -> None:
        shutil.rmtree(self.incoming_lower(migration), ignore_errors=True)
        work = self.workdir(migration)
        self.stop_daemon(migration)
        for p in work.glob("*") if work.is_dir() else []:
            p.unlink(missing_ok=True)
        try:
            work.rmdir()
        except OSError:
            pass

"""The node agent: a Celery worker that consumes ``node.<name>`` and runs VE jobs.

Run it as root on each host: ``python -m containers.agent`` with the environment described
in :mod:`containers.config`. It holds no database credentials; it learns what to do from
signed job messages and reports back through signed, sequenced events and heartbeats.

Safety rules enforced here (DESIGN.md, "Jobs"):

* a message that is unsigned, forged, for another node, expired, or older than the VE's
  last applied generation does nothing;
* a job id is run at most once: the journal in ``state/journal`` records each job the agent
  started, so a redelivered message for a job that ran (or was cut short by a crash) is
  refused; a job cut short by a crash is reported failed when the agent comes back;
* VEs are not children of the agent (``lxc-start -d`` daemonizes), so stopping or
  restarting the agent never stops a VE.
"""
from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid

import psutil
from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from . import messages as m
from .config import AgentConfig
from .migrate import Migrations
from .runtime import Runtime, RuntimeError_
from .templates import TemplateError, ensure_builtin, list_templates
from . import tuning
from .storage import PoolError
from .templates import build_template, remove_template, template_paths

log = logging.getLogger("hako.agent")

# Log lines of a job are sent in batches at most this old (see Agent.handle).
LOG_BATCH_SECONDS = 0.25


class Agent:
    """State shared by the job handlers and the heartbeat thread of one agent process."""

    def __init__(self, cfg: AgentConfig, app: Celery):
        self.cfg = cfg
        self.app = app
        self.runtime = Runtime(cfg)
        self.instance = str(uuid.uuid4())  # changes at every agent start: the panel reaps on it
        self.started_at = time.time()
        self.hb_seq = 0
        self._stop = threading.Event()
        self.node_info: dict = {}  # what prepare_host did (tuning), for the heartbeat
        # Network of the VEs' veths, kept by the netlink watcher (containers/network.py):
        self._net_lock = threading.Lock()
        self._plumbed: dict[int, int] = {}  # veid -> ifindex of the veth plumbed last
        self._replumbing: set[tuple[int, int]] = set()  # (veid, ifindex) being plumbed now
        self._seen_traffic: dict[int, dict] = {}  # veid -> last counters seen of its veth
        self._final_traffic: dict[int, list] = {}  # veid -> last counters of veths gone, unsent
        self._unsent_peaks: dict[int, int] = {}  # memory peaks read for a heartbeat not yet sent
        self.migrations = Migrations(cfg, self.runtime, self.fault)

    # --- outbound ----------------------------------------------------------------------
    def send(self, task: str, body: dict) -> None:
        self.app.send_task(task, args=[m.sign(body, self.cfg.key)], queue=m.PANEL_QUEUE,
                           serializer="json", retry=True,
                           retry_policy={"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5})

    def event(self, job_id: str, seq: int, type_: str, message: str = "", data: dict | None = None,
              lines: list | None = None):
        self.send(m.TASK_PANEL_EVENT, m.event_body(node=self.cfg.node, instance=self.instance,
                                                   job_id=job_id, seq=seq, type=type_,
                                                   message=message, data=data, lines=lines))

    def capacity(self) -> dict:
        vm = psutil.virtual_memory()
        du = psutil.disk_usage(str(self.cfg.images))
        return {
            "cpus": psutil.cpu_count() or 1,
            "load1": os.getloadavg()[0],
            "cpu_percent": psutil.cpu_percent(interval=None),
            "mem_total": vm.total,
            "mem_available": vm.available,
            "disk_total": du.total,
            "disk_free": du.free,
        }

    def heartbeat(self) -> None:
        self.hb_seq += 1
        sampled = time.time()  # before the inventory: the panel ignores it for rows changed since
        inventory = self.runtime.inventory()
        self.attach_usage(inventory)
        finals = self.attach_traffic(inventory)
        body = m.heartbeat_body(
            node=self.cfg.node, instance=self.instance, seq=self.hb_seq, capacity=self.capacity(),
            inventory=inventory, now=sampled,
            info={"templates": list_templates(self.cfg.templates), "started_at": self.started_at,
                  "hostname": socket.gethostname(), "kernel": os.uname().release,
                  "pool": self.runtime.pool.info(), "address": self.cfg.address, **self.node_info},
        )
        self.send(m.TASK_PANEL_HEARTBEAT, body)
        # Sent: the peaks read (and reset in the kernel) for it have reached the broker.
        self._unsent_peaks.clear()
        with self._net_lock:
            for veid, sent in finals.items():
                left = [t for t in self._final_traffic.get(veid, []) if t not in sent]
                if left:
                    self._final_traffic[veid] = left
                else:
                    self._final_traffic.pop(veid, None)

    def attach_traffic(self, inventory: list) -> dict[int, list]:
        """Remember each veth's counters, and add to the inventory the last counters of the
        VEs' veths that went away since the last heartbeat sent (``traffic_final``: a stop,
        a reboot or a halt inside the VE). Returns what was attached (all kept finals:
        those of VEs no longer listed are dropped with it)."""
        with self._net_lock:
            for item in inventory:
                if isinstance(item.get("traffic"), dict):
                    self._note_traffic(item["veid"], item["traffic"])
            finals = {veid: list(ts) for veid, ts in self._final_traffic.items()}
        for item in inventory:
            if item["veid"] in finals:
                item["traffic_final"] = finals[item["veid"]][-16:]
        return finals

    def _note_traffic(self, veid: int, traffic: dict) -> None:
        """Keep the highest counters seen of a VE's current veth (caller holds _net_lock)."""
        seen = self._seen_traffic.get(veid)
        if seen is None or seen.get("link") != traffic.get("link"):
            self._seen_traffic[veid] = dict(traffic)
        else:
            for k, v in traffic.items():
                if k != "link":
                    seen[k] = max(seen.get(k, 0), v)

    def attach_usage(self, inventory: list) -> None:
        """Add each running VE's CPU and memory sample (``usage``) to the heartbeat's
        inventory for usage metering, resetting the kernel's memory high-water mark.

        A peak read for a heartbeat that then fails to go out is kept and folded into the
        next sample: the reset must not lose it."""
        unsent = self._unsent_peaks
        for item in inventory:
            if item.get("state") != "running":
                continue
            sample = self.runtime.usage_sample(item["veid"], reset_peak=True)
            if sample is None:
                continue
            sample["mem_peak_bytes"] = max(sample["mem_peak_bytes"], unsent.get(item["veid"], 0))
            unsent[item["veid"]] = sample["mem_peak_bytes"]
            item["usage"] = sample

    def heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.heartbeat()
            except Exception:  # a broker hiccup must not kill the heartbeat thread
                log.exception("heartbeat failed")
            self._stop.wait(self.cfg.heartbeat_interval)

    # --- journal -----------------------------------------------------------------------
    def journal_path(self, job_id: str):
        return self.cfg.state / "journal" / f"{job_id}.json"

    def journal_claim(self, job: m.JobMessage) -> bool:
        """Record that this job id starts now; False if it was seen before."""
        path = self.journal_path(job.job_id)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump({"op": job.op, "veid": job.veid, "instance": self.instance, "state": "running",
                       "expires_at": job.expires_at}, f)
        return True

    def journal_finish(self, job_id: str, state: str) -> None:
        path = self.journal_path(job_id)
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            data = {}
        data["state"] = state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    def recover_journal(self) -> None:
        """Report jobs that an earlier agent process started and never finished, and drop
        journal entries old enough that their message has expired anyway."""
        now = time.time()
        for path in (self.cfg.state / "journal").glob("*.json"):
            try:
                data = json.loads(path.read_text())
            except ValueError:
                path.unlink(missing_ok=True)
                continue
            if data.get("state") == "running" and data.get("instance") != self.instance:
                job_id = path.stem
                self.event(job_id, 1_000_000, "failed",
                           "The node agent restarted while this job ran; the operation was interrupted.",
                           {"error": "agent-restarted", "observed": self._observe(data.get("veid"))})
                self.journal_finish(job_id, "interrupted")
            elif now - data.get("expires_at", 0) > 24 * 3600:
                path.unlink(missing_ok=True)

    def _observe(self, veid) -> dict:
        if not isinstance(veid, int):
            return {}
        try:
            return {"state": self.runtime.state(veid), "nproc": self.runtime.nproc(veid) or 0}
        except Exception:
            return {}

    # --- jobs --------------------------------------------------------------------------
    def _lock_file(self, key):
        path = self.cfg.state / "locks" / f"{key}.lock"
        path.parent.mkdir(exist_ok=True)
        return path

    @contextlib.contextmanager
    def ve_lock(self, veid: int):
        """One operation per VE at a time across the pool's processes (flock on a file)."""
        with open(self._lock_file(veid), "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def fault(self, op: str):
        """Test hook: HAKO_FAULT_DELAY=op:seconds sleeps midway through that operation."""
        def hook():
            if self.cfg.fault_delay:
                name, _, secs = self.cfg.fault_delay.partition(":")
                if name == op:
                    time.sleep(float(secs or 0))
        return hook

    def handle(self, envelope) -> str:
        """Verify a job message and run it. Returns a short outcome for Celery's result log."""
        try:
            body = m.open_envelope(envelope, self.cfg.key)
            job = m.JobMessage.from_body(body, node=self.cfg.node)
        except m.MessageError as e:
            log.warning("refused message: %s", e)
            return f"refused: {e}"
        stored = self.runtime.load_generation(job.veid)
        if job.generation < stored:
            log.warning("refused stale job %s: generation %s < %s", job.job_id, job.generation, stored)
            return "refused: stale generation"
        if not self.journal_claim(job):
            log.warning("refused job %s: already run by this node", job.job_id)
            return "refused: already run"
        seq = 0
        pending: list[list] = []  # log lines not yet sent: [seq, text]
        flushed_at = time.monotonic()

        def emit(type_: str, message: str = "", data: dict | None = None):
            """Send an event. Log lines ride along with the next event, or go out on their
            own once they are LOG_BATCH_SECONDS old: one broker message and one panel
            transaction per job step instead of one per line, while a slow job's log still
            streams."""
            nonlocal seq, flushed_at
            seq += 1
            if type_ == "log":
                pending.append([seq, message])
                if time.monotonic() - flushed_at < LOG_BATCH_SECONDS:
                    return
                message = ""  # a batch: its lines are the content, its seq the last line's
            lines = pending[:]
            pending.clear()
            flushed_at = time.monotonic()
            self.event(job.job_id, seq, type_, message, data, lines)

        what = f"VE {job.veid}" if job.veid else f"{job.args.get('template') or 'node'}"[:64]
        emit("running", f"{job.op} {what} on {self.cfg.node}", {"instance": self.instance})
        outcome = "failed"
        try:
            lock = f"template-{job.args.get('template')}" if job.op.startswith("template_") else job.veid
            with self.ve_lock(lock):
                result = self.run(job, lambda msg: emit("log", msg))
            emit("succeeded", "", result)
            outcome = "succeeded"
        except (RuntimeError_, TemplateError, PoolError) as e:
            emit("failed", str(e), {"error": "operation-failed", "observed": self._observe(job.veid)})
        except Exception as e:  # never leave a job running in the panel's eyes
            log.exception("job %s crashed", job.job_id)
            emit("failed", f"internal error on node: {type(e).__name__}",
                 {"error": "internal", "observed": self._observe(job.veid)})
        finally:
            self.journal_finish(job.job_id, outcome)
        return outcome

    def run(self, job: m.JobMessage, log_line) -> dict:
        rt, spec, gen = self.runtime, job.spec, job.generation
        if job.op == "create":
            try:
                ident = m.check_identity_args(job.args)
            except m.MessageError as e:
                raise RuntimeError_(f"refused: {e}") from None
            result = rt.create(spec, gen, log_line, fault=self.fault("create"), ident=ident)
            if job.args.get("start") is True:  # billing's services are sold running
                result = rt.start(spec, gen, log_line)
            return result
        if job.op == "template_build":
            return self.template_build(job.args, log_line)
        if job.op == "template_remove":
            return self.template_remove(job.args, log_line)
        if job.op == "start":
            self.fault("start")()
            return rt.start(spec, gen, log_line)
        if job.op == "stop":
            self.fault("stop")()
            return rt.stop(job.veid, log_line, timeout=_arg_int(job.args, "timeout", self.cfg.stop_timeout),
                           kill=job.args.get("kill") is True)
        if job.op == "restart":
            stopped = rt.stop(job.veid, log_line)
            self.fault("restart")()
            result = rt.start(spec, gen, log_line)
            if "traffic" in stopped:  # the counters of the veth the stop removed
                result["traffic"] = stopped["traffic"]
            return result
        if job.op == "destroy":
            return rt.destroy(job.veid, log_line)
        if job.op == "set":
            self.fault("set")()
            return rt.set(spec, gen, log_line)
        if job.op == "passwd":
            try:
                password_hash = m.check_passwd_args(job.args)
            except m.MessageError as e:
                raise RuntimeError_(f"refused: {e}") from None
            return rt.passwd(job.veid, password_hash, log_line)
        if job.op == "exec":
            argv = job.args.get("argv")
            if (not isinstance(argv, list) or not argv or len(argv) > 256
                    or not all(isinstance(a, str) and "\x00" not in a for a in argv)):
                raise RuntimeError_("exec needs a non-empty argv list of strings")
            return rt.exec(job.veid, argv, timeout=_arg_int(job.args, "timeout", 60), log=log_line)
        if job.op == "node_config":
            return self.node_config(job.args, log_line)
        if job.op == "migrate_receive":
            return self.migrations.receive(job, log_line)
        if job.op == "migrate_send":
            return self.migrations.send(job, log_line)
        if job.op == "migrate_finish":
            return self.migrations.finish(job, log_line)
        if job.op == "migrate_cleanup":
            return self.migrations.cleanup(job, log_line)
        if job.op == "status":
            return {"state": rt.state(job.veid), "nproc": rt.nproc(job.veid) or 0}
        raise RuntimeError_(f"unknown operation {job.op}")

    def stop(self):
        self._stop.set()

    # --- templates, host preparation, start-on-boot --------------------------------------
    def template_build(self, args: dict, log_line) -> dict:
        """Build a built-in OS template into the cache (debian-12: debootstrap, minutes) and
        its golden image; a template already cached is kept (remove it to rebuild)."""
        try:
            name = m.check_template_name(args.get("template"))
        except m.MessageError as e:
            raise RuntimeError_(str(e)) from None
        t0 = time.monotonic()
        archive, built = build_template(self.cfg.templates, name, log_line, self.cfg.debian_mirror)
        if not built:
            log_line(f"OS template {name} is in this node's template cache already")
        golden = lower = None
        if self.cfg.ve_roots == "layered":
            lower = self.runtime.ensure_lower(name, archive, log_line)
        if self.runtime.pool.clone_ok:
            golden = self.runtime.pool.ensure_base(name, archive, log_line).name
        return {"template": name, "built": built, "size": archive.stat().st_size, "golden": golden, "lower": lower,
                "seconds": round(time.monotonic() - t0, 1), "templates": list_templates(self.cfg.templates)}

    def template_remove(self, args: dict, log_line) -> dict:
        """Delete a template and its golden images from this node; its VEs are untouched."""
        try:
            name = m.check_template_name(args.get("template"))
        except m.MessageError as e:
            raise RuntimeError_(str(e)) from None
        existed = remove_template(self.cfg.templates, name)
        dropped = self.runtime.pool.drop(name)
        log_line(f"OS template {name} removed from the template cache" if existed
                 else f"OS template {name} was not in the template cache")
        if dropped:
            log_line(f"Removed {dropped} golden image(s) of {name}")
        # Its shared layer goes too, unless VEs run over it (they keep it until destroyed).
        for layer in self.runtime.prune_lowers():
            log_line(f"Removed the shared layer {layer}")
        return {"template": name, "removed": existed, "templates": list_templates(self.cfg.templates)}

    def prepare_host(self) -> None:
        """Before taking work: raise the kernel limits that cap density, unpack the cached
        templates' shared layers (layered roots), mount the storage pool and make the
        golden images of the cached templates (flat roots)."""
        self.node_info.update(tuning.tune_node())
        log.info("tuning: %s", " ".join(f"{k}={v}" for k, v in self.node_info["tuning"].items()))
        if self.cfg.ve_roots == "layered":
            for name in list_templates(self.cfg.templates):
                try:
                    self.runtime.ensure_lower(name, template_paths(self.cfg.templates, name)[0],
                                              lambda msg: log.info("layers: %s", msg))
                except (RuntimeError_, OSError) as e:
                    log.warning("layers: no shared layer for %s: %s", name, e)
        try:
            info = self.runtime.pool.prepare()
        except (PoolError, OSError) as e:
            log.error("storage pool unusable, VE disks are made with mkfs + tar: %s", e)
            return
        log.info("storage pool: %s", info)
        if self.runtime.pool.clone_ok and self.cfg.ve_roots == "flat":
            for name in list_templates(self.cfg.templates):
                try:
                    self.runtime.pool.ensure_base(name, template_paths(self.cfg.templates, name)[0],
                                                  lambda msg: log.info("storage pool: %s", msg))
                except (PoolError, OSError) as e:
                    log.warning("storage pool: no golden image for %s: %s", name, e)

    def start_onboot(self) -> list[int]:
        """Start the VEs marked start-on-boot that are not running (after a host reboot, or
        stopped behind the agent's back). Runs before the first heartbeat."""
        rt = self.runtime
        started = []
        for veid in rt.known_veids():
            try:
                spec = rt.load_spec(veid)
            except (ValueError, m.MessageError) as e:
                log.warning("onboot: VE %s has an unreadable stored spec: %s", veid, e)
                continue
            if spec is None or not spec.onboot or not rt.exists(veid) or rt.nproc(veid):
                continue
            try:
                with self.ve_lock(veid):
                    if rt.is_running(veid):
                        continue
                    log.info("onboot: starting VE %s", veid)
                    rt.start(spec, rt.load_generation(veid), lambda msg, v=veid: log.info("onboot: VE %s: %s", v, msg))
                started.append(veid)
                log.info("onboot: VE %s started", veid)
            except Exception as e:  # one VE must not keep the others (or the agent) down
                log.warning("onboot: VE %s did not start: %s", veid, e)
        return started

    # --- node-level configuration ----------------------------------------------------
    @property
    def node_file(self):
        return self.cfg.state / "node.json"

    def node_config(self, args: dict, log_line) -> dict:
        """Apply and keep the node's configuration from the panel (its address pools)."""
        pools = args.get("pools")
        if not isinstance(pools, list) or len(pools) > 1024:
            raise RuntimeError_("node_config needs a list of pools")
        import ipaddress

        clean = []
        for p in pools:
            try:
                clean.append(str(ipaddress.ip_network(p, strict=True)))
            except (ValueError, TypeError):
                raise RuntimeError_(f"bad pool {str(p)[:60]!r}") from None
        tmp = self.node_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pools": clean}))
        os.replace(tmp, self.node_file)
        self.runtime.net.prepare_node(clean)
        for p in clean:
            log_line(f"Pool {p}: unreachable route installed")
        return {"pools": clean}

    def prepare_node(self) -> None:
        """At start: forwarding, anti-spoofing and the pools' unreachable routes from the
        last configuration the panel sent; then re-plumb the VEs that kept running."""
        try:
            pools = json.loads(self.node_file.read_text()).get("pools", [])
        except (FileNotFoundError, ValueError):
            pools = []
        self.runtime.net.prepare_node(pools)
        for item in self.runtime.inventory():
            if item["state"] == "running":
                spec = self.runtime.load_spec(item["veid"])
                if spec is not None:
                    try:
                        self.runtime.plumb(spec)
                    except RuntimeError_ as e:
                        log.warning("VE %s: %s", item["veid"], e)

    def on_new_link(self, veid: int, ifindex: int, traffic: dict) -> None:
        """Netlink watcher: a VE's veth appeared or changed. A veth not plumbed yet (a
        reboot from inside the VE; a start, whose job plumbs it too) gets the full plumb of
        a start (Runtime.plumb) on a thread of its own, once the VE runs."""
        if self.runtime.load_spec(veid) is None:
            return  # not a VE of this node (another agent on the machine)
        with self._net_lock:
            self._note_traffic(veid, traffic)
            if self._plumbed.get(veid) == ifindex or (veid, ifindex) in self._replumbing:
                return  # a flag or carrier change of a veth plumbed already
            self._replumbing.add((veid, ifindex))
        threading.Thread(target=self._replumb, args=(veid, ifindex), name=f"plumb-{veid}", daemon=True).start()

    def _replumb(self, veid: int, ifindex: int, wait: float = 60.0) -> None:
        rt = self.runtime
        try:
            self._wait_for_job(veid)
            deadline, pause = time.monotonic() + wait, 0.1
            while True:  # LXC makes the veth before the VE's init runs: wait for RUNNING
                if rt.net.ifindex(veid) != ifindex:
                    return  # gone again, or replaced: its own event handles the new one
                if rt.plumbed_link(veid) == ifindex:
                    break  # a start job plumbed it (a file read: no lxc-info per start)
                if rt.lxc_state(veid) == "RUNNING":
                    break
                if time.monotonic() > deadline or self._stop.is_set():
                    log.warning("VE %s: its new interface never saw the VE running", veid)
                    return
                time.sleep(pause)
                pause = min(pause * 2, 1.0)  # many VEs starting at once: few lxc-info calls
            # The VE's lock: a start job plumbs this veth too (and records it), a stop
            # unplumbs; never both at once, and never twice.
            with self.ve_lock(veid):
                spec = rt.load_spec(veid)
                if spec is None or rt.net.ifindex(veid) != ifindex or not rt.is_running(veid):
                    return
                if rt.plumbed_link(veid) != ifindex:
                    rt.plumb(spec)
                    log.info("VE %s: network plumbed on its new interface (reboot inside the VE)", veid)
            with self._net_lock:
                self._plumbed[veid] = ifindex
        except Exception:
            log.exception("VE %s: plumbing its new interface failed", veid)
        finally:
            with self._net_lock:
                self._replumbing.discard((veid, ifindex))

    def _wait_for_job(self, veid: int) -> None:
        """Wait while a job holds the VE's lock. A veth made by ``lxc-start`` appears inside
        the start job, which plumbs and records it before it lets go: waiting here instead
        of polling ``lxc-info`` keeps extra processes away from a starting VE."""
        with open(self._lock_file(veid), "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fcntl.flock(f, fcntl.LOCK_EX)
            fcntl.flock(f, fcntl.LOCK_UN)

    def on_link_gone(self, veid: int, ifindex: int, traffic: dict) -> None:
        """Netlink watcher: a VE's veth went away. Its last counters go out with the next
        heartbeat; and if the VE halted itself (no stop job), what its stop would have
        removed is removed (the IFB device of its shaping)."""
        if self.runtime.load_spec(veid) is None:
            return
        with self._net_lock:
            seen = self._seen_traffic.pop(veid, None)
            final = dict(traffic)
            # The host side's rx counters come from the peer, gone first: keep what was seen.
            if seen is not None and seen.get("link") == final.get("link"):
                for k, v in seen.items():
                    if k != "link":
                        final[k] = max(final.get(k, 0), v)
            self._final_traffic.setdefault(veid, []).append(final)
            if self._plumbed.get(veid) == ifindex:
                del self._plumbed[veid]
        threading.Thread(target=self._cleanup_if_halted, args=(veid, ifindex), name=f"unplumb-{veid}",
                         daemon=True).start()

    def _cleanup_if_halted(self, veid: int, ifindex: int, wait: float = 60.0) -> None:
        rt = self.runtime
        try:
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not self._stop.is_set():
                time.sleep(0.5)
                if rt.plumbed_link(veid) != ifindex:
                    return  # a stop or destroy job unplumbed it (and forgot it): the usual case
                if rt.net.ifindex(veid) is not None:
                    return  # rebooted (or started again): it is plumbed by its new link
                if rt.load_spec(veid) is None:
                    return  # destroyed: its destroy job cleaned up
                state = rt.lxc_state(veid)
                if state == "STOPPED":
                    break
                if state == "":
                    return  # LXC does not know it (gone): nothing of it to clean up
            else:
                return
            with self.ve_lock(veid):  # after a stop job's own unplumb, this finds nothing to do
                if rt.net.ifindex(veid) is None and not rt.is_running(veid):
                    leftover = rt.net.leftover(veid)
                    rt.net.unplumb(veid, running_here=False)
                    rt.forget_plumbed(veid)
                    if leftover:
                        log.info("VE %s stopped without a stop job: removed %s", veid, ", ".join(leftover))
        except Exception:
            log.exception("VE %s: cleanup after it stopped failed", veid)


def _arg_int(args: dict, name: str, default: int) -> int:
    v = args.get(name, default)
    if type(v) is not int or not 0 <= v <= 3600:
        raise RuntimeError_(f"argument {name} must be an integer in [0, 3600]")
    return v


def make_app(cfg: AgentConfig) -> tuple[Celery, Agent]:
    app = Celery("hako-node", broker=cfg.broker_url, set_as_current=True)
    app.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_acks_late=True, task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1, task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600},
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    agent = Agent(cfg, app)

    @app.task(name=m.TASK_NODE_JOB, bind=True, acks_late=True)
    def node_job(self, envelope):  # noqa: ARG001 - Celery's bound task
        return agent.handle(envelope)

    @worker_ready.connect(weak=False)
    def _on_ready(**_):
        agent.recover_journal()
        if agent.migrations.stop_stale_daemons():
            log.info("stopped migration endpoints an earlier agent process left running")
        agent.prepare_node()
        agent.start_onboot()
        threading.Thread(target=agent.heartbeat_loop, name="heartbeat", daemon=True).start()
        # Consoles get their own relay thread, never a job slot (containers/console.py).
        from .console import ConsoleRelay
        threading.Thread(target=ConsoleRelay(agent.cfg, agent.runtime).run, args=(agent._stop,),
                         name="console", daemon=True).start()
        threading.Thread(target=agent.runtime.net.watch_links,
                         args=(agent.on_new_link, agent._stop, agent.on_link_gone),
                         name="netlink", daemon=True).start()

    @worker_shutdown.connect(weak=False)
    def _on_shutdown(**_):
        agent.stop()

    return app, agent


def main() -> None:
    logging.basicConfig(level=os.environ.get("HAKO_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # `kill -USR1 <pid>` prints every thread's stack to the log: a hung job tells where.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    cfg = AgentConfig.from_env()
    cfg.ensure_dirs()
    templates = ensure_builtin(cfg.templates)
    log.info("node %s: root %s, templates %s", cfg.node, cfg.root, templates)
    app, agent = make_app(cfg)
    agent.prepare_host()
    app.worker_main([
        "worker", "-Q", m.queue_for_node(cfg.node), "-n", f"{cfg.node}@{socket.gethostname()}",
        # prefork: acks_late with the threads pool stalls consumption on the Redis transport
        # (acks from pool threads do not wake the consumer loop), measured at seconds per job.
        "--pool", "prefork", "-c", str(cfg.concurrency), "--prefetch-multiplier", "1",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
    ])


if __name__ == "__main__":
    main()

"""Moving VEs between nodes: ``ve_migrate``, node maintenance and ``node_drain``.

Restart mode with pre-copy (DESIGN.md, "Migration"), as Proxmox does for containers and
``vzmigrate`` without checkpoints. A :class:`~panel.models.Migration` row holds the state;
a panel-worker task (:func:`migration_run`) drives the nodes through signed, idempotent
steps (containers/migrate.py) and persists the state before each one, so a migration whose
orchestrator died is resumed by :func:`migrations_resume` from where it stood:

    preparing  target: empty disk + one-time rsync endpoint (secret sealed per node)
    precopy    source: copy while the VE runs (running VEs only)
    final      source: stop, copy the changes, verify (checksum dry run)
    starting   target: flush, save the spec, start if it ran
    committed  one transaction: the VE's node is the target (only now)
    done       target forgets the migration, source deletes its old copy

Nothing is lost: before ``committed`` a failure rolls back (the target's copy is deleted,
the VE starts again on the source if it ran); a VE is only started on the source when the
target is known not to run it (``finish`` never sent, or the target confirmed its copy
gone). After ``committed`` a failure rolls forward (the old copy's removal is retried).
"""
from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.translation import gettext as _

from containers import messages as m
from panel.access import require_staff
from panel.models import VE, IPAddress, IPPool, Job, JobLog, Migration, Node

from .audit import audit
from .errors import Conflict, InvalidInput, NotFound, Unavailable
from .jobs import _log_line, job_create, node_key

log = logging.getLogger("hako.migrations")

TASK_MIGRATE = "hako.panel.migrate"
TASK_DRAIN = "hako.panel.drain"
LEASE = timedelta(seconds=90)       # an orchestrator renews it while it waits
STEP_TIMEOUT = 6 * 3600             # a copy of a big disk may take hours
RETRY_FOR = 600                     # how long a step is retried while its node is unreachable
# Sub-job errors that say nothing about what the node did: the step is retried, not undone.
UNKNOWN_OUTCOME = ("agent-restarted", "node-lost", "not-picked-up", "broker-unreachable")


class StepFailed(Exception):
    def __init__(self, job: Job):
        super().__init__(job.explanation)
        self.job = job

    @property
    def unknown(self) -> bool:
        return self.job.error in UNKNOWN_OUTCOME


def node_address(node: Node) -> str | None:
    """The node's migration address as its agent reports it (HAKO_NODE_ADDRESS)."""
    raw = (node.info or {}).get("address")
    try:
        return str(ipaddress.ip_address(raw)) if raw else None
    except ValueError:
        return None


def _pools_of(ve: VE) -> set[int]:
    return set(IPAddress.objects.filter(ve=ve).values_list("pool_id", flat=True))


def target_problem(ve: VE, target: Node) -> str | None:
    """Why ``target`` cannot take ``ve`` now, or None."""
    if target.pk == ve.node_id:
        return _("VE %(veid)s is on node %(node)s already") % {"veid": ve.veid, "node": target.name}
    if target.state != Node.State.ONLINE:
        return _("node %(node)s is %(state)s") % {"node": target.name, "state": target.state}
    if target.maintenance:
        return _("node %(node)s is in maintenance mode") % {"node": target.name}
    if not node_address(target):
        return _("node %(node)s has no migration address (HAKO_NODE_ADDRESS)") % {"node": target.name}
    if ve.template.name not in (target.info or {}).get("templates", []):
        return _("node %(node)s does not have OS template %(template)s") % {
            "node": target.name, "template": ve.template.name}
    served = set(IPPool.objects.filter(nodes=target).values_list("id", flat=True))
    if not _pools_of(ve) <= served:
        return _("node %(node)s does not serve the address pools of VE %(veid)s") % {
            "node": target.name, "veid": ve.veid}
    free = (target.capacity or {}).get("mem_available")
    if isinstance(free, int) and free < ve.memory:
        return _("node %(node)s has not enough free memory for VE %(veid)s") % {"node": target.name, "veid": ve.veid}
    pool_free = ((target.info or {}).get("pool") or {}).get("free")
    if isinstance(pool_free, int) and pool_free < 64 * 1024 * 1024:
        return _("node %(node)s has no free disk space") % {"node": target.name}
    return None


def ve_migrate(*, ve: VE, target: Node | str, actor=None, bwlimit: int = 0, source: str = "",
               drain: Job | None = None, enqueue: bool = True) -> Job:
    """Move a VE to ``target`` (staff only); returns the migration's job.

    A running VE is copied while it runs, stopped, its changes copied, and started on the
    target; a stopped VE is copied and stays stopped. Its VEID, data, settings and addresses
    follow it. ``bwlimit`` caps the copy in KiB/s (0 = none). Refused, with nothing
    changed: a VE that is busy, not running or stopped, or a target that cannot take it.
    """
    require_staff(actor, what=_("migrating a VE"), source=source)
    if isinstance(target, str):
        found = Node.objects.filter(name=target[:63]).first()
        if found is None:
            raise InvalidInput(_("node %(node)s does not exist") % {"node": target[:63]}, field="node")
        target = found
    if type(bwlimit) is not int or not 0 <= bwlimit <= 10**8:
        raise InvalidInput(_("bwlimit must be KiB/s between 0 and 100000000"), field="bwlimit")
    with transaction.atomic():
        try:
            locked = VE.objects.select_for_update(of=("self",)).select_related("node", "tenant", "template").get(pk=ve.pk)
        except VE.DoesNotExist:
            raise NotFound("VE not found") from None
        if locked.state == VE.State.DESTROYED:
            raise NotFound("VE not found")
        if locked.state not in (VE.State.RUNNING, VE.State.STOPPED):
            raise Conflict(_("VE %(veid)s is %(state)s; only a running or stopped VE can migrate") % {
                "veid": locked.veid, "state": locked.state}, code="ve-busy")
        target = Node.objects.select_for_update().get(pk=target.pk)
        problem = target_problem(locked, target)
        if problem:
            raise Unavailable(problem, code="target-unavailable")
        src = locked.node
        if src.state != Node.State.ONLINE or not node_address(src):
            raise Unavailable(_("source node %(node)s is %(state)s or has no migration address") % {
                "node": src.name, "state": src.state}, code="source-unavailable")
        # A panel-side job: it holds the VE's lock (no other job while it migrates) and its
        # log is the migration's; it is never sent to a node.
        job = job_create(kind="migrate", node=src, ve=locked, actor=actor, mutating=True, send=False,
                         args={"target": target.name, "bwlimit": bwlimit})
        now = timezone.now()
        Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING, started_at=now,
                                             expires_at=now + timedelta(seconds=STEP_TIMEOUT))
        secret = secrets.token_urlsafe(32)
        try:
            with transaction.atomic():
                mig = Migration.objects.create(
                    ve=locked, source=src, target=target, job=job, drain=drain,
                    was_running=locked.state == VE.State.RUNNING, bwlimit=bwlimit,
                    sealed_source=m.seal(secret, node_key(src)), sealed_target=m.seal(secret, node_key(target)))
        except IntegrityError:
            raise Conflict(_("VE %(veid)s is migrating already") % {"veid": locked.veid}, code="ve-busy") from None
        VE.objects.filter(pk=locked.pk).update(state=VE.State.MIGRATING, state_changed_at=now)
        _log_line(job, JobLog.Kind.STEP, _("Migrating VE %(veid)s from %(source)s to %(target)s") % {
            "veid": locked.veid, "source": src.name, "target": target.name}, seq=1)
        audit(action="ve.migrate", actor=actor, tenant=locked.tenant, obj=locked, source=source,
              detail={"job": str(job.id), "migration": str(mig.id), "source": src.name, "target": target.name,
                      "bwlimit": bwlimit})
        if enqueue:
            transaction.on_commit(lambda: _enqueue(TASK_MIGRATE, str(mig.id)))
    job.refresh_from_db()
    return job


def _enqueue(task: str, arg: str) -> None:
    from celery import current_app

    current_app.send_task(task, args=[arg], queue=m.PANEL_QUEUE, serializer="json")


# --- the orchestrator ---------------------------------------------------------------------


class Orchestrator:
    """Drives one migration; every step is persisted before it is sent."""

    def __init__(self, mig: Migration, resumed: bool = False):
        self.mig = mig
        self.resumed = resumed
        self.job = mig.job
        self.seq = (JobLog.objects.filter(job=self.job, seq__lt=1_000_000).aggregate(s=Max("seq"))["s"] or 1)

    # -- bookkeeping --
    def say(self, text: str, kind: str = JobLog.Kind.LOG) -> None:
        self.seq += 1
        _log_line(self.job, kind, text, seq=self.seq)

    def set_state(self, state: str, **fields) -> None:
        Migration.objects.filter(pk=self.mig.pk).update(state=state, lease_until=timezone.now() + LEASE, **fields)
        self.mig.refresh_from_db()

    def renew(self) -> None:
        Migration.objects.filter(pk=self.mig.pk).update(lease_until=timezone.now() + LEASE)

    def ve(self) -> VE:
        return VE.objects.select_related("node", "tenant", "template").get(pk=self.mig.ve_id)

    # -- steps --
    def step(self, kind: str, node: Node, args: dict, *, retry_unknown: bool = True) -> dict:
        """Send one step to ``node`` and wait for it, mirroring its log into the migration's
        job. A step whose outcome is unknown (agent restarted, node lost, not picked up) is
        sent again while ``retry_unknown`` and RETRY_FOR allow: every step is idempotent."""
        deadline = time.monotonic() + RETRY_FOR
        while True:
            with transaction.atomic():
                ve = self.ve()
                sub = job_create(kind=kind, node=node, ve=ve, actor=None, mutating=False,
                                 args={"migration": str(self.mig.pk), **args})
            sub = self.wait(sub, node)
            if sub.state == Job.State.SUCCEEDED:
                return sub.result or {}
            err = StepFailed(sub)
            if not (retry_unknown and err.unknown) or time.monotonic() > deadline:
                raise err
            self.say(_("Node %(node)s did not finish %(step)s (%(error)s); trying again") % {
                "node": node.name, "step": kind, "error": sub.error})
            time.sleep(2)

    def wait(self, sub: Job, node: Node) -> Job:
        shown = 0
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            sub.refresh_from_db()
            for line in JobLog.objects.filter(job=sub, seq__gt=shown).order_by("seq"):
                if line.seq >= 1_000_000 or (line.seq != shown + 1 and not sub.is_terminal):
                    break
                shown = line.seq
                if line.kind != JobLog.Kind.STEP:  # the node's "running" banner is noise here
                    self.say(f"[{node.name}] {line.message}", line.kind)
            if sub.state == Job.State.PENDING and timezone.now() > sub.expires_at:
                # No beat may run the reaper here: fail what no agent picked up ourselves.
                from .jobs import job_fail

                job_fail(sub.pk, error="not-picked-up",
                         explanation=_("Node %(node)s did not pick this step up in time.") % {"node": node.name})
                continue
            if sub.is_terminal:
                if sub.state != Job.State.SUCCEEDED:
                    self.say(f"[{node.name}] {sub.explanation}", JobLog.Kind.ERROR)
                return sub
            if time.monotonic() > deadline:
                return sub
            self.renew()
            time.sleep(0.1)

    # -- the whole migration --
    def run(self) -> str:
        mig = self.mig
        src, dst = mig.source, mig.target
        try:
            if mig.state in (Migration.State.PENDING, Migration.State.PREPARING):
                self.set_state(Migration.State.PREPARING)
                ep = self.step("migrate_receive", dst, {"secret": mig.sealed_target,
                                                        "source_address": node_address(src)})
                self.set_state(Migration.State.PRECOPY if mig.was_running else Migration.State.FINAL,
                               endpoint={"address": ep.get("address"), "port": ep.get("port"),
                                         "layers": ep.get("layers") or []})
            if self.resumed and mig.state in (Migration.State.PRECOPY, Migration.State.FINAL):
                # The endpoint may have died with an agent meanwhile: ask for it again.
                self.say(_("Resuming the migration"), JobLog.Kind.STEP)
                ep = self.step("migrate_receive", dst, {"secret": mig.sealed_target,
                                                        "source_address": node_address(src)})
                self.set_state(mig.state, endpoint={"address": ep.get("address"), "port": ep.get("port"),
                                                    "layers": ep.get("layers") or []})
            send = {"secret": mig.sealed_source, "target_address": mig.endpoint.get("address"),
                    "port": mig.endpoint.get("port"), "bwlimit": mig.bwlimit,
                    # the template layers the target has: a layered VE's is sent if missing
                    "target_layers": list(mig.endpoint.get("layers") or [])[:64]}
            if mig.state == Migration.State.PRECOPY:
                res = self.step("migrate_send", src, {**send, "phase": "precopy"})
                # A VE stopped from inside meanwhile stays stopped on the target.
                self.set_state(Migration.State.FINAL, bytes_copied=int(res.get("bytes") or 0),
                               was_running=bool(res.get("was_running")))
            if mig.state == Migration.State.FINAL:
                if "final_started" not in mig.endpoint:
                    self.set_state(mig.state, endpoint={**mig.endpoint, "final_started": time.time()})
                res = self.step("migrate_send", src, {**send, "phase": "final"})
                if not res.get("verified"):
                    raise RuntimeError("the source did not verify the copy")
                # A final pass sent again (its node restarted after stopping the VE) finds
                # the VE stopped: it ran all the same, and runs on the target.
                self.set_state(Migration.State.STARTING,
                               was_running=mig.was_running or bool(res.get("was_running")),
                               bytes_copied=mig.bytes_copied + int(res.get("bytes") or 0),
                               endpoint={**mig.endpoint, "stop_started": res.get("stop_started")
                                         or mig.endpoint.get("final_started"),
                                         "stopped_at": res.get("stopped_at"),
                                         "final_copy_s": res.get("copy_seconds"),
                                         "verify_s": res.get("verify_seconds")})
            if mig.state == Migration.State.STARTING:
                res = self.step("migrate_finish", dst, {"start": mig.was_running})
                self.commit(res)
            if mig.state == Migration.State.COMMITTED:
                self.finish_commit()
            return mig.state
        except StepFailed as e:
            return self.rollback(e.job.error or "failed", e.job.explanation, unknown=e.unknown)
        except Exception as e:  # never leave a migration half done without a decision
            log.exception("migration %s crashed", mig.pk)
            return self.rollback("internal", f"{type(e).__name__}: {e}"[:500])

    def commit(self, res: dict) -> None:
        """The VE is the target's now: one transaction, after the target runs the copy."""
        mig = self.mig
        state = "running" if res.get("state") == "running" else "stopped"
        downtime = None
        if mig.was_running and mig.endpoint.get("stop_started") and res.get("started_at"):
            downtime = int((float(res["started_at"]) - float(mig.endpoint["stop_started"])) * 1000)
        with transaction.atomic():
            now = timezone.now()
            n = Migration.objects.filter(pk=mig.pk, state=Migration.State.STARTING).update(
                state=Migration.State.COMMITTED, downtime_ms=downtime, lease_until=now + LEASE)
            if not n:
                return
            VE.objects.filter(pk=mig.ve_id).update(node=mig.target, state=state, state_changed_at=now,
                                                   nproc=res.get("nproc") if state == "running" else None)
            audit(action="ve.migrate.commit", actor=None, tenant=mig.ve.tenant, obj=mig.ve, source="migration",
                  detail={"migration": str(mig.pk), "target": mig.target.name, "downtime_ms": downtime})
        self.mig.refresh_from_db()
        self.say(_("VE %(veid)s now runs on %(node)s") % {"veid": mig.ve.veid, "node": mig.target.name}
                 if state == "running" else
                 _("VE %(veid)s is on %(node)s now (stopped)") % {"veid": mig.ve.veid, "node": mig.target.name},
                 JobLog.Kind.STEP)
        if downtime is not None:
            ep = self.mig.endpoint
            parts = {}
            try:
                parts["stop"] = float(ep["stopped_at"]) - float(ep["stop_started"])
                parts["final_pass"] = float(ep["final_copy_s"])
                parts["verify"] = float(ep["verify_s"])
                parts["start"] = downtime / 1000 - sum(parts.values())
            except (KeyError, TypeError, ValueError):
                parts = {}
            Migration.objects.filter(pk=mig.pk).update(endpoint={**ep, "downtime_parts": parts})
            self.mig.refresh_from_db()
            self.say(_("Downtime: %(seconds).2f s") % {"seconds": downtime / 1000} + (
                " (" + _("stop %(stop).2f s, final pass %(final_pass).2f s, verify %(verify).2f s, "
                         "start %(start).2f s") % parts + ")" if parts else ""), JobLog.Kind.STEP)

    def finish_commit(self) -> None:
        """Roll forward: the target forgets the migration, the source drops its old copy."""
        mig = self.mig
        self.step("migrate_cleanup", mig.target, {"role": "target", "commit": True})
        self.step("migrate_cleanup", mig.source, {"role": "source"})
        self.end(Migration.State.DONE, Job.State.SUCCEEDED)

    def end(self, state: str, job_state: str, error: str = "", explanation: str = "") -> None:
        mig = self.mig
        now = timezone.now()
        result = {"migration": str(mig.pk), "source": mig.source.name, "target": mig.target.name,
                  "downtime_ms": mig.downtime_ms, "bytes": mig.bytes_copied, "state": state,
                  "downtime_parts": mig.endpoint.get("downtime_parts", {})}
        with transaction.atomic():
            Migration.objects.filter(pk=mig.pk).update(state=state, finished_at=now, sealed_source="",
                                                       sealed_target="", error=error[:64],
                                                       explanation=explanation, lease_until=None)
            Job.objects.filter(pk=mig.job_id, state__in=Job.ACTIVE).update(
                state=job_state, finished_at=now, result=result, error=error[:64], explanation=explanation)
            if job_state == Job.State.SUCCEEDED:
                self.say("Task OK", JobLog.Kind.STEP)
            else:
                self.say(explanation, JobLog.Kind.ERROR)
        self.mig.refresh_from_db()

    def rollback(self, error: str, explanation: str, unknown: bool = False) -> str:
        """Undo a migration that failed before commit; roll forward one that failed after."""
        mig = self.mig
        mig.refresh_from_db()
        if mig.state in (Migration.State.COMMITTED, Migration.State.DONE):
            # The target runs the VE: only the old copy's removal is left. Retried by the
            # resumer; the VE is fine where it is.
            self.say(_("Removing the old copy did not finish (%(error)s); it will be retried") % {"error": error},
                     JobLog.Kind.ERROR)
            Migration.objects.filter(pk=mig.pk).update(lease_until=timezone.now())
            return mig.state
        failed_in = mig.state if mig.state != Migration.State.ROLLING_BACK else mig.endpoint.get("failed_in", "")
        self.set_state(Migration.State.ROLLING_BACK, endpoint={**mig.endpoint, "failed_in": failed_in},
                       error=error[:64], explanation=explanation)
        self.say(_("Migration failed: %(why)s. Rolling back: the VE stays on %(node)s") % {
            "why": explanation, "node": mig.source.name}, JobLog.Kind.ERROR)
        src, dst = mig.source, mig.target
        # Was the target ever told to start the VE? Only then must it confirm first that it
        # does not run it, before the source may start it again.
        finish_sent = failed_in == Migration.State.STARTING
        try:
            if finish_sent:
                self.step("migrate_cleanup", dst, {"role": "target"})
                self.restart_source(src)
            else:
                self.restart_source(src)
                try:
                    self.step("migrate_cleanup", dst, {"role": "target"})
                except StepFailed as e:
                    self.say(_("Node %(node)s could not remove its incomplete copy yet (%(error)s); "
                               "it is removed when the migration is resumed") % {"node": dst.name, "error": e.job.error},
                             JobLog.Kind.ERROR)
                    Migration.objects.filter(pk=mig.pk).update(lease_until=timezone.now())
                    return mig.state
        except StepFailed as e:
            self.say(_("Rollback could not finish (%(error)s); it is retried when the migration is resumed") % {
                "error": e.job.error}, JobLog.Kind.ERROR)
            Migration.objects.filter(pk=mig.pk).update(lease_until=timezone.now())
            return mig.state
        self.end(Migration.State.FAILED, Job.State.FAILED, error, explanation)
        return Migration.State.FAILED

    def restart_source(self, src: Node) -> None:
        """Bring the VE back to what it was on the source: started if it ran."""
        ve = self.ve()
        if self.mig.was_running:
            res = self.step_start(src)
            state = res.get("state", "running")
        else:
            state = VE.State.STOPPED
        VE.objects.filter(pk=ve.pk).update(state=state, state_changed_at=timezone.now())

    def step_start(self, src: Node) -> dict:
        deadline = time.monotonic() + RETRY_FOR
        while True:
            with transaction.atomic():
                sub = job_create(kind="start", node=src, ve=self.ve(), actor=None, mutating=False)
            sub = self.wait(sub, src)
            if sub.state == Job.State.SUCCEEDED:
                return sub.result or {}
            if sub.error not in UNKNOWN_OUTCOME or time.monotonic() > deadline:
                raise StepFailed(sub)
            time.sleep(2)


def migration_run(migration_id) -> str:
    """Run (or resume) a migration if no other orchestrator holds its lease."""
    now = timezone.now()
    from django.db.models import Q

    n = Migration.objects.filter(pk=migration_id, state__in=Migration.ACTIVE).filter(
        Q(lease_until__isnull=True) | Q(lease_until__lt=now)).update(lease_until=now + LEASE)
    if not n:
        return "skipped: finished or held by another orchestrator"
    mig = Migration.objects.select_related("ve", "source", "target", "job").get(pk=migration_id)
    orch = Orchestrator(mig, resumed=mig.state != Migration.State.PENDING)
    if mig.state == Migration.State.ROLLING_BACK:
        return orch.rollback(mig.error or "resumed", mig.explanation or _("the migration was interrupted"))
    return orch.run()


def migrations_resume() -> int:
    """Beat: resume migrations whose orchestrator stopped renewing its lease."""
    stale = Migration.objects.filter(state__in=Migration.ACTIVE, lease_until__lt=timezone.now())
    n = 0
    for mid in stale.values_list("id", flat=True):
        _enqueue(TASK_MIGRATE, str(mid))
        n += 1
    return n


# --- maintenance and drain -------------------------------------------------------------------


def node_set_maintenance(*, node: Node, on: bool, actor=None, source: str = "") -> Node:
    """Turn a node's maintenance mode on or off: no new VE and no migration lands on a node
    in maintenance; its VEs keep running."""
    require_staff(actor, what=_("node maintenance"), source=source)
    if not isinstance(on, bool):
        raise InvalidInput(_("maintenance must be on or off"), field="maintenance")
    with transaction.atomic():
        Node.objects.filter(pk=node.pk).update(maintenance=on)
        audit(action="node.maintenance", actor=actor, obj=node, source=source, detail={"maintenance": on})
    node.refresh_from_db()
    return node


def pick_target(ve: VE) -> tuple[Node | None, list[str]]:
    """The node with the most free memory that can take ``ve`` now (or None), and why each
    other node cannot."""
    fits, why = [], []
    for n in Node.objects.exclude(pk=ve.node_id).order_by("name"):
        problem = target_problem(ve, n)
        if problem is None:
            fits.append(n)
        else:
            why.append(problem)
    return max(fits, key=lambda n: (n.capacity or {}).get("mem_available", 0), default=None), why


def node_drain(*, node: Node, actor=None, source: str = "") -> Job:
    """Put ``node`` in maintenance and migrate every VE away, one at a time, each to the
    node with the most room that can take it; the job's log and result hold the summary of
    what moved and what could not."""
    require_staff(actor, what=_("draining a node"), source=source)
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node.pk)
        if Job.objects.filter(kind="drain", node=node, state__in=Job.ACTIVE).exists():
            raise Conflict(_("node %(node)s is being drained already") % {"node": node.name}, code="drain-running")
        Node.objects.filter(pk=node.pk).update(maintenance=True)
        now = timezone.now()
        job = Job.objects.create(kind="drain", node=node, ve=None, actor=actor, mutating=False,
                                 state=Job.State.RUNNING, started_at=now,
                                 expires_at=now + timedelta(seconds=STEP_TIMEOUT))
        _log_line(job, JobLog.Kind.STEP, _("Draining node %(node)s (maintenance mode on)") % {"node": node.name},
                  seq=1)
        audit(action="node.drain", actor=actor, obj=node, source=source, detail={"job": str(job.id)})
        transaction.on_commit(lambda: _enqueue(TASK_DRAIN, str(job.id)))
    return job


def drain_run(job_id) -> dict:
    """Migrate the VEs of a drain job's node away, one by one (panel worker)."""
    job = Job.objects.select_related("node", "actor").get(pk=job_id)
    if job.is_terminal:
        return {}
    node = job.node
    seq = [JobLog.objects.filter(job=job).aggregate(s=Max("seq"))["s"] or 1]

    def say(text, kind=JobLog.Kind.LOG):
        seq[0] += 1
        _log_line(job, kind, text, seq=seq[0])

    moved, failed = [], []
    for ve in (VE.objects.filter(node=node).exclude(state=VE.State.DESTROYED)
               .select_related("node", "tenant", "template").order_by("veid")):
        target, why = pick_target(ve)
        if target is None:
            reason = _("no node can take it") + (": " + "; ".join(why) if why else "")
            failed.append({"veid": ve.veid, "reason": reason})
            say(_("VE %(veid)s: %(why)s") % {"veid": ve.veid, "why": reason}, JobLog.Kind.ERROR)
            continue
        try:
            mjob = ve_migrate(ve=ve, target=target, actor=job.actor, source="drain", drain=job, enqueue=False)
        except (Conflict, Unavailable, InvalidInput, NotFound) as e:
            failed.append({"veid": ve.veid, "reason": str(e)})
            say(_("VE %(veid)s: %(why)s") % {"veid": ve.veid, "why": e}, JobLog.Kind.ERROR)
            continue
        say(_("VE %(veid)s: migrating to %(node)s (job %(job)s)") % {"veid": ve.veid, "node": target.name,
                                                                    "job": mjob.pk})
        state = migration_run(mjob.migration.pk)
        mjob.refresh_from_db()
        if state == Migration.State.DONE:
            moved.append({"veid": ve.veid, "target": target.name, "downtime_ms": mjob.result.get("downtime_ms")})
            say(_("VE %(veid)s: moved to %(node)s") % {"veid": ve.veid, "node": target.name}, JobLog.Kind.STEP)
        else:
            failed.append({"veid": ve.veid, "reason": mjob.explanation or state})
            say(_("VE %(veid)s: not moved: %(why)s") % {"veid": ve.veid, "why": mjob.explanation or state},
                JobLog.Kind.ERROR)
    summary = {"node": node.name, "moved": moved, "failed": failed}
    say(_("Drain of %(node)s: %(moved)d moved, %(failed)d could not be moved") % {
        "node": node.name, "moved": len(moved), "failed": len(failed)}, JobLog.Kind.STEP)
    Job.objects.filter(pk=job.pk, state__in=Job.ACTIVE).update(
        state=Job.State.SUCCEEDED if not failed else Job.State.FAILED, finished_at=timezone.now(), result=summary,
        error="" if not failed else "not-drained",
        explanation="" if not failed else _("%(n)d VE(s) could not be moved") % {"n": len(failed)})
    return summary

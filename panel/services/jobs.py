"""The Job pipeline on the panel side: dispatch, state transitions, node events,
heartbeats and the reaper.

A job row is written in the same transaction as the request and its message is sent to
the node's queue only once that transaction commits. Every state change is a conditional
UPDATE on the prior state, so events that arrive late, twice or out of order cannot
rewind a job.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone as dt_timezone

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone
from django.utils.translation import gettext as _

from containers import messages as m
from panel.models import VE, IPAddress, Job, JobLog, Node, Plan, UsageSample

from .errors import Conflict
from .webhooks import event_emit

log = logging.getLogger("hako.jobs")

# The VE state shown while a job of this kind runs.
TRANSIENT_STATE = {"create": VE.State.CREATING, "start": VE.State.STARTING, "restart": VE.State.STARTING,
                   "stop": VE.State.STOPPING, "destroy": VE.State.STOPPING}


# Jobs the panel runs itself (services/migrations.py): never sent to a node, so neither the
# reaper nor an agent restart may fail them; their orchestrator settles them.
PANEL_SIDE_KINDS = ("migrate", "drain")


def node_key(node: Node) -> bytes:
    return bytes.fromhex(node.key)


def job_create(*, kind: str, node: Node, ve: VE | None, actor=None, args: dict | None = None,
               mutating: bool | None = None, send: bool = True) -> Job:
    """Create a job and schedule its message for after the surrounding transaction commits.

    A second mutating job on a VE that has one pending or running is refused with
    :class:`Conflict` (the partial unique index decides, so two racing requests cannot both
    win).
    """
    mutating = (kind in m.MUTATING_OPS) if mutating is None else mutating
    now = timezone.now()
    if ve is not None and mutating:
        VE.objects.filter(pk=ve.pk).update(generation=F("generation") + 1)
        ve.refresh_from_db(fields=["generation"])
    job = Job(kind=kind, node=node, ve=ve, tenant=ve.tenant if ve else None, actor=actor,
              mutating=mutating, args=args or {}, generation=ve.generation if ve else 0,
              expires_at=now + timedelta(seconds=settings.HAKO_JOB_TTL))
    try:
        with transaction.atomic():
            job.save(force_insert=True)
    except IntegrityError:
        busy = Job.objects.filter(ve=ve, mutating=True, state__in=Job.ACTIVE).first()
        what = f"{busy.kind} job {busy.id} is {busy.state}" if busy else "another job is in progress"
        raise Conflict(_("VE %(veid)s is busy: %(what)s. Wait for it to finish.") % {"veid": ve.veid, "what": what},
                       code="ve-busy") from None
    spec = ve.spec() if ve is not None and kind != "destroy" else None
    body = m.job_body(job_id=str(job.id), node=node.name, op=kind, veid=ve.veid if ve else 0,
                      generation=job.generation, spec=spec, args=job.args,
                      ttl=int(settings.HAKO_JOB_TTL), now=now.timestamp())
    envelope = m.sign(body, node_key(node))
    if send:  # send=False: a panel-side job (PANEL_SIDE_KINDS) that holds the VE's lock only
        transaction.on_commit(lambda: send_job(node, job.id, envelope))
    return job


def send_job(node: Node, job_id, envelope: dict) -> None:
    """Publish a job to its node's queue; the Celery task id is the job id."""
    try:
        current_app.send_task(m.TASK_NODE_JOB, args=[envelope], queue=node.queue, task_id=str(job_id),
                              serializer="json")
    except Exception as e:  # broker down: the job must not stay pending until expiry unseen
        log.exception("could not publish job %s", job_id)
        job_fail(job_id, error="broker-unreachable",
                 explanation=f"The job could not be sent to node {node.name}: the message broker "
                             f"is unreachable ({type(e).__name__}). Nothing was changed; try again.")


def _ts(epoch) -> datetime:
    try:
        return datetime.fromtimestamp(float(epoch), tz=dt_timezone.utc)
    except (TypeError, ValueError, OverflowError):
        return timezone.now()


def job_cancel(*, job: Job, actor=None, source: str = "") -> bool:
    """Cancel a job that no node has started yet.

    The transition is conditional on ``pending``; the node is told through Celery's revoke
    so that it drops the message when it arrives. A job already running cannot be
    canceled here (its node is changing the VE): wait for it, or for the reaper.
    """
    from .audit import audit

    with transaction.atomic():
        n = Job.objects.filter(pk=job.pk, state=Job.State.PENDING).update(
            state=Job.State.CANCELED, finished_at=timezone.now(),
            explanation="Canceled before a node started it; nothing was changed.")
        if not n:
            return False
        job.refresh_from_db()
        _scrub_secrets(job)
        audit(action="job.cancel", actor=actor, tenant=job.tenant, obj=job, source=source,
              detail={"kind": job.kind})
        if job.kind == "create" and job.ve_id:
            VE.objects.filter(pk=job.ve_id).update(state=VE.State.ERROR)
    transaction.on_commit(lambda: current_app.control.revoke(str(job.pk)))
    return True


def job_fail(job_id, *, error: str, explanation: str, observed: dict | None = None) -> bool:
    """Fail an active job (conditional on it still being active) and settle its VE."""
    with transaction.atomic():
        n = Job.objects.filter(id=job_id, state__in=Job.ACTIVE).update(
            state=Job.State.FAILED, error=error[:64], explanation=explanation, finished_at=timezone.now())
        if not n:
            return False
        job = Job.objects.select_related("ve").get(id=job_id)
        _scrub_secrets(job)
        _log_line(job, JobLog.Kind.ERROR, explanation)
        if job.ve_id and job.kind not in m.MIGRATE_OPS:
            _settle_ve_after_failure(job, observed or {})
            _job_failed_event(job, error)
    return True


def _log_line(job: Job, kind: str, message: str, seq: int | None = None, ts=None) -> None:
    if seq is None:
        seq = (JobLog.objects.filter(job=job).order_by("-seq").values_list("seq", flat=True).first() or 0) + 1
        seq = max(seq, 1_000_001)  # panel-written lines sort after the node's
    JobLog.objects.get_or_create(job=job, seq=seq, defaults={"kind": kind, "message": message[:4000],
                                                             "ts": ts or timezone.now()})


def _settle_ve_after_failure(job: Job, observed: dict) -> None:
    ve = job.ve
    reserved = job.args.get("reserved") if job.kind == "set" else None
    if reserved:  # an --ipadd that did not happen gives its addresses back
        IPAddress.objects.filter(ve=ve, address__in=reserved).delete()
    state = observed.get("state")
    if job.kind == "create":
        new = VE.State.ERROR
    elif state in ("running", "stopped"):
        new = state
    elif state == "absent":
        new = VE.State.ERROR
    elif ve.state in (VE.State.STARTING, VE.State.STOPPING, VE.State.CREATING):
        new = VE.State.UNKNOWN  # the next heartbeat tells
    else:
        new = ve.state
    if new != ve.state:
        VE.objects.filter(pk=ve.pk).update(state=new, state_changed_at=timezone.now())


SECRET_ARGS = ("root_password_hash", "secret")  # "secret": a migration's sealed rsync secret


def _scrub_secrets(job: Job) -> None:
    """A finished job keeps no secrets: the password hash was for the node, once."""
    if any(k in job.args for k in SECRET_ARGS):
        Job.objects.filter(pk=job.pk).update(args={k: v for k, v in job.args.items() if k not in SECRET_ARGS})


def _apply_success(job: Job, result: dict) -> None:
    ve = job.ve
    if ve is None or job.kind in m.MIGRATE_OPS:  # a migration step: its orchestrator settles the VE
        return
    fields = {}
    if job.kind == "destroy":
        fields.update(state=VE.State.DESTROYED, destroyed_at=timezone.now(), nproc=None)
        IPAddress.objects.filter(ve=ve).delete()  # the node has let go of them
    else:
        state = result.get("state")
        if state in ("running", "stopped"):
            fields["state"] = state
        nproc = result.get("nproc")
        if isinstance(nproc, int) and nproc >= 0:
            fields["nproc"] = nproc if fields.get("state", ve.state) == "running" else None
        if job.kind == "set":
            fields.update(job.args.get("changes", {}))
            if job.args.get("plan"):  # ve_change_plan: the VE is on its new plan once applied
                fields["plan_id"] = job.args["plan"]
            released = job.args.get("released")
            if released:
                IPAddress.objects.filter(ve=ve, address__in=released).delete()
    if isinstance(result.get("traffic"), dict) and job.kind in ("stop", "restart", "destroy"):
        # The counters of the veth the stop removed, read just before: what the VE sent
        # since the last heartbeat is billed too.
        traffic = VE.objects.select_for_update().values_list("traffic", flat=True).get(pk=ve.pk)
        total = accumulate_traffic(traffic, result["traffic"])
        if total != traffic:
            fields["traffic"] = total
    if "state" in fields and fields["state"] != ve.state:
        fields["state_changed_at"] = timezone.now()
    if fields:
        VE.objects.filter(pk=ve.pk).update(**fields)
    if job.kind == "destroy":
        event_emit("service.terminated", tenant_id=ve.tenant_id, ve=ve, status="terminated", job=str(job.pk))
    elif job.kind == "set" and job.args.get("plan"):
        plan = Plan.objects.filter(pk=job.args["plan"]).values_list("name", flat=True).first()
        event_emit("service.plan_changed", tenant_id=ve.tenant_id, ve=ve, plan=plan, job=str(job.pk))


def _job_failed_event(job: Job, error: str) -> None:
    """``job.failed`` for a VE's job (a billing account linked to it may care)."""
    if job.ve_id:
        event_emit("job.failed", tenant_id=job.ve.tenant_id, ve=job.ve, job=str(job.pk), job_kind=job.kind,
                   error=error[:64])


def apply_event(envelope) -> str:
    """Apply one signed event from a node (panel worker). Returns what happened, for logs."""
    node_name = m.peek_field(envelope, "node")
    node = Node.objects.filter(name=node_name).first() if isinstance(node_name, str) else None
    if node is None:
        return "dropped: unknown node"
    try:
        body = m.open_envelope(envelope, node_key(node))
    except m.MessageError as e:
        log.warning("refused event claiming node %s: %s", node.name, e)
        return f"refused: {e}"
    if body.get("type") != "event" or not isinstance(body.get("seq"), int):
        return "refused: not an event"
    job_id, seq, kind = body.get("job_id"), body["seq"], body.get("event")
    if not isinstance(job_id, str) or not m.UUID_RE.match(job_id):
        return "refused: bad job id"
    message = str(body.get("message", ""))[:4000]
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    ts = _ts(body.get("ts"))
    if kind not in ("running", "log", "step", "succeeded", "failed"):
        return "refused: unknown event"
    lines = body.get("lines") if isinstance(body.get("lines"), list) else []
    # The event's lines and its own line (a step, "Task OK" or the error) go in one INSERT,
    # and its state change and sequence number in one UPDATE: the panel's share of a job's
    # latency is a handful of round trips. A redelivered event's lines are already there
    # (ignored by the unique (job, seq)).
    rows = [(item[0], JobLog.Kind.LOG, item[1]) for item in lines[:1000]
            if (isinstance(item, list) and len(item) == 2 and type(item[0]) is int and 0 < item[0] <= seq
                and isinstance(item[1], str))]
    observed = data.get("observed") if isinstance(data.get("observed"), dict) else {}
    with transaction.atomic():
        # Locked: the state read here is the one the update below changes (no concurrent
        # reaper or cancel in between), so the event's own line is written only with it.
        job = Job.objects.select_for_update(of=("self",)).select_related("ve").filter(id=job_id, node=node).first()
        if job is None:
            return "dropped: unknown job"
        if job.is_terminal:
            if kind == "running" and job.started_at is None:
                # The panel worker's two processes applied the result first: the job keeps
                # its outcome, and gets the start time and line its "running" event carries.
                Job.objects.filter(pk=job.pk).update(started_at=ts,
                                                     agent_instance=str(body.get("instance", ""))[:36])
                JobLog.objects.bulk_create([JobLog(job=job, seq=seq, kind=JobLog.Kind.STEP, message=message,
                                                   ts=ts)], ignore_conflicts=True)
                return "applied running (after the job's result)"
            return "ignored: job already finished"
        changes: dict = {"last_seq": Greatest(F("last_seq"), seq)}
        if kind == "running":
            if job.state == Job.State.PENDING:
                changes.update(state=Job.State.RUNNING, started_at=ts,
                               agent_instance=str(body.get("instance", ""))[:36])
            rows.append((seq, JobLog.Kind.STEP, message))
        elif kind in ("log", "step"):
            if message:  # a batch of lines (above) carries no message of its own
                rows.append((seq, JobLog.Kind.LOG if kind == "log" else JobLog.Kind.STEP, message))
        elif kind == "succeeded":
            changes.update(state=Job.State.SUCCEEDED, finished_at=ts, result=data)
            rows.append((seq, JobLog.Kind.STEP, "Task OK"))
        else:  # failed
            changes.update(state=Job.State.FAILED, finished_at=ts, error=str(data.get("error", "failed"))[:64],
                           explanation=message, result=data)
            rows.append((seq, JobLog.Kind.ERROR, message))
        Job.objects.filter(pk=job.pk).update(**changes)
        JobLog.objects.bulk_create([JobLog(job=job, seq=n, kind=k, message=text[:4000], ts=ts)
                                    for n, k, text in rows], ignore_conflicts=True)
        if kind == "running" and "state" in changes and job.ve_id and job.kind in TRANSIENT_STATE:
            VE.objects.filter(pk=job.ve_id).update(state=TRANSIENT_STATE[job.kind])
        elif kind == "succeeded":
            _apply_success(job, data)
            _scrub_secrets(job)
        elif kind == "failed":
            _scrub_secrets(job)
            if job.ve_id and job.kind not in m.MIGRATE_OPS:
                _settle_ve_after_failure(job, observed)
                _job_failed_event(job, str(data.get("error", "failed")))
    return f"applied {kind}"


def apply_heartbeat(envelope) -> str:
    """Apply a node's signed heartbeat: liveness, capacity and the VE inventory.

    The node is the truth about runtime state: a VE powered off from inside shows as
    stopped. VEs with a mutating job in flight are left to that job.
    """
    node_name = m.peek_field(envelope, "node")
    node = Node.objects.filter(name=node_name).first() if isinstance(node_name, str) else None
    if node is None:
        return "dropped: unknown node"
    try:
        body = m.open_envelope(envelope, node_key(node))
    except m.MessageError as e:
        log.warning("refused heartbeat claiming node %s: %s", node.name, e)
        return f"refused: {e}"
    if body.get("type") != "heartbeat":
        return "refused: not a heartbeat"
    instance = str(body.get("instance", ""))[:36]
    seq = body.get("seq") if isinstance(body.get("seq"), int) else 0
    if instance == node.agent_instance and seq <= node.heartbeat_seq:
        return "ignored: stale heartbeat"
    now = timezone.now()
    inventory = body.get("inventory") if isinstance(body.get("inventory"), list) else []
    with transaction.atomic():
        Node.objects.filter(pk=node.pk).update(
            state=Node.State.ONLINE, last_heartbeat=now, heartbeat_seq=seq, agent_instance=instance,
            capacity=body.get("capacity") if isinstance(body.get("capacity"), dict) else {},
            info=body.get("info") if isinstance(body.get("info"), dict) else {})
        if instance != node.agent_instance:
            # A new agent process: send it the node's configuration (pools, unreachable
            # routes) in case it starts without the last one.
            from .network import node_push_config

            node_push_config(node=node)
        if node.agent_instance and instance != node.agent_instance:
            for job_id in Job.objects.filter(node=node, state=Job.State.RUNNING).exclude(
                    agent_instance=instance).exclude(kind__in=PANEL_SIDE_KINDS).values_list("id", flat=True):
                job_fail(job_id, error="agent-restarted",
                         explanation=f"The node agent on {node.name} restarted while this job ran; "
                                     "the operation was interrupted. The VE's state is taken from the node.")
        ts = body.get("ts")
        _apply_inventory(node, inventory, now, sampled_at=float(ts) if type(ts) in (int, float) else None)
    return "applied heartbeat"


# Seconds of slack between a node's clock (the inventory's sample time) and the panel's
# (state_changed_at): a state changed this close to the sample is left to the next one.
STALE_INVENTORY_MARGIN = 2.0


def _apply_inventory(node: Node, inventory: list, now, sampled_at: float | None = None) -> None:
    seen = {}
    for item in inventory:
        if isinstance(item, dict) and type(item.get("veid")) is int:
            seen[item["veid"]] = item
    busy = set(Job.objects.filter(node=node, mutating=True, state__in=Job.ACTIVE, ve__isnull=False)
               .values_list("ve_id", flat=True))
    changed = []
    samples = {}
    read = {}  # the state each row had when read here, unlocked
    for ve in VE.objects.filter(node=node).exclude(state__in=[VE.State.DESTROYED, VE.State.CREATING]).only(
            "id", "veid", "state", "nproc", "state_changed_at", "traffic"):
        read[ve.pk] = ve.state
        item = seen.get(ve.veid)
        if item is not None:
            total = _item_traffic(ve.traffic, item)
            if total != ve.traffic:
                ve.traffic = total
                changed.append(ve)
        if item is not None and isinstance(item.get("usage"), dict):
            samples[ve.pk] = item["usage"]
        if ve.pk in busy or ve.state == VE.State.MIGRATING:  # its job or migration settles it
            continue
        if (sampled_at is not None and ve.state_changed_at is not None
                and ve.state_changed_at.timestamp() > sampled_at - STALE_INVENTORY_MARGIN):
            # The node took this inventory before the row's last change (a job's result
            # applied since): it is older news than the row. The next heartbeat tells.
            continue
        if item is None or item.get("state") not in ("running", "stopped"):
            state, nproc = VE.State.ERROR, None
        else:
            state = item["state"]
            nproc = item.get("nproc") if state == "running" and type(item.get("nproc")) is int else None
        if state != ve.state or nproc != ve.nproc:
            if state != ve.state:
                ve.state_changed_at = now
            ve.state, ve.nproc = state, nproc
            if not changed or changed[-1] is not ve:
                changed.append(ve)
    if changed:
        # The totals are added to under the rows' locks, taken in a fixed order: a job's
        # result (a stop's final counters) adds to the same rows.
        # A row whose state or node changed since it was read above (a job's result, a
        # migration's commit) keeps that newer state: writing back what was read would
        # undo it.
        fresh = {row[0]: row[1:] for row in VE.objects.select_for_update().filter(
            pk__in=[v.pk for v in changed]).order_by("id").values_list(
            "id", "traffic", "state", "nproc", "state_changed_at", "node_id")}
        for ve in changed:
            item = seen.get(ve.veid)
            base, state, nproc, state_changed_at, node_id = fresh.get(
                ve.pk, (ve.traffic, read[ve.pk], ve.nproc, ve.state_changed_at, node.pk))
            ve.traffic = _item_traffic(base, item) if item is not None else base
            if state != read[ve.pk] or node_id != node.pk:
                ve.state, ve.nproc, ve.state_changed_at = state, nproc, state_changed_at
        VE.objects.bulk_update(changed, ["state", "nproc", "state_changed_at", "traffic"])
    if samples and sampled_at is not None:
        _apply_usage_samples(samples, sampled_at)


def _item_traffic(total: dict, item: dict) -> dict:
    """A VE's traffic totals with an inventory item's counters added: the last counters of
    its veths that went away (``traffic_final``: stop, reboot, halt inside the VE), then
    its current veth's (``traffic``)."""
    finals = item.get("traffic_final") if isinstance(item.get("traffic_final"), list) else []
    for raw in [*finals[:16], item.get("traffic")]:
        if isinstance(raw, dict):
            total = accumulate_traffic(total, raw)
    return total


def _apply_usage_samples(samples: dict, sampled_at: float) -> None:
    """Fold the heartbeat's CPU/memory samples ({VE id: sample}) into UsageSample rows,
    locked in a fixed order: the usage rollup resets the memory peak there, and a heartbeat
    must not write back a peak the rollup has just booked."""
    rows = {r.ve_id: r for r in UsageSample.objects.select_for_update().filter(ve_id__in=list(samples))
            .order_by("ve_id")}
    new, changed = [], []
    for ve_id, sample in samples.items():
        row = rows.get(ve_id) or UsageSample(ve_id=ve_id, totals={})
        totals = accumulate_usage(row.totals, sample, sampled_at)
        if totals != row.totals:
            row.totals, row.updated_at = totals, timezone.now()
            (changed if ve_id in rows else new).append(row)
    if new:  # a heartbeat racing this one for a new VE: its first sample is dropped, not doubled
        UsageSample.objects.bulk_create(new, ignore_conflicts=True)
    if changed:
        UsageSample.objects.bulk_update(changed, ["totals", "updated_at"])


TRAFFIC_KEYS = ("in_bytes", "out_bytes", "in_packets", "out_packets")


# How many of a VE's recent veths (links) keep their last counters in VE.traffic["links"].
TRAFFIC_LINKS_KEPT = 8


def accumulate_traffic(total: dict, raw: dict) -> dict:
    """Add the growth of a VE's veth counters to its running totals.

    The node names each veth (``link``: host boot and ifindex): a new one at every start,
    also a reboot inside the VE, whose counters start from zero. The totals keep the highest
    counters seen of the last few links (``links``), so a sample adds only what its link
    sent beyond that: a link's final counters (from a stop's result, or a heartbeat's
    ``traffic_final``) count once however often and in whatever order they arrive, and a
    new link is a new base. A sample without ``link`` (an older agent) counts a counter that
    went down as restarted from zero. A malformed sample changes nothing.
    """
    clean = {}
    for k in TRAFFIC_KEYS:
        v = raw.get(k)
        if type(v) is not int or v < 0:
            return total
        clean[k] = v
    link = raw.get("link")
    if link is not None and (type(link) is not str or not 0 < len(link) <= 48):
        return total
    out = {k: int(total.get(k, 0)) for k in TRAFFIC_KEYS}
    links = {k: v for k, v in (total.get("links") or {}).items() if isinstance(v, dict)}
    legacy = total.get("raw") if isinstance(total.get("raw"), dict) else None
    if link is None:
        last = legacy or {}
        for k in TRAFFIC_KEYS:
            prev = int(last.get(k, 0))
            out[k] += clean[k] - prev if clean[k] >= prev else clean[k]
        out["raw"] = clean
    else:
        prev = links.pop(link, None)
        if prev is None and not links and legacy and all(clean[k] >= int(legacy.get(k, 0)) for k in TRAFFIC_KEYS):
            prev = legacy  # the first sample since the node named its links: likely the same veth
        prev = prev or {}
        merged = {}
        for k in TRAFFIC_KEYS:
            p = int(prev.get(k, 0))
            out[k] += max(0, clean[k] - p)
            merged[k] = max(clean[k], p)
        links[link] = merged  # most recent last
        while len(links) > TRAFFIC_LINKS_KEPT:
            links.pop(next(iter(links)))
    if links:
        out["links"] = links
    return out


# The memory integral bridges at most this many seconds between two samples: across a
# longer silence (agent down, node lost) nothing is known, and nothing is billed.
MAX_SAMPLE_GAP = 120.0


def accumulate_usage(total: dict, sample: dict, at: float) -> dict:
    """Fold one CPU/memory sample of a running VE (heartbeat ``usage``, taken at agent time
    ``at``) into its running totals (UsageSample.totals).

    * ``cpu_ns`` grows by the growth of the VE's CPU counter, which restarts from zero with
      every new cgroup (``boot`` changes): then the new value counts in full, as traffic
      does. CPU used after the last sample of a run that stopped is not seen (at most one
      heartbeat interval).
    * ``mem_byte_seconds`` grows by the trapezoid between this sample and the previous one
      of the same run, if that is at most MAX_SAMPLE_GAP old.
    * ``mem_peak_bytes`` is the highest charge since the last closed hour (the rollup
      resets it); each sample's peak is the kernel's high-water mark since the last one.

    A malformed sample changes nothing.
    """
    keys = ("cpu_ns", "mem_bytes", "mem_peak_bytes", "boot")
    if not all(type(sample.get(k)) is int and sample[k] >= 0 for k in keys):
        return total
    cpu, mem, peak, boot = (sample[k] for k in keys)
    last = total.get("raw") or {}
    same_run = last.get("boot") == boot
    prev = int(last.get("cpu_ns", 0)) if same_run else 0
    out = dict(total)
    out["cpu_ns"] = int(total.get("cpu_ns", 0)) + (cpu - prev if cpu >= prev else cpu)
    mbs = int(total.get("mem_byte_seconds", 0))
    dt = at - last["at"] if same_run and isinstance(last.get("at"), (int, float)) else 0
    if 0 < dt <= MAX_SAMPLE_GAP:
        mbs += int((int(last.get("mem_bytes", 0)) + mem) / 2 * dt)
    out["mem_byte_seconds"] = mbs
    out["mem_peak_bytes"] = max(int(total.get("mem_peak_bytes", 0)), peak, mem)
    out["raw"] = {"cpu_ns": cpu, "mem_bytes": mem, "boot": boot, "at": at}
    return out


def reap(now=None) -> dict:
    """Fail what can no longer finish (beat, every few seconds).

    * nodes silent for HAKO_NODE_LOST_AFTER become lost; their active jobs fail and their
      VEs show ``unknown`` until the node speaks again;
    * pending jobs no agent picked up before their message expired fail.
    """
    now = now or timezone.now()
    lost_before = now - timedelta(seconds=settings.HAKO_NODE_LOST_AFTER)
    counts = {"nodes_lost": 0, "jobs_failed": 0}
    for node in Node.objects.filter(state=Node.State.ONLINE, last_heartbeat__lt=lost_before):
        with transaction.atomic():
            if not Node.objects.filter(pk=node.pk, state=Node.State.ONLINE,
                                       last_heartbeat__lt=lost_before).update(state=Node.State.LOST):
                continue
            counts["nodes_lost"] += 1
            for job_id in (Job.objects.filter(node=node, state__in=Job.ACTIVE).exclude(kind__in=PANEL_SIDE_KINDS)
                           .values_list("id", flat=True)):
                counts["jobs_failed"] += job_fail(
                    job_id, error="node-lost",
                    explanation=f"Node {node.name} stopped sending heartbeats (last at "
                                f"{node.last_heartbeat:%Y-%m-%d %H:%M:%S} UTC); the job's outcome is unknown. "
                                "The VE's state will be read again when the node is back.")
            VE.objects.filter(node=node).exclude(state__in=[VE.State.DESTROYED, VE.State.MIGRATING]).update(
                state=VE.State.UNKNOWN, nproc=None)
    for job_id in (Job.objects.filter(state=Job.State.PENDING, expires_at__lt=now).exclude(kind__in=PANEL_SIDE_KINDS)
                   .values_list("id", flat=True)):
        counts["jobs_failed"] += job_fail(
            job_id, error="not-picked-up",
            explanation="No node agent picked this job up before it expired; nothing was changed. "
                        "Check that the node's agent is running, then try again.")
    return counts


def job_wait(job: Job, *, on_log=None, timeout: float = 300, poll: float = 0.02) -> Job:
    """Block until ``job`` is terminal, calling ``on_log(JobLog)`` for each new log line.

    For the command line and tests; web pages follow jobs without blocking.
    """
    import time

    deadline = time.monotonic() + timeout
    shown = 0
    while True:
        job.refresh_from_db()
        if on_log is not None:
            # Events may be applied out of order by the panel worker's threads: show node
            # lines only once the sequence has no gap, and everything once the job is over.
            for line in JobLog.objects.filter(job=job, seq__gt=shown).order_by("seq"):
                if line.seq != shown + 1 and not job.is_terminal:
                    break
                on_log(line)
                shown = line.seq
        if job.is_terminal:
            return job
        if time.monotonic() > deadline:
            return job
        time.sleep(poll)

"""Suspension of a VE or of a whole tenant (``ve_suspend``, ``ve_unsuspend``,
``tenant_suspend``, ``tenant_unsuspend``), by staff now and by billing later.

A suspension names who asked for it (``by``: admin, billing or abuse) and why. A VE is
suspended while any active suspension applies to it or to its tenant; lifting one source's
suspension leaves the others in force. A suspended VE is stopped through the ordinary
``ve_stop`` job and refused by ``ve_start``/``ve_restart``; one that runs anyway (its stop
met a busy VE, it came back on boot) is stopped again by ``enforce_suspensions`` (beat).
Lifting the last suspension does not start a VE (its owner does), except through
``ve_unsuspend(restore_power=True)``, which billing's unsuspend uses: a VE that the lifted
suspension itself stopped while it ran is started again once nothing else holds it.
"""
from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from panel.access import require_staff
from panel.models import VE, Job, Suspension, Tenant

from .audit import audit
from .errors import Conflict, InvalidInput, NotFound
from .quotas import check_text
from .webhooks import event_emit

log = logging.getLogger("hako.suspensions")

REASON_MAX = 500
STOP_STATES = (VE.State.RUNNING, VE.State.STARTING)


def active_suspensions(ve: VE) -> list[Suspension]:
    """The active suspensions that keep ``ve`` stopped: its own and its tenant's."""
    return list(Suspension.objects.filter(lifted_at__isnull=True).filter(
        Q(ve_id=ve.pk) | Q(ve__isnull=True, tenant_id=ve.tenant_id)).order_by("created_at"))


def tenant_suspensions(tenant: Tenant) -> list[Suspension]:
    """The active tenant-wide suspensions of ``tenant``."""
    return list(Suspension.objects.filter(lifted_at__isnull=True, ve__isnull=True, tenant=tenant)
                .order_by("created_at"))


def is_suspended(ve: VE) -> bool:
    return bool(active_suspensions(ve))


def suspended_expression():
    """``VE`` queryset annotation: True when a suspension holds the VE (its own or its
    tenant's), in the list's own query (``.annotate(suspended=suspended_expression())``)."""
    return Exists(Suspension.objects.filter(lifted_at__isnull=True).filter(
        Q(ve_id=OuterRef("pk")) | Q(ve__isnull=True, tenant_id=OuterRef("tenant_id"))))


def describe(suspensions) -> str:
    """Why, in one line for the page and error messages: ``billing: invoice 42 unpaid``."""
    parts = []
    for s in suspensions:
        scope = "" if s.ve_id else " (whole account)"
        parts.append(f"{s.source}{scope}: {s.reason}")
    return "; ".join(parts)


def suspension_status(ve: VE) -> list[dict]:
    """What the VE page shows: each active suspension's source, scope, reason and date."""
    return [{"source": s.source, "scope": "ve" if s.ve_id else "tenant", "reason": s.reason,
             "since": s.created_at} for s in active_suspensions(ve)]


def _by(value) -> str:
    if value not in Suspension.Source.values:
        raise InvalidInput(_("a suspension comes from one of: %(sources)s")
                           % {"sources": ", ".join(Suspension.Source.values)}, field="by")
    return value


def _stop(ves, actor, source: str) -> list[Job]:
    """Stop the running ones through ve_stop; a busy VE is left to enforce_suspensions."""
    from .ves import ve_stop

    jobs = []
    for ve in ves:
        if ve.state not in STOP_STATES:
            continue
        try:
            with transaction.atomic():
                jobs.append(ve_stop(ve=ve, actor=actor, source=source))
        except Conflict as e:
            log.info("suspended VE %s not stopped now (%s); the enforcer will", ve.veid, e.message)
    return jobs


def _create(actor, **fields) -> tuple[Suspension, bool]:
    """The active suspension for these fields, made unless it exists (the partial unique
    index decides between racing requests)."""
    query = {k: v for k, v in fields.items() if k in ("tenant", "ve", "source")}
    if "ve" not in query:
        query["ve__isnull"] = True
    existing = Suspension.objects.filter(lifted_at__isnull=True, **query).first()
    if existing:
        return existing, False
    try:
        with transaction.atomic():
            return Suspension.objects.create(created_by=actor if getattr(actor, "pk", None) else None,
                                             **fields), True
    except IntegrityError:
        return Suspension.objects.get(lifted_at__isnull=True, **query), False


def ve_suspend(*, ve: VE, by: str, reason: str, actor=None, source: str = "") -> Suspension:
    """Suspend a VE for ``by`` (admin, billing, abuse) with a reason the customer will see,
    and stop it if it runs. Suspending again for the same source adds nothing (it only
    stops the VE if it runs). The stop jobs started are in the result's ``stop_jobs``."""
    require_staff(actor, what="suspending VEs", source=source)
    by = _by(by)
    reason = check_text(reason, field="reason", limit=REASON_MAX)
    with transaction.atomic():
        locked = VE.objects.select_for_update(of=("self",)).select_related("tenant", "node", "template").get(pk=ve.pk)
        if locked.state == VE.State.DESTROYED:
            raise NotFound(_("VE %(veid)s does not exist") % {"veid": locked.veid})
        susp, created = _create(actor, tenant=locked.tenant, ve=locked, source=by, reason=reason)
        audit(action="ve.suspend", actor=actor, tenant=locked.tenant, obj=locked, source=source,
              result="ok" if created else "noop",
              detail={"by": by, "reason": reason, "suspension": str(susp.pk)})
        if created:
            event_emit("service.suspended", tenant_id=locked.tenant_id, ve=locked, status="suspended", source=by)
        susp.stop_jobs = _stop([locked], actor, source)
        if susp.stop_jobs and not susp.stopped_running:
            susp.stopped_running = True
            susp.save(update_fields=["stopped_running"])
    return susp


def ve_unsuspend(*, ve: VE, by: str, actor=None, reason: str = "", source: str = "",
                 restore_power: bool = False) -> Suspension | None:
    """Lift the VE's own suspension by ``by``; others (other sources, the tenant's) stay.
    Returns the lifted suspension, or None if there was none (a repeat is a no-op).

    With ``restore_power``, a VE that this suspension stopped while it ran, and that no
    other suspension holds, is started again; the start job is the result's
    ``start_job`` (None when nothing was started)."""
    require_staff(actor, what="lifting suspensions", source=source)
    by = _by(by)
    reason = check_text(reason, field="reason", limit=REASON_MAX, required=False)
    with transaction.atomic():
        locked = VE.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=ve.pk)
        susp = Suspension.objects.select_for_update().filter(ve=locked, source=by, lifted_at__isnull=True).first()
        _lift(susp, actor, reason)
        remaining = active_suspensions(locked)
        audit(action="ve.unsuspend", actor=actor, tenant=locked.tenant, obj=locked, source=source,
              result="ok" if susp else "noop",
              detail={"by": by, "reason": reason, "still_suspended_by": [s.source for s in remaining]})
        if susp is not None:
            event_emit("service.unsuspended", tenant_id=locked.tenant_id, ve=locked, source=by,
                       status="suspended" if remaining else "active",
                       still_suspended_by=[s.source for s in remaining])
            susp.start_job = None
            if restore_power and susp.stopped_running and not remaining and locked.state == VE.State.STOPPED:
                from .ves import ve_start

                try:
                    with transaction.atomic():
                        susp.start_job = ve_start(ve=locked, actor=actor, source=source)
                except Conflict as e:  # a job in flight: the owner starts it later
                    log.info("unsuspended VE %s not started now (%s)", locked.veid, e.message)
    return susp


def tenant_suspend(*, tenant: Tenant, by: str, reason: str, actor=None, source: str = "") -> Suspension:
    """Suspend every VE of a tenant (now and future ones) for ``by``; running VEs stop."""
    require_staff(actor, what="suspending tenants", source=source)
    by = _by(by)
    reason = check_text(reason, field="reason", limit=REASON_MAX)
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        susp, created = _create(actor, tenant=locked, source=by, reason=reason)
        audit(action="tenant.suspend", actor=actor, tenant=locked, obj=locked, source=source,
              result="ok" if created else "noop",
              detail={"by": by, "reason": reason, "suspension": str(susp.pk)})
        ves = VE.objects.select_related("tenant", "node", "template").filter(tenant=locked, state__in=STOP_STATES)
        susp.stop_jobs = _stop(list(ves), actor, source)
    return susp


def tenant_unsuspend(*, tenant: Tenant, by: str, actor=None, reason: str = "", source: str = "") -> Suspension | None:
    """Lift the tenant-wide suspension by ``by``; VE suspensions and other sources stay."""
    require_staff(actor, what="lifting suspensions", source=source)
    by = _by(by)
    reason = check_text(reason, field="reason", limit=REASON_MAX, required=False)
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        susp = Suspension.objects.select_for_update().filter(
            tenant=locked, ve__isnull=True, source=by, lifted_at__isnull=True).first()
        _lift(susp, actor, reason)
        audit(action="tenant.unsuspend", actor=actor, tenant=locked, obj=locked, source=source,
              result="ok" if susp else "noop", detail={"by": by, "reason": reason})
    return susp


def _lift(susp: Suspension | None, actor, reason: str) -> None:
    if susp is None:
        return
    susp.lifted_at = timezone.now()
    susp.lifted_by = actor if getattr(actor, "pk", None) else None
    susp.lift_reason = reason
    susp.save(update_fields=["lifted_at", "lifted_by", "lift_reason"])


def suspended_running_ves():
    """VEs that run (or are starting) although a suspension applies to them."""
    tenant_wide = Suspension.objects.filter(lifted_at__isnull=True, ve__isnull=True).values("tenant_id")
    own = Suspension.objects.filter(lifted_at__isnull=True, ve__isnull=False).values("ve_id")
    return VE.objects.filter(state__in=STOP_STATES).filter(
        Q(pk__in=own) | Q(tenant_id__in=tenant_wide)).select_related("tenant", "node", "template")


def enforce_suspensions() -> int:
    """Stop suspended VEs that run anyway (beat). Returns how many stop jobs were sent."""
    busy = set(Job.objects.filter(mutating=True, state__in=Job.ACTIVE, ve__isnull=False)
               .values_list("ve_id", flat=True))
    todo = [ve for ve in suspended_running_ves() if ve.pk not in busy]
    return len(_stop(todo, None, "system:suspension"))

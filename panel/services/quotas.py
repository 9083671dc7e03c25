"""Tenant quotas: limits, usage, the check-and-reserve that every growing change goes
through, and the quota request workflow (``quota_request_create``, ``..._approve``,
``..._deny``).

Check and reservation are one step (R12): a service opens ``quota_guard(tenant)`` inside
its transaction, which locks the tenant's quota row (``SELECT ... FOR UPDATE``) and
measures usage; the service then writes its rows (the VE, the pending resize job, the
address allocations) and, on leaving the block, usage is measured again and every measure
that grew must be within its limit, or the whole transaction is rolled back. Concurrent
requests of one tenant queue on the row lock, so the second one measures the first one's
rows: N parallel creates against a remaining quota of q give exactly q VEs.

Usage is never stored, so it cannot drift: VEs that are not destroyed count with their
applied sizes, or with the larger size a pending resize asks for; addresses count their
allocations.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Count, F, Sum
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from panel.access import audit_denial, require_role, require_staff
from panel.models import VE, DomainEvent, IPAddress, Job, Membership, QuotaRequest, Tenant, TenantQuota

from .audit import audit
from .errors import Conflict, Forbidden, InvalidInput, QuotaExceeded, field_label
from .validation import _SIZE_RE, _UNITS, human_size

log = logging.getLogger("hako.quotas")

FIELDS = TenantQuota.LIMIT_FIELDS
SIZE_FIELDS = ("memory", "disk")
# What a limit may be set to. The bounds are far above any real fleet and only there to
# refuse typos and overflow ("99999999T").
BOUNDS = {
    "max_ves": 100_000,
    "memory": 1 << 50,       # 1 PiB
    "disk": 1 << 54,         # 16 PiB
    "cpuunits": 1_000_000_000,
    "addresses": 1_000_000,
    "backups": 1_000_000,
}
LABELS = {"max_ves": "VEs", "memory": "memory", "disk": "disk", "cpuunits": "CPU units",
          "addresses": "addresses", "backups": "backups"}
REASON_MAX = 2000
# LABELS stay English for mail and the command line; messages to a person use these.
LABELS_SHOWN = {"max_ves": gettext_lazy("VEs"), "memory": gettext_lazy("memory"), "disk": gettext_lazy("disk"),
                "cpuunits": gettext_lazy("CPU units"), "addresses": gettext_lazy("addresses"),
                "backups": gettext_lazy("backups")}


def _quota_label(field: str) -> str:
    return str(LABELS_SHOWN.get(field, field))


def _state(state: str) -> str:
    """A quota request's state as a message names it."""
    return str({"approved": gettext_lazy("approved"), "denied": gettext_lazy("denied"),
                "superseded": gettext_lazy("superseded"), "pending": gettext_lazy("pending")}.get(state, state))


def _show(field: str, value) -> str:
    """``show`` for a message: "unlimited" translated."""
    return _("unlimited") if value is None else show(field, value)


# --- amounts -----------------------------------------------------------------------------

def show(field: str, value) -> str:
    """A limit or usage as people read it: sizes as 4G, ``None`` as unlimited."""
    if value is None:
        return "unlimited"
    return human_size(value) if field in SIZE_FIELDS else str(value)


def parse_amount(field: str, raw, *, allow_unlimited: bool = False, allow_zero: bool = True) -> int | None:
    """Parse one limit: whole numbers, sizes like ``8G`` for memory and disk, ``None``
    (or "unlimited") for no limit where allowed. Negative, fractional, non-numeric and
    absurdly large values are refused with a message naming the field."""
    if field not in FIELDS:
        raise InvalidInput(_("unknown quota %(name)r; known: %(known)s") % {"name": str(field)[:32],
                           "known": ", ".join(FIELDS)}, field="amounts")
    if raw is None or (isinstance(raw, str) and raw.strip().lower() == "unlimited"):
        if allow_unlimited:
            return None
        raise InvalidInput(_("%(field)s: give a number") % {"field": _quota_label(field)}, field=field)
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise InvalidInput(_("%(field)s: expected a whole number") % {"field": _quota_label(field)}, field=field)
    if isinstance(raw, int):
        n = raw
    else:
        text = raw.strip()
        m = _SIZE_RE.match(text) if field in SIZE_FIELDS else None
        if m:
            n = int(m.group(1)) * _UNITS[m.group(2).upper()]
        elif text.isascii() and text.isdigit() and len(text) <= 20:
            n = int(text)
        else:
            what = _("%(field)s: %(text)r is not a size like 8G") if field in SIZE_FIELDS else \
                _("%(field)s: %(text)r is not a whole number")
            raise InvalidInput(what % {"field": _quota_label(field), "text": text[:40]}, field=field)
    lowest = 0 if allow_zero else 1
    if not lowest <= n <= BOUNDS[field]:
        raise InvalidInput(_("%(field)s must be between %(low)s and %(high)s")
                           % {"field": _quota_label(field), "low": show(field, lowest),
                              "high": show(field, BOUNDS[field])},
                           field=field)
    return n


def _amounts(raw, *, allow_unlimited: bool, allow_zero: bool) -> dict:
    if not isinstance(raw, dict) or not raw:
        raise InvalidInput(_("give at least one quota and its amount"), field="amounts")
    if len(raw) > len(FIELDS):
        raise InvalidInput(_("too many quotas"), field="amounts")
    return {f: parse_amount(f, v, allow_unlimited=allow_unlimited, allow_zero=allow_zero)
            for f, v in raw.items()}


def check_text(value, *, field: str, limit: int, required: bool = True, multiline: bool = False) -> str:
    """Free text: bounded, no control characters (a newline only where ``multiline``)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(_("%(field)s must be text") % {"field": field_label(field)}, field=field)
    value = value.strip()
    if required and not value:
        raise InvalidInput(_("give a %(field)s") % {"field": field_label(field)}, field=field)
    if len(value) > limit:
        raise InvalidInput(_("%(field)s must be at most %(limit)d characters") % {"field": field_label(field),
                                                                                  "limit": limit}, field=field)
    allowed = "\n" if multiline else ""
    if any((ord(c) < 32 and c not in allowed) or 127 <= ord(c) < 160 or c in "\u2028\u2029" for c in value):
        raise InvalidInput(_("%(field)s must not contain control characters") % {"field": field_label(field)},
                           field=field)
    return value


# --- the lock and usage ------------------------------------------------------------------

def quota_lock(tenant: Tenant) -> TenantQuota:
    """The tenant's quota row, locked until the surrounding transaction ends (created with
    no limits the first time: a tenant without a row is unlimited)."""
    row = TenantQuota.objects.select_for_update().filter(tenant=tenant).first()
    if row is None:
        TenantQuota.objects.bulk_create([TenantQuota(tenant=tenant)], ignore_conflicts=True)
        row = TenantQuota.objects.select_for_update().get(tenant=tenant)
    return row


def tenant_usage(tenant: Tenant) -> dict:
    """What a tenant uses now, by quota field (reserved sizes of pending resizes included)."""
    return tenants_usage([tenant])[tenant.pk]


def tenants_usage(tenants) -> dict:
    """``tenant_usage`` of many tenants at once, by tenant id, in a fixed number of queries
    (one more when resizes are pending), so that a page of tenants costs the same whatever
    its length."""
    ids = [t.pk for t in tenants]
    usage = {pk: {"max_ves": 0, "memory": 0, "disk": 0, "cpuunits": 0, "addresses": 0,
                  "backups": 0}  # backups come with their own issue
             for pk in ids}
    live = VE.objects.filter(tenant_id__in=ids).exclude(state=VE.State.DESTROYED)
    for agg in live.order_by().values("tenant_id").annotate(
            n=Count("id"), memory=Sum("memory"), disk=Sum("disk"), cpuunits=Sum("cpuunits")):
        usage[agg["tenant_id"]].update(max_ves=agg["n"], memory=agg["memory"] or 0, disk=agg["disk"] or 0,
                                       cpuunits=agg["cpuunits"] or 0)
    pending = {j.ve_id: j.args.get("changes", {}) for j in Job.objects.filter(
        tenant_id__in=ids, kind="set", state__in=Job.ACTIVE, ve__isnull=False).only("ve_id", "args")}
    if pending:
        for ve in live.filter(pk__in=pending).only("id", "tenant_id", "memory", "disk", "cpuunits"):
            for field in ("memory", "disk", "cpuunits"):
                wanted = pending[ve.pk].get(field)
                if type(wanted) is int and wanted > getattr(ve, field):
                    usage[ve.tenant_id][field] += wanted - getattr(ve, field)
    for agg in IPAddress.objects.filter(ve__tenant_id__in=ids).exclude(ve__state=VE.State.DESTROYED).order_by() \
            .values("ve__tenant_id").annotate(n=Count("id")):
        usage[agg["ve__tenant_id"]]["addresses"] = agg["n"]
    return usage


@contextmanager
def quota_guard(tenant: Tenant):
    """Lock the tenant's quota and refuse, on leaving, any measure that grew past its limit.

    Use inside ``transaction.atomic()`` and write the reservation (rows) inside the block;
    raising :class:`QuotaExceeded` from here rolls the transaction back with them.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("quota_guard needs the caller's transaction")
    quota = quota_lock(tenant)
    before = tenant_usage(tenant)
    yield quota
    after = tenant_usage(tenant)
    over = []
    for field in FIELDS:
        limit = getattr(quota, field)
        if limit is not None and after[field] > before[field] and after[field] > limit:
            over.append(_("%(quota)s would be %(after)s of %(limit)s (in use %(before)s)") % {
                "quota": _quota_label(field), "after": show(field, after[field]), "limit": show(field, limit),
                "before": show(field, before[field])})
    if over:
        raise QuotaExceeded(_("quota exceeded for tenant %(tenant)s: %(over)s. Ask for more with a quota request.")
                            % {"tenant": tenant.slug, "over": "; ".join(over)}, field="quota")


def quota_overview(tenant: Tenant) -> list[dict]:
    """Use against each limit, for the tenant dashboard: one dict per quota with ``used``,
    ``limit`` (None = unlimited), ``available`` and ``percent``, plus readable strings."""
    return quota_overviews([tenant])[tenant.pk]


def quota_overviews(tenants) -> dict:
    """``quota_overview`` of many tenants, by tenant id, in a fixed number of queries (the
    staff tenant list)."""
    tenants = list(tenants)
    limits = {q.tenant_id: q for q in TenantQuota.objects.filter(tenant_id__in=[t.pk for t in tenants])}
    usage = tenants_usage(tenants)
    return {t.pk: _overview(limits.get(t.pk) or TenantQuota(tenant=t), usage[t.pk]) for t in tenants}


def _overview(quota: TenantQuota, usage: dict) -> list[dict]:
    out = []
    for field in FIELDS:
        limit, used = getattr(quota, field), usage[field]
        out.append({
            "name": field, "label": _quota_label(field), "used": used, "limit": limit,
            "available": None if limit is None else max(0, limit - used),
            "percent": None if not limit else min(100, round(100 * used / limit)),
            "used_text": show(field, used), "limit_text": show(field, limit),
        })
    return out


# --- admin: set limits ---------------------------------------------------------------------

def quota_set(*, tenant: Tenant, actor=None, source: str = "", **limits) -> TenantQuota:
    """Set a tenant's limits directly (staff). ``None`` = unlimited, 0 = none allowed.
    Lowering a limit below usage is allowed: the tenant then cannot grow until under it."""
    require_staff(actor, what="setting quotas", source=source)
    clean = _amounts(limits, allow_unlimited=True, allow_zero=True)
    with transaction.atomic():
        quota = quota_lock(tenant)
        before = quota.limits()
        for field, value in clean.items():
            setattr(quota, field, value)
        quota.version += 1
        quota.save()
        audit(action="quota.set", actor=actor, tenant=tenant, obj=tenant, source=source,
              detail={"limits": clean, "previous": {f: before[f] for f in clean}})
    return quota


# --- quota requests ------------------------------------------------------------------------

def quota_request_create(*, tenant: Tenant, actor, amounts: dict, reason: str, source: str = "") -> QuotaRequest:
    """A member (operator or owner) asks for higher limits: ``amounts`` are the new limits
    wanted, each above the current one. A newer request supersedes the tenant's pending one."""
    require_role(actor, tenant, Membership.Role.OPERATOR, what="tenant", source=source)
    wanted = _amounts(amounts, allow_unlimited=False, allow_zero=False)
    reason = check_text(reason, field="reason", limit=REASON_MAX, multiline=True)
    with transaction.atomic():
        quota = quota_lock(tenant)
        for field, value in wanted.items():
            current = getattr(quota, field)
            if current is None:
                raise InvalidInput(_("%(quota)s are already unlimited for %(tenant)s")
                                   % {"quota": _quota_label(field), "tenant": tenant.slug}, field=field)
            if value <= current:
                raise InvalidInput(_("%(quota)s: ask for more than the current %(current)s")
                                   % {"quota": _quota_label(field), "current": show(field, current)}, field=field)
        superseded = list(QuotaRequest.objects.select_for_update().filter(
            tenant=tenant, state=QuotaRequest.State.PENDING).values_list("pk", flat=True))
        for pk in superseded:
            _transition(pk, QuotaRequest.State.SUPERSEDED)
        req = QuotaRequest.objects.create(
            tenant=tenant, requester=actor if getattr(actor, "pk", None) else None, amounts=wanted,
            baseline={f: getattr(quota, f) for f in wanted}, reason=reason, quota_version=quota.version)
        audit(action="quota_request.create", actor=actor, tenant=tenant, obj=req, source=source,
              detail={"amounts": wanted, "baseline": req.baseline, "reason": reason,
                      **({"supersedes": [str(pk) for pk in superseded]} if superseded else {})})
    return req


def _transition(pk, state: str, **fields) -> None:
    QuotaRequest.objects.filter(pk=pk).update(state=state, version=F("version") + 1, **fields)


def _decidable(request: QuotaRequest, actor, version: int | None) -> QuotaRequest:
    """Lock the request and check it can still be decided by ``actor``."""
    req = QuotaRequest.objects.select_for_update(of=("self",)).select_related("tenant", "requester").get(pk=request.pk)
    if req.state != QuotaRequest.State.PENDING:
        by = _(" by %(who)s") % {"who": req.decided_by_label} if req.decided_by_label else ""
        when = _(" at %(when)s UTC") % {"when": f"{req.decided_at:%Y-%m-%d %H:%M}"} if req.decided_at else ""
        raise Conflict(_("this quota request is already %(state)s%(by)s%(when)s; nothing was changed")
                       % {"state": _state(req.state), "by": by, "when": when}, code="already-decided")
    if version is not None and version != req.version:
        raise Conflict(_("this quota request changed since you loaded it; reload and decide again"),
                       code="stale")
    return req


def _refuse_own(request: QuotaRequest, actor, source: str) -> None:
    """Segregation of duties: nobody decides a request they made (the requester never
    changes, so this is checked before the transaction, where the denial's record stays)."""
    requester = QuotaRequest.objects.filter(pk=request.pk).values_list("requester_id", flat=True).first()
    if actor is not None and requester is not None and requester == getattr(actor, "pk", None):
        audit_denial(actor, request.tenant, "own-request", {"request": str(request.pk)}, source)
        raise Forbidden(_("you cannot decide your own quota request: another administrator must"), field="request")


def quota_request_approve(*, request: QuotaRequest, actor, amounts: dict | None = None, reason: str = "",
                          version: int | None = None, source: str = "") -> QuotaRequest:
    """A staff admin who is not the requester grants a pending request, as asked or with
    other ``amounts``; the granted limits replace the tenant's.

    Only a pending request can be decided, under its row lock, so a second approval (a
    double click, two admins) changes nothing and says who decided first. ``version`` is the
    request's version the approver saw. If the tenant's limits changed since the request was
    made, approving it as asked is refused as stale: give explicit ``amounts`` (decided
    against today's limits) or deny it.
    """
    require_staff(actor, what="deciding quota requests", source=source)
    _refuse_own(request, actor, source)
    reason = check_text(reason, field="reason", limit=REASON_MAX, required=False, multiline=True)
    # A grant of 0 would take away what the tenant has: that is a denial (or quota_set).
    granted = None if amounts is None else _amounts(amounts, allow_unlimited=True, allow_zero=False)
    with transaction.atomic():
        req = _decidable(request, actor, version)
        quota = quota_lock(req.tenant)
        if granted is None:
            if quota.version != req.quota_version:
                now = ", ".join(_("%(quota)s now %(limit)s")
                                % {"quota": _quota_label(f), "limit": _show(f, getattr(quota, f))} for f in req.amounts)
                raise Conflict(_("the tenant's limits changed since this request was made (%(now)s); approve it with "
                                 "explicit amounts or deny it") % {"now": now}, code="stale")
            granted = dict(req.amounts)
        previous = {f: getattr(quota, f) for f in granted}
        for field, value in granted.items():
            setattr(quota, field, value)
        quota.version += 1
        quota.save()
        now = timezone.now()
        _transition(req.pk, QuotaRequest.State.APPROVED, granted=granted, decided_by=_user(actor),
                    decided_by_label=_label(actor), decided_at=now, decision_reason=reason)
        req.refresh_from_db()
        audit(action="quota_request.approve", actor=actor, tenant=req.tenant, obj=req, source=source,
              detail={"requested": req.amounts, "granted": granted, "previous": previous, "reason": reason})
        _decided(req)
    return req


def quota_request_deny(*, request: QuotaRequest, actor, reason: str, version: int | None = None,
                       source: str = "") -> QuotaRequest:
    """A staff admin who is not the requester refuses a pending request, with a reason."""
    require_staff(actor, what="deciding quota requests", source=source)
    _refuse_own(request, actor, source)
    reason = check_text(reason, field="reason", limit=REASON_MAX, multiline=True)
    with transaction.atomic():
        req = _decidable(request, actor, version)
        _transition(req.pk, QuotaRequest.State.DENIED, decided_by=_user(actor), decided_by_label=_label(actor),
                    decided_at=timezone.now(), decision_reason=reason)
        req.refresh_from_db()
        audit(action="quota_request.deny", actor=actor, tenant=req.tenant, obj=req, source=source,
              detail={"requested": req.amounts, "reason": reason})
        _decided(req)
    return req


def _user(actor):
    return actor if getattr(actor, "pk", None) else None


def _label(actor) -> str:
    if actor is None:
        return "local administrator"
    return (getattr(actor, "username", "") or str(actor))[:150]


def _decided(req: QuotaRequest) -> None:
    """The decision as a business event (billing delivers it as a webhook) and an e-mail to
    the tenant's owners and the requester once the transaction commits."""
    payload = {
        "request": str(req.pk), "tenant": str(req.tenant_id), "tenant_slug": req.tenant.slug,
        "state": req.state, "requested": req.amounts, "granted": req.granted,
        "reason": req.decision_reason, "decided_by": req.decided_by_label,
        "decided_at": req.decided_at.isoformat() if req.decided_at else None,
    }
    DomainEvent.objects.create(kind="quota_request.decided", tenant=req.tenant, payload=payload)
    transaction.on_commit(lambda: _mail_decision(req))


def decision_lines(req: QuotaRequest) -> list[str]:
    """One line per quota of a decided request, as the e-mail states it: what was asked
    and, when approved, exactly what was granted. Staff may grant other amounts, for only
    some of the quotas asked or for others too: a quota asked but left out of the grant
    says so ("not granted, stays at ..."), never the amount asked; ``None`` granted is
    unlimited."""
    approved = req.state == QuotaRequest.State.APPROVED
    granted = req.granted or {}
    # The approval left the other limits as they were: today's row says what they are.
    quota = TenantQuota.objects.filter(tenant_id=req.tenant_id).first() or TenantQuota()
    lines = []
    for field, value in req.amounts.items():
        line = f"  {LABELS[field]}: asked {show(field, value)}"
        if approved:
            if field in granted:
                line += f", granted {show(field, granted[field])}"
            else:
                line += f", not granted (the limit stays {show(field, getattr(quota, field))})"
        lines.append(line)
    if approved:
        for field, value in granted.items():
            if field not in req.amounts:
                lines.append(f"  {LABELS[field]}: not asked, granted {show(field, value)}")
    return lines


def _mail_decision(req: QuotaRequest) -> None:
    owners = Membership.objects.filter(tenant=req.tenant, role=Membership.Role.OWNER).select_related("user")
    to = {m.user.email for m in owners if m.user.email and m.user.is_active}
    if req.requester is not None and req.requester.email:
        to.add(req.requester.email)
    if not to:
        return
    lines = [f"Your quota request for {req.tenant.name} ({req.tenant.slug}) was {req.state}.", ""]
    lines += decision_lines(req)
    if req.decision_reason:
        lines += ["", "Reason:", req.decision_reason]
    lines += ["", f"Decided by {req.decided_by_label} at {req.decided_at:%Y-%m-%d %H:%M} UTC."]
    try:
        send_mail(f"[Hako] Quota request {req.state} for {req.tenant.slug}", "\n".join(lines),
                  settings.DEFAULT_FROM_EMAIL, sorted(to))
    except Exception:  # the decision stands; the tenant also sees it in the panel
        log.exception("could not send the quota decision e-mail for %s", req.pk)

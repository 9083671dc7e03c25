"""Reads for pages, the API and the command line, already scoped through the access door
(panel.access): a tenant's members see their tenant's records, staff see everything."""
from __future__ import annotations

from datetime import datetime

from django.db.models import Q

from panel.access import is_local_admin, quota_requests_for, require_staff, tenant_get, tenants_for
from panel.models import AuditEvent, QuotaRequest, Tenant
from panel.services.errors import InvalidInput, NotFound
from panel.services.quotas import quota_overview

AUDIT_LIMIT_MAX = 10_000


def audit_for(user, tenant: Tenant | str | None = None, *, action: str | None = None, actor: str | None = None,
              object_id: str | None = None, result: str | None = None, since: datetime | None = None,
              until: datetime | None = None, limit: int | None = None):
    """Audit records ``user`` may read, newest first.

    Members read their current tenants' records and their own tenant-less ones (sign-ins);
    staff read all. Filters:
    ``tenant`` (object, id or slug; another tenant's is NotFound; staff also find a deleted
    tenant's records by its slug), ``action`` (exact, or a
    prefix ending in '.' such as ``ve.``), ``actor`` (user name), ``object_id`` (a VEID or
    an object's id), ``result``, ``since``/``until`` (aware datetimes) and ``limit``.
    """
    qs = AuditEvent.objects.select_related("tenant", "actor")
    if not is_local_admin(user):
        if not getattr(user, "is_authenticated", False):
            return qs.none()
        # Tenant records only of tenants the user belongs to now (a former member reads
        # nothing more of a tenant they left, not even what they did there); their own
        # records without a tenant (sign-ins) stay theirs.
        qs = qs.filter(Q(tenant__in=tenants_for(user)) | Q(actor=user, tenant__isnull=True))
    if tenant is not None:
        try:
            qs = qs.filter(tenant=tenant_get(user, _tenant_pk(tenant)))
        except NotFound:
            # A deleted tenant's records keep its slug: staff still find them by it.
            label = str(tenant)[:63] if isinstance(tenant, str) else None
            if not (label and is_local_admin(user) and qs.filter(tenant_label=label).exists()):
                raise
            qs = qs.filter(tenant_label=label)
    if action:
        qs = qs.filter(action__startswith=action) if action.endswith(".") else qs.filter(action=action)
    if actor:
        qs = qs.filter(actor_label=actor)
    if object_id:
        qs = qs.filter(object_id=str(object_id))
    if result:
        qs = qs.filter(result=result)
    if since is not None:
        qs = qs.filter(ts__gte=since)
    if until is not None:
        qs = qs.filter(ts__lt=until)
    qs = qs.order_by("-ts", "-id")
    if limit is not None:
        if type(limit) is not int or not 1 <= limit <= AUDIT_LIMIT_MAX:
            raise InvalidInput(f"limit must be between 1 and {AUDIT_LIMIT_MAX}", field="limit")
        qs = qs[:limit]
    return qs


def _tenant_pk(tenant):
    if isinstance(tenant, Tenant):
        return tenant.pk
    by_slug = Tenant.objects.filter(slug=str(tenant)[:63]).values_list("pk", flat=True).first()
    return by_slug if by_slug is not None else tenant


def tenant_quota_for(user, tenant_id) -> list[dict]:
    """The tenant dashboard's quota panel: use against each limit (any member)."""
    return quota_overview(tenant_get(user, _tenant_pk(tenant_id)))


def quota_request_queue(user):
    """Staff's queue: pending requests, oldest first."""
    require_staff(user, what="the quota request queue")
    return QuotaRequest.objects.filter(state=QuotaRequest.State.PENDING).select_related(
        "tenant", "requester").order_by("created_at")


def quota_request_history(user, tenant_id):
    """A tenant's requests and their decisions, newest first (any member)."""
    return quota_requests_for(user, tenant_get(user, _tenant_pk(tenant_id))).order_by("-created_at")

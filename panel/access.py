"""The one access door: every lookup of a tenant's objects goes through here.

Another tenant's object is a 404 (NotFound), never a 403 that would confirm it exists; a
member whose role is too low gets Forbidden (403). Staff see every tenant, and so does
``None``, the local administrator of the command line: web and API views always pass
``request.user`` (an AnonymousUser at worst), never ``None``.
"""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from panel.models import VE, Job, Membership, Plan, QuotaRequest, Suspension, Tenant

from .services.errors import Forbidden, NotFound

ROLE_RANK = {Membership.Role.VIEWER: 0, Membership.Role.OPERATOR: 1, Membership.Role.OWNER: 2}


def tenants_for(user):
    if is_local_admin(user):
        return Tenant.objects.all()
    if not getattr(user, "is_authenticated", False):
        return Tenant.objects.none()
    return Tenant.objects.filter(memberships__user=user)


def role_in(user, tenant: Tenant) -> str | None:
    if is_local_admin(user):
        return Membership.Role.OWNER
    if not getattr(user, "is_authenticated", False):
        return None
    return Membership.objects.filter(user=user, tenant=tenant).values_list("role", flat=True).first()


def ves_for(user, tenant: Tenant | None = None):
    qs = VE.objects.exclude(state=VE.State.DESTROYED)
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    if is_local_admin(user):
        return qs
    return qs.filter(tenant__in=tenants_for(user))


def is_local_admin(user) -> bool:
    """``None`` is the local administrator: management commands run as root on the panel
    host. Staff users are admins in the panel. Both may act on every tenant."""
    return user is None or bool(getattr(user, "is_staff", False) and getattr(user, "is_active", True))


def require_role(user, tenant: Tenant, min_role: str, *, what: str = "object", source: str = "") -> str:
    """Check that ``user`` has at least ``min_role`` in ``tenant`` and return the role.

    Not a member (or not signed in): :class:`NotFound`, naming ``what`` so the message reads
    like any other miss. A member with a lower role: :class:`Forbidden`. Both refusals are
    audited (R17: authorization denials); call this before the service's transaction opens
    so that the denial record is not rolled back with it.
    """
    if is_local_admin(user):
        return Membership.Role.OWNER
    role = role_in(user, tenant)
    if role is None:
        audit_denial(user, None, "not-member", {"tenant": str(tenant.pk), "required": min_role, "what": what},
                      source)
        raise NotFound(_("%(what)s not found") % {"what": _what(what)})
    if ROLE_RANK[role] < ROLE_RANK[min_role]:
        audit_denial(user, tenant, "role", {"role": role, "required": min_role, "what": what}, source)
        raise Forbidden(_("your role in %(tenant)s is %(role)s; this needs %(required)s or higher")
                        % {"tenant": tenant.slug, "role": _role(role), "required": _role(min_role)})
    return role


def _role(role: str) -> str:
    return str(_ROLES.get(role, role))


def _what(what: str) -> str:
    """The object or action a refusal names, translated when it is one of the usual ones."""
    return str(_WHAT.get(what, what))


_ROLES = {"owner": gettext_lazy("owner"), "operator": gettext_lazy("operator"), "viewer": gettext_lazy("viewer")}
_WHAT = {"VE": gettext_lazy("VE"), "tenant": gettext_lazy("tenant"), "job": gettext_lazy("job"),
         "object": gettext_lazy("object"), "quota request": gettext_lazy("quota request"),
         "suspension": gettext_lazy("suspension"), "this action": gettext_lazy("this action"),
         "the staff area": gettext_lazy("the staff area"), "the node list": gettext_lazy("the node list"),
         "the quota request queue": gettext_lazy("the quota request queue"),
         "deciding quota requests": gettext_lazy("deciding quota requests"),
         "setting quotas": gettext_lazy("setting quotas"), "creating tenants": gettext_lazy("creating tenants"),
         "suspending tenants": gettext_lazy("suspending tenants"), "suspending VEs": gettext_lazy("suspending VEs"),
         "lifting suspensions": gettext_lazy("lifting suspensions"), "managing plans": gettext_lazy("managing plans"),
         "managing IP pools": gettext_lazy("managing IP pools"),
         "managing OS templates": gettext_lazy("managing OS templates"),
         "the plan list": gettext_lazy("the plan list"), "the IP pool list": gettext_lazy("the IP pool list"),
         "the OS template list": gettext_lazy("the OS template list")}


def require_staff(user, *, what: str = "this action", source: str = "") -> None:
    """Staff admins only (or the local admin on the command line)."""
    if not is_local_admin(user):
        audit_denial(user, None, "not-staff", {"what": what}, source)
        raise Forbidden(_("%(what)s is for staff administrators only") % {"what": _what(what)})


def audit_denial(user, tenant, why: str, detail: dict, source: str = "") -> None:
    """Record an authorization denial (R17). Pass ``tenant`` only when the user is a member
    of it: a probe of another tenant's object names no tenant, so that tenant's readers do
    not learn who probed it; staff see every record."""
    from .services.audit import audit

    audit(action="access.denied", actor=user if getattr(user, "is_authenticated", False) else None,
          tenant=tenant, result="denied", source=source, detail={"why": why, **detail})


def _get(user, qs, pk, what: str):
    try:
        return qs.get(pk=pk)
    except (qs.model.DoesNotExist, ValueError, TypeError, ValidationError):
        pass
    # Someone asking for an object that exists but is not theirs is an authorization
    # denial worth a record (staff see it; no tenant is named).
    try:
        exists = qs.model._base_manager.filter(pk=pk).exists()
    except (ValueError, TypeError, ValidationError):
        exists = False
    if exists:
        audit_denial(user, None, "not-visible", {"what": what, "id": str(pk)[:64]})
    raise NotFound(_("%(what)s not found") % {"what": _what(what)}) from None


def ve_get(user, ve_id, *, min_role: str = Membership.Role.VIEWER) -> VE:
    """The VE with public id ``ve_id`` if ``user`` may act on it with ``min_role``: another
    tenant's VE is NotFound, a role below ``min_role`` Forbidden."""
    ve = _get(user, ves_for(user).select_related("tenant", "node", "template"), ve_id, "VE")
    require_role(user, ve.tenant, min_role, what="VE")
    return ve


def tenant_get(user, tenant_id, *, min_role: str = Membership.Role.VIEWER) -> Tenant:
    """The tenant with public id ``tenant_id`` if ``user`` is a member with ``min_role``."""
    tenant = _get(user, tenants_for(user).distinct(), tenant_id, "tenant")
    require_role(user, tenant, min_role, what="tenant")
    return tenant


def job_get(user, job_id) -> Job:
    """A job of one of ``user``'s tenants (node jobs without a tenant: staff only)."""
    return _get(user, jobs_for(user).select_related("ve", "node", "tenant"), job_id, "job")


def quota_requests_for(user, tenant: Tenant | None = None):
    qs = QuotaRequest.objects.select_related("tenant", "requester", "decided_by")
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    if is_local_admin(user):
        return qs
    return qs.filter(tenant__in=tenants_for(user))


def quota_request_get(user, request_id) -> QuotaRequest:
    return _get(user, quota_requests_for(user), request_id, "quota request")


def suspensions_for(user, tenant: Tenant | None = None):
    qs = Suspension.objects.select_related("tenant", "ve")
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    if is_local_admin(user):
        return qs
    return qs.filter(tenant__in=tenants_for(user))


def suspension_get(user, suspension_id) -> Suspension:
    return _get(user, suspensions_for(user), suspension_id, "suspension")


def plans_for(user):
    """Plans a user may pick: the enabled ones; staff see disabled plans too."""
    if is_local_admin(user):
        return Plan.objects.all()
    return Plan.objects.filter(enabled=True)


def jobs_for(user, tenant: Tenant | None = None):
    qs = Job.objects.all()
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    if is_local_admin(user):
        return qs
    return qs.filter(tenant__in=tenants_for(user))

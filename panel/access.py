"""The one access door: every lookup of a tenant's objects goes through here.

Another tenant's object is a 404 (NotFound), never a 403 that would confirm it exists.
Staff see every tenant.
"""
from __future__ import annotations

from django.core.exceptions import ValidationError

from panel.models import VE, Job, Membership, Tenant

from .services.errors import NotFound

ROLE_RANK = {Membership.Role.VIEWER: 0, Membership.Role.OPERATOR: 1, Membership.Role.OWNER: 2}


def tenants_for(user):
    if getattr(user, "is_staff", False):
        return Tenant.objects.all()
    if not getattr(user, "is_authenticated", False):
        return Tenant.objects.none()
    return Tenant.objects.filter(memberships__user=user)


def role_in(user, tenant: Tenant) -> str | None:
    if getattr(user, "is_staff", False):
        return Membership.Role.OWNER
    if not getattr(user, "is_authenticated", False):
        return None
    return Membership.objects.filter(user=user, tenant=tenant).values_list("role", flat=True).first()


def ves_for(user, tenant: Tenant | None = None):
    qs = VE.objects.exclude(state=VE.State.DESTROYED)
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    if getattr(user, "is_staff", False):
        return qs
    return qs.filter(tenant__in=tenants_for(user))


def ve_get(user, ve_id, *, min_role: str = Membership.Role.VIEWER) -> VE:
    """The VE with public id ``ve_id`` if ``user`` may act on it with ``min_role``."""
    try:
        ve = ves_for(user).select_related("tenant", "node", "template").get(pk=ve_id)
    except (VE.DoesNotExist, ValueError, TypeError, ValidationError):
        raise NotFound("VE not found") from None
    role = role_in(user, ve.tenant)
    if role is None or ROLE_RANK[role] < ROLE_RANK[min_role]:
        raise NotFound("VE not found")
    return ve


def jobs_for(user, tenant: Tenant | None = None):
    qs = Job.objects.all()
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    if getattr(user, "is_staff", False):
        return qs
    return qs.filter(tenant__in=tenants_for(user))

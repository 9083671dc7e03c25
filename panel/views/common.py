"""Helpers every panel view shares: the current tenant kept in the session, and turning the
access door's refusals into HTTP answers."""
from __future__ import annotations

from contextlib import contextmanager

from django.core.exceptions import PermissionDenied
from django.http import Http404

from panel import access
from panel.models import Membership, Tenant
from panel.services.errors import Forbidden, NotFound

SESSION_TENANT = "hako_tenant"


@contextmanager
def http_errors():
    """Another tenant's object (NotFound) is a 404; a role too low (Forbidden) a 403."""
    try:
        yield
    except NotFound as e:
        raise Http404(e.message) from None
    except Forbidden as e:
        raise PermissionDenied(e.message) from None


def switchable_tenants(user):
    """Tenants offered by the switcher: the user's memberships; staff without any see
    every tenant (through the access door), capped to keep the menu usable."""
    qs = access.tenants_for(user).filter(memberships__user=user)
    if access.is_local_admin(user) and not qs.exists():
        qs = access.tenants_for(user)
    return qs.distinct().order_by("name")[:50]


def current_tenant(request) -> Tenant | None:
    """The tenant the customer pages show, kept in the session and re-checked through the
    access door on every request (a membership removed since is not trusted)."""
    cached = getattr(request, "_hako_tenant", False)
    if cached is not False:
        return cached
    tenant = None
    wanted = request.session.get(SESSION_TENANT)
    if wanted:
        try:
            tenant = access.tenant_get(request.user, wanted)
        except (NotFound, Forbidden):
            tenant = None
    if tenant is None:
        tenant = switchable_tenants(request.user).first()
        if tenant is not None:
            request.session[SESSION_TENANT] = str(tenant.pk)
    request._hako_tenant = tenant
    return tenant


def require_tenant(request) -> Tenant:
    tenant = current_tenant(request)
    if tenant is None:
        raise Http404("no tenant")
    return tenant


def role_of(request, tenant: Tenant) -> str | None:
    return access.role_in(request.user, tenant)


def can_operate(role: str | None) -> bool:
    return role is not None and access.ROLE_RANK[role] >= access.ROLE_RANK[Membership.Role.OPERATOR]

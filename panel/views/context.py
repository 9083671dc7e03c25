"""Template context for every panel page: the current tenant, the user's role in it and
the tenants the switcher offers (a fixed number of queries per page)."""
from __future__ import annotations

from .common import current_tenant, role_of, switchable_tenants


def panel(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    tenant = current_tenant(request)
    name = getattr(getattr(request, "resolver_match", None), "url_name", "") or ""
    nav = ("staff" if name.startswith("staff-") else "jobs" if name.startswith("job-")
           else name if name in ("quota", "audit", "account") else "ves")
    return {"nav": nav, "current_tenant": tenant, "current_role": role_of(request, tenant) if tenant else None,
            "switchable_tenants": switchable_tenants(user)}

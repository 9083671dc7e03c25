"""Signing in and out, the tenant switcher and the landing page."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from panel import access

from .common import SESSION_TENANT, http_errors


@login_required
def home_view(request):
    return redirect("panel:ve-list")


@login_required
@require_POST
def tenant_switch_view(request):
    """Make another of the user's tenants the current one (checked by the access door)."""
    with http_errors():
        tenant = access.tenant_get(request.user, request.POST.get("tenant", ""))
    request.session[SESSION_TENANT] = str(tenant.pk)
    messages.info(request, _("Now working in %(tenant)s.") % {"tenant": tenant.name})
    # Back to the lists: a page of the previous tenant's object is not this tenant's.
    return redirect("panel:ve-list")

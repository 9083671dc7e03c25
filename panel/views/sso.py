"""``/sso/<token>``: sign a tenant's owner in with a one-time link minted by a billing
system (panel.services.sso), then show the VE list. A used, expired or unknown link is a
readable 403 page."""
from django.contrib.auth import login
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from panel.services.sso import login_link_consume

from .common import SESSION_TENANT

WHY = {
    "used": "This sign-in link has been used already. Links work once: ask your billing portal for a new one.",
    "expired": "This sign-in link has expired (links are valid for 5 minutes). Ask your billing portal for a "
               "new one.",
    "not-owner": "The account this link was made for can no longer sign in here.",
    "unknown": "This sign-in link is not valid. Ask your billing portal for a new one.",
}


@never_cache
@require_GET
def sso_view(request, token):
    link, why = login_link_consume(token)
    if link is None:
        return render(request, "sso_invalid.html", {"message": WHY.get(why, WHY["unknown"])}, status=403)
    request.session.flush()
    login(request, link.user, backend="django.contrib.auth.backends.ModelBackend")
    request.session[SESSION_TENANT] = str(link.tenant_id)
    return redirect("panel:ve-list")

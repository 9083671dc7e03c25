"""``/sso/<token>``: a one-time link minted by a billing system (panel.services.sso) for a
tenant's owner. GET shows "Continue to Hako as <user>" and changes nothing (mail scanners
and link previews fetch URLs); the page's POST form (CSRF-protected) uses the link up,
signs the owner in and shows the VE list. A used, expired or unknown link is a readable
403 page."""
from django.contrib.auth import login
from django.shortcuts import redirect, render
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from panel.services.sso import login_link_consume, login_link_peek

from .common import SESSION_TENANT

WHY = {
    "used": _("This sign-in link has been used already. Links work once: ask your billing portal for a new one."),
    "expired": _("This sign-in link has expired (links are valid for 5 minutes). Ask your billing portal for a "
                 "new one."),
    "not-owner": _("The account this link was made for can no longer sign in here."),
    "unknown": _("This sign-in link is not valid. Ask your billing portal for a new one."),
}


def _invalid(request, why: str):
    return render(request, "sso_invalid.html", {"message": WHY.get(why, WHY["unknown"])}, status=403)


@never_cache
@require_http_methods(["GET", "POST"])
def sso_view(request, token):
    if request.method == "GET":
        link, why = login_link_peek(token)
        if link is None:
            return _invalid(request, why)
        # Keep the link out of the Referer of anything the page loads.
        response = render(request, "sso_confirm.html", {"link": link})
        response["Referrer-Policy"] = "no-referrer"
        return response
    link, why = login_link_consume(token)
    if link is None:
        return _invalid(request, why)
    request.session.flush()
    login(request, link.user, backend="django.contrib.auth.backends.ModelBackend")
    request.session[SESSION_TENANT] = str(link.tenant_id)
    return redirect("panel:ve-list")

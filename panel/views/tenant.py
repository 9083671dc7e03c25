"""Customer pages of the current tenant: its quota (use, requests for more and their
decisions), its audit log, and the user's own account."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from panel import access, selectors
from panel.forms import AuditFilterForm, QuotaRequestForm
from panel.models import Membership
from panel.services import quotas as quota_services
from panel.services.errors import Forbidden, NotFound, ServiceError

from .common import can_operate, current_tenant, http_errors, role_of
from .lists import page_of


@login_required
@require_http_methods(["GET", "POST"])
def quota_view(request):
    """Use against each limit, the form to ask for more (operators and owners) and the
    tenant's requests with their decisions."""
    tenant = current_tenant(request)
    if tenant is None:
        return render(request, "no_tenant.html")
    form = QuotaRequestForm(request.POST or None)
    with http_errors():
        if request.method == "POST":
            # A viewer's forged POST is refused before anything is parsed.
            access.tenant_get(request.user, tenant.pk, min_role=Membership.Role.OPERATOR)
            if form.is_valid():
                try:
                    quota_services.quota_request_create(tenant=tenant, actor=request.user, source="web",
                                                        amounts=form.amounts(), reason=form.cleaned_data["reason"])
                except (NotFound, Forbidden):
                    raise
                except ServiceError as e:
                    form.add_service_error(e)
                else:
                    messages.success(request, _("Your quota request was sent. An administrator will decide it."))
                    return redirect("panel:quota")
        overview = selectors.tenant_quota_for(request.user, tenant.pk)
        history = list(selectors.quota_request_history(request.user, tenant.pk)[:50])
    return render(request, "quota/page.html", {
        "overview": overview, "history": history, "form": form,
        "can_operate": can_operate(role_of(request, tenant))}, status=400 if form.errors else 200)


def audit_page(request, filters: dict, form, template: str, extra: dict, *, empty: bool = False):
    """Render an audit list page (shared with the staff area); ``empty``: a filter matched
    nothing before the query (an unknown tenant)."""
    with http_errors():
        qs = selectors.audit_for(request.user, **filters)
    if empty:
        qs = qs.none()
    return render(request, template, {"page": page_of(qs, request.GET.get("page")), "form": form,
                                      "filtered": bool(set(request.GET) - {"page"}), **extra})


@login_required
def audit_view(request):
    """The current tenant's audit log, filterable by action and date."""
    tenant = current_tenant(request)
    if tenant is None:
        return render(request, "no_tenant.html")
    form = AuditFilterForm(request.GET)
    filters = {**form.filters(), "tenant": tenant}
    actions = selectors.audit_for(request.user, tenant).order_by("action").values_list("action", flat=True).distinct()
    return audit_page(request, filters, form, "audit/list.html", {"actions": list(actions[:200])})


@login_required
def account_view(request):
    """The signed-in user's account: tenants and roles, password change and reset."""
    memberships = Membership.objects.filter(user=request.user).select_related("tenant").order_by("tenant__name")
    return render(request, "account/page.html", {"memberships": memberships})

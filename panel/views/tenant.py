"""Customer pages of the current tenant: its quota (use, requests for more and their
decisions), its audit log, its members, and the user's own account."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from panel import access, selectors
from panel.forms import AuditFilterForm, MemberInviteForm, MemberRoleForm, QuotaRequestForm
from panel.models import Membership
from panel.services import members as member_services
from panel.services import quotas as quota_services
from panel.services.errors import Forbidden, NotFound, ServiceError

from .common import can_operate, current_tenant, http_errors, require_tenant, role_of
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


# --- members ---------------------------------------------------------------------------------

def _members_page(request, tenant, invite_form=None, status=200):
    role = role_of(request, tenant)
    is_owner = role == Membership.Role.OWNER
    rows = [{"m": m, "form": MemberRoleForm(initial={"member": m.pk, "role": m.role}, auto_id=f"id_m{m.pk}_%s")}
            for m in member_services.members_of(tenant)]
    return render(request, "members/page.html", {
        "tenant": tenant, "rows": rows, "is_owner": is_owner, "nav": "members",
        "invite_form": invite_form or MemberInviteForm()}, status=status)


@login_required
def members_view(request):
    """The current tenant's members and their roles; owners also get the forms to invite,
    change roles and remove (the other roles see the list only)."""
    tenant = current_tenant(request)
    if tenant is None:
        return render(request, "no_tenant.html")
    return _members_page(request, tenant)


def _owner_tenant(request):
    """The current tenant, if the user owns it: a lower role's forged POST is a 403."""
    tenant = require_tenant(request)
    with http_errors():
        access.tenant_get(request.user, tenant.pk, min_role=Membership.Role.OWNER)
    return tenant


@login_required
@require_POST
def member_invite_view(request):
    tenant = _owner_tenant(request)
    form = MemberInviteForm(request.POST)
    if form.is_valid():
        with http_errors():
            try:
                member, created = member_services.member_invite(
                    tenant=tenant, email=form.cleaned_data["email"], role=form.cleaned_data["role"],
                    actor=request.user, source="web", base_url=request.build_absolute_uri("/"))
            except (NotFound, Forbidden):
                raise
            except ServiceError as e:
                form.add_service_error(e)
            else:
                if created:
                    messages.success(request, _("%(email)s was added as %(role)s and was sent a link to choose a "
                                                "password.") % {"email": member.user.email, "role": _(member.role)})
                else:
                    messages.success(request, _("%(user)s was added as %(role)s.") % {
                        "user": member.user.username, "role": _(member.role)})
                return redirect("panel:members")
    return _members_page(request, tenant, invite_form=form, status=400)


@login_required
@require_POST
def member_role_view(request):
    tenant = _owner_tenant(request)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Choose one of the roles offered."))
        return redirect("panel:members")
    with http_errors():
        try:
            member = member_services.member_role_set(tenant=tenant, member_id=form.cleaned_data["member"],
                                                     role=form.cleaned_data["role"], actor=request.user, source="web")
        except (NotFound, Forbidden):
            raise
        except ServiceError as e:
            messages.error(request, _last_owner_message(e))
            return redirect("panel:members")
    messages.success(request, _("%(user)s is now %(role)s.") % {"user": member.user.username, "role": _(member.role)})
    return redirect("panel:members")


@login_required
@require_POST
def member_remove_view(request):
    tenant = _owner_tenant(request)
    with http_errors():
        try:
            member_services.member_remove(tenant=tenant, member_id=request.POST.get("member", ""),
                                          actor=request.user, source="web")
        except (NotFound, Forbidden):
            raise
        except ServiceError as e:
            messages.error(request, _last_owner_message(e))
            return redirect("panel:members")
    messages.success(request, _("The member was removed."))
    return redirect("panel:members")


def _last_owner_message(e: ServiceError) -> str:
    if e.code == "last-owner":
        return _("A tenant needs at least one owner: make another member owner first.")
    return e.message

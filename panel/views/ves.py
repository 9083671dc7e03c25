"""Customer pages for VEs: list, page, create and the power actions."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from panel import access
from panel.forms import (VEAddressAddForm, VEAddressRemoveForm, VECreateForm, VEDestroyForm, VEHostnameForm,
                         VEPasswordForm, VEPlanForm, VEResourcesForm, VESuspendForm)
from panel.models import VE, Job, Membership
from panel.services import network as net_services
from panel.services import ves as ve_services
from panel.services.errors import Forbidden, InvalidInput, NotFound, ServiceError
from panel.services.suspensions import suspended_expression, suspension_status
from panel.templatetags.hako import LABELS, size

from .common import can_operate, current_tenant, http_errors, require_tenant, role_of
from .lists import PAGE_SIZES, VE_STATES, job_list, page_of, ve_list

TRANSIENT = (VE.State.CREATING, VE.State.STARTING, VE.State.STOPPING)


@login_required
def ve_list_view(request):
    tenant = current_tenant(request)
    if tenant is None:
        return render(request, "no_tenant.html")
    state, q, sort = request.GET.get("state", ""), request.GET.get("q", "").strip(), request.GET.get("sort", "")
    qs, sort = ve_list(request.user, tenant, state=state, q=q, sort=sort)
    role = role_of(request, tenant)
    # Only the columns the rows show: at 1,000 rows, building full model instances with
    # three joined models cost as much as rendering them.
    qs = qs.select_related(None).select_related("template").only(
        "id", "veid", "state", "nproc", "addresses", "hostname", "memory", "disk", "template__name").annotate(
        suspended=suspended_expression())  # a badge on suspended VEs, in the same query
    page = page_of(qs, request.GET.get("page"), request.GET.get("per_page"))
    # The rows come from a Jinja2 partial: Django's engine took ~150 ms for 1,000 rows.
    rows_html = render_to_string("ves/_rows.html", {
        "rows": page.object_list, "ve_base": reverse("panel:ve-list"), "size": size,
        "labels": {**{k: str(v) for k, v in LABELS.items()}, "suspended": _("suspended")}}, using="jinja2")
    return render(request, "ves/list.html", {
        "page": page, "rows_html": mark_safe(rows_html), "states": VE_STATES,
        "state": state, "q": q, "sort": sort, "can_operate": can_operate(role), "filtered": bool(state or q),
        "per_page": request.GET.get("per_page", ""), "page_sizes": PAGE_SIZES})


def _ve_context(request, ve: VE, **extra) -> dict:
    role = role_of(request, ve.tenant)
    active = ve.jobs.filter(state__in=Job.ACTIVE).exists()
    # Why the VE is suspended (each source, its scope and the reason the customer is
    # shown): the page says so and offers no start, which the service would refuse.
    suspended = suspension_status(ve)
    ctx = {"ve": ve, "role": role, "can_operate": can_operate(role), "jobs": job_list(request.user, None, ve=ve)[:20],
           "polling": active or ve.state in TRANSIENT, "suspensions": suspended,
           "staff": access.is_local_admin(request.user)}
    if ctx["staff"]:
        ctx["suspend_form"] = VESuspendForm(auto_id="id_suspend_%s")
        ctx["lift_sources"] = [s["source"] for s in suspended if s["scope"] == "ve"]
    if ctx["can_operate"]:
        # The change forms; the one that was posted (in ``extra``) replaces its blank twin.
        plans = list(access.plans_for(request.user).order_by("name"))
        ctx.update(resources_form=VEResourcesForm(), hostname_form=VEHostnameForm(initial={"hostname": ve.hostname}),
                   password_form=VEPasswordForm(), ipadd_form=VEAddressAddForm(), ipdel_form=None,
                   plan_form=VEPlanForm(plans=plans, initial={"plan": ve.plan.name if ve.plan_id else None})
                   if plans else None)
    ctx.update(extra)
    return ctx


@login_required
def ve_detail_view(request, ve_id):
    with http_errors():
        ve = access.ve_get(request.user, ve_id)
    ctx = _ve_context(request, ve, destroy_form=VEDestroyForm(hostname=ve.hostname))
    return render(request, "ves/detail.html", ctx)


@login_required
def ve_status_view(request, ve_id):
    """The VE page's state and power panel alone, polled by htmx while a job runs."""
    with http_errors():
        ve = access.ve_get(request.user, ve_id)
    return render(request, "ves/_status.html", _ve_context(request, ve))


def _power(service, done_message):
    @login_required
    @require_POST
    def view(request, ve_id):
        with http_errors():
            ve = access.ve_get(request.user, ve_id, min_role=Membership.Role.OPERATOR)
            try:
                job = service(ve=ve, actor=request.user, source="web")
            except (NotFound, Forbidden):
                raise
            except ServiceError as e:
                messages.error(request, e.message)
                return redirect("panel:ve-detail", ve_id=ve.pk)
        messages.success(request, done_message(ve))
        return redirect(reverse("panel:ve-detail", kwargs={"ve_id": ve.pk}) + f"#job-{job.pk}")
    return view


ve_start_view = _power(ve_services.ve_start, lambda ve: _("Start of VE %(veid)s queued.") % {"veid": ve.veid})
ve_stop_view = _power(ve_services.ve_stop, lambda ve: _("Stop of VE %(veid)s queued.") % {"veid": ve.veid})
ve_restart_view = _power(ve_services.ve_restart,
                         lambda ve: _("Restart of VE %(veid)s queued.") % {"veid": ve.veid})


@login_required
@require_POST
def ve_destroy_view(request, ve_id):
    with http_errors():
        ve = access.ve_get(request.user, ve_id, min_role=Membership.Role.OPERATOR)
        form = VEDestroyForm(request.POST, hostname=ve.hostname)
        if not form.is_valid():
            return render(request, "ves/detail.html", _ve_context(request, ve, destroy_form=form),
                          status=400)
        try:
            job = ve_services.ve_destroy(ve=ve, actor=request.user, source="web")
        except (NotFound, Forbidden):
            raise
        except ServiceError as e:
            messages.error(request, e.message)
            return redirect("panel:ve-detail", ve_id=ve.pk)
    messages.success(request, _("Destruction of VE %(veid)s queued.") % {"veid": ve.veid})
    return redirect("panel:job-detail", job_id=job.pk)


@login_required
@require_http_methods(["GET", "POST"])
def ve_create_view(request):
    tenant = require_tenant(request)
    with http_errors():
        access.tenant_get(request.user, tenant.pk, min_role=Membership.Role.OPERATOR)
        plans = list(access.plans_for(request.user).order_by("name"))
        form = VECreateForm(request.POST or None, plans=plans)
        if request.method == "POST" and form.is_valid():
            try:
                job = ve_services.ve_create(tenant=tenant, actor=request.user, source="web", **form.service_kwargs())
            except (NotFound, Forbidden) as e:
                if e.field:  # an unknown plan: a form error, not a missing page
                    form.add_service_error(e)
                else:
                    raise
            except ServiceError as e:
                form.add_service_error(e)
            else:
                messages.success(request, _("VE creation queued: VE %(veid)s.") % {"veid": job.ve.veid})
                return redirect("panel:job-detail", job_id=job.pk)
    return render(request, "ves/create.html", {"form": form, "tenant": tenant},
                  status=400 if form.errors else 200)


def _queued(request, ve: VE, job: Job, text: str):
    """The success answer of a change: back to the VE page, with a message linking the job."""
    messages.success(request, format_html('{} <a href="{}">{}</a>', text,
                                          reverse("panel:job-detail", kwargs={"job_id": job.pk}), _("View the job")))
    return redirect(reverse("panel:ve-detail", kwargs={"ve_id": ve.pk}) + f"#job-{job.pk}")


def _change_view(form_name: str, make_form, call, done_message):
    """A POST-only view that changes a VE through a service: operators and owners only (a
    viewer's forged POST is a 403, another tenant's VE a 404); a ServiceError is shown next
    to the field it names on the VE page, answered with 400."""
    @login_required
    @require_POST
    def view(request, ve_id):
        with http_errors():
            ve = access.ve_get(request.user, ve_id, min_role=Membership.Role.OPERATOR)
            form = make_form(request, ve)
            if form.is_valid():
                try:
                    job = call(request, ve, form)
                except (NotFound, Forbidden) as e:
                    if not e.field:  # an unknown plan is a form error, not a missing page
                        raise
                    form.add_service_error(e)
                except ServiceError as e:
                    form.add_service_error(e)
                else:
                    return _queued(request, ve, job, done_message(ve))
        return render(request, "ves/detail.html", _ve_context(request, ve, **{form_name: form}), status=400)
    return view


def _set_resources(request, ve, form):
    changes = form.changes()
    if not changes:
        raise InvalidInput(_("Fill in at least one value to change."))
    return ve_services.ve_set(ve=ve, actor=request.user, source="web", **changes)


ve_set_view = _change_view(
    "resources_form", lambda request, ve: VEResourcesForm(request.POST), _set_resources,
    lambda ve: _("Resource change of VE %(veid)s queued.") % {"veid": ve.veid})
ve_change_plan_view = _change_view(
    "plan_form",
    lambda request, ve: VEPlanForm(request.POST, plans=list(access.plans_for(request.user).order_by("name"))),
    lambda request, ve, form: ve_services.ve_change_plan(ve=ve, plan=form.cleaned_data["plan"], actor=request.user,
                                                         source="web"),
    lambda ve: _("Plan change of VE %(veid)s queued.") % {"veid": ve.veid})
ve_hostname_view = _change_view(
    "hostname_form", lambda request, ve: VEHostnameForm(request.POST),
    lambda request, ve, form: ve_services.ve_set(ve=ve, actor=request.user, source="web",
                                                 hostname=form.cleaned_data["hostname"]),
    lambda ve: _("Hostname change of VE %(veid)s queued.") % {"veid": ve.veid})
ve_password_view = _change_view(
    "password_form", lambda request, ve: VEPasswordForm(request.POST),
    lambda request, ve, form: ve_services.ve_set_password(ve=ve, actor=request.user, source="web",
                                                          root_password=form.cleaned_data["root_password"]),
    lambda ve: _("Root password change of VE %(veid)s queued.") % {"veid": ve.veid})
ve_ipadd_view = _change_view(
    "ipadd_form", lambda request, ve: VEAddressAddForm(request.POST),
    lambda request, ve, form: net_services.ve_ipadd(ve=ve, addresses=form.addresses(), actor=request.user,
                                                    source="web"),
    lambda ve: _("Address change of VE %(veid)s queued.") % {"veid": ve.veid})
ve_ipdel_view = _change_view(
    "ipdel_form", lambda request, ve: VEAddressRemoveForm(request.POST),
    lambda request, ve, form: net_services.ve_ipdel(ve=ve, addresses=[form.cleaned_data["address"]],
                                                    actor=request.user, source="web"),
    lambda ve: _("Address change of VE %(veid)s queued.") % {"veid": ve.veid})

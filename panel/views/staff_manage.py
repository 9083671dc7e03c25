"""Staff pages that manage the catalogue the fleet sells from: plans (create, edit, delete
when unused), IP pools (create, change range and nodes, delete when empty) and OS
templates (build or remove on a node, offer or withdraw). Every change goes through the
services (panel.services.plans, .network, .templates), which check it, refuse anyone who is
not staff and audit it in the same transaction; the forms only collect text."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from panel import access
from panel.forms import PlanForm, PoolForm, TemplateNodeForm
from panel.models import IPPool, Plan
from panel.services import network as network_services
from panel.services import plans as plan_services
from panel.services import templates as template_services
from panel.services.errors import Forbidden, NotFound, ServiceError

from .common import http_errors


def _staff(request, what: str) -> None:
    """Staff only: anyone else gets 403 (the page's existence is no secret, its data is)."""
    with http_errors():
        access.require_staff(request.user, what=what, source="web")


def _call(form, fn, **kwargs):
    """Run a service; its refusal (ServiceError) goes next to the field it names. Returns
    the service's result, or None when it refused."""
    with http_errors():
        try:
            return fn(**kwargs) or True
        except (NotFound, Forbidden):
            raise
        except ServiceError as e:
            form.add_service_error(e)
            return None


# --- plans -----------------------------------------------------------------------------------

def _delete(request, delete, back: str, done: str, **obj):
    """Run a staff delete service; a refusal (in use, allocated) is a message on the list
    page, a missing object or a non-staff user the usual 404/403."""
    with http_errors():
        try:
            delete(actor=request.user, source="web", **obj)
        except (NotFound, Forbidden):
            raise
        except ServiceError as e:
            messages.error(request, e.message)
        else:
            messages.success(request, done)
    return redirect(back)


@login_required
def staff_plans_view(request):
    """Every plan (disabled ones too) with the number of VEs on it."""
    _staff(request, "the plan list")
    plans = access.plans_for(request.user).annotate(
        ve_count=Count("ves", filter=~Q(ves__state="destroyed"))).order_by("name")
    return render(request, "staff/plans.html", {"plans": plans})


def _plan(request, name: str) -> Plan:
    _staff(request, "managing plans")
    plan = Plan.objects.filter(name=name[:63]).first()
    if plan is None:
        with http_errors():
            raise NotFound(_("This plan does not exist."))
    return plan


@login_required
@require_http_methods(["GET", "POST"])
def staff_plan_create_view(request):
    """A new plan (``plan_create``)."""
    _staff(request, "managing plans")
    form = PlanForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        plan = _call(form, plan_services.plan_create, name=form.cleaned_data["name"].strip(), actor=request.user,
                     source="web", **form.values())
        if plan:
            messages.success(request, _("Plan %(name)s was created.") % {"name": plan.name})
            return redirect(reverse("panel:staff-plans") + f"#plan-{plan.name}")
    return render(request, "staff/plan_form.html", {"form": form, "plan": None},
                  status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def staff_plan_edit_view(request, name):
    """Change a plan (``plan_update``): what is sold from now on; VEs on it keep their sizes."""
    plan = _plan(request, name)
    form = PlanForm(request.POST if request.method == "POST" else None, plan=plan)
    if request.method == "POST" and form.is_valid():
        if _call(form, plan_services.plan_update, plan=plan, actor=request.user, source="web", **form.values()):
            messages.success(request, _("Plan %(name)s was changed.") % {"name": plan.name})
            return redirect(reverse("panel:staff-plans") + f"#plan-{plan.name}")
    return render(request, "staff/plan_form.html", {"form": form, "plan": plan},
                  status=400 if form.errors else 200)


@login_required
@require_POST
def staff_plan_delete_view(request, name):
    """Delete a plan that no VE uses (``plan_delete``); one in use is disabled instead."""
    plan = _plan(request, name)
    return _delete(request, plan_services.plan_delete, "panel:staff-plans",
                   _("Plan %(name)s was deleted.") % {"name": plan.name}, plan=plan)


# --- IP pools --------------------------------------------------------------------------------

@login_required
def staff_pools_view(request):
    """Every pool with its network, range, use and nodes (a fixed number of queries)."""
    _staff(request, "the IP pool list")
    pools = IPPool.objects.annotate(used=Count("allocations", distinct=True)).prefetch_related("nodes").order_by("name")
    return render(request, "staff/pools.html", {"pools": pools})


def _pool(request, name: str) -> IPPool:
    _staff(request, "managing IP pools")
    pool = IPPool.objects.filter(name=name[:63]).first()
    if pool is None:
        with http_errors():
            raise NotFound(_("This IP pool does not exist."))
    return pool


@login_required
@require_http_methods(["GET", "POST"])
def staff_pool_create_view(request):
    """A new pool bound to nodes (``pool_create``)."""
    _staff(request, "managing IP pools")
    form = PoolForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        pool = _call(form, network_services.pool_create, name=data["name"].strip(), network=data["network"],
                     nodes=form.chosen_nodes(), range_start=data["range_start"] or None,
                     range_end=data["range_end"] or None, actor=request.user, source="web")
        if pool:
            messages.success(request, _("IP pool %(name)s was created.") % {"name": pool.name})
            return redirect(reverse("panel:staff-pools") + f"#pool-{pool.name}")
    return render(request, "staff/pool_form.html", {"form": form, "pool": None},
                  status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def staff_pool_edit_view(request, name):
    """Change a pool's range and nodes (``pool_update``)."""
    pool = _pool(request, name)
    form = PoolForm(request.POST if request.method == "POST" else None, pool=pool)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if _call(form, network_services.pool_update, pool=pool, range_start=data["range_start"] or None,
                 range_end=data["range_end"] or None, nodes=form.chosen_nodes(), actor=request.user, source="web"):
            messages.success(request, _("IP pool %(name)s was changed.") % {"name": pool.name})
            return redirect(reverse("panel:staff-pools") + f"#pool-{pool.name}")
    return render(request, "staff/pool_form.html", {"form": form, "pool": pool},
                  status=400 if form.errors else 200)


@login_required
@require_POST
def staff_pool_delete_view(request, name):
    """Delete a pool from which no address is allocated (``pool_delete``)."""
    pool = _pool(request, name)
    return _delete(request, network_services.pool_delete, "panel:staff-pools",
                   _("IP pool %(name)s was deleted.") % {"name": pool.name}, pool=pool)


# --- OS templates ----------------------------------------------------------------------------

def _templates_page(request, build=None, remove=None, status: int = 200):
    rows = template_services.template_list()
    build = build or TemplateNodeForm(names=sorted(template_services.BUILDABLE), prefix="build")
    remove = remove or TemplateNodeForm(names=[r["name"] for r in rows], prefix="remove")
    return render(request, "staff/templates.html", {"templates": rows, "build_form": build,
                                                    "remove_form": remove}, status=status)


@login_required
def staff_templates_view(request):
    """Every known OS template, which nodes cache it, and the forms to build or remove one."""
    _staff(request, "the OS template list")
    return _templates_page(request)


@login_required
@require_POST
def staff_template_build_view(request):
    """Have a node build a built-in template (``template_build``); the job shows its log."""
    _staff(request, "managing OS templates")
    form = TemplateNodeForm(request.POST, names=sorted(template_services.BUILDABLE), prefix="build")
    if form.is_valid():
        job = _call(form, template_services.template_build, node=form.chosen_node(), name=form.cleaned_data["name"],
                    actor=request.user, source="web")
        if job:
            messages.success(request, _("Node %(node)s builds %(name)s: follow the job.")
                             % {"node": job.node.name, "name": form.cleaned_data["name"]})
            return redirect("panel:job-detail", job_id=job.pk)
    return _templates_page(request, build=form, status=400)


@login_required
@require_POST
def staff_template_remove_view(request):
    """Delete a template from a node's cache (``template_remove``)."""
    _staff(request, "managing OS templates")
    names = [r["name"] for r in template_services.template_list()]
    form = TemplateNodeForm(request.POST, names=names, prefix="remove")
    if form.is_valid():
        job = _call(form, template_services.template_remove, node=form.chosen_node(), name=form.cleaned_data["name"],
                    actor=request.user, source="web")
        if job:
            messages.success(request, _("Node %(node)s removes %(name)s: follow the job.")
                             % {"node": job.node.name, "name": form.cleaned_data["name"]})
            return redirect("panel:job-detail", job_id=job.pk)
    return _templates_page(request, remove=form, status=400)


def _template_toggle(enabled: bool):
    @login_required
    @require_POST
    def view(request, name):
        _staff(request, "managing OS templates")
        with http_errors():
            try:
                template_services.template_set_enabled(name=name, enabled=enabled, actor=request.user, source="web")
            except (NotFound, Forbidden):
                raise
            except ServiceError as e:
                messages.error(request, e.message)
            else:
                done = _("OS template %(name)s is offered to customers.") if enabled else \
                    _("OS template %(name)s is no longer offered for new VEs.")
                messages.success(request, done % {"name": name})
        return redirect("panel:staff-templates")
    view.__doc__ = "Offer an OS template for new VEs, or stop offering it (``template_set_enabled``)."
    return view


staff_template_enable_view = _template_toggle(True)
staff_template_disable_view = _template_toggle(False)

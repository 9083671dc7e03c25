"""Customer pages of the VE console (issue 7): the terminal page, the ticket the terminal's
WebSocket needs, the boot console log, and run-command. All go through the access door:
another tenant's VE is a 404, a viewer gets 403."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from panel import access
from panel.forms import VEExecForm
from panel.models import Membership
from panel.services import console as console_svc
from panel.services import ves as ve_services
from panel.services.errors import Forbidden, NotFound, ServiceError

from .common import http_errors

OPERATOR = Membership.Role.OPERATOR


@login_required
def ve_console_view(request, ve_id):
    """The terminal page: a full-window xterm.js that opens its WebSocket with a ticket."""
    with http_errors():
        ve = access.ve_get(request.user, ve_id, min_role=OPERATOR)
    kind = request.GET.get("kind", "shell")
    if kind not in console_svc.KINDS:
        kind = "shell"
    return render(request, "ves/console.html", {
        "ve": ve, "kind": kind, "ws_path": f"/ws/console/{ve.pk}/",
        "ticket_url": reverse("panel:ve-console-ticket", kwargs={"ve_id": ve.pk})})


@login_required
@require_POST
def ve_console_ticket_view(request, ve_id):
    """Mint a one-time console ticket (JSON ``{"ticket": ...}``); refusals are JSON too."""
    with http_errors():
        ve = access.ve_get(request.user, ve_id, min_role=OPERATOR)
        try:
            ticket = console_svc.console_ticket(ve=ve, actor=request.user, kind=request.POST.get("kind", "shell"))
        except (NotFound, Forbidden):
            raise
        except ServiceError as e:
            return JsonResponse({"error": e.message, "code": e.code}, status=e.status)
    return JsonResponse({"ticket": ticket})


@login_required
def ve_console_log_view(request, ve_id):
    """The VE's console output since its last start, read from the node."""
    with http_errors():
        ve = access.ve_get(request.user, ve_id, min_role=OPERATOR)
        error, text = None, ""
        try:
            text = console_svc.console_log_read(ve=ve, actor=request.user)
        except (NotFound, Forbidden):
            raise
        except ServiceError as e:
            error = e.message
    return render(request, "ves/console_log.html", {"ve": ve, "log_text": text, "error": error})


@login_required
@require_POST
def ve_exec_view(request, ve_id):
    """Run one command in the VE; the job's page shows its output and exit code."""
    with http_errors():
        ve = access.ve_get(request.user, ve_id, min_role=OPERATOR)
        form = VEExecForm(request.POST)
        if form.is_valid():
            try:
                job = ve_services.ve_exec(ve=ve, argv=form.cleaned_data["command"], actor=request.user,
                                          timeout=form.cleaned_data["timeout"], source="web")
            except (NotFound, Forbidden):
                raise
            except ServiceError as e:
                messages.error(request, e.message)
                return redirect("panel:ve-detail", ve_id=ve.pk)
            messages.success(request, _("Command queued in VE %(veid)s.") % {"veid": ve.veid})
            return redirect("panel:job-detail", job_id=job.pk)
    for errs in form.errors.values():
        for err in errs:
            messages.error(request, err)
    return redirect("panel:ve-detail", ve_id=ve.pk)

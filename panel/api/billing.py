"""``/api/billing/v1``: the billing system's API (issue 8), thin views over
panel.services.billing. Every mutating call takes an ``Idempotency-Key``; every error is
problem+json (panel.api.problems); objects of other billing accounts are 404.
"""
from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from panel.models import VE, BillingLink
from panel.services import billing as svc
from panel.services import usage, webhooks
from panel.services.suspensions import suspension_status

from .billing_auth import BillingTokenAuthentication, HasScope
from .idempotency import idempotent
from .problems import exception_handler

API_VERSION = "v1"

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=True,
    description="Unique per request (≤255 printable ASCII); a replay returns the stored response.")
SERVICE_REF = OpenApiParameter(
    "ref", OpenApiTypes.STR, OpenApiParameter.PATH,
    description="Hako's service id (UUID) or ext:<external_id>.")


# --- output ------------------------------------------------------------------------------------

def _external_id(account, kind, object_id):
    return (BillingLink.objects.filter(account=account, kind=kind, object_id=object_id)
            .values_list("external_id", flat=True).first())


def _job(job) -> dict | None:
    if job is None:
        return None
    return {"id": str(job.id), "kind": job.kind, "state": job.state}


def service_body(account, ve: VE, job=None) -> dict:
    """One service (VE) as the billing system sees it; every service verb answers this."""
    ve.refresh_from_db()
    return {
        "id": str(ve.pk),
        "external_id": _external_id(account, BillingLink.Kind.VE, ve.pk),
        "account": {"id": str(ve.tenant_id),
                    "external_id": _external_id(account, BillingLink.Kind.TENANT, ve.tenant_id)},
        "veid": ve.veid,
        "hostname": ve.hostname,
        "template": ve.template.name,
        "plan": ve.plan.name if ve.plan_id else None,
        "status": svc.service_status(ve),
        "state": ve.state,
        "suspensions": [{"source": s["source"], "scope": s["scope"], "reason": s["reason"]}
                        for s in (suspension_status(ve) if ve.state != VE.State.DESTROYED else [])],
        "limits": {"memory": ve.memory, "swap": ve.swap, "disk": ve.disk, "cpuunits": ve.cpuunits,
                   "cpulimit": ve.cpulimit, "numproc": ve.numproc, "rate_in": ve.rate_in, "rate_out": ve.rate_out},
        "addresses": list(ve.addresses),
        "created_at": ve.created_at.isoformat(),
        "job": _job(job),
    }


def plan_body(plan) -> dict:
    return {"name": plan.name, "description": plan.description, "memory": plan.memory, "swap": plan.swap,
            "disk": plan.disk, "cpuunits": plan.cpuunits, "cpulimit": plan.cpulimit, "numproc": plan.numproc,
            "addresses": plan.addresses, "bandwidth": plan.bandwidth}


# --- input ---------------------------------------------------------------------------------------

class AccountCreateIn(serializers.Serializer):
    external_id = serializers.CharField(required=False, allow_null=True, max_length=128)
    name = serializers.CharField(max_length=200)
    email = serializers.EmailField(max_length=254)
    slug = serializers.SlugField(required=False, max_length=50)


class ServiceCreateIn(serializers.Serializer):
    account = serializers.CharField(max_length=140, help_text="the account's id or ext:<external_id>")
    plan = serializers.CharField(max_length=63)
    template = serializers.CharField(max_length=64)
    hostname = serializers.CharField(required=False, max_length=253)
    external_id = serializers.CharField(required=False, allow_null=True, max_length=128)
    root_password = serializers.CharField(required=False, write_only=True, max_length=256)
    ssh_keys = serializers.ListField(child=serializers.CharField(max_length=16384), required=False, max_length=32)


class ReasonIn(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500)


class ChangePlanIn(serializers.Serializer):
    plan = serializers.CharField(max_length=63)


# --- views -----------------------------------------------------------------------------------------

class BillingApi(APIView):
    """Base of the billing views: bearer tokens, scopes, JSON, problem+json errors."""

    authentication_classes = [BillingTokenAuthentication]
    permission_classes = [HasScope]
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]
    read_scope = "services:read"
    write_scope = "services:write"

    def required_scope(self, request):
        return self.read_scope if request.method in ("GET", "HEAD", "OPTIONS") else self.write_scope

    def get_exception_handler(self):
        return exception_handler

    @property
    def account(self):
        return self.request.user.account

    def valid(self, serializer_class) -> dict:
        s = serializer_class(data=self.request.data)
        s.is_valid(raise_exception=True)
        return s.validated_data

    def service(self, ref):
        return svc.ve_resolve(self.account, ref)[0]


class TestApi(BillingApi):
    """Connection check (WHMCS TestConnection)."""

    read_scope = None

    @extend_schema(operation_id="test", responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response({"ok": True, "account": self.account.name, "scopes": sorted(request.user.scopes),
                         "api_version": API_VERSION, "panel_version": getattr(settings, "HAKO_VERSION", "")})


class PlanListApi(BillingApi):
    read_scope = "catalog:read"

    @extend_schema(operation_id="plans_list", responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response({"data": [plan_body(p) for p in svc.billing_plans()]})


class TemplateListApi(BillingApi):
    read_scope = "catalog:read"

    @extend_schema(operation_id="templates_list", responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response({"data": [{"name": t.name, "description": t.description} for t in svc.billing_templates()]})


class AccountCreateApi(BillingApi):
    """Create a tenant with an owner user; the same external_id again returns it (200)."""

    write_scope = "accounts:write"

    @extend_schema(operation_id="accounts_create", request=AccountCreateIn, parameters=[IDEMPOTENCY_HEADER],
                   responses={201: OpenApiTypes.OBJECT, 200: OpenApiTypes.OBJECT})
    def post(self, request):
        def call():
            data = self.valid(AccountCreateIn)
            tenant, created = svc.billing_account_create(account=self.account, **data)
            body = {"id": str(tenant.pk), "external_id": _external_id(self.account, BillingLink.Kind.TENANT,
                                                                        tenant.pk),
                    "slug": tenant.slug, "name": tenant.name}
            return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
        return idempotent(request, self.account, call)


class AccountLoginLinkApi(BillingApi):
    """A one-time sign-in URL (valid 5 minutes) for the account's owner (WHMCS
    ServiceSingleSignOn): 201 ``{url, expires_at}``.

    The one POST without an Idempotency-Key: a replay would have to store the link's token
    in clear, and minting a second short-lived link is harmless."""

    write_scope = "accounts:write"

    @extend_schema(operation_id="accounts_login_link", request=None, responses={201: OpenApiTypes.OBJECT},
                   parameters=[OpenApiParameter("ref", OpenApiTypes.STR, OpenApiParameter.PATH,
                                                description="the account's id or ext:<external_id>")])
    def post(self, request, ref):
        from django.urls import reverse

        from panel.services import sso

        tenant = svc.tenant_resolve(self.account, ref)[0]
        link, text = sso.login_link_create(account=self.account, tenant=tenant)
        return Response({"url": request.build_absolute_uri(reverse("sso", args=[text])),
                         "expires_at": link.expires_at.isoformat()}, status=status.HTTP_201_CREATED,
                        headers={"Cache-Control": "no-store"})


class ServiceCreateApi(BillingApi):
    """Create a VE from a plan: 202 with the service and its create job, which also starts
    it (``provisioning`` until it runs, then ``active``); Hako picks node and addresses."""

    @extend_schema(operation_id="services_create", request=ServiceCreateIn, parameters=[IDEMPOTENCY_HEADER],
                   responses={202: OpenApiTypes.OBJECT})
    def post(self, request):
        def call():
            data = self.valid(ServiceCreateIn)
            ve, job = svc.billing_service_create(account=self.account, tenant_ref=data.pop("account"), **data)
            return Response(service_body(self.account, ve, job), status=status.HTTP_202_ACCEPTED)
        return idempotent(request, self.account, call)


class ServiceApi(BillingApi):
    @extend_schema(operation_id="services_get", parameters=[SERVICE_REF], responses={200: OpenApiTypes.OBJECT})
    def get(self, request, ref):
        return Response(service_body(self.account, self.service(ref)))


class ServiceVerbApi(BillingApi):
    """A verb on one service, behind an Idempotency-Key; ``act`` returns (job, status)."""

    request_serializer = ReasonIn

    def act(self, ve, data):
        raise NotImplementedError

    def post(self, request, ref):
        def call():
            ve = self.service(ref)
            job, code = self.act(ve, self.valid(self.request_serializer))
            return Response(service_body(self.account, ve, job), status=code)
        return idempotent(request, self.account, call)


def _verb_schema(name, serializer=ReasonIn):
    return extend_schema(operation_id=f"services_{name}", request=serializer,
                         parameters=[SERVICE_REF, IDEMPOTENCY_HEADER],
                         responses={200: OpenApiTypes.OBJECT, 202: OpenApiTypes.OBJECT})


class ServiceSuspendApi(ServiceVerbApi):
    """Suspend for billing (stops the VE); already suspended by billing: 200 all the same."""

    def act(self, ve, data):
        jobs = svc.billing_service_suspend(account=self.account, ve=ve, reason=data.get("reason", ""))
        return (jobs[0] if jobs else None), status.HTTP_200_OK

    @_verb_schema("suspend")
    def post(self, request, ref):
        return super().post(request, ref)


class ServiceUnsuspendApi(ServiceVerbApi):
    """Lift billing's suspension; admin/abuse holds stay (status still "suspended"). A VE
    that billing's suspension stopped starts again: 202 with the start job; else 200."""

    def act(self, ve, data):
        job = svc.billing_service_unsuspend(account=self.account, ve=ve, reason=data.get("reason", ""))
        return job, status.HTTP_202_ACCEPTED if job else status.HTTP_200_OK

    @_verb_schema("unsuspend")
    def post(self, request, ref):
        return super().post(request, ref)


class ServiceTerminateApi(ServiceVerbApi):
    """Destroy the VE: 202 with the destroy job; already terminated (or terminating): 200."""

    def act(self, ve, data):
        job, started = svc.billing_service_terminate(account=self.account, ve=ve)
        return job, status.HTTP_202_ACCEPTED if started else status.HTTP_200_OK

    @_verb_schema("terminate")
    def post(self, request, ref):
        return super().post(request, ref)


class ServiceChangePlanApi(ServiceVerbApi):
    """Resize to another plan: 202 with the job; already on it: 200; beyond quota: 403
    ``approval-required``."""

    request_serializer = ChangePlanIn

    def act(self, ve, data):
        job = svc.billing_service_change_plan(account=self.account, ve=ve, plan=data["plan"])
        return job, status.HTTP_202_ACCEPTED if job else status.HTTP_200_OK

    @_verb_schema("change_plan", ChangePlanIn)
    def post(self, request, ref):
        return super().post(request, ref)


@extend_schema(exclude=True)
class UnknownApi(BillingApi):
    """Any other path under the API: a problem+json 404 (after authentication), not
    Django's HTML page."""

    read_scope = write_scope = None

    def _missing(self, request, *args, **kwargs):
        from panel.services.errors import NotFound

        raise NotFound("no such API endpoint")

    get = post = put = patch = delete = _missing


# --- webhooks ---------------------------------------------------------------------------------------

class WebhookEndpointIn(serializers.Serializer):
    url = serializers.CharField(max_length=2000)
    event_types = serializers.ListField(child=serializers.CharField(max_length=64), required=False, max_length=32)


def endpoint_body(endpoint, secret: bool = False) -> dict:
    body = {"id": str(endpoint.pk), "url": endpoint.url, "event_types": list(endpoint.event_types),
            "enabled": endpoint.enabled, "disabled_reason": endpoint.disabled_reason,
            "created_at": endpoint.created_at.isoformat()}
    if secret:
        body["secret"] = endpoint.secret
    return body


def delivery_body(d) -> dict:
    return {"id": str(d.pk), "endpoint": str(d.endpoint_id), "event_id": d.message_id, "type": d.event_type,
            "status": d.status, "attempts": d.attempts,
            "next_attempt_at": d.next_attempt_at.isoformat() if d.next_attempt_at else None,
            "last_status_code": d.last_status_code, "last_error": d.last_error,
            "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
            "created_at": d.created_at.isoformat(), "attempt_log": list(d.log), "payload": d.payload}


class WebhookEndpointListApi(BillingApi):
    """The billing account's webhook endpoints; POST adds one and shows its secret once."""

    read_scope = write_scope = "webhooks:manage"

    @extend_schema(operation_id="webhooks_list", responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response({"data": [endpoint_body(e) for e in webhooks.endpoints_of(self.account)]})

    @extend_schema(operation_id="webhooks_create", request=WebhookEndpointIn, parameters=[IDEMPOTENCY_HEADER],
                   responses={201: OpenApiTypes.OBJECT})
    def post(self, request):
        def call():
            data = self.valid(WebhookEndpointIn)
            endpoint = webhooks.endpoint_create(account=self.account, url=data["url"],
                                                event_types=data.get("event_types"),
                                                source=f"billing:{self.account.name}")
            return Response(endpoint_body(endpoint, secret=True), status=status.HTTP_201_CREATED)
        return idempotent(request, self.account, call)


class WebhookDeliveryListApi(BillingApi):
    """Recent deliveries (newest first, at most ``limit``), optionally by ``status``."""

    read_scope = "webhooks:manage"

    @extend_schema(operation_id="webhook_deliveries_list", responses={200: OpenApiTypes.OBJECT},
                   parameters=[OpenApiParameter("status", OpenApiTypes.STR, OpenApiParameter.QUERY),
                               OpenApiParameter("limit", OpenApiTypes.INT, OpenApiParameter.QUERY)])
    def get(self, request):
        from panel.services.errors import InvalidInput

        raw = request.query_params.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise InvalidInput("limit must be between 1 and 1000", field="limit")
        qs = webhooks.deliveries_of(self.account, status=request.query_params.get("status") or None)
        return Response({"data": [delivery_body(d) for d in qs[:int(raw)]]})


class WebhookRedeliverApi(BillingApi):
    """Send a delivery again now (a fresh round of attempts, the same webhook-id): 202."""

    write_scope = "webhooks:manage"

    @extend_schema(operation_id="webhook_deliveries_redeliver", parameters=[IDEMPOTENCY_HEADER],
                   request=None, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, ref):
        def call():
            d = webhooks.delivery_get(self.account, ref)
            d = webhooks.delivery_redeliver(account=self.account, delivery=d, source=f"billing:{self.account.name}")
            return Response(delivery_body(d), status=status.HTTP_202_ACCEPTED)
        return idempotent(request, self.account, call)


# --- usage ------------------------------------------------------------------------------------------

def usage_body(r) -> dict:
    return {"id": str(r.uid), "seq": r.seq, "service": {"id": str(r.ve_id)}, "account": {"id": str(r.tenant_id)},
            "meter": r.meter, "unit": r.unit, "quantity": usage._num(r.quantity), "plan": r.plan or None,
            "period_start": r.period_start.isoformat(), "period_end": r.period_end.isoformat()}


class UsageExportApi(BillingApi):
    """Closed hourly usage records of the account's services after ``cursor``."""

    @extend_schema(operation_id="usage_list", responses={200: OpenApiTypes.OBJECT},
                   parameters=[OpenApiParameter("cursor", OpenApiTypes.INT, OpenApiParameter.QUERY),
                               OpenApiParameter("limit", OpenApiTypes.INT, OpenApiParameter.QUERY)])
    def get(self, request):
        rows, cursor, more = usage.usage_page(self.account, cursor=request.query_params.get("cursor"),
                                              limit=request.query_params.get("limit"))
        return Response({"data": [usage_body(r) for r in rows], "next_cursor": cursor, "has_more": more})


class UsageSummaryApi(BillingApi):
    """One service's usage over [from, to) by meter (sums; max for gauges)."""

    @extend_schema(operation_id="usage_summary", responses={200: OpenApiTypes.OBJECT},
                   parameters=[SERVICE_REF,
                               OpenApiParameter("from", OpenApiTypes.DATETIME, OpenApiParameter.QUERY, required=True),
                               OpenApiParameter("to", OpenApiTypes.DATETIME, OpenApiParameter.QUERY, required=True)])
    def get(self, request, ref):
        ve = self.service(ref)
        start = usage.parse_time(request.query_params.get("from"), "from")
        end = usage.parse_time(request.query_params.get("to"), "to")
        body = usage.usage_summary(self.account, ve, start=start, end=end)
        return Response({"service": {"id": str(ve.pk), "external_id": _external_id(self.account, BillingLink.Kind.VE,
                                                                                  ve.pk)},
                         "period": {"start": start.isoformat(), "end": end.isoformat()}, **body})

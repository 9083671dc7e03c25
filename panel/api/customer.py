"""``/api/v1``: the customer API (issue 8 item 4), thin views over panel.access and the VE
services, authenticated by personal tokens (panel.api.customer_auth).

A token reaches only its own tenant: another tenant's VE or job is a 404, whatever the
user's other memberships (staff included). The token's effective role decides what it may
do: viewers read, operators act; a refusal is a 403 problem. Mutating calls take an
optional ``Idempotency-Key`` (kept per token).
"""
from __future__ import annotations

from django.db.models import Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from panel import access
from panel.models import VE, CustomerIdempotencyRecord, Job, Membership
from panel.services import network as net_svc
from panel.services import ves as ve_svc
from panel.services.errors import Forbidden, InvalidInput, NotFound

from .customer_auth import HasCustomerToken, PersonalTokenAuthentication
from .idempotency import idempotent
from .problems import exception_handler

SOURCE = "api"
LIMIT_MAX = 100
IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description="Optional, unique per request (≤255 printable ASCII); a replay returns the stored response.")
PAGE_PARAMS = [OpenApiParameter("limit", OpenApiTypes.INT, OpenApiParameter.QUERY,
                                description=f"1-{LIMIT_MAX}, default 50"),
               OpenApiParameter("cursor", OpenApiTypes.STR, OpenApiParameter.QUERY,
                                description="next_cursor of the previous page")]


def ve_body(ve: VE) -> dict:
    return {"id": str(ve.pk), "veid": ve.veid, "hostname": ve.hostname, "state": ve.state,
            "template": ve.template.name, "plan": ve.plan.name if ve.plan_id else None,
            "node": ve.node.name, "addresses": list(ve.addresses),
            "limits": {"memory": ve.memory, "swap": ve.swap, "disk": ve.disk, "cpuunits": ve.cpuunits,
                       "cpulimit": ve.cpulimit, "numproc": ve.numproc, "iolimit": ve.iolimit,
                       "iopslimit": ve.iopslimit, "rate_in": ve.rate_in, "rate_out": ve.rate_out},
            "onboot": ve.onboot, "created_at": ve.created_at.isoformat()}


def _iso(value):
    return value.isoformat() if value else None


def job_body(job: Job, logs: bool = False) -> dict:
    # Never the job's args: they may hold a password hash.
    body = {"id": str(job.id), "kind": job.kind, "state": job.state, "ve": str(job.ve_id) if job.ve_id else None,
            "error": job.error or None, "explanation": job.explanation or None,
            "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
            "finished_at": _iso(job.finished_at)}
    if job.kind == "exec" and job.is_terminal:  # run-command: its output and exit code
        r = job.result or {}
        body["result"] = {k: r.get(k) for k in ("exit_code", "output", "truncated", "timed_out")}
    if logs:
        body["log"] = [{"seq": line.seq, "kind": line.kind, "message": line.message, "ts": _iso(line.ts)}
                       for line in job.logs.order_by("seq")]
    return body


def _limit(request) -> int:
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= LIMIT_MAX:
        raise InvalidInput(f"limit must be between 1 and {LIMIT_MAX}", field="limit")
    return int(raw)


class ResourcesIn(serializers.Serializer):
    memory = serializers.IntegerField(required=False, min_value=0, help_text="bytes")
    swap = serializers.IntegerField(required=False, min_value=0, help_text="bytes")
    disk = serializers.IntegerField(required=False, min_value=0, help_text="bytes")
    cpuunits = serializers.IntegerField(required=False, min_value=0)
    cpulimit = serializers.IntegerField(required=False, min_value=0, help_text="percent of one CPU, 0 = none")
    numproc = serializers.IntegerField(required=False, min_value=0)
    iolimit = serializers.IntegerField(required=False, min_value=0, help_text="bytes/s, 0 = none")
    iopslimit = serializers.IntegerField(required=False, min_value=0, help_text="operations/s, 0 = none")


class StopIn(serializers.Serializer):
    timeout = serializers.IntegerField(required=False, min_value=0, max_value=3600)
    kill = serializers.BooleanField(required=False, default=False)


class CustomerApi(APIView):
    authentication_classes = [PersonalTokenAuthentication]
    permission_classes = [HasCustomerToken]
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]

    def get_exception_handler(self):
        return exception_handler

    @property
    def tenant(self):
        return self.request.auth.tenant

    def need(self, min_role: str) -> None:
        role = self.request.auth.role
        if access.ROLE_RANK[role] < access.ROLE_RANK[min_role]:
            access.audit_denial(self.request.user, self.tenant, "token-role",
                                {"role": role, "required": min_role, "token": f"hkp_{self.request.auth.token.prefix}"},
                                SOURCE)
            raise Forbidden(f"this token acts as {role} in {self.tenant.slug}; this needs {min_role} or higher")

    def ve(self, ve_id, min_role: str = Membership.Role.VIEWER) -> VE:
        """The token's tenant's VE (404 otherwise), through the access door."""
        self.need(min_role)
        ve = access._get(self.request.user, access.ves_for(self.request.user, self.tenant)
                         .select_related("tenant", "node", "template", "plan"), ve_id, "VE")
        access.require_role(self.request.user, ve.tenant, min_role, what="VE", source=SOURCE)
        return ve

    def mutate(self, call):
        return idempotent(self.request, None, call, model=CustomerIdempotencyRecord,
                          owner={"token": self.request.auth.token}, required=False)


class VeListApi(CustomerApi):
    """The tenant's VEs by VEID, ``limit`` at a time; ``next_cursor`` pages on."""

    @extend_schema(operation_id="ves_list", parameters=PAGE_PARAMS, responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        limit = _limit(request)
        qs = (access.ves_for(request.user, self.tenant).select_related("node", "template", "plan")
              .order_by("veid"))
        cursor = request.query_params.get("cursor")
        if cursor:
            if not cursor.isdigit():
                raise InvalidInput("cursor is not valid", field="cursor")
            qs = qs.filter(veid__gt=int(cursor))
        rows = list(qs[:limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        return Response({"data": [ve_body(v) for v in rows], "has_more": more,
                         "next_cursor": str(rows[-1].veid) if more else None})


class VeApi(CustomerApi):
    @extend_schema(operation_id="ves_get", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, ve_id):
        return Response(ve_body(self.ve(ve_id)))


class VeActionApi(CustomerApi):
    """A VE operation that makes a job: 202 with the job."""

    request_serializer = None

    def act(self, ve, data):
        raise NotImplementedError

    def post(self, request, ve_id):
        def call():
            ve = self.ve(ve_id, Membership.Role.OPERATOR)
            data = {}
            if self.request_serializer is not None:
                s = self.request_serializer(data=request.data)
                s.is_valid(raise_exception=True)
                data = s.validated_data
            job = self.act(ve, data)
            return Response({"ve": str(ve.pk), "job": job_body(job)}, status=status.HTTP_202_ACCEPTED)
        return self.mutate(call)


def _action_schema(name, serializer=None):
    return extend_schema(operation_id=f"ves_{name}", request=serializer, parameters=[IDEMPOTENCY_HEADER],
                         responses={202: OpenApiTypes.OBJECT})


class VeStartApi(VeActionApi):
    def act(self, ve, data):
        return ve_svc.ve_start(ve=ve, actor=self.request.user, source=SOURCE)

    @_action_schema("start")
    def post(self, request, ve_id):
        return super().post(request, ve_id)


class VeStopApi(VeActionApi):
    request_serializer = StopIn

    def act(self, ve, data):
        return ve_svc.ve_stop(ve=ve, actor=self.request.user, timeout=data.get("timeout"),
                              kill=data.get("kill", False), source=SOURCE)

    @_action_schema("stop", StopIn)
    def post(self, request, ve_id):
        return super().post(request, ve_id)


class VeRestartApi(VeActionApi):
    def act(self, ve, data):
        return ve_svc.ve_restart(ve=ve, actor=self.request.user, source=SOURCE)

    @_action_schema("restart")
    def post(self, request, ve_id):
        return super().post(request, ve_id)


class VeDestroyApi(VeActionApi):
    def act(self, ve, data):
        return ve_svc.ve_destroy(ve=ve, actor=self.request.user, source=SOURCE)

    @_action_schema("destroy")
    def post(self, request, ve_id):
        return super().post(request, ve_id)


class VeResourcesApi(VeActionApi):
    """Change resources within the tenant's quota (bytes for sizes)."""

    request_serializer = ResourcesIn

    def act(self, ve, data):
        if not data:
            raise InvalidInput("nothing to change: give at least one resource")
        return ve_svc.ve_set(ve=ve, actor=self.request.user, source=SOURCE, **data)

    @_action_schema("set_resources", ResourcesIn)
    def post(self, request, ve_id):
        return super().post(request, ve_id)


class AddressAddIn(serializers.Serializer):
    address = serializers.CharField(required=False, max_length=64,
                                    help_text="a free address from the node's pools; omitted: the next free "
                                              "one of each address family")


class AddressRemoveIn(serializers.Serializer):
    address = serializers.CharField(max_length=64, help_text="one of the VE's addresses")


class VeAddressAddApi(VeActionApi):
    """Add an address (live if the VE runs); it counts against the tenant's address quota.
    An address outside the node's pools is a 400, one already in use a 409."""

    request_serializer = AddressAddIn

    def act(self, ve, data):
        return net_svc.ve_ipadd(ve=ve, addresses=[data["address"]] if "address" in data else None,
                                actor=self.request.user, source=SOURCE)

    @_action_schema("add_address", AddressAddIn)
    def post(self, request, ve_id):
        return super().post(request, ve_id)


class VeAddressRemoveApi(VeActionApi):
    """Remove one of the VE's addresses (live if it runs); the address returns to its pool."""

    request_serializer = AddressRemoveIn

    def act(self, ve, data):
        return net_svc.ve_ipdel(ve=ve, addresses=[data["address"]], actor=self.request.user, source=SOURCE)

    @_action_schema("remove_address", AddressRemoveIn)
    def post(self, request, ve_id):
        return super().post(request, ve_id)


class ExecIn(serializers.Serializer):
    argv = serializers.ListField(child=serializers.CharField(trim_whitespace=False, allow_blank=False),
                                 allow_empty=False, help_text="the command and its arguments; no shell runs it")
    timeout = serializers.IntegerField(required=False, min_value=1, max_value=3600, default=60)


class VeExecApi(VeActionApi):
    """Run one command in a running VE (no shell); the job's ``result`` holds its exit
    code and output (up to 64 KiB) once it has ended: poll ``/jobs/{id}``."""

    request_serializer = ExecIn

    def act(self, ve, data):
        return ve_svc.ve_exec(ve=ve, argv=data["argv"], timeout=data.get("timeout", 60), actor=self.request.user,
                              source=SOURCE)

    @_action_schema("exec", ExecIn)
    def post(self, request, ve_id):
        return super().post(request, ve_id)


class MigrateIn(serializers.Serializer):
    node = serializers.CharField(max_length=63, help_text="the target node's name")
    bwlimit = serializers.IntegerField(required=False, min_value=0, max_value=10**8, default=0,
                                       help_text="cap the copy at this many KiB/s, 0 = none")


class VeMigrateApi(VeActionApi):
    """Staff only (a token of a staff user): move the VE to another node; the job's log
    shows the copy and, at the end, the downtime. Another caller gets a 404: the
    endpoint does not exist for them."""

    request_serializer = MigrateIn

    def act(self, ve, data):
        from panel.services.migrations import ve_migrate

        return ve_migrate(ve=ve, target=data["node"], bwlimit=data.get("bwlimit", 0), actor=self.request.user,
                          source=SOURCE)

    @_action_schema("migrate", MigrateIn)
    def post(self, request, ve_id):
        if not access.is_local_admin(request.user):
            raise NotFound("no such API endpoint")
        return super().post(request, ve_id)


class JobListApi(CustomerApi):
    """The tenant's jobs, newest first, ``limit`` at a time (``ve`` filters by VE id)."""

    @extend_schema(operation_id="jobs_list", responses={200: OpenApiTypes.OBJECT},
                   parameters=[*PAGE_PARAMS, OpenApiParameter("ve", OpenApiTypes.UUID, OpenApiParameter.QUERY)])
    def get(self, request):
        limit = _limit(request)
        qs = access.jobs_for(request.user, self.tenant).order_by("-created_at", "-id")
        if request.query_params.get("ve"):
            qs = qs.filter(ve=self.ve(request.query_params["ve"]))
        cursor = request.query_params.get("cursor")
        if cursor:
            try:
                last = access._get(request.user, access.jobs_for(request.user, self.tenant), cursor, "cursor")
            except NotFound:
                raise InvalidInput("cursor is not valid", field="cursor") from None
            qs = qs.filter(Q(created_at__lt=last.created_at) | Q(created_at=last.created_at, id__lt=last.id))
        rows = list(qs[:limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        return Response({"data": [job_body(j) for j in rows], "has_more": more,
                         "next_cursor": str(rows[-1].id) if more else None})


class JobApi(CustomerApi):
    """One job with its log lines."""

    @extend_schema(operation_id="jobs_get", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, job_id):
        job = access._get(request.user, access.jobs_for(request.user, self.tenant), job_id, "job")
        return Response(job_body(job, logs=True))


@extend_schema(exclude=True)
class UnknownApi(CustomerApi):
    def _missing(self, request, *args, **kwargs):
        raise NotFound("no such API endpoint")

    get = post = put = patch = delete = _missing

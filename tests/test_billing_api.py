"""The billing API (/api/billing/v1, issue 8): tokens, external ids, the five verbs,
idempotency keys and problem+json errors.

Database-level tests against PostgreSQL with a node row no agent consumes (jobs stay
pending; ``settle`` plays the node's success where a test needs it). Transactions are
rolled back, so no job message reaches the broker.
"""
import hashlib
import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from panel.models import (VE, AuditEvent, BillingLink, BillingToken, IdempotencyRecord, Job, Membership,
                          Suspension, Tenant)
from panel.services import billing, plans, quotas
from panel.services.network import pool_create
from tests.tenancy import idle_node, settle  # noqa: F401

pytestmark = pytest.mark.django_db

API = "/api/billing/v1"
M = 1 << 20
G = 1 << 30
PROBLEM = "application/problem+json"


def token_for(name, **kw):
    account = billing.billing_account_get_or_create(name=name)
    return account, billing.billing_token_create(account=account, **kw)[1]


class Billing:
    """An API client with a billing token; ``post`` adds an Idempotency-Key."""

    def __init__(self, token):
        self.client = APIClient()
        self.auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        self.n = 0

    def get(self, path):
        return self.client.get(API + path, **self.auth)

    def post(self, path, data=None, key=None):
        self.n += 1
        headers = dict(self.auth)
        if key is not False:
            headers["HTTP_IDEMPOTENCY_KEY"] = key or f"test-{self.n}-{path}"
        return self.client.post(API + path, data or {}, format="json", **headers)


@pytest.fixture
def whmcs(db):
    return Billing(token_for("whmcs")[1])


@pytest.fixture
def catalog(idle_node):
    pool_create(name="bill", network="198.18.8.0/24", nodes=[idle_node])
    small = plans.plan_create(name="small", memory="512M", disk="10G", numproc=256, cpulimit=100,
                              bandwidth="100M", addresses=1)
    big = plans.plan_create(name="big", memory="4G", disk="40G", addresses=1)
    return small, big


def problem_of(r, status, code):
    assert r.status_code == status, (r.status_code, r.content)
    assert r["Content-Type"].startswith(PROBLEM), r["Content-Type"]
    body = json.loads(r.content)
    assert body["status"] == status and body["code"] == code, body
    assert body["type"].endswith(code) and body["title"] and body["detail"]
    return body


def make_service(api, *, account_ext="1204", service_ext="4711", plan="small"):
    r = api.post("/accounts", {"external_id": account_ext, "name": "Ada Lovelace", "email": "ada@example.test"})
    assert r.status_code in (200, 201), r.content
    r = api.post("/services", {"account": f"ext:{account_ext}", "plan": plan, "template": "busybox",
                               "hostname": "web1.example.test", "external_id": service_ext})
    assert r.status_code == 202, r.content
    return r.json()


# --- auth -------------------------------------------------------------------------------------

def test_it_requires_a_token_and_answers_problem_json_401(db):
    r = APIClient().get(API + "/test")
    problem_of(r, 401, "unauthenticated")
    assert r["WWW-Authenticate"].startswith("Bearer")
    for bad in ("Bearer nope", "Bearer hko_aaaaaaaaaaaa_" + "x" * 40, "Bearer a b"):
        problem_of(APIClient().get(API + "/test", HTTP_AUTHORIZATION=bad), 401, "unauthenticated")
    assert AuditEvent.objects.filter(action="token.use", result="denied").count() == 3


def test_test_call_names_the_account_and_audits_the_token_use(whmcs):
    r = whmcs.get("/test")
    assert r.status_code == 200 and r.json()["account"] == "whmcs" and r.json()["ok"] is True
    use = AuditEvent.objects.filter(action="token.use", result="ok").get()
    assert use.source == "billing:whmcs" and use.detail["token"].startswith("hko_")
    assert BillingToken.objects.get().last_used_at is not None


def test_token_is_stored_hashed_shown_once_and_expiry_is_enforced(db):
    out = io.StringIO()
    call_command("billing_token", "create", "blesta", "--scopes", "catalog:read", "--expires-days", "1",
                 stdout=out, stderr=io.StringIO())
    text = out.getvalue().strip()
    token = BillingToken.objects.get(account__name="blesta")
    assert text.startswith(f"hko_{token.prefix}_")
    assert token.token_hash == hashlib.sha256(text.encode()).hexdigest()
    stored = json.dumps([str(v) for v in BillingToken.objects.values_list().get()])
    secret = text.split("_", 2)[2]
    assert secret not in stored and not AuditEvent.objects.filter(detail__icontains=secret).exists()
    api = Billing(text)
    assert api.get("/plans").status_code == 200
    problem_of(api.post("/accounts", {"name": "x", "email": "x@example.test"}), 403, "forbidden")  # scope
    BillingToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    problem_of(api.get("/plans"), 401, "unauthenticated")


# --- catalog ----------------------------------------------------------------------------------

def test_plans_and_templates_list_only_enabled_ones(whmcs, catalog):
    plans.plan_update(plan=catalog[1], enabled=False)
    assert [p["name"] for p in whmcs.get("/plans").json()["data"]] == ["small"]
    assert whmcs.get("/plans").json()["data"][0]["memory"] == 512 * M
    assert [t["name"] for t in whmcs.get("/templates").json()["data"]] == ["busybox"]


# --- create -----------------------------------------------------------------------------------

def test_create_account_and_service_from_a_plan(whmcs, catalog):
    r = whmcs.post("/accounts", {"external_id": "1204", "name": "Ada Lovelace", "email": "ada@example.test"})
    assert r.status_code == 201, r.content
    tenant = Tenant.objects.get(pk=r.json()["id"])
    assert r.json()["external_id"] == "1204" and tenant.name == "Ada Lovelace"
    owner = Membership.objects.get(tenant=tenant)
    assert owner.role == "owner" and owner.user.email == "ada@example.test" and not owner.user.has_usable_password()

    r = whmcs.post("/services", {"account": "ext:1204", "plan": "small", "template": "busybox",
                                 "hostname": "web1.example.test", "external_id": "4711"})
    assert r.status_code == 202, r.content
    body = r.json()
    ve = VE.objects.get(pk=body["id"])
    job = Job.objects.get(pk=body["job"]["id"])
    assert job.kind == "create" and job.ve_id == ve.pk and job.state == "pending"
    assert (ve.tenant, ve.plan.name, ve.memory, ve.disk, ve.numproc, ve.cpulimit, ve.rate_in) == (
        tenant, "small", 512 * M, 10 * G, 256, 100, 100_000_000)
    assert len(ve.addresses) == 1 and body["addresses"] == ve.addresses
    assert body["external_id"] == "4711" and body["account"] == {"id": str(tenant.pk), "external_id": "1204"}
    assert body["status"] == "provisioning" and body["limits"]["memory"] == 512 * M
    assert AuditEvent.objects.get(action="ve.create").source == "billing:whmcs"


def test_account_with_a_known_external_id_returns_the_existing_one(whmcs, db):
    first = whmcs.post("/accounts", {"external_id": "7", "name": "Acme", "email": "a@example.test"})
    again = whmcs.post("/accounts", {"external_id": "7", "name": "Acme", "email": "a@example.test"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and Tenant.objects.count() == 1


def test_service_external_id_is_unique_per_billing_account(whmcs, catalog):
    make_service(whmcs)
    r = whmcs.post("/services", {"account": "ext:1204", "plan": "small", "template": "busybox",
                                 "external_id": "4711"})
    problem_of(r, 409, "service-exists")
    assert VE.objects.count() == 1
    # Another billing system may use the same external ids for its own objects.
    other = Billing(token_for("blesta")[1])
    make_service(other)
    assert BillingLink.objects.filter(external_id="4711").count() == 2


def test_bad_input_is_a_400_problem_and_changes_nothing(whmcs, catalog):
    whmcs.post("/accounts", {"external_id": "1204", "name": "Ada", "email": "ada@example.test"})
    base = {"account": "ext:1204", "plan": "small", "template": "busybox"}
    body = problem_of(whmcs.post("/services", {"account": "ext:1204", "plan": "small"}), 400,
                      "validation-failed")  # the serializer's refusal, field by field
    assert body["errors"][0]["field"] == "template"
    for field, hostile in (("hostname", "a;rm -rf /\nb"), ("hostname", "../x"), ("external_id", "../x"),
                           ("external_id", "x\u2028y"), ("template", "$(reboot)")):
        body = problem_of(whmcs.post("/services", dict(base, **{field: hostile})), 400, "invalid")
        assert body["field"] == field
    problem_of(whmcs.post("/services", dict(base, hostname="h" * 300)), 400, "validation-failed")
    problem_of(whmcs.post("/services", {"account": "ext:1204", "plan": "nope", "template": "busybox"}),
               404, "not-found")
    problem_of(whmcs.post("/services", {"account": "ext:9999", "plan": "small", "template": "busybox"}),
               404, "not-found")
    assert VE.objects.count() == 0


# --- external ids, verbs ------------------------------------------------------------------------

def test_external_ids_and_uuids_both_reach_the_service(whmcs, catalog):
    made = make_service(whmcs)
    by_ext = whmcs.get("/services/ext:4711")
    by_id = whmcs.get(f"/services/{made['id']}")
    assert by_ext.status_code == by_id.status_code == 200
    assert by_ext.json()["id"] == by_id.json()["id"] == made["id"]
    problem_of(whmcs.get("/services/ext:4712"), 404, "not-found")
    problem_of(whmcs.get("/services/not-a-uuid"), 404, "not-found")
    problem_of(whmcs.get("/services/ext:4711/nope"), 404, "not-found")
    problem_of(whmcs.post("/services/ext:4711/reboot"), 404, "not-found")
    problem_of(APIClient().get(API + "/nope"), 401, "unauthenticated")
    problem_of(whmcs.client.delete(API + "/services/ext:4711", **whmcs.auth), 405, "method-not-allowed")


def test_suspend_and_unsuspend_twice_succeed_with_the_same_shape(whmcs, catalog):
    made = make_service(whmcs)
    settle(Job.objects.get(pk=made["job"]["id"]), "stopped")
    one = whmcs.post("/services/ext:4711/suspend", {"reason": "invoice 42 unpaid"})
    two = whmcs.post("/services/ext:4711/suspend", {"reason": "invoice 42 unpaid"})
    assert one.status_code == two.status_code == 200
    assert set(one.json()) == set(two.json()) == set(made)
    assert one.json()["status"] == two.json()["status"] == "suspended"
    assert one.json()["suspensions"] == [{"source": "billing", "scope": "ve", "reason": "invoice 42 unpaid"}]
    assert Suspension.objects.filter(source="billing", lifted_at__isnull=True).count() == 1
    one = whmcs.post("/services/ext:4711/unsuspend")
    two = whmcs.post("/services/ext:4711/unsuspend")
    assert one.status_code == two.status_code == 200 and two.json()["status"] == "active"


def test_unsuspend_leaves_an_admin_hold(whmcs, catalog):
    from panel.services.suspensions import ve_suspend

    made = make_service(whmcs)
    settle(Job.objects.get(pk=made["job"]["id"]), "stopped")
    ve_suspend(ve=VE.objects.get(pk=made["id"]), by="admin", reason="abuse report")
    whmcs.post("/services/ext:4711/suspend", {"reason": "unpaid"})
    r = whmcs.post("/services/ext:4711/unsuspend")
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    assert [s["source"] for s in r.json()["suspensions"]] == ["admin"]


def test_terminate_then_terminate_again(whmcs, catalog):
    made = make_service(whmcs)
    settle(Job.objects.get(pk=made["job"]["id"]), "stopped")
    first = whmcs.post("/services/ext:4711/terminate")
    assert first.status_code == 202 and first.json()["job"]["kind"] == "destroy"
    again = whmcs.post("/services/ext:4711/terminate")
    assert again.status_code == 200 and again.json()["job"]["id"] == first.json()["job"]["id"]
    settle(Job.objects.get(pk=first.json()["job"]["id"]), "destroyed")
    done = whmcs.post("/services/ext:4711/terminate")
    assert done.status_code == 200 and done.json()["status"] == "terminated" and done.json()["job"] is None
    assert set(done.json()) == set(first.json())
    assert Job.objects.filter(kind="destroy").count() == 1
    problem_of(whmcs.post("/services/ext:4711/suspend"), 409, "terminated")


def test_change_plan_within_quota_and_beyond_it(whmcs, catalog):
    made = make_service(whmcs)
    settle(Job.objects.get(pk=made["job"]["id"]), "stopped")
    tenant = Tenant.objects.get(pk=made["account"]["id"])
    quotas.quota_set(tenant=tenant, memory=G)
    body = problem_of(whmcs.post("/services/ext:4711/change-plan", {"plan": "big"}), 403, "approval-required")
    assert "quota" in body["detail"]
    assert not Job.objects.filter(kind="set").exists()
    quotas.quota_set(tenant=tenant, memory=None)
    r = whmcs.post("/services/ext:4711/change-plan", {"plan": "big"})
    assert r.status_code == 202 and r.json()["job"]["kind"] == "set"
    settle(Job.objects.get(pk=r.json()["job"]["id"]), "stopped")
    r = whmcs.post("/services/ext:4711/change-plan", {"plan": "big"})
    assert r.status_code == 200 and r.json()["plan"] == "big" and r.json()["job"] is None


# --- idempotency --------------------------------------------------------------------------------

def test_mutating_calls_need_an_idempotency_key(whmcs, catalog):
    problem_of(whmcs.post("/accounts", {"name": "A", "email": "a@example.test"}, key=False), 400,
               "idempotency-key-missing")
    assert Tenant.objects.count() == 0


def test_a_replay_returns_the_stored_response_and_creates_nothing(whmcs, catalog):
    whmcs.post("/accounts", {"external_id": "1204", "name": "Ada", "email": "ada@example.test"})
    data = {"account": "ext:1204", "plan": "small", "template": "busybox", "external_id": "4711"}
    first = whmcs.post("/services", data, key="whmcs-4711-create")
    again = whmcs.post("/services", data, key="whmcs-4711-create")
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json() and again["Idempotent-Replayed"] == "true"
    assert VE.objects.count() == 1 and Job.objects.filter(ve__isnull=False).count() == 1
    # An error once the call ran is stored and replayed too.
    bad = {"account": "ext:1204", "plan": "small", "template": "nope"}
    assert whmcs.post("/services", bad, key="k-bad").json() == whmcs.post("/services", bad, key="k-bad").json()


def test_the_same_key_on_another_body_is_422(whmcs, catalog):
    whmcs.post("/accounts", {"external_id": "1204", "name": "Ada", "email": "ada@example.test"})
    data = {"account": "ext:1204", "plan": "small", "template": "busybox", "external_id": "4711"}
    whmcs.post("/services", data, key="k1")
    problem_of(whmcs.post("/services", dict(data, external_id="4712"), key="k1"), 422, "idempotency-key-reused")
    assert VE.objects.count() == 1


def test_a_concurrent_duplicate_is_409(whmcs, catalog):
    account = billing.BillingAccount.objects.get(name="whmcs")
    whmcs.post("/accounts", {"external_id": "1204", "name": "Ada", "email": "ada@example.test"})
    data = {"account": "ext:1204", "plan": "small", "template": "busybox"}
    # The first request's row, committed before it ran, without a response yet.
    from panel.api.idempotency import request_hash

    fake = type("R", (), {"method": "POST", "path": API + "/services", "data": data})()
    IdempotencyRecord.objects.create(account=account, key="k-busy", method="POST", path=fake.path,
                                     request_hash=request_hash(fake))
    problem_of(whmcs.post("/services", data, key="k-busy"), 409, "idempotency-key-in-progress")
    assert VE.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_racing_duplicates_create_one_service(idle_node):
    """Real threads, each on its own connection: four requests with one Idempotency-Key
    and four with other keys but one external_id give one VE each time."""
    from tests.tenancy import in_parallel

    plans.plan_create(name="tiny", memory="64M", disk="1G", addresses=0)
    _, text = token_for("whmcs")
    Billing(text).post("/accounts", {"external_id": "1", "name": "A", "email": "a@example.test"})
    data = {"account": "ext:1", "plan": "tiny", "template": "busybox", "external_id": "s1"}
    results = in_parallel(lambda i: Billing(text).post("/services", data, key="same"), 4)
    codes = sorted(r.status_code for r in results)
    assert codes.count(202) >= 1 and set(codes) <= {202, 409}, codes
    assert len({r.json()["id"] for r in results if r.status_code == 202}) == 1
    assert all(r.json()["code"] == "idempotency-key-in-progress" for r in results if r.status_code == 409)
    data = dict(data, external_id="s2")
    results = in_parallel(lambda i: Billing(text).post("/services", data, key=f"k{i}"), 4)
    codes = sorted(r.status_code for r in results)
    assert codes == [202, 409, 409, 409], [r.content for r in results]
    assert VE.objects.count() == 2


def test_idempotency_keys_are_per_billing_account(whmcs, catalog):
    other = Billing(token_for("blesta")[1])
    a = whmcs.post("/accounts", {"external_id": "1", "name": "A", "email": "a@example.test"}, key="same")
    b = other.post("/accounts", {"external_id": "1", "name": "A", "email": "a@example.test"}, key="same")
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]


# --- isolation ------------------------------------------------------------------------------------

def test_another_billing_accounts_objects_are_404(whmcs, catalog):
    made = make_service(whmcs)
    other = Billing(token_for("blesta")[1])
    for path in (f"/services/{made['id']}", "/services/ext:4711"):
        problem_of(other.get(path), 404, "not-found")
        for verb in ("suspend", "unsuspend", "terminate"):
            problem_of(other.post(f"{path}/{verb}"), 404, "not-found")
        problem_of(other.post(f"{path}/change-plan", {"plan": "big"}), 404, "not-found")
    problem_of(other.post("/services", {"account": made["account"]["id"], "plan": "small",
                                        "template": "busybox"}), 404, "not-found")
    assert not Suspension.objects.exists() and Job.objects.filter(ve__isnull=False).count() == 1


# --- schema -----------------------------------------------------------------------------------------

def test_schema_is_valid_openapi_with_every_path(db, tmp_path):
    from drf_spectacular.validation import validate_schema

    # Generation without a single warning (an undocumented auth class, an unresolvable
    # serializer) and valid against the OpenAPI 3 JSON schema.
    call_command("spectacular", "--urlconf", "panel.api.billing_urls", "--validate", "--fail-on-warn",
                 "--file", str(tmp_path / "schema.yaml"))

    r = APIClient().get(API + "/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert r.status_code == 200, r.content
    schema = json.loads(r.content)
    validate_schema(schema)
    for path in ("/test", "/plans", "/templates", "/accounts", "/services", "/services/{ref}",
                 "/services/{ref}/suspend", "/services/{ref}/unsuspend", "/services/{ref}/terminate",
                 "/services/{ref}/change-plan"):
        assert API + path in schema["paths"], path
    assert all(p.startswith(API + "/") for p in schema["paths"])
    assert schema["components"]["securitySchemes"]["billingToken"]["scheme"] == "bearer"
    docs = APIClient().get(API + "/docs/")
    assert docs.status_code == 200 and b"cdn" not in docs.content.lower()

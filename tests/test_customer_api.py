"""The customer API (/api/v1, issue 8 item 4): personal tokens, the VE operations, the
tenant boundary, role caps, optional idempotency keys and the token matrix against the
billing API. A node row no agent consumes: jobs stay pending (``settle`` plays success)."""
import hashlib
import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from panel.models import (VE, AuditEvent, CustomerIdempotencyRecord, Job, JobLog, Membership, PersonalToken)
from panel.services import api_tokens, billing, ves
from panel.services.errors import Forbidden
from tests.tenancy import idle_node, make_user, people, settle  # noqa: F401

pytestmark = pytest.mark.django_db

API = "/api/v1"
PROBLEM = "application/problem+json"
M = 1 << 20
G = 1 << 30


def problem_of(r, status, code=None):
    assert r.status_code == status, (r.status_code, r.content)
    assert r["Content-Type"].startswith(PROBLEM), r["Content-Type"]
    body = json.loads(r.content)
    assert body["status"] == status and body["detail"], body
    if code:
        assert body["code"] == code, body
    return body


class Client:
    def __init__(self, token):
        self.client = APIClient()
        self.auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def get(self, path):
        return self.client.get(API + path, **self.auth)

    def post(self, path, data=None, key=None):
        headers = dict(self.auth)
        if key:
            headers["HTTP_IDEMPOTENCY_KEY"] = key
        return self.client.post(API + path, data or {}, format="json", **headers)


def token(user, tenant, role=None):
    return Client(api_tokens.api_token_create(user=user, tenant=tenant, role=role)[1])


def make_ve(tenant, hostname="web1"):
    job = ves.ve_create(tenant=tenant, template="busybox", hostname=hostname, memory=256 * M, disk=2 * G)
    return settle(job)


@pytest.fixture
def world(people, tenant, other_tenant, idle_node):
    mine = make_ve(tenant, "mine")
    theirs = make_ve(other_tenant, "theirs")
    return mine, theirs


# --- tokens ---------------------------------------------------------------------------------

def test_command_prints_the_token_once_stored_hashed(people, tenant):
    out = io.StringIO()
    call_command("api_token", "create", "oscar", "acme", "--role", "viewer", stdout=out, stderr=io.StringIO())
    text = out.getvalue().strip()
    row = PersonalToken.objects.get()
    assert text.startswith(f"hkp_{row.prefix}_") and row.role == "viewer"
    assert row.token_hash == hashlib.sha256(text.encode()).hexdigest()
    secret = text.split("_", 2)[2]
    assert not AuditEvent.objects.filter(detail__icontains=secret).exists()
    assert Client(text).get("/ves").status_code == 200
    assert PersonalToken.objects.get().last_used_at is not None


def test_role_cap_cannot_exceed_membership(people, tenant, other_tenant):
    with pytest.raises(Forbidden):
        api_tokens.api_token_create(user=people.viewer, tenant=tenant, role="operator")
    with pytest.raises(CommandError):
        call_command("api_token", "create", "vera", "acme", "--role", "owner", stdout=io.StringIO(),
                     stderr=io.StringIO())
    with pytest.raises(CommandError):  # not a member of globex
        call_command("api_token", "create", "vera", "globex", stdout=io.StringIO(), stderr=io.StringIO())


def test_revoked_expired_and_demoted(people, tenant, world):
    mine, _ = world
    row, text = api_tokens.api_token_create(user=people.operator, tenant=tenant)
    c = Client(text)
    assert c.get(f"/ves/{mine.pk}").status_code == 200
    # Demoted to viewer: the token shrinks with the membership.
    Membership.objects.filter(user=people.operator, tenant=tenant).update(role="viewer")
    problem_of(c.post(f"/ves/{mine.pk}/start"), 403, "forbidden")
    Membership.objects.filter(user=people.operator, tenant=tenant).delete()
    problem_of(c.get("/ves"), 401, "unauthenticated")
    Membership.objects.create(user=people.operator, tenant=tenant, role="operator")
    call_command("api_token", "revoke", row.prefix, stdout=io.StringIO())
    r = c.get("/ves")
    problem_of(r, 401, "unauthenticated")
    assert r["WWW-Authenticate"].startswith("Bearer")


# --- the token matrix ----------------------------------------------------------------------------

def test_billing_and_customer_tokens_do_not_cross(people, tenant):
    account = billing.billing_account_get_or_create(name="whmcs")
    billing_text = billing.billing_token_create(account=account)[1]
    customer_text = api_tokens.api_token_create(user=people.owner, tenant=tenant)[1]
    c = APIClient()
    for path, text, status in [(f"{API}/ves", billing_text, 401), (f"{API}/ves", customer_text, 200),
                               ("/api/billing/v1/test", customer_text, 401),
                               ("/api/billing/v1/test", billing_text, 200),
                               (f"{API}/ves", None, 401), ("/api/billing/v1/test", None, 401)]:
        auth = {"HTTP_AUTHORIZATION": f"Bearer {text}"} if text else {}
        r = c.get(path, **auth)
        if status == 200:
            assert r.status_code == 200, (path, r.content)
        else:
            problem_of(r, 401, "unauthenticated")
    # A signed-in browser session is no API credential either.
    c.force_login(people.owner)
    problem_of(c.get(f"{API}/ves"), 401)


# --- reads ----------------------------------------------------------------------------------------

def test_list_detail_and_other_tenant_is_404(people, tenant, world):
    mine, theirs = world
    c = token(people.viewer, tenant)
    r = c.get("/ves")
    assert r.status_code == 200
    assert [v["id"] for v in r.json()["data"]] == [str(mine.pk)]
    body = c.get(f"/ves/{mine.pk}").json()
    assert body["hostname"] == "mine" and body["limits"]["memory"] == 256 * M
    for path in (f"/ves/{theirs.pk}", f"/ves/{theirs.pk}/start", "/ves/not-a-uuid", "/nope"):
        r = c.get(path) if "start" not in path else token(people.owner, tenant).post(path)
        problem_of(r, 404, "not-found")
    other_job = Job.objects.filter(ve=theirs).first()
    problem_of(c.get(f"/jobs/{other_job.pk}"), 404, "not-found")
    assert all(j["ve"] == str(mine.pk) for j in c.get("/jobs").json()["data"])


def test_staff_token_is_still_bound_to_its_tenant(people, tenant, world):
    mine, theirs = world
    Membership.objects.create(user=people.staff, tenant=tenant, role="owner")
    c = token(people.staff, tenant)
    assert [v["id"] for v in c.get("/ves").json()["data"]] == [str(mine.pk)]
    problem_of(c.get(f"/ves/{theirs.pk}"), 404)


def test_pagination_is_capped_and_cursored(people, tenant, idle_node):
    for i in range(5):
        make_ve(tenant, f"h{i}")
    c = token(people.viewer, tenant)
    problem_of(c.get("/ves?limit=101"), 400)
    problem_of(c.get("/ves?limit=0"), 400)
    seen, cursor = [], None
    while True:
        r = c.get("/ves?limit=2" + (f"&cursor={cursor}" if cursor else "")).json()
        seen += [v["hostname"] for v in r["data"]]
        if not r["has_more"]:
            break
        cursor = r["next_cursor"]
    assert seen == [f"h{i}" for i in range(5)]
    jobs, cursor = [], None
    while True:
        r = c.get("/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")).json()
        jobs += [j["id"] for j in r["data"]]
        if not r["has_more"]:
            break
        cursor = r["next_cursor"]
    assert len(jobs) == len(set(jobs)) == 5


# --- mutations -----------------------------------------------------------------------------------

def test_viewer_token_cannot_mutate(people, tenant, world):
    mine, _ = world
    for user, cap in ((people.viewer, None), (people.owner, "viewer")):
        c = token(user, tenant, cap)
        for verb in ("start", "stop", "restart", "destroy", "resources"):
            problem_of(c.post(f"/ves/{mine.pk}/{verb}", {"memory": 512 * M}), 403, "forbidden")
    assert not Job.objects.filter(ve=mine, state="pending").exists()
    assert AuditEvent.objects.filter(action="access.denied", detail__why="token-role").exists()


def test_operator_runs_each_operation_and_reads_the_job_log(people, tenant, world):
    mine, _ = world
    c = token(people.operator, tenant)
    for verb, data, state in (("start", None, "running"), ("restart", None, "running"),
                              ("stop", {"timeout": 5}, "stopped"), ("resources", {"memory": 512 * M}, "stopped"),
                              ("destroy", None, "destroyed")):
        r = c.post(f"/ves/{mine.pk}/{verb}", data)
        assert r.status_code == 202, (verb, r.content)
        job = Job.objects.get(pk=r.json()["job"]["id"])
        assert job.kind == ("set" if verb == "resources" else verb) and job.actor == people.operator
        JobLog.objects.create(job=job, seq=1, kind="log", message=f"did {verb}", ts=job.created_at)
        detail = c.get(f"/jobs/{job.pk}").json()
        assert detail["state"] == "pending" and detail["log"][0]["message"] == f"did {verb}"
        assert "args" not in detail
        settle(job, state)
    assert VE.objects.get(pk=mine.pk).memory == 512 * M
    assert AuditEvent.objects.filter(action="ve.start", source="api").exists()
    problem_of(c.get(f"/ves/{mine.pk}"), 404)


def test_bad_input_and_busy_are_problems(people, tenant, world):
    mine, _ = world
    c = token(people.operator, tenant)
    problem_of(c.post(f"/ves/{mine.pk}/resources", {}), 400)
    problem_of(c.post(f"/ves/{mine.pk}/resources", {"memory": "lots"}), 400, "validation-failed")
    problem_of(c.post(f"/ves/{mine.pk}/stop", {"timeout": 99999}), 400, "validation-failed")
    assert c.post(f"/ves/{mine.pk}/start").status_code == 202
    problem_of(c.post(f"/ves/{mine.pk}/stop"), 409)  # a job is still pending


def test_idempotency_key_replays_and_refuses_reuse(people, tenant, world):
    mine, _ = world
    c = token(people.operator, tenant)
    first = c.post(f"/ves/{mine.pk}/start", key="k-1")
    again = c.post(f"/ves/{mine.pk}/start", key="k-1")
    assert first.status_code == again.status_code == 202
    assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert Job.objects.filter(ve=mine, kind="start").count() == 1
    problem_of(c.post(f"/ves/{mine.pk}/stop", key="k-1"), 422, "idempotency-key-reused")
    # Keys are per token: another token's same key is a new request (here: busy VE, 409).
    other = token(people.owner, tenant)
    problem_of(other.post(f"/ves/{mine.pk}/start", key="k-1"), 409)
    assert CustomerIdempotencyRecord.objects.count() == 2


# --- schema -----------------------------------------------------------------------------------------

def test_schema_describes_api_v1_only_and_docs_need_no_cdn(db):
    c = APIClient()
    r = c.get(f"{API}/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert r.status_code == 200
    schema = json.loads(r.content)
    paths = set(schema["paths"])
    assert paths and all(p.startswith("/api/v1/") for p in paths), paths
    assert "/api/v1/ves/{ve_id}/start" in paths and "/api/v1/jobs/{job_id}" in paths
    assert "personalToken" in schema["components"]["securitySchemes"]
    billing_paths = set(json.loads(c.get("/api/billing/v1/schema/",
                                         HTTP_ACCEPT="application/vnd.oai.openapi+json").content)["paths"])
    assert billing_paths and not billing_paths & paths
    docs = c.get(f"{API}/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "cdn" not in html.lower() and "/api/v1/schema/" in html

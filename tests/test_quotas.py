"""Plans, tenant quotas, resize within quota and the quota request workflow.

Database-level tests against PostgreSQL with a node row no agent consumes (jobs stay
pending; ``settle`` plays the node's success where a test needs it). The race tests run
real threads, each on its own connection, so they need transaction=True.
"""
import pytest
from django.core import mail
from django.core.management import call_command
from django.db import connection

from panel import access
from panel.models import VE, AuditEvent, DomainEvent, Job, QuotaRequest, TenantQuota
from panel.selectors import quota_request_history, quota_request_queue, tenant_quota_for
from panel.services import plans, quotas
from panel.services import ves as svc
from panel.services.errors import Conflict, Forbidden, InvalidInput, NotFound, QuotaExceeded
from panel.services.network import ve_ipadd
from tests.tenancy import assert_hidden_from, idle_node, in_parallel, people, settle  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

M = 1 << 20
G = 1 << 30


def limits(tenant, **values):
    return quotas.quota_set(tenant=tenant, actor=None, **values)


# --- the race ---------------------------------------------------------------------------------

def assert_postgresql():
    """The races are PostgreSQL's row locks at work: on SQLite (one writer at a time) they
    would pass without proving anything."""
    assert connection.vendor == "postgresql", f"race tests need PostgreSQL, not {connection.vendor}"


def test_parallel_creates_against_remaining_quota_give_exactly_q(idle_node, tenant):
    assert_postgresql()
    limits(tenant, max_ves=4)
    svc.ve_create(tenant=tenant, template="busybox")  # one in use: 3 remain
    results = in_parallel(lambda i: svc.ve_create(tenant=tenant, template="busybox", hostname=f"race{i}"), 8)
    made = [r for r in results if isinstance(r, Job)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(made) == 3 and len(refused) == 5, results
    assert all("quota exceeded for tenant acme: VEs would be 5 of 4" in e.message for e in refused)
    assert VE.objects.filter(tenant=tenant).count() == 4
    assert AuditEvent.objects.filter(action="ve.create").count() == 4


def test_parallel_resizes_against_remaining_memory_give_exactly_q(idle_node, tenant):
    """Resizes do not take the fleet-wide allocation lock: only the quota row serialises them."""
    assert_postgresql()
    ves = [settle(svc.ve_create(tenant=tenant, template="busybox", memory=256 * M)) for _ in range(6)]
    limits(tenant, memory=6 * 256 * M + 2 * 256 * M)  # room for two more 256M steps
    results = in_parallel(lambda i: svc.ve_set(ve=ves[i], memory=512 * M), 6)
    assert sum(isinstance(r, Job) for r in results) == 2, results
    assert sum(isinstance(r, QuotaExceeded) for r in results) == 4, results
    assert quotas.tenant_usage(tenant)["memory"] == 8 * 256 * M


def test_parallel_address_adds_against_remaining_quota_give_exactly_q(idle_node, tenant):
    from panel.services.network import pool_create

    assert_postgresql()

    pool_create(name="q4", network="198.18.4.0/24", nodes=[idle_node])
    ves = [settle(svc.ve_create(tenant=tenant, template="busybox")) for _ in range(4)]
    assert quotas.tenant_usage(tenant)["addresses"] == 4
    limits(tenant, addresses=6)
    results = in_parallel(lambda i: ve_ipadd(ve=ves[i]), 4)
    assert sum(isinstance(r, Job) for r in results) == 2, results
    assert sum(isinstance(r, QuotaExceeded) for r in results) == 2, results
    assert quotas.tenant_usage(tenant)["addresses"] == 6


# --- plans --------------------------------------------------------------------------------------

@pytest.fixture
def small_plan(db):
    return plans.plan_create(name="small", memory="512M", swap="256M", disk="2G", cpuunits=500, cpulimit=50,
                             numproc=200, addresses=2, bandwidth="100M")


def test_a_ve_from_a_plan_takes_its_values_and_custom_values_override(idle_node, tenant, small_plan):
    from panel.services.network import pool_create

    pool_create(name="p4", network="198.18.5.0/24", nodes=[idle_node])
    pool_create(name="p6", network="fd00:5::/64", nodes=[idle_node])
    ve = svc.ve_create(tenant=tenant, template="busybox", plan="small").ve
    assert (ve.memory, ve.swap, ve.disk, ve.cpuunits, ve.cpulimit, ve.numproc) == (
        512 * M, 256 * M, 2 * G, 500, 50, 200)
    assert ve.rate_in == ve.rate_out == 100_000_000 and ve.plan == small_plan
    assert len(ve.addresses) == 2 and {":" in a for a in ve.addresses} == {True, False}
    custom = svc.ve_create(tenant=tenant, template="busybox", plan=small_plan, memory=G, rate_in=0).ve
    assert custom.memory == G and custom.disk == 2 * G and custom.rate_in == 0 and custom.rate_out == 100_000_000
    detail = AuditEvent.objects.filter(action="ve.create", object_id=str(ve.veid)).get().detail
    assert detail["plan"] == "small"


def test_plans_are_for_staff_and_a_disabled_plan_is_not_offered(idle_node, tenant, people, small_plan):
    with pytest.raises(Forbidden):
        plans.plan_create(name="x", memory="1G", disk="1G", actor=people.owner)
    with pytest.raises(Forbidden):
        plans.plan_update(plan=small_plan, memory="1G", actor=people.owner)
    plans.plan_update(plan=small_plan, enabled=False, actor=people.staff)
    with pytest.raises(NotFound, match="plan 'small' does not exist"):
        svc.ve_create(tenant=tenant, template="busybox", plan="small", actor=people.operator)
    assert list(AuditEvent.objects.filter(action__startswith="plan.").values_list("action", "result")) == [
        ("plan.update", "ok"), ("plan.create", "ok")]


@pytest.mark.parametrize("field,value", [
    ("memory", -1), ("memory", 0), ("memory", "lots"), ("disk", 10**30), ("cpuunits", "1e9"),
    ("addresses", 65), ("addresses", -1), ("bandwidth", "fast"), ("numproc", True), ("colour", 1),
])
def test_plans_refuse_hostile_values(db, field, value):
    values = {"memory": "1G", "disk": "1G", field: value}
    with pytest.raises(InvalidInput):
        plans.plan_create(name="bad", **values)
    assert not AuditEvent.objects.exists()


def test_change_plan_resizes_within_quota_and_moves_the_ve_on_success(idle_node, tenant, small_plan):
    big = plans.plan_create(name="big", memory="2G", disk="8G", cpuunits=2000, numproc=1000, bandwidth=0)
    ve = settle(svc.ve_create(tenant=tenant, template="busybox", plan=small_plan))
    limits(tenant, memory=G + 512 * M)
    with pytest.raises(QuotaExceeded, match="memory would be 2G of 1536M"):
        svc.ve_change_plan(ve=ve, plan="big")
    limits(tenant, memory=4 * G)
    job = svc.ve_change_plan(ve=ve, plan="big")
    assert job.args["changes"]["memory"] == 2 * G and job.args["plan"] == big.pk
    ve = settle(job)
    assert ve.plan == big and ve.memory == 2 * G and ve.disk == 8 * G and ve.rate_in == 0
    assert AuditEvent.objects.filter(action="ve.change_plan", object_id=str(ve.veid)).count() == 1


# --- quotas ---------------------------------------------------------------------------------------

def test_create_over_any_limit_is_refused_and_writes_nothing(idle_node, tenant):
    limits(tenant, memory=G, disk=4 * G, cpuunits=3000, max_ves=10)
    settle(svc.ve_create(tenant=tenant, template="busybox", memory=512 * M, disk=2 * G))
    before = (VE.objects.count(), Job.objects.count(), AuditEvent.objects.count())
    for kwargs, fragment in [
        ({"memory": 768 * M}, r"memory would be 1280M of 1G \(in use 512M\)"),
        ({"disk": 3 * G}, "disk would be 5G of 4G"),
        ({"cpuunits": 2001}, "CPU units would be 3001 of 3000"),
    ]:
        with pytest.raises(QuotaExceeded, match=fragment) as e:
            svc.ve_create(tenant=tenant, template="busybox", **kwargs)
        assert e.value.code == "quota-exceeded" and e.value.status == 409
    limits(tenant, max_ves=0)
    with pytest.raises(QuotaExceeded, match="VEs would be 2 of 0"):
        svc.ve_create(tenant=tenant, template="busybox")
    assert (VE.objects.count(), Job.objects.count()) == before[:2]
    assert AuditEvent.objects.count() == before[2] + 1  # the quota.set only


def test_a_pending_resize_reserves_its_size_until_it_ends(idle_node, tenant):
    a = settle(svc.ve_create(tenant=tenant, template="busybox", memory=256 * M))
    b = settle(svc.ve_create(tenant=tenant, template="busybox", memory=256 * M))
    limits(tenant, memory=G)
    job = svc.ve_set(ve=a, memory=768 * M)  # pending: 768M + 256M reserved
    assert quotas.tenant_usage(tenant)["memory"] == G
    with pytest.raises(QuotaExceeded):
        svc.ve_set(ve=b, memory=512 * M)
    from panel.services.jobs import job_fail

    job_fail(job.id, error="x", explanation="node said no")  # the reservation goes with the job
    assert quotas.tenant_usage(tenant)["memory"] == 512 * M
    svc.ve_set(ve=b, memory=512 * M)


def test_shrinking_below_usage_and_decreases_are_always_allowed(idle_node, tenant):
    ve = settle(svc.ve_create(tenant=tenant, template="busybox", memory=G, cpuunits=2000))
    limits(tenant, memory=512 * M, cpuunits=1000)  # lowered below use: the tenant may only shrink
    settle(svc.ve_set(ve=ve, memory=768 * M))
    with pytest.raises(QuotaExceeded, match="CPU units"):
        svc.ve_set(ve=VE.objects.get(pk=ve.pk), cpuunits=2001)


def test_disk_shrink_needs_a_stopped_ve(idle_node, tenant):
    ve = settle(svc.ve_create(tenant=tenant, template="busybox", disk=4 * G), state="running")
    with pytest.raises(InvalidInput, match=rf"shrinking the disk needs the VE stopped \(VE {ve.veid} is running\)"):
        svc.ve_set(ve=ve, disk=2 * G)
    job = svc.ve_set(ve=ve, disk=8 * G)  # growing is online
    ve = settle(job)
    VE.objects.filter(pk=ve.pk).update(state="stopped")
    job = svc.ve_set(ve=VE.objects.get(pk=ve.pk), disk=2 * G)  # the node checks that the data fits
    assert job.args["changes"] == {"disk": 2 * G}


def test_the_dashboard_shows_use_against_each_limit(idle_node, tenant, people):
    limits(tenant, max_ves=5, memory=2 * G, disk=None, addresses=0)
    settle(svc.ve_create(tenant=tenant, template="busybox", memory=512 * M))
    rows = {r["name"]: r for r in tenant_quota_for(people.viewer, tenant.pk)}
    assert set(rows) == {"max_ves", "memory", "disk", "cpuunits", "addresses", "backups"}
    assert rows["max_ves"] == dict(rows["max_ves"], used=1, limit=5, available=4, percent=20)
    assert (rows["memory"]["used_text"], rows["memory"]["limit_text"], rows["memory"]["percent"]) == (
        "512M", "2G", 25)
    assert rows["disk"]["limit"] is None and rows["disk"]["limit_text"] == "unlimited"
    assert rows["addresses"]["limit"] == 0 and rows["addresses"]["available"] == 0
    with pytest.raises(NotFound):
        tenant_quota_for(people.outsider, tenant.pk)


# --- roles --------------------------------------------------------------------------------------

def test_a_viewer_cannot_create_resize_or_request(idle_node, tenant, people):
    ve = settle(svc.ve_create(tenant=tenant, template="busybox"))
    before = (VE.objects.count(), Job.objects.count(), QuotaRequest.objects.count())
    for call in (lambda: svc.ve_create(tenant=tenant, template="busybox", actor=people.viewer),
                 lambda: svc.ve_set(ve=ve, memory=512 * M, actor=people.viewer),
                 lambda: svc.ve_change_plan(ve=ve, plan="small", actor=people.viewer),
                 lambda: svc.ve_start(ve=ve, actor=people.viewer),
                 lambda: ve_ipadd(ve=ve, actor=people.viewer),
                 lambda: quotas.quota_request_create(tenant=tenant, actor=people.viewer,
                                                     amounts={"memory": "8G"}, reason="more")):
        with pytest.raises(Forbidden, match="your role in acme is viewer; this needs operator"):
            call()
    assert (VE.objects.count(), Job.objects.count(), QuotaRequest.objects.count()) == before
    assert AuditEvent.objects.filter(action="access.denied", actor=people.viewer).count() == 6
    svc.ve_status(ve=ve, actor=people.viewer)  # reading is fine
    svc.ve_set(ve=ve, memory=512 * M, actor=people.operator)


def test_customers_cannot_pick_the_node_or_veid(idle_node, tenant, people):
    with pytest.raises(Forbidden, match="choosing the node or the VEID is for staff"):
        svc.ve_create(tenant=tenant, template="busybox", node=idle_node, actor=people.owner)
    with pytest.raises(Forbidden):
        svc.ve_create(tenant=tenant, template="busybox", veid=9999, actor=people.owner)
    svc.ve_create(tenant=tenant, template="busybox", veid=9999, actor=people.staff)


def test_every_object_of_another_tenant_is_a_404(idle_node, tenant, other_tenant, people):
    ve = settle(svc.ve_create(tenant=tenant, template="busybox"))
    job = Job.objects.filter(ve=ve).get()
    limits(tenant, memory=G)
    req = quotas.quota_request_create(tenant=tenant, actor=people.owner, amounts={"memory": "2G"}, reason="db")
    from panel.services.suspensions import ve_suspend

    susp = ve_suspend(ve=ve, by="admin", reason="test", actor=people.staff)
    objects = [ve, tenant, job, req, susp]
    assert_hidden_from(people.outsider, objects)
    from django.contrib.auth.models import AnonymousUser

    assert_hidden_from(AnonymousUser(), objects)
    # ... and the services refuse the outsider the same way, before any check that would tell
    for call in (lambda: svc.ve_start(ve=ve, actor=people.outsider),
                 lambda: svc.ve_set(ve=ve, memory=G, actor=people.outsider),
                 lambda: ve_ipadd(ve=ve, actor=people.outsider),
                 lambda: svc.ve_create(tenant=tenant, template="busybox", actor=people.outsider),
                 lambda: quotas.quota_request_create(tenant=tenant, actor=people.outsider,
                                                     amounts={"memory": "4G"}, reason="x"),
                 lambda: quota_request_history(people.outsider, tenant.pk)):
        with pytest.raises(NotFound):
            call()
    # Members of the tenant do see them.
    for user in (people.owner, people.viewer, people.staff):
        assert access.ve_get(user, ve.pk) == ve and access.quota_request_get(user, req.pk) == req
    denied = AuditEvent.objects.filter(action="access.denied", actor=people.outsider)
    assert denied.exists() and not denied.exclude(tenant=None).exists(), "denials must not name the victim"


# --- quota requests ------------------------------------------------------------------------------

@pytest.fixture
def request_for_8g(tenant, people):
    limits(tenant, memory=4 * G, max_ves=2)
    return quotas.quota_request_create(tenant=tenant, actor=people.operator,
                                       amounts={"memory": "8G", "max_ves": 3}, reason="a new database")


def test_staff_approve_and_the_tenant_hears_of_it(tenant, people, request_for_8g):
    req = request_for_8g
    assert req.state == "pending" and req.amounts == {"memory": 8 * G, "max_ves": 3}
    assert req.baseline == {"memory": 4 * G, "max_ves": 2}
    assert list(quota_request_queue(people.staff)) == [req]
    with pytest.raises(Forbidden):
        quota_request_queue(people.owner)
    mail.outbox.clear()
    done = quotas.quota_request_approve(request=req, actor=people.staff, reason="ok", version=req.version)
    assert done.state == "approved" and done.decided_by == people.staff and done.granted == req.amounts
    quota = TenantQuota.objects.get(tenant=tenant)
    assert (quota.memory, quota.max_ves) == (8 * G, 3)
    history = list(quota_request_history(people.viewer, tenant.pk))
    assert history == [done] and history[0].decision_reason == "ok"
    assert len(mail.outbox) == 1
    msg = mail.outbox[0]
    assert sorted(msg.to) == ["olivia@example.test", "oscar@example.test"]
    assert "approved" in msg.subject and "memory: asked 8G, granted 8G" in msg.body
    event = DomainEvent.objects.get(kind="quota_request.decided")
    assert event.tenant == tenant and event.payload["state"] == "approved"
    assert event.payload["granted"]["memory"] == 8 * G
    assert AuditEvent.objects.filter(action="quota_request.approve", result="ok").count() == 1


def test_approval_with_other_amounts(tenant, people, request_for_8g):
    quotas.quota_request_approve(request=request_for_8g, actor=people.staff, amounts={"memory": "6G"})
    quota = TenantQuota.objects.get(tenant=tenant)
    assert (quota.memory, quota.max_ves) == (6 * G, 2)


def test_the_mail_states_exactly_what_was_granted(tenant, people, request_for_8g):
    """Other amounts for only some of the quotas asked (and one not asked): the mail says
    what was granted, and that the rest was not, never the amount asked."""
    mail.outbox.clear()
    quotas.quota_request_approve(request=request_for_8g, actor=people.staff, amounts={"memory": "6G", "disk": "100G"},
                                 reason="half now")
    quota = TenantQuota.objects.get(tenant=tenant)
    assert (quota.memory, quota.max_ves, quota.disk) == (6 * G, 2, 100 * G)
    body = mail.outbox[0].body
    assert "  memory: asked 8G, granted 6G\n" in body
    assert "  VEs: asked 3, not granted (the limit stays 2)\n" in body
    assert "  disk: not asked, granted 100G\n" in body
    assert "granted 3" not in body and "granted 8G" not in body
    # Unlimited granted reads as such.
    limits(tenant, max_ves=2)
    req = quotas.quota_request_create(tenant=tenant, actor=people.operator, amounts={"max_ves": 5}, reason="more")
    mail.outbox.clear()
    quotas.quota_request_approve(request=req, actor=people.staff, amounts={"max_ves": None})
    assert "  VEs: asked 5, granted unlimited\n" in mail.outbox[0].body


HOSTILE_GRANTS = [
    {"memory": -1}, {"memory": 0}, {"memory": "0"}, {"memory": "-8G"}, {"memory": "8.5G"}, {"memory": "lots"},
    {"memory": 10**30}, {"memory": "99999999999999999999T"}, {"max_ves": True}, {"max_ves": 3.5},
    {"max_ves": "3; drop table"}, {"max_ves": [3]}, {"uid_base": 1}, {}, "8G", {"memory": "8G\nmax_ves=99"},
]


@pytest.mark.parametrize("amounts", HOSTILE_GRANTS)
def test_hostile_grants_are_refused_and_change_nothing(tenant, people, request_for_8g, amounts):
    req = request_for_8g
    before = (AuditEvent.objects.count(), DomainEvent.objects.count())
    mail.outbox.clear()
    with pytest.raises(InvalidInput) as e:
        quotas.quota_request_approve(request=req, actor=people.staff, amounts=amounts, version=req.version)
    assert e.value.message and (e.value.field in quotas.FIELDS or e.value.field == "amounts"), e.value.field
    req.refresh_from_db()
    quota = TenantQuota.objects.get(tenant=tenant)
    assert req.state == "pending" and not req.granted
    assert (quota.memory, quota.max_ves) == (4 * G, 2)
    assert (AuditEvent.objects.count(), DomainEvent.objects.count()) == before and not mail.outbox


def test_the_requester_can_never_decide_their_own_request(tenant, people):
    limits(tenant, memory=G)
    own = quotas.quota_request_create(tenant=tenant, actor=people.staff, amounts={"memory": "2G"}, reason="me")
    for call in (lambda: quotas.quota_request_approve(request=own, actor=people.staff),
                 lambda: quotas.quota_request_deny(request=own, actor=people.staff, reason="no")):
        with pytest.raises(Forbidden, match="cannot decide your own"):
            call()
    with pytest.raises(Forbidden, match="staff"):
        quotas.quota_request_approve(request=own, actor=people.owner)  # customers never decide
    own.refresh_from_db()
    assert own.state == "pending" and TenantQuota.objects.get(tenant=tenant).memory == G
    refusals = AuditEvent.objects.filter(action="access.denied", actor=people.staff, result="denied")
    assert [e.detail["why"] for e in refusals] == ["own-request", "own-request"]
    quotas.quota_request_approve(request=own, actor=people.staff2)
    assert TenantQuota.objects.get(tenant=tenant).memory == 2 * G


def test_approving_twice_has_one_effect(tenant, people, request_for_8g):
    quotas.quota_request_approve(request=request_for_8g, actor=people.staff)
    with pytest.raises(Conflict, match="already approved by sam") as e:
        quotas.quota_request_approve(request=request_for_8g, actor=people.staff2, amounts={"memory": "16G"})
    assert e.value.code == "already-decided"
    with pytest.raises(Conflict, match="already approved"):
        quotas.quota_request_deny(request=request_for_8g, actor=people.staff2, reason="late")
    assert TenantQuota.objects.get(tenant=tenant).memory == 8 * G
    assert AuditEvent.objects.filter(action__startswith="quota_request.").exclude(
        action="quota_request.create").count() == 1
    assert DomainEvent.objects.count() == 1


def test_parallel_approvals_have_one_effect(tenant, people, request_for_8g):
    admins = [people.staff, people.staff2] * 3
    results = in_parallel(lambda i: quotas.quota_request_approve(
        request=request_for_8g, actor=admins[i], amounts={"memory": f"{8 + i}G"}), 6)
    won = [r for r in results if isinstance(r, QuotaRequest)]
    assert len(won) == 1 and sum(isinstance(r, Conflict) for r in results) == 5, results
    assert TenantQuota.objects.get(tenant=tenant).memory == won[0].granted["memory"]
    assert TenantQuota.objects.get(tenant=tenant).version == 3  # set once, approved once
    assert AuditEvent.objects.filter(action="quota_request.approve").count() == 1
    assert DomainEvent.objects.count() == 1


def test_stale_requests_change_nothing(tenant, people, request_for_8g):
    req = request_for_8g
    # a decision made on an old page: the request changed since (here: superseded)
    newer = quotas.quota_request_create(tenant=tenant, actor=people.owner, amounts={"memory": "6G"}, reason="less")
    req.refresh_from_db()
    assert req.state == "superseded" and req.version == 2
    with pytest.raises(Conflict, match="already superseded"):
        quotas.quota_request_approve(request=req, actor=people.staff, version=1)
    with pytest.raises(Conflict, match="changed since you loaded it") as e:
        quotas.quota_request_approve(request=newer, actor=people.staff, version=newer.version + 1)
    assert e.value.code == "stale"
    # the tenant's limits changed since the request was made: as-asked approval is refused
    limits(tenant, memory=5 * G)
    with pytest.raises(Conflict, match=r"limits changed since this request was made \(memory now 5G\)"):
        quotas.quota_request_approve(request=newer, actor=people.staff)
    assert TenantQuota.objects.get(tenant=tenant).memory == 5 * G
    quotas.quota_request_approve(request=newer, actor=people.staff, amounts={"memory": "6G"})
    assert TenantQuota.objects.get(tenant=tenant).memory == 6 * G


def test_deny_needs_a_reason_and_the_tenant_sees_it(tenant, people, request_for_8g):
    with pytest.raises(InvalidInput, match="give a reason"):
        quotas.quota_request_deny(request=request_for_8g, actor=people.staff, reason="  ")
    mail.outbox.clear()
    denied = quotas.quota_request_deny(request=request_for_8g, actor=people.staff, reason="capacity")
    assert denied.state == "denied" and TenantQuota.objects.get(tenant=tenant).memory == 4 * G
    assert "denied" in mail.outbox[0].subject and "capacity" in mail.outbox[0].body
    assert DomainEvent.objects.get().payload["state"] == "denied"
    seen = access.quota_request_get(people.viewer, denied.pk)
    assert seen.decision_reason == "capacity" and seen.decided_by_label == "sam"


HOSTILE_AMOUNTS = [
    {"memory": -1}, {"memory": 0}, {"memory": "-8G"}, {"memory": "8.5G"}, {"memory": "lots"},
    {"memory": "1e12"}, {"memory": 10**30}, {"memory": "99999999999999999999T"}, {"max_ves": True},
    {"max_ves": 3.0}, {"max_ves": "3; drop table"}, {"max_ves": [3]}, {"max_ves": None}, {"max_ves": "٣"},
    {"uid_base": 1}, {}, "8G", None, {"memory": "8G\nmax_ves=99"},
]


@pytest.mark.parametrize("amounts", HOSTILE_AMOUNTS)
def test_hostile_amounts_are_refused_and_change_nothing(tenant, people, amounts):
    limits(tenant, memory=4 * G, max_ves=2)
    before = AuditEvent.objects.count()
    with pytest.raises(InvalidInput):
        quotas.quota_request_create(tenant=tenant, actor=people.owner, amounts=amounts, reason="why")
    assert not QuotaRequest.objects.exists() and AuditEvent.objects.count() == before


@pytest.mark.parametrize("amounts,fragment", [
    ({"memory": "4G"}, "ask for more than the current 4G"),
    ({"memory": "2G"}, "ask for more than the current 4G"),
    ({"disk": "1T"}, "already unlimited"),
])
def test_a_request_must_ask_for_more(tenant, people, amounts, fragment):
    limits(tenant, memory=4 * G)
    with pytest.raises(InvalidInput, match=fragment):
        quotas.quota_request_create(tenant=tenant, actor=people.owner, amounts=amounts, reason="why")


@pytest.mark.parametrize("reason", ["", "x" * 2001, "a\x00b", "a\rFake: entry", "a\x1b[31m", None, 42])
def test_hostile_reasons_are_refused(tenant, people, reason):
    limits(tenant, memory=G)
    with pytest.raises(InvalidInput):
        quotas.quota_request_create(tenant=tenant, actor=people.owner, amounts={"memory": "2G"}, reason=reason)


@pytest.mark.parametrize("value", [-1, "-1", "lots", 10**30, True, 1.5])
def test_quota_set_refuses_hostile_limits(tenant, value):
    with pytest.raises(InvalidInput):
        limits(tenant, memory=value)
    assert not AuditEvent.objects.exists()


def test_quota_command_shows_and_sets_limits(tenant, capsys):
    call_command("quota", "set", "acme", "--memory", "4G", "--max-ves", "3", "--disk", "unlimited")
    call_command("quota", "show", "acme")
    out = capsys.readouterr().out
    assert "memory" in out and "0 / 4G" in out and "VEs" in out and "0 / 3" in out
    quota = TenantQuota.objects.get(tenant=tenant)
    assert (quota.memory, quota.max_ves, quota.disk) == (4 * G, 3, None)

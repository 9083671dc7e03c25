"""Staff management of the catalogue through Django's test client: plans (create, edit,
delete when unused), IP pools (create, range and nodes, delete when empty) and OS templates
(build, remove, offer); hostile input that changes nothing; staff only; CSRF; service
errors in Japanese; and fixed query counts of the staff lists whatever their length.

Like tests/test_web.py: jobs go to a node row no agent consumes (``idle_node``) and every
test runs in a transaction, so nothing reaches a broker.
"""
import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from panel.models import VE, AuditEvent, IPAddress, IPPool, Job, Membership, Node, OSTemplate, Plan, Tenant
from panel.services import network, plans, quotas
from panel.services import ves as svc
from tests.tenancy import idle_node, make_user, people  # noqa: F401

pytestmark = pytest.mark.django_db

G = 1 << 30
M = 1 << 20


def signed_in(client, user):
    client.force_login(user)
    return client


def row(html: str, element_id: str) -> str:
    m = re.search(rf'<(tr|article) id="{re.escape(element_id)}".*?</\1>', html, re.S)
    assert m, f"no element {element_id}"
    return m.group(0)


def snapshot():
    """Everything a refused staff action must leave as it was."""
    return {
        "plans": list(Plan.objects.order_by("name").values()),
        "pools": list(IPPool.objects.order_by("name").values()),
        "bindings": sorted(IPPool.nodes.through.objects.values_list("ippool_id", "node_id")),
        "templates": list(OSTemplate.objects.order_by("name").values()),
        "jobs": Job.objects.count(),
        "audit": list(AuditEvent.objects.exclude(result="denied").exclude(action__startswith="auth.")
                      .values_list("action", flat=True)),
    }


def field_error(html: str, field: str) -> str:
    m = re.search(rf'<small id="id_{field}_error" class="error" role="alert">(.*?)</small>', html, re.S)
    assert m, f"no error next to {field}"
    return m.group(1)


PLAN = {"name": "small", "description": "Starter", "memory": "512M", "swap": "", "disk": "10G", "cpuunits": "",
        "cpulimit": "100", "numproc": "", "addresses": "1", "bandwidth": "100M", "enabled": "on"}


# --- plans -------------------------------------------------------------------------------------

def test_staff_create_edit_and_delete_a_plan(client, idle_node, people):
    signed_in(client, people.staff)
    html = client.get(reverse("panel:staff-plan-create")).content.decode()
    for field in ("name", "memory", "disk", "bandwidth", "enabled"):
        assert f'<label for="id_{field}">' in html, field
    r = client.post(reverse("panel:staff-plan-create"), PLAN)
    assert r.status_code == 302 and r.url == reverse("panel:staff-plans") + "#plan-small"
    plan = Plan.objects.get(name="small")
    assert (plan.memory, plan.disk, plan.swap, plan.cpuunits, plan.cpulimit, plan.bandwidth, plan.enabled) == \
        (512 * M, 10 * G, 0, 1000, 100, 100 * 10**6, True)
    event = AuditEvent.objects.get(action="plan.create")
    assert event.actor == people.staff and event.source == "web"
    listing = row(client.get(reverse("panel:staff-plans")).content.decode(), "plan-small")
    assert reverse("panel:staff-plan-edit", kwargs={"name": "small"}) in listing
    assert reverse("panel:staff-plan-delete", kwargs={"name": "small"}) in listing

    edit = reverse("panel:staff-plan-edit", kwargs={"name": "small"})
    html = client.get(edit).content.decode()
    assert 'value="512M"' in html and 'value="100M"' in html and 'id="id_name"' not in html
    r = client.post(edit, {**PLAN, "memory": "1G", "description": "Bigger", "enabled": ""})
    assert r.status_code == 302
    plan.refresh_from_db()
    assert plan.memory == G and plan.description == "Bigger" and not plan.enabled and plan.disk == 10 * G
    event = AuditEvent.objects.get(action="plan.update")
    assert event.detail["previous"]["memory"] == 512 * M and event.source == "web"

    r = client.post(reverse("panel:staff-plan-delete", kwargs={"name": "small"}), follow=True)
    assert "Plan small was deleted." in r.content.decode()
    assert not Plan.objects.exists() and AuditEvent.objects.filter(action="plan.delete", actor=people.staff).exists()


def test_a_plan_in_use_is_not_deleted(client, idle_node, people, tenant):
    plan = plans.plan_create(name="used", memory="256M", disk="2G")
    svc.ve_create(tenant=tenant, template="busybox", hostname="web1", plan="used")
    signed_in(client, people.staff)
    listing = row(client.get(reverse("panel:staff-plans")).content.decode(), "plan-used")
    assert reverse("panel:staff-plan-delete", kwargs={"name": "used"}) not in listing, "not offered"
    before = snapshot()
    r = client.post(reverse("panel:staff-plan-delete", kwargs={"name": "used"}), follow=True)
    assert "disable it instead" in r.content.decode()
    assert snapshot() == before and Plan.objects.filter(pk=plan.pk).exists()


HOSTILE_PLAN = [
    ("memory", "-1"), ("memory", "99999999999999999999"), ("memory", "1G; rm -rf /"), ("memory", "0"),
    ("disk", "../../etc"), ("disk", "1P"), ("swap", "１G"), ("cpuunits", "-5"), ("cpuunits", "10000000000"),
    ("cpulimit", "1e3"), ("numproc", "$(reboot)"), ("addresses", "-1"), ("addresses", "65"),
    ("bandwidth", "1T"), ("bandwidth", "-100M"), ("name", "Small Plan"), ("name", "../x"), ("name", "a\nb"),
    ("name", "ｐｌａｎ"), ("name", "x" * 64), ("description", "line\nbreak"), ("description", "\x00"),
]


@pytest.mark.parametrize("field,value", HOSTILE_PLAN)
def test_the_plan_form_refuses_hostile_values_and_changes_nothing(client, idle_node, people, field, value):
    signed_in(client, people.staff)
    before = snapshot()
    r = client.post(reverse("panel:staff-plan-create"), {**PLAN, field: value})
    assert r.status_code == 400, (field, value)
    assert field_error(r.content.decode(), field)
    assert snapshot() == before


def test_a_duplicate_plan_name_is_refused_next_to_the_name(client, idle_node, people):
    plans.plan_create(name="small", memory="1G", disk="2G")
    signed_in(client, people.staff)
    before = snapshot()
    r = client.post(reverse("panel:staff-plan-create"), PLAN)
    assert r.status_code == 400 and "already exists" in field_error(r.content.decode(), "name")
    assert snapshot() == before


def test_the_plan_edit_form_refuses_hostile_values(client, idle_node, people):
    plans.plan_create(name="small", memory="1G", disk="2G")
    signed_in(client, people.staff)
    before = snapshot()
    edit = reverse("panel:staff-plan-edit", kwargs={"name": "small"})
    for field, value in (("memory", "-1G"), ("disk", "9" * 30), ("numproc", "0"), ("bandwidth", "fast")):
        r = client.post(edit, {**PLAN, field: value})
        assert r.status_code == 400 and field_error(r.content.decode(), field), (field, value)
    assert snapshot() == before
    assert client.get(reverse("panel:staff-plan-edit", kwargs={"name": "nope"})).status_code == 404


# --- IP pools ----------------------------------------------------------------------------------

POOL = {"name": "edge4", "network": "198.18.64.0/24", "range_start": "198.18.64.10", "range_end": "198.18.64.200"}


def test_staff_create_a_pool_bound_to_a_node(client, idle_node, people):
    signed_in(client, people.staff)
    html = client.get(reverse("panel:staff-pool-create")).content.decode()
    for field in ("name", "network", "range_start", "range_end", "nodes"):
        assert f'<label for="id_{field}">' in html, field
    r = client.post(reverse("panel:staff-pool-create"), {**POOL, "nodes": [idle_node.name]})
    assert r.status_code == 302 and r.url.endswith("#pool-edge4")
    pool = IPPool.objects.get(name="edge4")
    assert (pool.network, pool.range_start, pool.range_end) == ("198.18.64.0/24", "198.18.64.10", "198.18.64.200")
    assert list(pool.nodes.all()) == [idle_node]
    config = Job.objects.get(kind="node_config", node=idle_node)
    assert config.args == {"pools": ["198.18.64.0/24"]}, "the node gets the pool's unreachable route"
    assert AuditEvent.objects.filter(action="pool.create", actor=people.staff, source="web").exists()
    r = client.post(reverse("panel:staff-pool-create"), {"name": "edge6", "network": "fd00:64::/64",
                                                        "nodes": [idle_node.name]})
    assert r.status_code == 302 and IPPool.objects.get(name="edge6").range_start is None
    html = client.get(reverse("panel:staff-pools")).content.decode()
    assert "198.18.64.10" in row(html, "pool-edge4") and idle_node.name in row(html, "pool-edge6")


HOSTILE_POOL = [
    ("network", "198.18.64.0/33"), ("network", "198.18.64.1/24"), ("network", "not-a-net"),
    ("network", "198.18.64.0/24; ip route flush"), ("network", "198.18.64.0/32"), ("network", ""),
    ("network", "198.18.0.0/16"),  # overlaps the existing pool
    ("range_start", "198.18.65.1"), ("range_end", "10.0.0.1"), ("range_start", "fd00::1"),
    ("range_start", "198.18.64.0"), ("range_end", "198.18.64.255"), ("range_start", "198.18.64.300"),
    ("range_end", "198.18.64.5"),  # ends before it starts
    ("name", "taken"), ("name", "Bad Name"), ("name", "../pool"), ("name", "a\nb"), ("name", "x" * 64),
    ("nodes", "no-such-node"),
]


@pytest.mark.parametrize("field,value", HOSTILE_POOL)
def test_the_pool_form_refuses_hostile_values_and_changes_nothing(client, idle_node, people, field, value):
    network.pool_create(name="taken", network="198.18.0.0/24", nodes=[idle_node])
    signed_in(client, people.staff)
    before = snapshot()
    r = client.post(reverse("panel:staff-pool-create"), {**POOL, "nodes": [idle_node.name], field: value})
    assert r.status_code == 400, (field, value)
    assert field_error(r.content.decode(), field)
    assert snapshot() == before


def test_staff_change_a_pools_range_and_nodes_within_its_allocations(client, idle_node, people, tenant):
    other = Node.objects.create(name="hakoquota-other", queue="node.hakoquota-other", state="online",
                                last_heartbeat=timezone.now())
    pool = network.pool_create(name="edge4", network="198.18.64.0/24", nodes=[idle_node])
    ve = VE.objects.get(pk=svc.ve_create(tenant=tenant, template="busybox", hostname="web1").ve_id)
    assert ve.addresses == ["198.18.64.1"]
    signed_in(client, people.staff)
    edit = reverse("panel:staff-pool-edit", kwargs={"name": "edge4"})
    assert 'id="id_network"' not in client.get(edit).content.decode(), "the network cannot change"
    before = snapshot()
    r = client.post(edit, {"range_start": "198.18.64.2", "range_end": "", "nodes": [idle_node.name]})
    assert r.status_code == 400 and "198.18.64.1" in field_error(r.content.decode(), "range_start")
    r = client.post(edit, {"range_start": "", "range_end": "", "nodes": [other.name]})
    assert r.status_code == 400 and idle_node.name in field_error(r.content.decode(), "nodes")
    for field, value in (("range_start", "198.18.63.255"), ("range_end", "fd00::1"), ("range_end", "x; reboot"),
                         ("range_start", "198.18.64.9999"), ("range_end", "198.18.64.255"),
                         ("nodes", "../" + idle_node.name)):
        data = {"range_start": "", "range_end": "", "nodes": [idle_node.name], field: value}
        r = client.post(edit, data)
        assert r.status_code == 400 and field_error(r.content.decode(), field), (field, value)
    assert snapshot() == before
    r = client.post(edit, {"range_start": "", "range_end": "198.18.64.100", "nodes": [idle_node.name, other.name]})
    assert r.status_code == 302
    pool.refresh_from_db()
    assert pool.range_end == "198.18.64.100" and set(pool.nodes.all()) == {idle_node, other}
    assert Job.objects.get(kind="node_config", node=other).args == {"pools": ["198.18.64.0/24"]}
    event = AuditEvent.objects.get(action="pool.update")
    assert event.detail["previous"]["nodes"] == [idle_node.name] and event.source == "web"


def test_a_pool_is_deleted_only_when_no_address_is_allocated(client, idle_node, people, tenant):
    network.pool_create(name="edge4", network="198.18.64.0/24", nodes=[idle_node])
    network.pool_create(name="spare", network="198.18.65.0/24", nodes=[idle_node])
    svc.ve_create(tenant=tenant, template="busybox", hostname="web1")
    assert IPAddress.objects.get().pool.name == "edge4"
    signed_in(client, people.staff)
    html = client.get(reverse("panel:staff-pools")).content.decode()
    assert reverse("panel:staff-pool-delete", kwargs={"name": "edge4"}) not in row(html, "pool-edge4")
    before = snapshot()
    r = client.post(reverse("panel:staff-pool-delete", kwargs={"name": "edge4"}), follow=True)
    assert "still has allocated addresses" in r.content.decode() and snapshot() == before
    jobs = Job.objects.count()
    r = client.post(reverse("panel:staff-pool-delete", kwargs={"name": "spare"}))
    assert r.status_code == 302 and not IPPool.objects.filter(name="spare").exists()
    config = Job.objects.filter(kind="node_config").latest("created_at")
    assert Job.objects.count() == jobs + 1 and config.args == {"pools": ["198.18.64.0/24"]}
    assert AuditEvent.objects.filter(action="pool.delete", actor=people.staff).exists()


# --- OS templates ------------------------------------------------------------------------------

def test_staff_build_and_remove_a_template_on_a_node(client, idle_node, people):
    signed_in(client, people.staff)
    html = client.get(reverse("panel:staff-templates")).content.decode()
    assert '<label for="id_build-name">' in html and '<label for="id_remove-node">' in html
    r = client.post(reverse("panel:staff-template-build"), {"build-name": "debian-12", "build-node": idle_node.name})
    job = Job.objects.get(kind="template_build")
    assert r.status_code == 302 and r.url == reverse("panel:job-detail", kwargs={"job_id": job.pk})
    assert job.node == idle_node and job.args == {"template": "debian-12"} and job.actor == people.staff
    assert AuditEvent.objects.filter(action="template.build", source="web").exists()
    r = client.post(reverse("panel:staff-template-remove"), {"remove-name": "busybox", "remove-node": idle_node.name})
    assert r.status_code == 302 and Job.objects.get(kind="template_remove").args == {"template": "busybox"}


@pytest.mark.parametrize("data,field", [
    ({"build-name": "../../etc/passwd"}, "build-name"), ({"build-name": "busybox;reboot"}, "build-name"),
    ({"build-name": "centos-7"}, "build-name"), ({"build-node": "no-such-node"}, "build-node"),
    ({"build-node": "lost"}, "build-node"),
])
def test_a_hostile_or_impossible_build_changes_nothing(client, idle_node, people, data, field):
    Node.objects.create(name="lost", queue="node.lost", state="lost")
    signed_in(client, people.staff)
    before = snapshot()
    r = client.post(reverse("panel:staff-template-build"), {"build-name": "busybox", "build-node": idle_node.name,
                                                            **data})
    assert r.status_code == 400 and field_error(r.content.decode(), field)
    assert snapshot() == before


def test_staff_withdraw_and_offer_a_template(client, idle_node, people, tenant):
    signed_in(client, people.staff)
    r = client.post(reverse("panel:staff-template-disable", kwargs={"name": "busybox"}))
    assert r.status_code == 302 and not OSTemplate.objects.get(name="busybox").enabled
    assert AuditEvent.objects.filter(action="template.disable", actor=people.staff, source="web").exists()
    assert "no" in row(client.get(reverse("panel:staff-templates")).content.decode(), "template-busybox")
    signed_in(client, people.owner)
    assert 'value="busybox"' not in client.get(reverse("panel:ve-create")).content.decode()
    signed_in(client, people.staff)
    client.post(reverse("panel:staff-template-enable", kwargs={"name": "busybox"}))
    assert OSTemplate.objects.get(name="busybox").enabled
    before = snapshot()
    for name in ("no-such-template", "..", "x" * 70):
        r = client.post(reverse("panel:staff-template-enable", kwargs={"name": name}), follow=True)
        assert r.status_code in (200, 404), name
    assert snapshot() == before


# --- staff only, CSRF --------------------------------------------------------------------------

def _actions(idle_node):
    return [
        ("panel:staff-plan-create", {}, PLAN), ("panel:staff-plan-edit", {"name": "small"}, PLAN),
        ("panel:staff-plan-delete", {"name": "small"}, {}),
        ("panel:staff-pool-create", {}, {**POOL, "nodes": [idle_node.name]}),
        ("panel:staff-pool-edit", {"name": "taken"}, {"range_start": "", "range_end": "", "nodes": []}),
        ("panel:staff-pool-delete", {"name": "taken"}, {}),
        ("panel:staff-template-build", {}, {"build-name": "busybox", "build-node": idle_node.name}),
        ("panel:staff-template-remove", {}, {"remove-name": "busybox", "remove-node": idle_node.name}),
        ("panel:staff-template-disable", {"name": "busybox"}, {}),
        ("panel:staff-template-enable", {"name": "busybox"}, {}),
    ]


def test_members_cannot_manage_the_catalogue(client, idle_node, people):
    plans.plan_create(name="small", memory="1G", disk="2G")
    network.pool_create(name="taken", network="198.18.0.0/24", nodes=[idle_node])
    before = snapshot()
    for user in (people.owner, people.operator, people.viewer, people.outsider):
        signed_in(client, user)
        for name, kwargs, data in _actions(idle_node):
            url = reverse(name, kwargs=kwargs)
            assert client.post(url, data).status_code == 403, (user, name)
            if not name.endswith(("delete", "build", "remove", "enable", "disable")):
                assert client.get(url).status_code == 403, (user, name)
    client.logout()
    for name, kwargs, data in _actions(idle_node):
        r = client.post(reverse(name, kwargs=kwargs), data)
        assert r.status_code == 302 and r.url.startswith(reverse("login")), name
    assert snapshot() == before


def test_staff_actions_need_the_csrf_token(idle_node, people):
    plans.plan_create(name="small", memory="1G", disk="2G")
    network.pool_create(name="taken", network="198.18.0.0/24", nodes=[idle_node])
    client = signed_in(Client(enforce_csrf_checks=True), people.staff)
    before = snapshot()
    for name, kwargs, data in _actions(idle_node):
        assert client.post(reverse(name, kwargs=kwargs), data).status_code == 403, name
    assert snapshot() == before


# --- service errors in Japanese ----------------------------------------------------------------

def _japanese(client):
    assert client.post(reverse("set_language"), {"language": "ja", "next": "/"}).status_code == 302


def test_a_japanese_session_reads_service_errors_in_japanese(client, idle_node, people, tenant):
    plans.plan_create(name="small", memory="1G", disk="2G")
    quotas.quota_set(tenant=tenant, actor=None, max_ves=0)
    signed_in(client, people.owner)
    _japanese(client)
    r = client.post(reverse("panel:ve-create"), {"template": "busybox", "hostname": "bad_host!"})
    assert r.status_code == 400
    error = field_error(r.content.decode(), "hostname")
    assert "ホスト名" in error and "not valid" not in error, error
    r = client.post(reverse("panel:ve-create"), {"template": "busybox", "hostname": "web1"})
    html = r.content.decode()
    assert r.status_code in (400, 409) and "クォータを超えます" in html, html
    r = client.post(reverse("panel:staff-plan-create"), PLAN)  # not staff: refused, and says why in Japanese
    assert r.status_code == 403 and "プランの管理はスタッフ管理者専用です" in r.content.decode()
    signed_in(client, people.staff)
    _japanese(client)
    pages = {"panel:staff-plan-create": ["新しいプラン", "VE あたりのアドレス数", "プランを作成"],
             "panel:staff-pool-create": ["新しい IP プール", "ネットワーク（CIDR）", "このプールを提供するノード"],
             "panel:staff-templates": ["ノードでテンプレートを構築", "提供を停止"],
             "panel:staff-plans": ["新しいプラン", "編集"], "panel:staff-pools": ["新しい IP プール"]}
    for name, words in pages.items():
        html = client.get(reverse(name)).content.decode()
        assert all(word in html for word in words), (name, [w for w in words if w not in html])
    r = client.post(reverse("panel:staff-plan-create"), PLAN)
    assert "既に存在します" in field_error(r.content.decode(), "name")
    r = client.post(reverse("panel:staff-pool-create"), {**POOL, "network": "198.18.64.1/24"})
    error = field_error(r.content.decode(), "network")
    assert "CIDR" in error and "ではありません" in error, error
    r = client.post(reverse("panel:staff-pool-create"), {**POOL, "range_start": "198.18.99.1"})
    assert "範囲外" in field_error(r.content.decode(), "range_start")


# --- fixed query counts ------------------------------------------------------------------------

def _grow_fleet(n: int, node: Node, people) -> None:
    """``n`` tenants, each with a member, a quota, a VE with an address and a pending
    quota request; ``n`` plans and pools. Rows in bulk: the pages' cost is what is measured."""
    from panel.models import QuotaRequest, TenantQuota

    start = Tenant.objects.count()
    tenants = Tenant.objects.bulk_create([Tenant(slug=f"bulk{start + i}", name=f"Bulk {start + i}") for i in range(n)])
    TenantQuota.objects.bulk_create([TenantQuota(tenant=t, max_ves=5, memory=4 * G) for t in tenants])
    users = [make_user(f"bulkuser{start + i}") for i in range(n)]
    Membership.objects.bulk_create([Membership(user=u, tenant=t, role="owner") for u, t in zip(users, tenants)])
    tmpl = OSTemplate.objects.get(name="busybox")
    first = (VE.objects.order_by("-veid").values_list("veid", flat=True).first() or 20_000) + 1
    from django.conf import settings
    ves = VE.objects.bulk_create([
        VE(veid=first + i, tenant=t, node=node, template=tmpl, hostname=f"b{first + i}", memory=256 * M, disk=G,
           numproc=512, uid_base=settings.HAKO_ID_BASE + (first + i) * 65536) for i, t in enumerate(tenants)])
    pools = IPPool.objects.bulk_create([IPPool(name=f"bulk{start + i}", network=f"198.19.{start + i}.0/24")
                                        for i in range(n)])
    IPPool.nodes.through.objects.bulk_create([IPPool.nodes.through(ippool=p, node=node) for p in pools])
    IPAddress.objects.bulk_create([IPAddress(address=f"198.19.{start + i}.1", pool=p, ve=v)
                                   for i, (p, v) in enumerate(zip(pools, ves))])
    Plan.objects.bulk_create([Plan(name=f"bulk{start + i}", memory=G, disk=G) for i in range(n)])
    QuotaRequest.objects.bulk_create([QuotaRequest(tenant=t, requester=u, amounts={"max_ves": 9},
                                                   baseline={"max_ves": 5}, reason="more")
                                      for t, u in zip(tenants, users)])
    Job.objects.bulk_create([Job(kind="set", ve=v, tenant=v.tenant, node=node, args={"changes": {"memory": G}},
                                 expires_at=timezone.now()) for v in ves])


STAFF_LISTS = ("panel:staff-tenants", "panel:staff-nodes", "panel:staff-pools", "panel:staff-plans",
               "panel:staff-quota-requests", "panel:staff-audit", "panel:staff-templates")


def test_the_staff_lists_cost_a_fixed_number_of_queries(client, idle_node, people, django_assert_num_queries):
    _grow_fleet(2, idle_node, people)
    signed_in(client, people.staff)
    counts = {}
    for name in STAFF_LISTS:
        client.get(reverse(name))
        with CaptureQueriesContext(connection) as small:
            assert client.get(reverse(name)).status_code == 200, name
        counts[name] = len(small.captured_queries)
    _grow_fleet(60, idle_node, people)
    for _ in range(30):  # audit rows beyond the first page
        quotas.quota_set(tenant=Tenant.objects.first(), actor=None, max_ves=7)
    for name, n in counts.items():
        with django_assert_num_queries(n):
            r = client.get(reverse(name))
        assert r.status_code == 200, name
    html = client.get(reverse("panel:staff-tenants")).content.decode()
    assert "1 / 5" in row(html, "tenant-bulk3") and "1G / 4G" in row(html, "tenant-bulk3"), \
        "a pending resize counts, as in quota_overview"

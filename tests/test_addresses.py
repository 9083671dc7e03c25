"""A VE's addresses from the panel side: allocation from small and huge pools, adding and
removing addresses through the services, the VE page and the customer API, hostile input
at each of them (refused, nothing changed), the VE list and page showing addresses and
traffic, and the demo pool ``make run`` sets up.

Jobs go to a node row no agent consumes (``idle_node``): nothing runs, these tests check
what is reserved, queued and shown; the node side (venet0, routes, live changes) is
tests/test_network.py.
"""
import io
import ipaddress
import time
import uuid

import pytest
from django.core.management import call_command
from django.urls import reverse

from panel.models import VE, AuditEvent, IPAddress, IPPool, Job, Membership, Tenant
from panel.services import api_tokens, quotas
from panel.services import network as net
from panel.services import ves as svc
from panel.services.errors import Conflict, InvalidInput, QuotaExceeded, Unavailable
from tests.tenancy import idle_node, in_parallel, people, settle  # noqa: F401

pytestmark = pytest.mark.django_db

# Pools of this module only (the database is this run's own; nothing here reaches a node).
POOL4, POOL6 = "198.18.61.0/24", "fd00:61::/64"


@pytest.fixture
def pools(idle_node):
    p4 = net.pool_create(name="a4", network=POOL4, nodes=[idle_node], range_start="198.18.61.10",
                         range_end="198.18.61.99")
    p6 = net.pool_create(name="a6", network=POOL6, nodes=[idle_node])
    return p4, p6


def make_ve(tenant, hostname="web1", **kw):
    return settle(svc.ve_create(tenant=tenant, template="busybox", hostname=hostname, **kw))


def state():
    """What a refused request must leave as it was."""
    return (IPAddress.objects.count(), Job.objects.count(),
            AuditEvent.objects.filter(action__startswith="ve.").count(),
            sorted(VE.objects.values_list("veid", "addresses")))


# --- allocation ----------------------------------------------------------------------------------

def test_automatic_allocation_takes_the_lowest_free_address_and_fills_gaps(tenant, pools):
    a, b, c = (make_ve(tenant, f"h{i}") for i in range(3))
    assert (a.addresses, b.addresses, c.addresses) == (
        ["198.18.61.10", "fd00:61::1"], ["198.18.61.11", "fd00:61::2"], ["198.18.61.12", "fd00:61::3"])
    settle(net.ve_ipdel(ve=b, addresses=["198.18.61.11"]))
    assert not IPAddress.objects.filter(address="198.18.61.11").exists()
    # Text order would put .100 before .11 and .9: the walk is numeric.
    job = net.ve_ipadd(ve=a)
    assert job.args["reserved"] == ["198.18.61.11", "fd00:61::4"]


def test_a_chosen_address_far_into_a_64_is_accepted(tenant, pools):
    far = str(ipaddress.ip_network(POOL6).network_address + (1 << 40) + 5)  # fd00:61::100:0:5
    ve = make_ve(tenant, addresses=[far, "198.18.61.99"])
    assert ve.addresses == [far, "198.18.61.99"]
    last = str(ipaddress.ip_network(POOL6).broadcast_address)  # IPv6 has no broadcast: usable
    assert net.ve_ipadd(ve=ve, addresses=[last]).args["reserved"] == [last]
    assert IPAddress.objects.get(address=far).pool.name == "a6"


def test_automatic_allocation_goes_past_the_first_65536_addresses(tenant, pools):
    """The old allocator scanned only the first 2**16 candidates of a pool: a /64 with
    those taken was "exhausted". Here 70,000 are taken, a few with gaps."""
    _, p6 = pools
    holder = make_ve(tenant, "holder")
    base = int(ipaddress.ip_network(POOL6).network_address)
    taken = [i for i in range(1, 70_001) if i != 66_000]  # one gap past 2**16
    t = time.monotonic()
    IPAddress.objects.filter(pool=p6).delete()
    IPAddress.objects.bulk_create([IPAddress(address=str(ipaddress.IPv6Address(base + i)), pool=p6, ve=holder)
                                   for i in taken], batch_size=5000)
    print(f"\n70,000 allocations written in {time.monotonic() - t:.2f}s")
    t = time.monotonic()
    assert net._next_free(p6) == str(ipaddress.IPv6Address(base + 66_000))
    print(f"lowest free address of the /64 with 70,000 taken: {time.monotonic() - t:.3f}s")
    ve = make_ve(tenant, "after")
    t = time.monotonic()
    job = net.ve_ipadd(ve=ve, addresses=None)
    print(f"automatic ipadd with 70,000 taken: {time.monotonic() - t:.3f}s")
    assert ve.addresses[1] == str(ipaddress.IPv6Address(base + 66_000))
    assert job.args["reserved"][1] == str(ipaddress.IPv6Address(base + 70_001))


def test_an_exhausted_pool_is_a_clear_error_and_reserves_nothing(tenant, pools, idle_node):
    p4, _ = pools
    p4.range_end = "198.18.61.11"
    p4.save()
    make_ve(tenant, "one")
    make_ve(tenant, "two")
    before = state()
    with pytest.raises(Unavailable, match="exhausted"):
        svc.ve_create(tenant=tenant, template="busybox", hostname="three")
    assert state() == before


@pytest.mark.django_db(transaction=True)
def test_parallel_automatic_adds_never_share_an_address(idle_node, tenant):
    net.pool_create(name="r4", network="198.18.62.0/24", nodes=[idle_node], range_start="198.18.62.10",
                    range_end="198.18.62.15")  # 6 addresses
    ves = [settle(svc.ve_create(tenant=tenant, template="busybox")) for _ in range(4)]  # 4 taken
    results = in_parallel(lambda i: net.ve_ipadd(ve=ves[i]), 4)
    added = [r.args["reserved"][0] for r in results if isinstance(r, Job)]
    refused = [r for r in results if isinstance(r, Unavailable)]
    assert len(added) == 2 and len(refused) == 2, results
    assert sorted(added) == ["198.18.62.14", "198.18.62.15"]
    assert all("exhausted" in e.message for e in refused)
    assert IPAddress.objects.count() == 6


# --- hostile input: the service ------------------------------------------------------------------

@pytest.fixture
def two_tenants(tenant, other_tenant, pools, people):
    from panel.models import Node

    # In maintenance: it takes no new VEs, so every VE here lands on idle_node.
    elsewhere = Node.objects.create(name="hakoaddr-other", queue="node.hakoaddr-other", state="online",
                                    maintenance=True)
    net.pool_create(name="elsewhere4", network="198.18.66.0/24", nodes=[elsewhere])  # another node's pool
    mine = make_ve(tenant, "mine")
    theirs = make_ve(other_tenant, "theirs", addresses=["198.18.61.50"])
    sibling = make_ve(tenant, "sibling", addresses=["198.18.61.51"])
    return mine, theirs, sibling


# (what, addresses, error, fragment)
HOSTILE_ADDRESSES = [
    ("malformed", ["1.2.3"], InvalidInput, "is not an IP address"),
    ("a prefix", ["198.18.61.60/24"], InvalidInput, "is not an IP address"),
    ("shell", ["198.18.61.60; reboot"], InvalidInput, "is not an IP address"),
    ("a zone", ["fd00:61::60%eth0"], InvalidInput, "is not an IP address"),
    ("not a list", "198.18.61.60", InvalidInput, "at most 64"),
    ("outside every pool", ["192.0.2.55"], InvalidInput, "is not in a pool of node"),
    ("in the network, outside the range", ["198.18.61.5"], InvalidInput, "is not in a pool of node"),
    ("another node's pool", ["198.18.66.10"], InvalidInput, "is not in a pool of node"),
    ("the network address", ["fd00:61::"], InvalidInput, "is not in a pool of node"),
    ("another tenant's", ["198.18.61.50"], Conflict, "already in use"),
    ("the tenant's other VE's", ["198.18.61.51"], Conflict, "already in use"),
    ("its own", ["198.18.61.10"], InvalidInput, "already assigned"),
    ("given twice", ["198.18.61.60", "198.18.61.60"], InvalidInput, "given twice"),
]


@pytest.mark.parametrize("what,addresses,error,fragment", HOSTILE_ADDRESSES, ids=[h[0] for h in HOSTILE_ADDRESSES])
def test_ipadd_refuses_hostile_addresses_and_changes_nothing(two_tenants, tenant, people, what, addresses, error,
                                                             fragment):
    mine, theirs, _ = two_tenants
    used = quotas.tenant_usage(tenant)["addresses"]
    before = state()
    with pytest.raises(error, match=fragment):
        net.ve_ipadd(ve=mine, addresses=addresses, actor=people.operator)
    assert state() == before, what
    assert quotas.tenant_usage(tenant)["addresses"] == used
    assert IPAddress.objects.get(address="198.18.61.50").ve == theirs


def test_ipadd_over_the_address_quota_changes_nothing(two_tenants, tenant):
    mine, _, _ = two_tenants
    quotas.quota_set(tenant=tenant, actor=None, addresses=quotas.tenant_usage(tenant)["addresses"])
    before = state()
    with pytest.raises(QuotaExceeded, match="quota exceeded"):
        net.ve_ipadd(ve=mine, addresses=["198.18.61.60"])
    assert state() == before


def test_ipdel_refuses_addresses_the_ve_does_not_have(two_tenants):
    mine, theirs, _ = two_tenants
    before = state()
    for bad in (["198.18.61.50"], ["nonsense"], ["198.18.61.60"], []):
        with pytest.raises(InvalidInput):
            net.ve_ipdel(ve=mine, addresses=bad)
    assert state() == before


# --- the VE page ---------------------------------------------------------------------------------

def page(client, ve):
    return client.get(reverse("panel:ve-detail", kwargs={"ve_id": ve.pk})).content.decode()


def url(name, ve):
    return reverse(name, kwargs={"ve_id": ve.pk})


def test_an_operator_adds_a_chosen_and_an_automatic_address_and_removes_one(client, two_tenants, people):
    mine, _, _ = two_tenants
    client.force_login(people.operator)
    html = page(client, mine)
    assert url("panel:ve-ipadd", mine) in html and 'for="id_ipadd_address"' in html
    assert html.count(url("panel:ve-ipdel", mine)) == 2, "a remove button per address"
    r = client.post(url("panel:ve-ipadd", mine), {"address": " 198.18.61.60 "})
    job = Job.objects.get(ve=mine, kind="set")
    assert r.status_code == 302 and r.url == url("panel:ve-detail", mine) + f"#job-{job.pk}"
    assert job.args["reserved"] == ["198.18.61.60"] and job.actor == people.operator
    assert job.args["changes"]["addresses"] == ["198.18.61.10", "fd00:61::1", "198.18.61.60"]
    assert AuditEvent.objects.filter(action="ve.ipadd", source="web").exists()
    settle(job)
    assert "198.18.61.60" in page(client, mine)

    r = client.post(url("panel:ve-ipadd", mine), {"address": ""})
    job = Job.objects.filter(ve=mine, kind="set").latest("created_at")
    assert r.status_code == 302 and job.args["reserved"] == ["198.18.61.11", "fd00:61::2"]
    settle(job)

    r = client.post(url("panel:ve-ipdel", mine), {"address": "198.18.61.60"})
    job = Job.objects.filter(ve=mine, kind="set").latest("created_at")
    assert r.status_code == 302 and job.args["released"] == ["198.18.61.60"]
    settle(job)
    mine.refresh_from_db()
    assert "198.18.61.60" not in mine.addresses
    assert not IPAddress.objects.filter(address="198.18.61.60").exists()


@pytest.mark.parametrize("what,addresses,error,fragment",
                         [h for h in HOSTILE_ADDRESSES if isinstance(h[1], list) and len(h[1]) == 1],
                         ids=[h[0] for h in HOSTILE_ADDRESSES if isinstance(h[1], list) and len(h[1]) == 1])
def test_the_add_form_shows_refusals_next_to_the_field_and_changes_nothing(client, two_tenants, people, what,
                                                                          addresses, error, fragment):
    mine, theirs, _ = two_tenants
    client.force_login(people.operator)
    before = state()
    r = client.post(url("panel:ve-ipadd", mine), {"address": addresses[0]})
    html = r.content.decode()
    assert r.status_code == 400, what
    assert 'id="id_ipadd_address_error"' in html and fragment in html.replace("&#x27;", "'"), what
    assert state() == before


def test_the_add_form_escapes_what_it_echoes(client, two_tenants, people):
    mine, _, _ = two_tenants
    client.force_login(people.operator)
    r = client.post(url("panel:ve-ipadd", mine), {"address": "<script>x</script>"})
    assert r.status_code == 400 and "<script>x</script>" not in r.content.decode()
    r = client.post(url("panel:ve-ipadd", mine), {"address": "1" * 65})  # over the field's length
    assert r.status_code == 400 and 'id="id_ipadd_address_error"' in r.content.decode()


def test_removing_an_address_the_ve_does_not_have_is_an_error_on_the_page(client, two_tenants, people):
    mine, theirs, _ = two_tenants
    client.force_login(people.operator)
    before = state()
    for bad in ("198.18.61.50", "nonsense", ""):
        r = client.post(url("panel:ve-ipdel", mine), {"address": bad})
        assert r.status_code == 400 and 'id="ipdel-error"' in r.content.decode(), bad
    assert state() == before


def test_a_viewer_sees_the_addresses_but_no_buttons_and_forged_posts_are_refused(client, two_tenants, people):
    mine, _, _ = two_tenants
    client.force_login(people.viewer)
    html = page(client, mine)
    assert "198.18.61.10" in html and "fd00:61::1" in html
    assert url("panel:ve-ipadd", mine) not in html and url("panel:ve-ipdel", mine) not in html
    before = state()
    for name, data in (("panel:ve-ipadd", {"address": "198.18.61.60"}),
                       ("panel:ve-ipdel", {"address": "198.18.61.10"})):
        r = client.post(url(name, mine), data)
        assert r.status_code == 403, name
        assert client.get(url(name, mine)).status_code == 405
    assert state() == before


def test_another_tenant_gets_404_on_the_address_urls(client, two_tenants, people):
    _, theirs, _ = two_tenants
    client.force_login(people.owner)
    before = state()
    for name in ("panel:ve-ipadd", "panel:ve-ipdel"):
        for ve_id in (theirs.pk, uuid.uuid4()):
            r = client.post(reverse(name, kwargs={"ve_id": ve_id}), {"address": "198.18.61.50"})
            assert r.status_code == 404, name
            assert b"theirs" not in r.content and b"198.18.61.50" not in r.content
    assert state() == before


# --- the create form -----------------------------------------------------------------------------

def test_the_create_form_takes_addresses_dns_and_bandwidth(client, pools, people):
    client.force_login(people.operator)
    html = client.get(reverse("panel:ve-create")).content.decode()
    for field in ("addresses", "nameservers", "searchdomain", "rate_in", "rate_out"):
        assert f'for="id_{field}"' in html, field
    r = client.post(reverse("panel:ve-create"), {
        "template": "busybox", "hostname": "net1", "addresses": "198.18.61.77, fd00:61::77",
        "nameservers": "198.18.61.1 fd00:61::53", "searchdomain": "Example.com corp.example",
        "rate_in": "100M", "rate_out": "20M"})
    assert r.status_code == 302, r.content.decode()[:2000]
    ve = VE.objects.get(hostname="net1")
    assert ve.addresses == ["198.18.61.77", "fd00:61::77"]
    assert ve.nameservers == ["198.18.61.1", "fd00:61::53"] and ve.searchdomain == "example.com corp.example"
    assert (ve.rate_in, ve.rate_out) == (100_000_000, 20_000_000)
    r = client.post(reverse("panel:ve-create"), {"template": "busybox", "hostname": "net2"})
    assert r.status_code == 302
    assert VE.objects.get(hostname="net2").addresses == ["198.18.61.10", "fd00:61::1"]


@pytest.mark.parametrize("field,value,fragment", [
    ("addresses", "1.2.3", "is not an IP address"),
    ("addresses", "192.0.2.9", "is not in a pool"),
    ("addresses", "198.18.61.50", "already in use"),
    ("addresses", "198.18.61.60 198.18.61.60", "given twice"),
    ("addresses", " ".join(f"198.18.61.{i}" for i in range(10, 80)), "at most 64"),
    ("nameservers", "not-an-ip", "nameserver"),
    ("nameservers", "1.1.1.1 8.8.8.8 9.9.9.9 1.0.0.1", "at most 3"),
    ("searchdomain", "bad_domain;reboot", "searchdomain"),
    ("rate_in", "fast", "not a rate"),
    ("rate_out", "-5M", "not a rate"),
    ("rate_out", "1K", "between 8K and 100G"),
])
def test_the_create_form_refuses_bad_network_values_next_to_the_field(client, two_tenants, people, field, value,
                                                                      fragment):
    client.force_login(people.operator)
    before = state()
    r = client.post(reverse("panel:ve-create"), {"template": "busybox", "hostname": "net1", field: value})
    html = r.content.decode().replace("&#x27;", "'")
    assert r.status_code == 400, (field, value)
    assert f'id="id_{field}_error"' in html and fragment in html, (field, value)
    assert state() == before and not VE.objects.filter(hostname="net1").exists()


# --- the customer API ----------------------------------------------------------------------------

class Api:
    def __init__(self, user, tenant, role=None):
        from rest_framework.test import APIClient

        self.client = APIClient()
        self.auth = {"HTTP_AUTHORIZATION": f"Bearer {api_tokens.api_token_create(user=user, tenant=tenant, role=role)[1]}"}

    def post(self, path, data=None):
        return self.client.post("/api/v1" + path, data or {}, format="json", **self.auth)


def test_the_api_adds_and_removes_addresses(two_tenants, tenant, people):
    mine, _, _ = two_tenants
    api = Api(people.operator, tenant)
    r = api.post(f"/ves/{mine.pk}/addresses/add", {"address": "198.18.61.60"})
    assert r.status_code == 202, r.content
    job = Job.objects.get(pk=r.json()["job"]["id"])
    assert job.kind == "set" and job.args["reserved"] == ["198.18.61.60"]
    assert AuditEvent.objects.filter(action="ve.ipadd", source="api").exists()
    settle(job)
    r = api.post(f"/ves/{mine.pk}/addresses/add")
    assert r.status_code == 202, r.content
    assert Job.objects.get(pk=r.json()["job"]["id"]).args["reserved"] == ["198.18.61.11", "fd00:61::2"]
    settle(Job.objects.get(pk=r.json()["job"]["id"]))
    r = api.post(f"/ves/{mine.pk}/addresses/remove", {"address": "198.18.61.60"})
    assert r.status_code == 202, r.content
    settle(Job.objects.get(pk=r.json()["job"]["id"]))
    body = api.client.get(f"/api/v1/ves/{mine.pk}", **api.auth).json()
    assert body["addresses"] == ["198.18.61.10", "fd00:61::1", "198.18.61.11", "fd00:61::2"]


@pytest.mark.parametrize("what,addresses,error,fragment",
                         [h for h in HOSTILE_ADDRESSES if isinstance(h[1], list) and len(h[1]) == 1],
                         ids=[h[0] for h in HOSTILE_ADDRESSES if isinstance(h[1], list) and len(h[1]) == 1])
def test_the_api_refuses_hostile_addresses_as_problems(two_tenants, tenant, people, what, addresses, error, fragment):
    mine, _, _ = two_tenants
    api = Api(people.operator, tenant)  # before the snapshot: making a token is audited
    before = state()
    r = api.post(f"/ves/{mine.pk}/addresses/add", {"address": addresses[0]})
    assert r.status_code == (409 if error is Conflict else 400), (what, r.content)
    assert r["Content-Type"].startswith("application/problem+json") and fragment in r.json()["detail"], r.json()
    assert state() == before


def test_the_api_refuses_bad_bodies_viewers_and_other_tenants(two_tenants, tenant, people):
    mine, theirs, _ = two_tenants
    api, viewer = Api(people.operator, tenant), Api(people.viewer, tenant)
    before = state()
    for body in ({"address": 5}, {"address": ["198.18.61.60"]}, {"address": "x" * 65}):
        assert api.post(f"/ves/{mine.pk}/addresses/add", body).status_code == 400, body
    assert api.post(f"/ves/{mine.pk}/addresses/remove", {}).status_code == 400
    assert api.post(f"/ves/{mine.pk}/addresses/remove", {"address": "198.18.61.50"}).status_code == 400
    for verb in ("add", "remove"):
        for ve_id in (theirs.pk, uuid.uuid4(), "not-a-uuid"):
            r = api.post(f"/ves/{ve_id}/addresses/{verb}", {"address": "198.18.61.50"})
            assert r.status_code == 404, (verb, ve_id)
            assert b"198.18.61.50" not in r.content
        r = viewer.post(f"/ves/{mine.pk}/addresses/{verb}", {"address": "198.18.61.10"})
        assert r.status_code == 403, verb
    assert state() == before


def test_the_schema_describes_the_address_endpoints(db):
    import json

    from rest_framework.test import APIClient

    schema = json.loads(APIClient().get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)
    for verb in ("add", "remove"):
        op = schema["paths"][f"/api/v1/ves/{{ve_id}}/addresses/{verb}"]["post"]
        assert op["operationId"] == f"ves_{verb}_address"
        assert "Idempotency-Key" in [p["name"] for p in op["parameters"]]


# --- what the pages show -------------------------------------------------------------------------

def test_the_ve_list_shows_each_ves_addresses(client, two_tenants, people):
    client.force_login(people.owner)
    html = client.get(reverse("panel:ve-list")).content.decode()
    rows = {row.split("</a>", 1)[0].rsplit(">", 1)[-1]: row for row in html.split("<tr>")[1:] if "/ves/" in row}
    mine, theirs, sibling = two_tenants
    assert "<td>198.18.61.10 fd00:61::1</td>" in rows[str(mine.veid)]
    assert "<td>198.18.61.51</td>" in rows[str(sibling.veid)]
    assert str(theirs.veid) not in rows and "198.18.61.50" not in html
    VE.objects.filter(pk=sibling.pk).update(addresses=[])
    html = client.get(reverse("panel:ve-list")).content.decode()
    assert "198.18.61.51" not in html


def test_the_ve_page_shows_the_traffic_counters(client, two_tenants, people):
    mine, _, _ = two_tenants
    client.force_login(people.viewer)
    assert "No traffic counted yet" in page(client, mine)
    VE.objects.filter(pk=mine.pk).update(traffic={"in_bytes": 123_456, "in_packets": 78,
                                                  "out_bytes": 2_000_000, "out_packets": 1_500})
    html = page(client, mine).replace("\xa0", " ")
    received = html.split("Received", 1)[1].split("</tr>", 1)[0]
    sent = html.split("Sent", 1)[1].split("</tr>", 1)[0]
    assert "120.6 KB" in received and "(78 packets)" in received
    assert "1.9 MB" in sent and "(1500 packets)" in sent
    assert "No traffic counted yet" not in html


# --- make run's demo pool ------------------------------------------------------------------------

def test_bootstrap_makes_the_demo_pools_once_bound_to_the_local_node(tmp_path):
    for _ in range(2):
        out = io.StringIO()
        call_command("hako_bootstrap", "--node", "hakodemo", "--agent-env", str(tmp_path / "agent.env"),
                     stdout=out)
        assert "Node hakodemo" in out.getvalue()
    pools = list(IPPool.objects.order_by("name"))
    assert [(p.name, p.network) for p in pools] == [("demo1", "198.18.0.0/24"), ("demo2", "fd00:4861:6b6f::/64")]
    for pool in pools:
        assert [n.name for n in pool.nodes.all()] == ["hakodemo"]
        assert ipaddress.ip_network(pool.network).subnet_of(ipaddress.ip_network(
            "198.18.0.0/15" if ":" not in pool.network else "fd00::/8")), "routed only inside the machine"
    # The node was told to install the unreachable routes for them.
    config = Job.objects.filter(kind="node_config", node__name="hakodemo").latest("created_at")
    assert config.args["pools"] == ["198.18.0.0/24", "fd00:4861:6b6f::/64"]
    # And a VE made on it gets an address from each.
    tenant = Tenant.objects.get(slug="default")
    from django.utils import timezone

    from panel.models import Node

    Node.objects.filter(name="hakodemo").update(state="online", last_heartbeat=timezone.now(),
                                                info={"templates": ["busybox"]})
    job = svc.ve_create(tenant=tenant, template="busybox", hostname="demo")
    assert job.ve.addresses == ["198.18.0.1", "fd00:4861:6b6f::1"]
    assert Membership.objects.filter(tenant=tenant, user__username="admin", role="owner").exists()


# --- the embedded SQLite default -----------------------------------------------------------------

SQLITE_SCRIPT = """
from django.utils import timezone
from panel.models import IPAddress, Node, Tenant
from panel.services import network as net, ves
n = node_register(name="sqlite-net")
Node.objects.filter(pk=n.pk).update(state="online", last_heartbeat=timezone.now())
n.refresh_from_db()
t = Tenant.objects.create(slug="s", name="S")
net.pool_create(name="s4", network="198.18.63.0/24", nodes=[n], range_start="198.18.63.5",
                range_end="198.18.63.14")
net.pool_create(name="s6", network="fd00:63::/64", nodes=[n])
got = [ves.ve_create(tenant=t, template="busybox").ve.addresses for _ in range(7)]
assert got == [[f"198.18.63.{5 + i}", f"fd00:63::{i + 1}"] for i in range(7)], got
IPAddress.objects.filter(address__in=["198.18.63.7", "fd00:63::3"]).delete()
far = ves.ve_create(tenant=t, template="busybox", addresses=["fd00:63::1:0:0:1"]).ve.addresses
assert far == ["fd00:63::1:0:0:1"], far
# Text order would put .10 to .12 before .5: the lowest free one is .7 again, then .12.
nxt = [ves.ve_create(tenant=t, template="busybox").ve.addresses for _ in range(2)]
assert nxt == [["198.18.63.7", "fd00:63::3"], ["198.18.63.12", "fd00:63::8"]], nxt
print("sqlite allocation ok")
"""


def test_allocation_works_on_the_embedded_sqlite_default(tmp_path):
    import os
    import subprocess
    import sys

    from tests.harness import REPO

    env = {**os.environ, "HAKO_DATABASE_URL": f"sqlite:///{tmp_path / 'panel.sqlite3'}", "HAKO_DATA": str(tmp_path),
           "DJANGO_SETTINGS_MODULE": "panel.settings"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=180)
    out = subprocess.run([sys.executable, "manage.py", "shell", "-c",
                          "from panel.services.nodes import node_register\n" + SQLITE_SCRIPT],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and "sqlite allocation ok" in out.stdout, out.stderr[-3000:]


def test_the_address_forms_render_in_japanese(client, two_tenants, people):
    mine, _, _ = two_tenants
    client.force_login(people.operator)
    client.post(reverse("set_language"), {"language": "ja", "next": "/"})
    html = page(client, mine)
    assert "アドレスを追加" in html and "198.18.61.10 を削除" in html
    html = client.get(reverse("panel:ve-create")).content.decode()
    for words in ("IP アドレス", "ネームサーバー", "検索ドメイン", "VE への帯域制限"):
        assert words in html, words

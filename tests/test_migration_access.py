"""Who may move VEs (issue 9), without agents: the staff pages (migrate a VE, maintenance,
drain) and the API endpoint are for staff only; everyone else changes nothing, and the
API endpoint does not exist for them (404). Node rows no agent consumes: nothing runs."""
import json

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from panel.models import VE, Job, Membership, Migration, Node
from panel.services import api_tokens, ves
from tests.tenancy import make_user, people, settle  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_nodes(db):
    from panel.models import OSTemplate

    OSTemplate.objects.get_or_create(name="busybox")
    made = []
    for name, addr in (("hakomig-a", "198.19.40.11"), ("hakomig-b", "198.19.40.12")):
        made.append(Node.objects.create(name=name, queue=f"node.{name}", state="online",
                                        last_heartbeat=timezone.now(),
                                        info={"templates": ["busybox"], "address": addr}))
    return made


@pytest.fixture
def ve(tenant, two_nodes):
    return settle(ves.ve_create(tenant=tenant, template="busybox", node=two_nodes[0]))


def web(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def api(user, tenant) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {api_tokens.api_token_create(user=user, tenant=tenant)[1]}")
    return c


def test_only_staff_reach_the_pages_and_nothing_changes_for_others(people, tenant, two_nodes, ve):
    a, b = two_nodes
    for user in (people.owner, people.operator, people.viewer, people.outsider):
        c = web(user)
        assert c.get(f"/staff/ves/{ve.pk}/migrate/").status_code in (403, 404)
        assert c.post(f"/staff/ves/{ve.pk}/migrate/", {"node": b.name}).status_code in (403, 404)
        assert c.post(f"/staff/nodes/{a.pk}/maintenance/", {"maintenance": "on"}).status_code in (403, 404)
        assert c.post(f"/staff/nodes/{a.pk}/drain/").status_code in (403, 404)
    assert not Migration.objects.exists() and not Job.objects.filter(kind__in=["migrate", "drain"]).exists()
    assert not Node.objects.filter(maintenance=True).exists()
    assert VE.objects.get(pk=ve.pk).state == "stopped"

    c = web(people.staff)
    page = c.get(f"/staff/ves/{ve.pk}/migrate/")
    assert page.status_code == 200 and b.name.encode() in page.content
    assert c.get("/staff/").status_code == 200  # the nodes page with its buttons
    r = c.post(f"/staff/nodes/{b.pk}/maintenance/", {"maintenance": "on"})
    assert r.status_code == 302 and Node.objects.get(pk=b.pk).maintenance
    assert "maintenance mode".encode() in c.get(f"/staff/ves/{ve.pk}/migrate/").content
    bad = c.post(f"/staff/ves/{ve.pk}/migrate/", {"node": b.name})
    assert bad.status_code == 400 and not Migration.objects.exists()
    c.post(f"/staff/nodes/{b.pk}/maintenance/", {"maintenance": "off"})
    assert not Node.objects.get(pk=b.pk).maintenance
    for hostile in ("'; DROP TABLE", "../../etc", "x" * 500, "\u00e9\n"):
        assert c.post(f"/staff/ves/{ve.pk}/migrate/", {"node": hostile}).status_code == 400
    assert c.post(f"/staff/ves/{ve.pk}/migrate/", {"node": b.name, "bwlimit": "lots"}).status_code == 400
    assert not Migration.objects.exists()
    r = c.post(f"/staff/ves/{ve.pk}/migrate/", {"node": b.name, "bwlimit": "1000"})
    assert r.status_code == 302
    mig = Migration.objects.get()
    assert (mig.source, mig.target, mig.bwlimit, mig.state) == (a, b, 1000, "pending")
    assert VE.objects.get(pk=ve.pk).state == "migrating" and mig.job.kind == "migrate"
    # The migrate job holds the VE: no other job meanwhile.
    from panel.services.errors import Conflict

    with pytest.raises(Conflict):
        ves.ve_start(ve=ve)


def test_api_migrate_is_a_404_for_non_staff_and_validates_for_staff(people, tenant, two_nodes, ve):
    a, b = two_nodes
    for user in (people.owner, people.operator, people.viewer):
        r = api(user, tenant).post(f"/api/v1/ves/{ve.pk}/migrate", {"node": b.name}, format="json")
        assert r.status_code == 404, r.content
    assert not Migration.objects.exists()
    Membership.objects.create(user=people.staff, tenant=tenant, role="owner")
    c = api(people.staff, tenant)
    for body in ({"node": "no-such-node"}, {"node": b.name, "bwlimit": -1}, {"node": a.name}, {}):
        r = c.post(f"/api/v1/ves/{ve.pk}/migrate", body, format="json")
        assert r.status_code in (400, 503), (body, r.content)
        assert r["Content-Type"].startswith("application/problem+json")
    assert not Migration.objects.exists()
    # another tenant's VE is a 404 even for a staff user's token (tokens reach their tenant only)
    theirs = settle(ves.ve_create(tenant=people.outsider.memberships.get().tenant, template="busybox", node=a))
    assert c.post(f"/api/v1/ves/{theirs.pk}/migrate", {"node": b.name}, format="json").status_code == 404
    r = c.post(f"/api/v1/ves/{ve.pk}/migrate", {"node": b.name}, format="json")
    assert r.status_code == 202, r.content
    body = json.loads(r.content)
    assert body["job"]["kind"] == "migrate" and Migration.objects.get().target == b


def test_placement_skips_nodes_in_maintenance(tenant, two_nodes):
    a, b = two_nodes
    from panel.services.errors import Unavailable
    from panel.services.migrations import node_set_maintenance

    node_set_maintenance(node=a, on=True)
    node_set_maintenance(node=b, on=True)
    with pytest.raises(Unavailable):
        ves.ve_create(tenant=tenant, template="busybox")
    node_set_maintenance(node=b, on=False)
    assert ves.ve_create(tenant=tenant, template="busybox").node == b
    with pytest.raises(Unavailable, match="maintenance"):
        ves.ve_create(tenant=tenant, template="busybox", node=a)
    with pytest.raises(Exception):
        node_set_maintenance(node=a, on=False, actor=make_user("nobody"))
    assert Node.objects.get(pk=a.pk).maintenance


def test_a_sealed_secret_opens_only_with_its_nodes_key():
    import secrets

    from containers import messages as m

    key, other = secrets.token_bytes(32), secrets.token_bytes(32)
    secret = secrets.token_urlsafe(32)
    sealed = m.seal(secret, key)
    assert secret not in sealed and m.unseal(sealed, key) == secret
    assert m.seal(secret, key) != sealed  # a fresh nonce each time
    # (Integrity is the signed job message's business: a flipped byte is not caught here.)
    for bad_key, text in ((other, sealed), (key, "nonsense"), (key, None), (key, sealed + "zz")):
        with pytest.raises(m.MessageError):
            m.unseal(text, bad_key)

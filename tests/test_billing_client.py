"""examples/billing_client.py against a live Hako (Django's live_server).

The first tests run with a node no agent consumes, so only the client's waiting is stubbed:
the stub plays the node's success for the VE's pending jobs (tests.tenancy.settle) and then
polls once for real. ``test_the_lifecycle_runs_with_real_workers`` runs the same client,
unstubbed, against the real panel worker and node agent (the ``stack`` fixture): the
service is created, started and torn down in a real LXC container. Every HTTP call is real.
A run against any Hako is ``HAKO_URL=... HAKO_BILLING_TOKEN=... python examples/billing_client.py``."""
import importlib.util
import io
from pathlib import Path

import pytest

from panel.models import VE, BillingLink, IdempotencyRecord, Job
from panel.services import billing, plans
from panel.services.network import pool_create
from tests.tenancy import idle_node, settle  # noqa: F401

spec = importlib.util.spec_from_file_location(
    "billing_client", Path(__file__).resolve().parent.parent / "examples" / "billing_client.py")
client = importlib.util.module_from_spec(spec)
spec.loader.exec_module(client)


@pytest.fixture
def hako(transactional_db, idle_node, live_server, monkeypatch):
    pool_create(name="bill", network="198.18.9.0/24", nodes=[idle_node])
    plans.plan_create(name="small", memory="512M", disk="10G", addresses=1)
    plans.plan_create(name="big", memory="1G", disk="20G", addresses=1)
    account = billing.billing_account_get_or_create(name="whmcs")
    token = billing.billing_token_create(account=account)[1]
    waits = []

    def wait_until(self, ref, what, done, **kw):
        link = BillingLink.objects.get(account=account, kind="ve", external_id=ref[4:])
        for job in Job.objects.filter(ve_id=link.object_id, state__in=Job.ACTIVE):
            settle(job, "running" if job.kind in ("create", "start") else "stopped")   # create also starts
        svc = self.service(ref)
        assert done(svc), (what, svc)
        waits.append(what)
        return svc

    monkeypatch.setattr(client.HakoBilling, "wait_until", wait_until)
    out = io.StringIO()
    api = client.HakoBilling(live_server.url, token, idempotency_prefix="run1", out=out)
    api.waits = waits
    return api


def test_the_whole_lifecycle_runs_against_a_live_server(hako):
    statuses = client.lifecycle(hako, plan="small", plan2="big", template="busybox", external_id="4711")
    assert statuses == {"create-account": 201, "create-service": 202, "usage": 200, "suspend": 200,
                        "unsuspend": 202, "change-plan": 202, "terminate": 202}
    assert hako.waits == ["running", "stopped", "running", "on plan big", "terminated"]
    log = hako.out.getvalue()
    for step in ("[test]", "[create-account] 201", "[create-service] 202", "[usage]", "[suspend] 200",
                 "[unsuspend] 202", "[change-plan] 202", "[terminate] 202", "[done]"):
        assert step in log, log
    ve = VE.objects.get(pk=BillingLink.objects.get(kind="ve", external_id="4711").object_id)
    assert ve.state == "destroyed" and ve.plan.name == "big"
    assert IdempotencyRecord.objects.filter(key__startswith="run1-").count() == 6
    assert list(Job.objects.filter(ve=ve).order_by("created_at").values_list("kind", flat=True)) == [
        "create", "stop", "start", "set", "destroy"]  # unsuspend started what suspend stopped

    # A retried step replays (no second action); errors are problem+json with a detail.
    again = hako.terminate("ext:4711")
    assert again.status == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert Job.objects.filter(ve=ve, kind="destroy").count() == 1
    with pytest.raises(client.ApiError) as e:
        hako.request("POST", "/services/ext:4711/suspend", {}, key="fresh-1")
    assert e.value.status == 409 and e.value.problem["code"] == "terminated" and e.value.problem["detail"]
    with pytest.raises(client.ApiError) as e:
        hako.request("POST", "/services/ext:4711/suspend", {})
    assert e.value.status == 400 and e.value.problem["code"] == "idempotency-key-missing"
    with pytest.raises(client.ApiError) as e:
        hako.service("ext:nope")
    assert e.value.status == 404 and e.value.problem["code"] == "not-found"


POOL = "198.18.50.0/24"


@pytest.mark.integration
def test_the_lifecycle_runs_with_real_workers(stack, node, live_server):
    """create account -> create service (202 + job; Hako picks the node and the address) ->
    the service runs -> suspend (it stops) -> unsuspend -> change plan -> terminate, each
    step carried out by the node agent in a real container."""
    import subprocess

    from tests.conftest import run

    pool_create(name="bill", network=POOL, nodes=[node], range_start="198.18.50.100", range_end="198.18.50.199")
    run(Job.objects.filter(kind="node_config").order_by("-created_at").first())
    try:
        plans.plan_create(name="small", memory="256M", disk="1G", addresses=1)
        # The same disk: change-plan now meets a running VE, and these hosts cannot grow a
        # mounted ext4 (no CAP_SYS_RESOURCE; see README "What these hosts lack").
        plans.plan_create(name="big", memory="512M", disk="1G", addresses=1)
        account = billing.billing_account_get_or_create(name="whmcs")
        api = client.HakoBilling(live_server.url, billing.billing_token_create(account=account)[1],
                                 idempotency_prefix="real", out=io.StringIO())
        statuses = client.lifecycle(api, plan="small", plan2="big", template="busybox", external_id="9001",
                                    wait_timeout=180)
        log = api.out.getvalue()
        assert statuses == {"create-account": 201, "create-service": 202, "usage": 200, "suspend": 200,
                            "unsuspend": 202, "change-plan": 202, "terminate": 202}, log
        assert "[wait] service is active (state running, addresses 198.18.50.1" in log, log
        ve = VE.objects.get(pk=BillingLink.objects.get(kind="ve", external_id="9001").object_id)
        assert ve.state == "destroyed" and ve.plan.name == "big" and ve.node_id == node.pk
        jobs = list(Job.objects.filter(ve=ve).order_by("created_at").values_list("kind", "state"))
        assert jobs == [("create", "succeeded"), ("stop", "succeeded"), ("start", "succeeded"),
                        ("set", "succeeded"), ("destroy", "succeeded")], jobs
        create = Job.objects.get(ve=ve, kind="create")
        assert create.result["state"] == "running"
        assert any("Starting VE" in line for line in create.logs.values_list("message", flat=True))
        assert not (stack.node_root / "images" / f"{ve.veid}.img").exists()
        assert api.service("ext:9001")["status"] == "terminated"
    finally:
        subprocess.run(["ip", "route", "del", "unreachable", POOL], capture_output=True, timeout=30)


def test_a_bad_token_is_a_401_problem(hako, live_server):
    with pytest.raises(client.ApiError) as e:
        client.HakoBilling(live_server.url, "hko_aaaaaaaaaaaa_" + "x" * 40).test()
    assert e.value.status == 401 and e.value.problem["code"] == "unauthenticated"


def test_main_needs_its_environment(monkeypatch, capsys):
    monkeypatch.delenv("HAKO_URL", raising=False)
    monkeypatch.delenv("HAKO_BILLING_TOKEN", raising=False)
    assert client.main() == 2

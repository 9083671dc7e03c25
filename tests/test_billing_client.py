"""examples/billing_client.py against a live Hako (Django's live_server). Nothing consumes
the node's queue here, so only the client's waiting is stubbed: the stub plays the node's
success for the VE's pending job (tests.tenancy.settle) and then polls once for real. Every
HTTP call is real. A full run with real workers is ``HAKO_URL=... HAKO_BILLING_TOKEN=...
python examples/billing_client.py``."""
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
            settle(job, "stopped")
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
                        "unsuspend": 200, "change-plan": 202, "terminate": 202}
    assert hako.waits == ["provisioned", "stopped", "on plan big", "terminated"]
    log = hako.out.getvalue()
    for step in ("[test]", "[create-account] 201", "[create-service] 202", "[usage]", "[suspend] 200",
                 "[unsuspend] 200", "[change-plan] 202", "[terminate] 202", "[done]"):
        assert step in log, log
    ve = VE.objects.get(pk=BillingLink.objects.get(kind="ve", external_id="4711").object_id)
    assert ve.state == "destroyed" and ve.plan.name == "big"
    assert IdempotencyRecord.objects.filter(key__startswith="run1-").count() == 6

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


def test_a_bad_token_is_a_401_problem(hako, live_server):
    with pytest.raises(client.ApiError) as e:
        client.HakoBilling(live_server.url, "hko_aaaaaaaaaaaa_" + "x" * 40).test()
    assert e.value.status == 401 and e.value.problem["code"] == "unauthenticated"


def test_main_needs_its_environment(monkeypatch, capsys):
    monkeypatch.delenv("HAKO_URL", raising=False)
    monkeypatch.delenv("HAKO_BILLING_TOKEN", raising=False)
    assert client.main() == 2

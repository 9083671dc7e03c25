"""Outbound webhooks of the billing API (issue 8 item 7): endpoints, events written with
the change, fan-out, Standard Webhooks signatures (checked with the ``standardwebhooks``
reference library), retries with backoff on a movable clock, 410, redelivery.

Deliveries go to an HTTP server this test starts on 127.0.0.1, nowhere else. Database
transactions are rolled back, so no task message reaches the broker; the retry's
``apply_async`` is recorded instead of sent.
"""
import base64
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone
from standardwebhooks import Webhook

from panel.models import VE, DomainEvent, Job, WebhookDelivery, WebhookEndpoint
from panel.services import webhooks
from panel.services.jobs import job_fail
from panel.services.suspensions import ve_suspend
from tests.tenancy import idle_node, settle  # noqa: F401
from tests.test_billing_api import Billing, catalog, make_service, problem_of, token_for  # noqa: F401

pytestmark = pytest.mark.django_db


class Receiver:
    """A webhook consumer on 127.0.0.1: answers each request with the next of
    ``statuses`` (the last one repeats) and keeps what it got."""

    def __init__(self, statuses=(200,)):
        self.statuses = list(statuses)
        self.got = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body.decode()))
                code = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/hako"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def whmcs(db, settings):
    """A billing account whose endpoints may be on loopback: these tests deliver to a
    receiver on 127.0.0.1, which the SSRF guard refuses by default (see ``strict``)."""
    settings.HAKO_WEBHOOK_ALLOW_PRIVATE = True
    return Billing(token_for("whmcs")[1])


@pytest.fixture
def strict(db, settings):
    """The same account with the default SSRF guard: public destinations only."""
    settings.HAKO_WEBHOOK_ALLOW_PRIVATE = False
    return Billing(token_for("whmcs")[1])


@pytest.fixture
def scheduled(monkeypatch):
    """The countdowns of retries the delivery scheduled (instead of sending them)."""
    from panel.tasks import webhook_deliver

    calls = []
    monkeypatch.setattr(webhook_deliver, "apply_async",
                        lambda args, countdown, **kw: calls.append((args[0], countdown)))
    return calls


def add_endpoint(api, url, **extra):
    r = api.post("/webhooks", {"url": url, **extra})
    assert r.status_code == 201, r.content
    return r.json()


def deliveries_for(kind):
    created = []
    for event in DomainEvent.objects.filter(kind=kind):
        created += webhooks.event_fanout(event.pk)
    return created


# --- endpoints ----------------------------------------------------------------------------------

def test_endpoint_secret_is_shown_once_and_is_a_standard_webhooks_secret(whmcs, receiver):
    made = add_endpoint(whmcs, receiver.url, event_types=["service.suspended"])
    assert made["secret"].startswith("whsec_") and len(base64.b64decode(made["secret"][6:])) == 32
    assert made["event_types"] == ["service.suspended"] and made["enabled"] is True
    listed = whmcs.get("/webhooks").json()["data"]
    assert [e["id"] for e in listed] == [made["id"]] and "secret" not in listed[0]


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http://127.0.0.1/a\nb", "javascript:alert(1)",
                                 "http://user:pw@127.0.0.1/", "../etc/passwd", "http://" + "a" * 2100, "", 42])
def test_bad_endpoint_urls_are_400_and_add_nothing(whmcs, url):
    r = whmcs.post("/webhooks", {"url": url})
    assert r.status_code == 400 and r["Content-Type"].startswith("application/problem+json"), r.content
    assert r.json()["code"] in ("invalid", "validation-failed", "url-not-allowed")
    assert not WebhookEndpoint.objects.exists()


# --- SSRF guard ------------------------------------------------------------------------------------

INTERNAL = ["http://127.1/", "http://[::1]/", "http://0x7f000001/", "http://2130706433/", "http://0177.0.0.1/",
            "http://169.254.169.254/latest/meta-data/", "http://localhost:8000/hook", "http://0/",
            "http://[::ffff:127.0.0.1]/", "http://[2002:7f00:1::]/", "http://10.1.2.3/", "http://192.168.0.1/",
            "http://172.16.0.1/", "http://100.64.0.1/", "http://[fd00:50::1]/", "http://[fe80::1]/",
            "http://224.0.0.1/", "http://240.0.0.1/", "http://198.18.50.1/"]


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_destinations_are_refused_at_registration(strict, url):
    body = problem_of(strict.post("/webhooks", {"url": url}), 400, "url-not-allowed")
    assert "not a public address" in body["detail"] and body["field"] == "url"
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize("url, why", [("https://user:pw@example.com/", "credentials"),
                                      ("https://token@example.com/", "credentials"),
                                      ("gopher://example.com/", "http or https"),
                                      ("file:///etc/passwd", "http or https"),
                                      ("http://no-such-host.invalid/", "does not resolve")])
def test_credentials_other_schemes_and_unresolvable_hosts_are_refused(strict, url, why):
    assert why in problem_of(strict.post("/webhooks", {"url": url}), 400, "url-not-allowed")["detail"]
    assert not WebhookEndpoint.objects.exists()


def test_a_public_address_is_accepted_and_the_setting_admits_loopback(strict, settings):
    # Registration only resolves (a literal address needs no DNS); nothing is sent.
    assert strict.post("/webhooks", {"url": "https://93.184.216.34/hooks"}).status_code == 201
    problem_of(strict.post("/webhooks", {"url": "http://localhost:8000/hook"}), 400, "url-not-allowed")
    settings.HAKO_WEBHOOK_ALLOW_PRIVATE = True
    assert strict.post("/webhooks", {"url": "http://localhost:8000/hook"}).status_code == 201


def test_delivery_checks_the_address_it_connects_to_against_dns_rebinding(strict, catalog, receiver, scheduled,
                                                                          settings, monkeypatch):
    """A name that resolved to a public address at registration and to 127.0.0.1 at
    delivery (DNS rebinding) is refused when the connection is made; the faked resolver
    answers for this one name, so no packet leaves the machine."""
    import socket

    real, answer = socket.getaddrinfo, {"ip": "93.184.216.34"}

    def resolve(host, *args, **kwargs):
        return real(answer["ip"] if host == "hooks.example.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    port = receiver.server.server_address[1]
    add_endpoint(strict, f"http://hooks.example.test:{port}/hooks/hako")
    make_service(strict)
    answer["ip"] = "127.0.0.1"
    [delivery] = deliveries_for("service.created")
    d = webhooks.delivery_attempt(delivery.pk)
    assert d.status == "pending" and d.attempts == 1 and d.last_status_code is None
    assert "127.0.0.1 (loopback), not a public address" in d.last_error, d.last_error
    assert receiver.got == [] and scheduled == [(str(delivery.pk), webhooks.BACKOFF[0])]
    # The same delivery with the guard lifted reaches the receiver: the refusal above was
    # the guard's, and the request still names the endpoint's host.
    settings.HAKO_WEBHOOK_ALLOW_PRIVATE = True
    d = webhooks.delivery_attempt(delivery.pk, now=d.next_attempt_at)
    assert d.status == "succeeded" and len(receiver.got) == 1
    assert receiver.got[0][0]["host"] == f"hooks.example.test:{port}"


def test_unknown_event_types_are_400(whmcs, receiver):
    problem_of(whmcs.post("/webhooks", {"url": receiver.url, "event_types": ["service.$(reboot)"]}), 400, "invalid")


def test_endpoints_need_the_webhooks_scope_and_are_per_account(whmcs, receiver):
    add_endpoint(whmcs, receiver.url)
    narrow = Billing(token_for("whmcs", scopes=["services:read", "services:write"])[1])
    problem_of(narrow.get("/webhooks"), 403, "forbidden")
    problem_of(narrow.post("/webhooks", {"url": receiver.url}), 403, "forbidden")
    blesta = Billing(token_for("blesta")[1])
    assert blesta.get("/webhooks").json()["data"] == []


# --- events ----------------------------------------------------------------------------------------

def test_service_verbs_write_events_in_their_transaction(whmcs, catalog):
    made = make_service(whmcs)
    settle(Job.objects.get(pk=made["job"]["id"]), "stopped")
    whmcs.post("/services/ext:4711/suspend", {"reason": "unpaid"})
    whmcs.post("/services/ext:4711/suspend", {"reason": "unpaid"})   # a repeat: no second event
    whmcs.post("/services/ext:4711/unsuspend")
    r = whmcs.post("/services/ext:4711/change-plan", {"plan": "big"})
    settle(Job.objects.get(pk=r.json()["job"]["id"]), "stopped")
    r = whmcs.post("/services/ext:4711/terminate")
    settle(Job.objects.get(pk=r.json()["job"]["id"]), "destroyed")
    kinds = list(DomainEvent.objects.values_list("kind", flat=True))
    assert kinds == ["service.created", "service.suspended", "service.unsuspended", "service.plan_changed",
                     "service.terminated"]
    plan_changed = DomainEvent.objects.get(kind="service.plan_changed")
    assert plan_changed.payload["plan"] == "big" and plan_changed.payload["ve"] == made["id"]


def test_admin_suspension_and_failed_jobs_of_linked_ves_are_events(whmcs, catalog):
    made = make_service(whmcs)
    ve_suspend(ve=VE.objects.get(pk=made["id"]), by="admin", reason="abuse report")
    assert DomainEvent.objects.get(kind="service.suspended").payload["source"] == "admin"
    job_fail(made["job"]["id"], error="timeout", explanation="no answer")
    failed = DomainEvent.objects.get(kind="job.failed")
    assert failed.payload["job"] == made["job"]["id"] and failed.payload["error"] == "timeout"


def test_objects_no_billing_account_knows_write_no_events(tenant, idle_node):
    from panel.services.ves import ve_create

    job = ve_create(tenant=tenant, actor=None, template="busybox", hostname="plain.example.test",
                    memory=256 << 20, disk=1 << 30)
    ve_suspend(ve=VE.objects.get(pk=job.ve_id), by="admin", reason="abuse")
    assert not DomainEvent.objects.exists()


# --- delivery ----------------------------------------------------------------------------------------

def test_delivery_is_signed_per_standard_webhooks_with_the_accounts_ids(whmcs, catalog, receiver, scheduled):
    secret = add_endpoint(whmcs, receiver.url)["secret"]
    made = make_service(whmcs)
    whmcs.post("/services/ext:4711/suspend", {"reason": "unpaid"})
    [delivery] = deliveries_for("service.suspended")
    assert webhooks.event_fanout(delivery.event_id) == []   # a repeat fans out nothing
    assert DomainEvent.objects.get(kind="service.suspended").delivered_at is not None
    done = webhooks.delivery_attempt(delivery.pk)
    assert done.status == "succeeded" and done.attempts == 1 and done.last_status_code == 200
    [(headers, body)] = receiver.got
    headers = {k.lower(): v for k, v in headers.items()}
    payload = Webhook(secret).verify(body, headers)   # raises if the signature is wrong
    assert headers["webhook-id"] == f"msg_{delivery.event.uuid.hex}"
    assert payload["type"] == "service.suspended" and payload["timestamp"].endswith("Z")
    assert payload["data"]["id"] == made["id"] and payload["data"]["external_id"] == "4711"
    assert payload["data"]["account"]["external_id"] == "1204" and payload["data"]["source"] == "billing"
    with pytest.raises(Exception):
        Webhook(secret).verify(body.replace("4711", "4712"), headers)
    assert scheduled == []


def test_endpoints_get_only_the_event_types_they_asked_for(whmcs, catalog, receiver):
    add_endpoint(whmcs, receiver.url, event_types=["service.terminated"])
    make_service(whmcs)
    whmcs.post("/services/ext:4711/suspend", {"reason": "unpaid"})
    assert deliveries_for("service.created") == [] and deliveries_for("service.suspended") == []


def test_another_accounts_endpoints_never_see_the_event(whmcs, catalog, receiver):
    blesta = Billing(token_for("blesta")[1])
    add_endpoint(blesta, receiver.url)
    make_service(whmcs)
    assert deliveries_for("service.created") == []


def test_a_failing_endpoint_is_retried_with_backoff_until_it_answers(whmcs, catalog, scheduled):
    flaky = Receiver(statuses=(500, 503, 204))
    try:
        secret = add_endpoint(whmcs, flaky.url)["secret"]
        make_service(whmcs)
        [delivery] = deliveries_for("service.created")
        t0 = timezone.now()
        first = webhooks.delivery_attempt(delivery.pk, now=t0)
        assert first.status == "pending" and first.attempts == 1 and first.last_status_code == 500
        assert first.next_attempt_at == t0 + timedelta(seconds=webhooks.BACKOFF[0])
        assert webhooks.delivery_attempt(delivery.pk, now=t0 + timedelta(seconds=2)) is None  # not due yet
        second = webhooks.delivery_attempt(delivery.pk, now=first.next_attempt_at)
        assert second.attempts == 2 and second.last_status_code == 503
        assert second.next_attempt_at == first.next_attempt_at + timedelta(seconds=webhooks.BACKOFF[1])
        third = webhooks.delivery_attempt(delivery.pk, now=second.next_attempt_at)
        assert third.status == "succeeded" and third.attempts == 3 and third.delivered_at == second.next_attempt_at
        assert [c for _, c in scheduled] == [webhooks.BACKOFF[0], webhooks.BACKOFF[1]]
        assert [e["status_code"] for e in third.log] == [500, 503, 204]
        assert len(flaky.got) == 3
        ids = {h["webhook-id"] for h, _ in flaky.got}
        stamps = [h["webhook-timestamp"] for h, _ in flaky.got]
        assert len(ids) == 1 and len(set(stamps)) == 3   # same id, a fresh timestamp each attempt
        # Each attempt verifies on its own (the reference verifier checks the timestamp
        # against the real clock, so only the one sent at about now is checked).
        headers, body = flaky.got[0]
        assert Webhook(secret).verify(body, {k.lower(): v for k, v in headers.items()})
    finally:
        flaky.close()


def test_unreachable_endpoint_gives_up_after_max_attempts_then_redeliver(whmcs, catalog, scheduled, receiver):
    add_endpoint(whmcs, "http://127.0.0.1:9/closed")   # discard port: connection refused
    make_service(whmcs)
    [delivery] = deliveries_for("service.created")
    now = timezone.now()
    for _ in range(webhooks.MAX_ATTEMPTS):
        d = webhooks.delivery_attempt(delivery.pk, now=now)
        now = d.next_attempt_at or now
    assert d.status == "failed" and d.attempts == webhooks.MAX_ATTEMPTS and "Error" in d.last_error
    assert webhooks.delivery_attempt(delivery.pk, now=now + timedelta(days=9)) is None
    assert len(scheduled) == webhooks.MAX_ATTEMPTS - 1
    listed = whmcs.get("/webhooks/deliveries?status=failed").json()["data"]
    assert [x["id"] for x in listed] == [str(delivery.pk)] and len(listed[0]["attempt_log"]) == webhooks.MAX_ATTEMPTS
    # The receiver is fixed: point the endpoint at it and replay.
    WebhookEndpoint.objects.filter(pk=delivery.endpoint_id).update(url=receiver.url)
    r = whmcs.post(f"/webhooks/deliveries/{delivery.pk}/redeliver")
    assert r.status_code == 202 and r.json()["status"] == "pending" and r.json()["attempts"] == 0
    assert webhooks.delivery_attempt(delivery.pk).status == "succeeded"
    assert len(receiver.got) == 1


def test_410_gone_disables_the_endpoint(whmcs, catalog, scheduled):
    gone = Receiver(statuses=(410,))
    try:
        endpoint = add_endpoint(whmcs, gone.url)
        make_service(whmcs)
        [delivery] = deliveries_for("service.created")
        d = webhooks.delivery_attempt(delivery.pk)
        assert d.status == "failed" and d.last_status_code == 410 and scheduled == []
        assert WebhookEndpoint.objects.get(pk=endpoint["id"]).enabled is False
        problem_of(whmcs.post(f"/webhooks/deliveries/{delivery.pk}/redeliver"), 409, "endpoint-disabled")
    finally:
        gone.close()


def test_redirects_are_failures_not_followed(whmcs, catalog, scheduled):
    moved = Receiver(statuses=(302,))
    try:
        add_endpoint(whmcs, moved.url)
        make_service(whmcs)
        [delivery] = deliveries_for("service.created")
        d = webhooks.delivery_attempt(delivery.pk)
        assert d.status == "pending" and d.last_status_code == 302 and len(moved.got) == 1
    finally:
        moved.close()


def test_another_accounts_delivery_is_404(whmcs, catalog, receiver):
    add_endpoint(whmcs, receiver.url)
    make_service(whmcs)
    [delivery] = deliveries_for("service.created")
    blesta = Billing(token_for("blesta")[1])
    problem_of(blesta.post(f"/webhooks/deliveries/{delivery.pk}/redeliver"), 404, "not-found")
    problem_of(blesta.post("/webhooks/deliveries/not-a-uuid/redeliver"), 404, "not-found")
    assert blesta.get("/webhooks/deliveries").json()["data"] == []
    assert WebhookDelivery.objects.get().status == "pending"

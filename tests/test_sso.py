"""Billing SSO (issue 8 item 1): POST /api/billing/v1/accounts/{ref}/login-link mints a
one-time, 5-minute link. Opening it (GET) only asks "Continue to Hako as <user>"; the
CSRF-protected POST of that page uses it up and signs the tenant's owner in; replays and
expired links are a readable 403 page."""
import hashlib
import json
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from panel.models import AuditEvent, LoginLink, Membership
from panel.services import api_tokens, billing
from tests.tenancy import in_parallel

pytestmark = pytest.mark.django_db
API = "/api/billing/v1"


@pytest.fixture
def whmcs(db):
    account = billing.billing_account_get_or_create(name="whmcs")
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {billing.billing_token_create(account=account)[1]}")
    r = c.post(f"{API}/accounts", {"external_id": "1204", "name": "Ada Lovelace", "email": "ada@example.test"},
               format="json", HTTP_IDEMPOTENCY_KEY="acct-1")
    assert r.status_code == 201, r.content
    return c


def mint(c, ref="ext:1204"):
    r = c.post(f"{API}/accounts/{ref}/login-link", format="json")
    assert r.status_code == 201, r.content
    return r.json()


def csrf_of(page) -> str:
    return re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content).group(1).decode()


def test_opening_the_link_only_asks_and_the_confirmation_signs_the_owner_in_once(whmcs):
    body = mint(whmcs)
    url = body["url"]
    assert url.startswith("http://testserver/sso/")
    token = url.rsplit("/", 1)[1]
    link = LoginLink.objects.get()
    assert link.token_hash == hashlib.sha256(token.encode()).hexdigest() and link.used_at is None
    assert timedelta(minutes=4) < link.expires_at - timezone.now() <= timedelta(minutes=5)
    assert not AuditEvent.objects.filter(detail__icontains=token).exists()
    # A mail scanner or link preview fetches the URL: it gets the question, nothing more.
    for _ in range(2):
        preview = Client()
        r = preview.get(f"/sso/{token}")
        assert r.status_code == 200 and r["Referrer-Policy"] == "no-referrer"
        assert f"Continue to Hako as {link.user.get_username()}".encode() in r.content
        assert b'method="post"' in r.content and "_auth_user_id" not in preview.session
    assert LoginLink.objects.get().used_at is None
    assert not AuditEvent.objects.filter(action="login_link.use").exists()
    # The confirmation is a CSRF-protected POST: without its token nothing happens.
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(f"/sso/{token}")
    assert browser.post(f"/sso/{token}").status_code == 403
    assert LoginLink.objects.get().used_at is None and "_auth_user_id" not in browser.session
    r = browser.post(f"/sso/{token}", {"csrfmiddlewaretoken": csrf_of(page)})
    assert r.status_code == 302 and r["Location"] == "/ves/"
    assert browser.get("/ves/").status_code == 200
    assert int(browser.session["_auth_user_id"]) == link.user_id
    assert Membership.objects.get(user=link.user).role == "owner"
    assert AuditEvent.objects.filter(action="login_link.use", result="ok", actor=link.user).exists()
    # A replay, in another browser: a readable 403 page for the GET and the POST, no session.
    again = Client()
    r = again.get(f"/sso/{token}")
    assert r.status_code == 403 and b"used already" in r.content
    r = again.post(f"/sso/{token}")
    assert r.status_code == 403 and b"used already" in r.content
    assert "_auth_user_id" not in again.session
    assert AuditEvent.objects.filter(action="login_link.use", result="denied", detail__why="used").exists()


def test_expired_and_unknown_links_are_403(whmcs):
    token = mint(whmcs)["url"].rsplit("/", 1)[1]
    LoginLink.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    for method in (Client().get, Client().post):
        r = method(f"/sso/{token}")
        assert r.status_code == 403 and b"expired" in r.content
        r = method("/sso/" + "x" * 43)
        assert r.status_code == 403 and b"not valid" in r.content
    assert LoginLink.objects.get().used_at is None


def test_concurrent_confirmations_sign_in_once(whmcs, transactional_db):
    token = mint(whmcs)["url"].rsplit("/", 1)[1]
    codes = in_parallel(lambda i: Client().post(f"/sso/{token}").status_code, 4)
    assert sorted(codes) == [302, 403, 403, 403], codes


def test_other_accounts_tenant_is_404_and_tokens_do_not_cross(whmcs):
    other = billing.billing_account_get_or_create(name="blesta")
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {billing.billing_token_create(account=other)[1]}")
    r = c.post(f"{API}/accounts/ext:1204/login-link", format="json")
    assert r.status_code == 404 and json.loads(r.content)["code"] == "not-found"
    scoped = APIClient()
    scoped.credentials(HTTP_AUTHORIZATION="Bearer " + billing.billing_token_create(
        account=other, scopes=["services:read"])[1])
    assert scoped.post(f"{API}/accounts/ext:1204/login-link", format="json").status_code == 403
    link_user = Membership.objects.get(role="owner").user
    tenant = Membership.objects.get(role="owner").tenant
    customer = APIClient()
    customer.credentials(HTTP_AUTHORIZATION="Bearer " + api_tokens.api_token_create(user=link_user,
                                                                                    tenant=tenant)[1])
    assert customer.post(f"{API}/accounts/ext:1204/login-link", format="json").status_code == 401
    assert not LoginLink.objects.exists()

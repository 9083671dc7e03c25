"""Property-based checks of the billing API and the customer API from their own OpenAPI
schemas (schemathesis): every GET endpoint, with valid and invalid inputs (small: 20
examples each, no deadline), never answers a 5xx. The schemas are loaded from the app
(WSGI), not from a server."""
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from panel.wsgi import application
from tests.tenancy import idle_node, people  # noqa: F401

STATUSES = Counter()


def _gets(url):
    schema = schemathesis.openapi.from_wsgi(url, application)
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=20,
                                    database="none")
    return schema.include(method="GET")


billing_gets = _gets("/api/billing/v1/schema/?format=json")
customer_gets = _gets("/api/v1/schema/?format=json")


@pytest.fixture
def keep_connection(db):
    """A token of a billing account; the WSGI calls keep the test's database connection
    (like Django's test client, which unhooks close_old_connections the same way)."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def billing_token(keep_connection):
    from panel.services import billing

    account = billing.billing_account_get_or_create(name="fuzz")
    return billing.billing_token_create(account=account)[1]


@pytest.fixture
def customer_token(keep_connection, people, tenant, idle_node):
    from panel.services import api_tokens, ves
    from tests.tenancy import settle

    settle(ves.ve_create(tenant=tenant, template="busybox", hostname="fuzz", memory=256 << 20, disk=1 << 30))
    return api_tokens.api_token_create(user=people.operator, tenant=tenant)[1]


def _call(case, token):
    response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error])
    STATUSES[response.status_code] += 1


@billing_gets.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_billing_get_endpoints_never_answer_5xx(case, billing_token):
    _call(case, billing_token)


@customer_gets.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_customer_get_endpoints_never_answer_5xx(case, customer_token):
    _call(case, customer_token)


def test_the_tokens_the_fuzzing_uses_get_past_authentication(client, billing_token, customer_token):
    """A fuzz run where every request bounced off authentication would prove nothing: the
    same tokens reach both APIs, and a made-up id is a 404, not a 401 or a 5xx."""
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {billing_token}"}
    assert client.get("/api/billing/v1/plans", **bearer).status_code == 200
    assert client.get("/api/billing/v1/services/ext:no-such-service", **bearer).status_code == 404
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {customer_token}"}
    assert client.get("/api/v1/ves", **bearer).status_code == 200
    assert client.get("/api/v1/ves/not-a-uuid", **bearer).status_code == 404
    # When the fuzz tests ran in this session, some of their requests got through too.
    if STATUSES:
        assert STATUSES[200] and (STATUSES[400] or STATUSES[404]), STATUSES

"""Shared pieces for tenancy tests: users with each role, an idle node, and the
cross-tenant matrix helper.

``assert_hidden_from(user, objects)`` proves that every object of another tenant is a 404
(NotFound) through the access door. There are no web views yet: the panel issue adds its
URL lookups to ``LOOKUPS`` (or a URL-based twin of this helper), so that one matrix covers
every object type and every way to reach it.
"""
from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.utils import timezone

from panel import access
from panel.models import VE, Job, Membership, Node, OSTemplate, QuotaRequest, Suspension, Tenant
from panel.services.errors import NotFound

# object type -> ways to look it up by its public id as ``user`` (the access door).
LOOKUPS = {
    VE: [lambda user, obj: access.ve_get(user, obj.pk),
         lambda user, obj: access.ves_for(user).get(pk=obj.pk)],
    Tenant: [lambda user, obj: access.tenant_get(user, obj.pk)],
    Job: [lambda user, obj: access.job_get(user, obj.pk)],
    QuotaRequest: [lambda user, obj: access.quota_request_get(user, obj.pk)],
    Suspension: [lambda user, obj: access.suspension_get(user, obj.pk)],
}


def assert_hidden_from(user, objects) -> None:
    """Every lookup of every object in ``objects`` by ``user`` is a miss (NotFound or
    DoesNotExist): never a 403 that would confirm the object exists."""
    assert objects, "give the objects to check"
    for obj in objects:
        lookups = LOOKUPS.get(type(obj))
        assert lookups, f"no lookup registered for {type(obj).__name__}: add it to tests.tenancy.LOOKUPS"
        for lookup in lookups:
            try:
                lookup(user, obj)
            except (NotFound, type(obj).DoesNotExist):
                continue
            raise AssertionError(f"{user} reached {type(obj).__name__} {obj.pk} of another tenant")


def make_user(username: str, *, tenant: Tenant | None = None, role: str | None = None, staff: bool = False,
              email: str | None = None, password: str | None = None):
    """A user (with ``role`` in ``tenant``). No password unless given: hashing one costs
    half a second, which a fixture of six users pays in every test."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username, email if email is not None else f"{username}@example.test",
                                                password, is_staff=staff)
    if tenant is not None:
        Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


@pytest.fixture
def idle_node(db):
    """A node row whose queue no agent consumes: jobs stay pending, nothing runs."""
    OSTemplate.objects.get_or_create(name="busybox")
    return Node.objects.create(name="hakoquota-idle", queue="node.hakoquota-idle", state="online",
                               last_heartbeat=timezone.now(), info={"templates": ["busybox"]})


@pytest.fixture
def people(tenant, other_tenant):
    """owner/operator/viewer of ``tenant``, two staff admins and a member of ``other_tenant``."""
    class People:
        owner = make_user("olivia", tenant=tenant, role=Membership.Role.OWNER)
        operator = make_user("oscar", tenant=tenant, role=Membership.Role.OPERATOR)
        viewer = make_user("vera", tenant=tenant, role=Membership.Role.VIEWER)
        staff = make_user("sam", staff=True)
        staff2 = make_user("sue", staff=True)
        outsider = make_user("mallory", tenant=other_tenant, role=Membership.Role.OWNER)
    return People


def settle(job, state: str = "stopped") -> VE:
    """Pretend the node finished ``job`` (the VE ends in ``state``); returns the VE."""
    from panel.services.jobs import _apply_success

    Job.objects.filter(pk=job.pk).update(state="succeeded")
    job.refresh_from_db()
    _apply_success(job, {"state": state})
    return VE.objects.get(pk=job.ve_id)


def in_parallel(fn, n: int) -> list:
    """Run ``fn(i)`` in ``n`` threads that start together, each on its own database
    connection (closed at the end). Returns each call's result or exception, by i."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def worker(i):
        try:
            barrier.wait(timeout=30)
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - the test inspects what each thread got
            results[i] = e
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    return results

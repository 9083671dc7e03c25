"""Fixtures: PostgreSQL (pytest-django), a real Redis broker, a real panel worker and a real
node agent running LXC containers under /var/lib/hako-test."""
import os

os.environ.setdefault("HAKO_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/hako_test")
os.environ.setdefault("HAKO_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("HAKO_SECRET_KEY", "hako-tests-only-not-a-real-secret")
os.environ.setdefault("HAKO_DATA", "/var/lib/hako-test/data")
os.environ.setdefault("HAKO_JOB_TTL", "60")

import secrets  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests import harness  # noqa: E402

# The node name names the VEs' cgroups (hako.<node>/<veid>): runs that share a host at the
# same time (with their own HAKO_TEST_ROOT, database and Redis db) each need their own.
NODE = os.environ.get("HAKO_TEST_NODE", "hakotest1")
NODE_KEY = secrets.token_hex(32)
BROKER = os.environ["HAKO_BROKER_URL"]


@dataclass
class Stack:
    worker: harness.Proc
    agent: harness.Proc
    node_root: Path
    db_url: str

    def restart_agent(self, extra_env: dict | None = None) -> None:
        self.agent.stop()
        self.agent.start(extra_env)


def pytest_configure(config):
    """Retry the flush that ends a transactional test when PostgreSQL picks it as a
    deadlock victim: its TRUNCATE takes every table at once while the live panel worker
    may be folding a heartbeat (row locks on node, VE and usage rows). The worker's
    transaction ends in milliseconds, so a retry flushes cleanly; any other error, or a
    fifth deadlock in a row, still fails the test."""
    import time

    from django.core.management.base import CommandError
    from django.db.utils import OperationalError
    from django.test import TransactionTestCase

    teardown = TransactionTestCase._fixture_teardown

    def deadlock(e: BaseException | None) -> bool:
        # Django's flush command reports the database's error as a CommandError whose
        # cause is the OperationalError: look down the chain.
        while e is not None:
            if isinstance(e, OperationalError) and "deadlock detected" in str(e):
                return True
            e = e.__cause__ or e.__context__
        return False

    def _fixture_teardown(self):
        for attempt in range(5):
            try:
                return teardown(self)
            except (OperationalError, CommandError) as e:
                if not deadlock(e) or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    TransactionTestCase._fixture_teardown = _fixture_teardown


@pytest.fixture(autouse=True)
def _default_language_after_each_test():
    """A test client request with a Japanese cookie or Accept-Language leaves Japanese
    active in this thread (LocaleMiddleware activates, nothing deactivates): later tests'
    service messages would come out translated. Each test starts from the default."""
    yield
    from django.utils import translation

    translation.deactivate()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """Runs before the test database is made: one test session per TEST_ROOT at a time
    (others wait), and what a killed earlier session left running is stopped first. Its
    panel worker and agent hold sessions on the test database, which could then be
    neither dropped nor made again."""
    harness.lock_test_root()
    harness.clean_leftovers()


@pytest.fixture(scope="session")
def stack(django_db_setup, django_db_blocker):
    """The running pipeline: panel worker and node agent against the test database."""
    import redis
    from django.db import connection

    redis.Redis.from_url(BROKER).flushdb()
    s = connection.settings_dict
    db_url = f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"
    env = {"HAKO_DATABASE_URL": db_url, "HAKO_BROKER_URL": BROKER, "DJANGO_SETTINGS_MODULE": "panel.settings"}
    worker = harness.panel_worker(env).start()
    root = harness.TEST_ROOT / f"node-{NODE}"
    agent = harness.node_agent(NODE, NODE_KEY, BROKER, root).start()
    harness.wait_for(lambda: " ready." in agent.log_since_start(), 60, what="node agent ready")
    harness.wait_for(lambda: " ready." in worker.log_since_start(), 60, what="panel worker ready")
    st = Stack(worker=worker, agent=agent, node_root=root, db_url=db_url)
    yield st
    worker.stop()
    st.agent.stop()
    # A pool worker killed mid-connection leaves its session open until the server notices;
    # close them so that pytest-django can drop the test database.
    from django.db import connection as conn

    with django_db_blocker.unblock(), conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    harness.clean_node_root(root)


@pytest.fixture
def node(stack, transactional_db):
    """The test node's row (recreated for each test: transactional tests empty the tables)."""
    from django.utils import timezone

    from panel.models import Node, OSTemplate

    n, _ = Node.objects.update_or_create(name=NODE, defaults={
        "queue": f"node.{NODE}", "key": NODE_KEY, "state": Node.State.ONLINE, "last_heartbeat": timezone.now(),
        "info": {"templates": ["busybox"]}, "agent_instance": "", "heartbeat_seq": 0})
    OSTemplate.objects.get_or_create(name="busybox")
    yield n
    # Detach the row from the live agent before the tables are emptied: heartbeats for an
    # unknown node are dropped with one read, so the panel worker holds no locks that could
    # deadlock with the TRUNCATE that ends a transactional test.
    gone = f"gone-{secrets.token_hex(4)}"  # queue too: a row a failed flush leaves must not block the next
    Node.objects.filter(pk=n.pk).update(name=gone, queue=f"node.{gone}")
    harness.remove_all_ves(stack.node_root)


@pytest.fixture
def tenant(db):
    from panel.models import Tenant

    return Tenant.objects.create(slug="acme", name="Acme")


@pytest.fixture
def other_tenant(db):
    from panel.models import Tenant

    return Tenant.objects.create(slug="globex", name="Globex")


def run(job, timeout: float = 60):
    """Wait for a job and assert it succeeded, showing its log if it did not."""
    from panel.services.jobs import job_wait

    job = job_wait(job, timeout=timeout)
    if job.state != "succeeded":
        lines = "\n".join(f"  {line.seq}: {line.message}" for line in job.logs.all())
        raise AssertionError(f"job {job.kind} ended {job.state}: {job.explanation}\n{lines}")
    return job


# OS templates that take minutes to build (debian-12: debootstrap) are built once per
# machine into this cache, which outlives the per-run node roots, and hard-linked into the
# test node's template cache. A fresh machine builds it on first use (needs Debian's archive).
TEMPLATE_CACHE = Path(os.environ.get("HAKO_TEST_TEMPLATE_CACHE", "/var/lib/hako-test/template-cache"))


@pytest.fixture(scope="session")
def debian12(stack):
    """The debian-12 template in the test node's template cache; returns its name."""
    import fcntl
    import shutil

    from containers.templates import build_template, template_paths

    TEMPLATE_CACHE.mkdir(parents=True, exist_ok=True)
    with open(TEMPLATE_CACHE / ".lock", "w") as lock:  # parallel test runs on one machine
        fcntl.flock(lock, fcntl.LOCK_EX)
        build_template(TEMPLATE_CACHE, "debian-12", log=lambda msg: print(f"[debian-12] {msg}", flush=True))
    cache = stack.node_root / "templates"
    # The agent makes its cache at start (its "ready" may be an earlier run's log line).
    harness.wait_for(lambda: (cache / "busybox.json").exists(), 120, what="the node agent's template cache")
    for src in template_paths(TEMPLATE_CACHE, "debian-12"):  # the archive before its metadata
        dst = cache / src.name
        if not dst.exists():
            tmp = cache / f".{src.name}.tmp"
            tmp.unlink(missing_ok=True)
            try:
                os.link(src, tmp)
            except OSError:  # another filesystem
                shutil.copy2(src, tmp)
            os.replace(tmp, dst)
    return "debian-12"

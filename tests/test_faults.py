"""Faults the pipeline must survive: a node agent killed mid-job, redelivered, forged,
unsigned, expired and stale messages, and a node that stops heartbeating."""
import secrets
import subprocess
import time
import uuid
from datetime import timedelta

import pytest
from celery import current_app
from django.utils import timezone

from containers import messages as m
from panel.models import VE, Job, Node
from panel.services import jobs, ves as svc
from tests.conftest import NODE_KEY, run
from tests.harness import wait_for

pytestmark = pytest.mark.integration


def lxc_state(stack, veid: int) -> str:
    return subprocess.run(["lxc-info", "-P", str(stack.node_root / "lxc"), "-n", str(veid), "-s", "-H"],
                          capture_output=True, text=True).stdout.strip()


def publish(node, envelope):
    current_app.send_task(m.TASK_NODE_JOB, args=[envelope], queue=node.queue, serializer="json")


def restart_agent(stack, extra_env=None):
    before = stack.agent.log_text().count(" ready.")
    stack.restart_agent(extra_env)
    wait_for(lambda: stack.agent.log_text().count(" ready.") > before, 60, what="agent ready")


def new_ve(tenant, start=False):
    ve = VE.objects.get(pk=run(svc.ve_create(tenant=tenant, template="busybox")).ve_id)
    if start:
        run(svc.ve_start(ve=ve))
    return ve


def test_agent_killed_mid_job_fails_the_job_and_vees_keep_running(stack, node, tenant):
    running = new_ve(tenant, start=True)
    victim = new_ve(tenant)
    restart_agent(stack, {"HAKO_FAULT_DELAY": "start:60"})
    try:
        job = svc.ve_start(ve=victim)
        wait_for(lambda: Job.objects.get(pk=job.pk).state == "running", 20, what="job running")
        stack.agent.kill()
        # VEs are not children of the agent: they keep running while it is down.
        time.sleep(1)
        assert lxc_state(stack, running.veid) == "RUNNING"
    finally:
        restart_agent(stack)
    job = jobs.job_wait(job, timeout=30)
    assert job.state == "failed"
    assert "restarted while this job ran" in job.explanation
    assert lxc_state(stack, running.veid) == "RUNNING"

    # The same message delivered again (as Redis does for an unacked task) does nothing.
    log_lines = job.logs.count()
    body = m.job_body(job_id=str(job.id), node=node.name, op="start", veid=victim.veid,
                      generation=job.generation, spec=VE.objects.get(pk=victim.pk).spec())
    publish(node, m.sign(body, bytes.fromhex(NODE_KEY)))
    wait_for(lambda: f"refused job {job.id}: already run" in stack.agent.log_text(), 20, what="refusal")
    job.refresh_from_db()
    assert job.state == "failed" and job.logs.count() == log_lines
    assert lxc_state(stack, victim.veid) == "STOPPED"

    # The VE is usable afterwards.
    run(svc.ve_start(ve=victim))
    assert lxc_state(stack, victim.veid) == "RUNNING"
    assert VE.objects.get(pk=victim.pk).state == "running"


def test_a_silent_node_is_reaped_and_comes_back(stack, node, tenant):
    ve = new_ve(tenant, start=True)
    stack.agent.kill()
    try:
        job = svc.ve_stop(ve=ve)
        later = timezone.now() + timedelta(seconds=60)
        counts = jobs.reap(now=later)
        assert counts["nodes_lost"] == 1 and counts["jobs_failed"] >= 1
        job.refresh_from_db()
        assert job.state == "failed" and "stopped sending heartbeats" in job.explanation
        assert Node.objects.get(pk=node.pk).state == "lost"
        assert VE.objects.get(pk=ve.pk).state == "unknown"
        assert lxc_state(stack, ve.veid) == "RUNNING"
    finally:
        restart_agent(stack)
    # The node speaks again: online, and the VE's state is read from its inventory. The
    # stop message still queued for the dead agent is refused or harmless: the job is over.
    wait_for(lambda: Node.objects.get(pk=node.pk).state == "online", 20, what="node online")
    wait_for(lambda: VE.objects.get(pk=ve.pk).state in ("running", "stopped"), 20, what="VE state from inventory")
    assert Job.objects.get(pk=job.pk).state == "failed"


def test_forged_unsigned_expired_and_stale_messages_do_nothing(stack, node, tenant):
    ve = new_ve(tenant, start=True)
    key = bytes.fromhex(NODE_KEY)

    def body(**kw):
        b = m.job_body(job_id=str(uuid.uuid4()), node=node.name, op="destroy", veid=ve.veid,
                       generation=VE.objects.get(pk=ve.pk).generation + 5, spec=None)
        b.update(kw)
        return b

    before = stack.agent.log_text().count("refused")
    publish(node, m.sign(body(), secrets.token_bytes(32)))                      # forged
    publish(node, {"v": 1, "body": body(), "sig": ""})                           # unsigned
    publish(node, {"rm": "-rf /"})                                               # garbage
    publish(node, m.sign(body(node="other-node"), key))                          # another node's
    publish(node, m.sign(body(expires_at=time.time() - 1), key))                 # expired
    publish(node, m.sign(body(generation=0), key))                               # stale generation
    publish(node, m.sign(body(op="start", spec={**VE.objects.get(pk=ve.pk).spec(), "uid_base": 0}), key))  # uid 0
    wait_for(lambda: stack.agent.log_text().count("refused") - before >= 6, 30, what="six refusals")
    time.sleep(1)  # the seventh (uid 0) fails as a job: give it time to do damage if it could
    assert lxc_state(stack, ve.veid) == "RUNNING"
    assert (stack.node_root / "images" / f"{ve.veid}.img").exists()
    log = stack.agent.log_text()
    for reason in ("bad signature", "not a Hako envelope", "is for node 'other-node'", "expired",
                   "stale generation"):
        assert reason in log, reason


def test_events_from_a_forged_node_are_refused(stack, node, tenant):
    ve = new_ve(tenant)
    job = svc.ve_start(ve=ve)
    forged = m.sign(m.event_body(node=node.name, instance="x", job_id=str(job.id), seq=99, type="failed",
                                 message="forged"), secrets.token_bytes(32))
    assert jobs.apply_event(forged).startswith("refused")
    run(job)
    hb = m.sign(m.heartbeat_body(node=node.name, instance="x", seq=10**9, capacity={}, inventory=[]),
                secrets.token_bytes(32))
    assert jobs.apply_heartbeat(hb).startswith("refused")
    assert VE.objects.get(pk=ve.pk).state == "running"

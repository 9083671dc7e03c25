"""Celery tasks of the panel worker (queue ``panel``): node events, heartbeats, reaper,
suspension enforcer."""
from celery import shared_task

from containers import messages as m

from .services import jobs


@shared_task(name=m.TASK_PANEL_EVENT, ignore_result=True, acks_late=True)
def panel_event(envelope):
    return jobs.apply_event(envelope)


@shared_task(name=m.TASK_PANEL_HEARTBEAT, ignore_result=True, acks_late=True)
def panel_heartbeat(envelope):
    return jobs.apply_heartbeat(envelope)


@shared_task(name="hako.panel.reap", ignore_result=True)
def panel_reap():
    return jobs.reap()


@shared_task(name="hako.panel.enforce_suspensions", ignore_result=True)
def panel_enforce_suspensions():
    from .services.suspensions import enforce_suspensions

    return enforce_suspensions()

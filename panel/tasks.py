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


@shared_task(name="hako.panel.webhook_fanout", ignore_result=True, acks_late=True)
def webhook_fanout(event_id):
    from .services.webhooks import event_fanout

    return len(event_fanout(int(event_id)))


@shared_task(name="hako.panel.webhook_deliver", ignore_result=True, acks_late=True)
def webhook_deliver(delivery_id):
    from .services.webhooks import delivery_attempt

    d = delivery_attempt(delivery_id)
    return d.status if d else "skipped"


@shared_task(name="hako.panel.webhooks_sweep", ignore_result=True)
def webhooks_sweep():
    from .services.webhooks import webhooks_sweep as sweep

    return sweep()


@shared_task(name="hako.panel.usage_rollup", ignore_result=True)
def usage_rollup():
    from .services.usage import usage_rollup as rollup

    return rollup()


@shared_task(name="hako.panel.migrate", ignore_result=True, acks_late=True)
def panel_migrate(migration_id):
    from .services.migrations import migration_run

    return migration_run(migration_id)


@shared_task(name="hako.panel.drain", ignore_result=True, acks_late=True)
def panel_drain(job_id):
    from .services.migrations import drain_run

    return drain_run(job_id)


@shared_task(name="hako.panel.migrations_resume", ignore_result=True)
def panel_migrations_resume():
    from .services.migrations import migrations_resume

    return migrations_resume()

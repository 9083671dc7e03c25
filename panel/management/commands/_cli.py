"""Shared pieces of the OpenVZ-style commands (vzctl, vzlist)."""
import getpass

from panel.models import VE
from panel.services.errors import NotFound


def cli_source() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def ve_by_veid(veid: str) -> VE:
    if not str(veid).isdigit():
        raise NotFound(f"VEID must be a number, got {str(veid)[:20]!r}")
    ve = (VE.objects.select_related("node", "tenant", "template")
          .exclude(state=VE.State.DESTROYED).filter(veid=int(veid)).first())
    if ve is None:
        raise NotFound(f"VE {veid} does not exist")
    return ve


def follow_job(cmd, job, *, quiet: bool = False, done: str | None = None, timeout: float = 600, prefix: str = ""):
    """Wait for ``job`` like vzctl does: print its log lines as they come, raise
    CommandError with the node's explanation when it fails."""
    from django.core.management.base import CommandError

    from panel.models import Job
    from panel.services.jobs import job_wait

    def show(line):
        if not quiet and line.kind != "error" and line.message and line.message != "Task OK":
            cmd.stdout.write(prefix + line.message)

    job = job_wait(job, on_log=show, timeout=timeout)
    if job.state == Job.State.SUCCEEDED:
        if done and not quiet:
            cmd.stdout.write(prefix + done)
        return job
    if not job.is_terminal:
        raise CommandError(f"job {job.id} is still {job.state} after {timeout:.0f}s; follow it in the panel")
    raise CommandError(prefix + (job.explanation or f"job {job.kind} {job.state}"))

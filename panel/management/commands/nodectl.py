"""Node maintenance from the command line:

    manage.py nodectl maintenance node1 on|off   no new VEs on node1 (its VEs keep running)
    manage.py nodectl drain node1                maintenance on, then migrate every VE away

A drain prints each migration as it goes and a summary of what moved and what could not;
it exits non-zero when something could not be moved.
"""
from django.core.management.base import BaseCommand, CommandError

from panel.models import Node
from panel.services import migrations as svc
from panel.services.errors import ServiceError

from ._cli import cli_source, follow_job


class Command(BaseCommand):
    help = "Node maintenance mode and drain (migrate every VE away)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        m = sub.add_parser("maintenance")
        m.add_argument("node")
        m.add_argument("mode", choices=["on", "off"])
        sub.add_parser("drain").add_argument("node")

    def handle(self, *args, action, node, **o):
        found = Node.objects.filter(name=str(node)[:63]).first()
        if found is None:
            raise CommandError(f"node {str(node)[:63]!r} does not exist")
        try:
            if action == "maintenance":
                svc.node_set_maintenance(node=found, on=o["mode"] == "on", source=cli_source())
                self.stdout.write(f"Node {found.name}: maintenance {o['mode']}")
                return
            job = svc.node_drain(node=found, source=cli_source())
            try:
                follow_job(self, job, timeout=svc.STEP_TIMEOUT)
            finally:
                job.refresh_from_db()
                for item in (job.result or {}).get("failed", []):
                    self.stderr.write(f"VE {item['veid']} not moved: {item['reason']}")
        except ServiceError as e:
            raise CommandError(e.message) from None

"""``vztmpl``: OS templates in the nodes' template caches (OpenVZ's vztmpl-dl / vzpkg).

    manage.py vztmpl list
    manage.py vztmpl build debian-12 [--node NODE]     debootstrap on the node, about a minute
    manage.py vztmpl remove debian-12 [--node NODE]

Without --node, build and remove act on every online node. Each job is followed like vzctl
follows one: its log lines are printed as the node sends them, and a failure prints the
node's reason and exits non-zero.
"""
from django.core.management.base import BaseCommand, CommandError

from panel.models import Node
from panel.services import templates as svc
from panel.services.errors import ServiceError

from ._cli import cli_source, follow_job


class Command(BaseCommand):
    help = "List, build and remove OS templates on the nodes."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list")
        for name in ("build", "remove"):
            p = sub.add_parser(name)
            p.add_argument("name")
            p.add_argument("--node", default=None, help="node name (default: every online node)")
            p.add_argument("--timeout", type=int, default=3600, help="seconds to wait for the job")

    def handle(self, *args, action, **o):
        try:
            if action == "list":
                return self.list()
            self.run_on_nodes(action, o["name"], o["node"], o["timeout"])
        except ServiceError as e:
            raise CommandError(e.message) from None

    def list(self):
        rows = svc.template_list()
        self.stdout.write(f"{'NAME':<16} {'NODES':<24} DESCRIPTION")
        for r in rows:
            nodes = ",".join(r["nodes"]) or "-"
            desc = r["description"] + ("" if r["enabled"] else " (disabled)")
            self.stdout.write(f"{r['name']:<16} {nodes:<24} {desc}".rstrip())

    def run_on_nodes(self, action, name, node_name, timeout):
        if node_name:
            nodes = list(Node.objects.filter(name=node_name))
            if not nodes:
                raise CommandError(f"node {node_name!r} does not exist")
        else:
            nodes = list(Node.objects.filter(state=Node.State.ONLINE).order_by("name"))
            if not nodes:
                raise CommandError("no node is online")
        service = svc.template_build if action == "build" else svc.template_remove
        jobs = [(n, service(node=n, name=name, source=cli_source())) for n in nodes]
        failed = []
        for n, job in jobs:
            prefix = f"{n.name}: " if len(jobs) > 1 else ""
            verb = "built" if action == "build" else "removed"
            try:
                follow_job(self, job, prefix=prefix, timeout=timeout,
                           done=f"OS template {name} is {verb} on node {n.name}")
            except CommandError as e:
                if len(jobs) == 1:
                    raise
                self.stderr.write(str(e))
                failed.append(n.name)
        if failed:
            raise CommandError(f"{action} failed on: {', '.join(failed)}")

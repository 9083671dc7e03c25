"""Manage IP pools: ``ippool list``, ``ippool add NAME CIDR --node N [--node M]``."""
from django.core.management.base import BaseCommand, CommandError

from panel.models import IPPool, Node
from panel.services.errors import ServiceError
from panel.services.network import pool_create

from ._cli import cli_source


class Command(BaseCommand):
    help = "List or add IP pools that VEs take their addresses from."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list")
        add = sub.add_parser("add")
        add.add_argument("name")
        add.add_argument("network", help="CIDR, e.g. 198.18.0.0/24 or fd00:1::/64")
        add.add_argument("--node", action="append", default=[], help="node serving the pool (repeatable)")
        add.add_argument("--range-start")
        add.add_argument("--range-end")

    def handle(self, *args, action, **o):
        if action == "list":
            for pool in IPPool.objects.prefetch_related("nodes").order_by("name"):
                used = pool.allocations.count()
                self.stdout.write(f"{pool.name:<16} {pool.network:<22} used {used:<6} "
                                  f"nodes {','.join(n.name for n in pool.nodes.all()) or '-'}")
            return
        nodes = []
        for name in o["node"]:
            node = Node.objects.filter(name=name).first()
            if node is None:
                raise CommandError(f"node {name!r} does not exist")
            nodes.append(node)
        try:
            pool = pool_create(name=o["name"], network=o["network"], nodes=nodes, range_start=o["range_start"],
                               range_end=o["range_end"], source=cli_source())
        except ServiceError as e:
            raise CommandError(e.message) from None
        self.stdout.write(f"pool {pool.name} {pool.network} created")

"""``plan``: list, add and change plans (the local admin).

    manage.py plan list
    manage.py plan add small --ram 512M --diskspace 10G [--swap 512M --cpuunits 1000
                             --cpulimit 100 --numproc 512 --addresses 1 --bandwidth 100M]
    manage.py plan set small --ram 1G | --disable | --enable
"""
from django.core.management.base import BaseCommand, CommandError

from panel.models import Plan
from panel.services import plans as svc
from panel.services.errors import ServiceError
from panel.services.validation import human_size

from ._cli import cli_source

OPTIONS = (("--ram", "memory"), ("--swap", "swap"), ("--diskspace", "disk"), ("--cpuunits", "cpuunits"),
           ("--cpulimit", "cpulimit"), ("--numproc", "numproc"), ("--addresses", "addresses"),
           ("--bandwidth", "bandwidth"), ("--description", "description"))


class Command(BaseCommand):
    help = "List, add and change plans (bundles of VE resources)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list")
        for name in ("add", "set"):
            p = sub.add_parser(name)
            p.add_argument("name")
            for opt, dest in OPTIONS:
                p.add_argument(opt, dest=dest)
            if name == "set":
                p.add_argument("--enable", dest="enabled", action="store_const", const=True)
                p.add_argument("--disable", dest="enabled", action="store_const", const=False)

    def handle(self, *args, action, **o):
        if action == "list":
            for p in Plan.objects.order_by("name"):
                bw = f"{p.bandwidth // 10**6}M" if p.bandwidth else "unlimited"
                self.stdout.write(f"{p.name:<16} ram {human_size(p.memory):<6} swap {human_size(p.swap):<6} "
                                  f"disk {human_size(p.disk):<6} cpuunits {p.cpuunits:<6} cpulimit {p.cpulimit:<4} "
                                  f"numproc {p.numproc:<6} ip {p.addresses:<3} bw {bw}"
                                  + ("" if p.enabled else "  (disabled)"))
            return
        values = {dest: o[dest] for _, dest in OPTIONS if o.get(dest) is not None}
        try:
            if action == "add":
                svc.plan_create(name=o["name"], source=cli_source(), **values)
            else:
                plan = Plan.objects.filter(name=o["name"]).first()
                if plan is None:
                    raise CommandError(f"plan {o['name']!r} does not exist")
                if o.get("enabled") is not None:
                    values["enabled"] = o["enabled"]
                svc.plan_update(plan=plan, source=cli_source(), **values)
        except ServiceError as e:
            raise CommandError(e.message) from None
        self.stdout.write(f"plan {o['name']} saved")

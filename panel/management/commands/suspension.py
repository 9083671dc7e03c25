"""``suspension``: suspend and lift VEs and tenants from the command line (local admin).

    manage.py suspension add 101 --by abuse --reason "open resolver"
    manage.py suspension add --tenant acme --by billing --reason "invoice 42 unpaid"
    manage.py suspension lift 101 --by abuse
    manage.py suspension list [--all]

A suspended VE is stopped and cannot be started; each source (admin, billing, abuse) is
lifted on its own. Lifting does not start the VE.
"""
from django.core.management.base import BaseCommand, CommandError

from panel.models import Suspension, Tenant
from panel.services import suspensions as svc
from panel.services.errors import ServiceError

from ._cli import cli_source, ve_by_veid


class Command(BaseCommand):
    help = "Suspend or lift a VE or a whole tenant; list suspensions."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        for name in ("add", "lift"):
            p = sub.add_parser(name)
            p.add_argument("veid", nargs="?")
            p.add_argument("--tenant", help="the whole tenant (slug) instead of one VE")
            p.add_argument("--by", required=True, choices=Suspension.Source.values)
            p.add_argument("--reason", required=(name == "add"), default="")
        sub.add_parser("list").add_argument("--all", action="store_true", help="lifted ones too")

    def handle(self, *args, action, **o):
        try:
            if action == "list":
                return self.list(o["all"])
            if bool(o["veid"]) == bool(o["tenant"]):
                raise CommandError("give a VEID or --tenant SLUG")
            source = cli_source()
            if o["tenant"]:
                tenant = Tenant.objects.filter(slug=o["tenant"]).first()
                if tenant is None:
                    raise CommandError(f"tenant {o['tenant']!r} does not exist")
                if action == "add":
                    s = svc.tenant_suspend(tenant=tenant, by=o["by"], reason=o["reason"], source=source)
                else:
                    s = svc.tenant_unsuspend(tenant=tenant, by=o["by"], reason=o["reason"], source=source)
                what = f"tenant {tenant.slug}"
            else:
                ve = ve_by_veid(o["veid"])
                if action == "add":
                    s = svc.ve_suspend(ve=ve, by=o["by"], reason=o["reason"], source=source)
                else:
                    s = svc.ve_unsuspend(ve=ve, by=o["by"], reason=o["reason"], source=source)
                what = f"VE {ve.veid}"
        except ServiceError as e:
            raise CommandError(e.message) from None
        if action == "add":
            stops = len(getattr(s, "stop_jobs", []))
            self.stdout.write(f"{what} suspended by {o['by']}" + (f"; stopping {stops} VE(s)" if stops else ""))
        else:
            self.stdout.write(f"{what}: {o['by']} suspension lifted" if s else f"{what}: no {o['by']} suspension")

    def list(self, show_all: bool):
        qs = Suspension.objects.select_related("tenant", "ve").order_by("created_at")
        if not show_all:
            qs = qs.filter(lifted_at__isnull=True)
        for s in qs:
            what = f"VE {s.ve.veid}" if s.ve_id else f"tenant {s.tenant.slug}"
            state = "active" if s.active else f"lifted {s.lifted_at:%Y-%m-%d %H:%M}"
            self.stdout.write(f"{s.created_at:%Y-%m-%d %H:%M} {what:<20} {s.source:<8} {state:<22} {s.reason!r}")
